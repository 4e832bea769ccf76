"""The side-by-side benchmark (``make bench``): tipstream against a bare passthrough.

One run, on the same broker and machine, with its own topic prefix, app ids and database:
a plain aiokafka consume -> decode -> encode -> produce loop (the ceiling), the scorer (features
in, one prediction per active model out), latency at a fixed offered load, reconciliation into
PostgreSQL, and in-process learning and scoring costs. ``__main__`` prints the ``BENCH`` line.
"""
