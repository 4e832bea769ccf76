"""Fault injection and its checker: ``make chaos`` (``python -m tests.chaos``).

- :mod:`tests.chaos.crash`: named crash points a worker kills itself at (test deployments only).
- :mod:`tests.chaos.malformed`: malformed events of every kind a producer can send.
- :mod:`tests.chaos.checker`: per event id, what a run lost, duplicated or made up, against a
  fault-free run of the same input (the invariant names of Jepsen's Kafka workload).
- :mod:`tests.chaos.harness` and :mod:`tests.chaos.scenarios`: real workers, a real broker
  and a real database, killed, restarted and starved on purpose.
"""
