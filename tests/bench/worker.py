"""A worker running only the agents under measurement: ``python -m tests.bench.worker scorer``
(or ``relay``, the benchmark's Faust floor: :mod:`tests.bench.relay`).

The production app (``streams.worker.app.create_app``) is built unchanged, with the registration of
every agent not being measured swapped for a no-op, so the measured agents run with exactly the
Kafka, producer and table settings a real worker uses, and nothing else competes for the
process (a full worker also reconciles every prediction it makes, which is measured apart).
"""

from __future__ import annotations

import sys
from typing import Any

from agents import champion, drift, features, learner, monitor, reconciler, scorer, trainer
from streams.log import configure_logging
from streams.settings import Settings, use_event_loop
from streams.worker import app as app_module
from streams.worker import web
from tests.bench import relay

MODULES = {
    "features": features,
    "scorer": scorer,
    "reconciler": reconciler,
    "learner": learner,
    "monitor": monitor,
    "champion": champion,
    "drift": drift,  # the drift router reads the features topic too: it is not the scorer's cost
    "trainer": trainer,
    "web": web,
}
"""Every module ``create_app`` registers agents from: a new one must be listed here, or it runs
in every benchmark worker (``test_bench_worker_knows_every_agent`` checks)."""


def _skip(*args: Any, **kwargs: Any) -> None:
    """Registration of an agent the benchmark does not run."""


def main(argv: list[str]) -> int:
    wanted = set(argv) or {"scorer"}
    known = {*MODULES, relay.AGENT}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown agents {sorted(unknown)}; known: {sorted(known)}")
    for name, module in MODULES.items():
        if name not in wanted:
            module.register = _skip  # type: ignore[attr-defined]
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    use_event_loop(settings)  # as ``tipstream worker`` does (streams.worker.app.run_worker)
    app, runtime = app_module.create_app(settings)
    if relay.AGENT in wanted:  # the benchmark's own agent, not part of the production app
        relay.register(app, runtime)
    app_module.execute(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
