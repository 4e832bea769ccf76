"""The demo's scripted incident replayed offline: which alerts ``--incident FROM:TO`` raises.

``make demo`` takes minutes; this replays the same window day by day (predict a match day, then
learn its results, as ``replay --sync`` does) with the champion's model and ``demo-incident``
through the monitor's pure core, one :class:`ScopeMonitor` per model and scope, and prints every
alert. It is how the demo's default incident was chosen (docs/DEMO.md); the scorer's version
lag of the live path is absent, so live dates can be a match day later.

    python -m tests.monitoring.incident                              # the default demo
    python -m tests.monitoring.incident --incident 2022-10-01:2022-11-12
"""

from __future__ import annotations

import argparse
import itertools
from datetime import date

from agents.monitor_rules import ScopeMonitor, reference_log_loss
from models import catalog
from models.features import build_events, model_input
from models.metrics import log_loss
from models.timeline import Filters
from schemas.football_csv import default_data_files, read_rows
from streams.cli.demo import DEFAULT_INCIDENT, date_range
from streams.cli.replay import league_list
from streams.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.monitoring.incident", description=__doc__
    )
    parser.add_argument("--from", dest="start", type=date.fromisoformat, default=date(2021, 7, 1))
    parser.add_argument("--to", dest="end", type=date.fromisoformat, default=date(2024, 6, 30))
    parser.add_argument("--leagues", type=league_list, default=frozenset())
    parser.add_argument("--incident", type=date_range, default=DEFAULT_INCIDENT)
    parser.add_argument("--window", type=int, default=Settings().decay_window)
    args = parser.parse_args(argv)
    window = Filters(args.leagues, args.start, args.end)
    events = [
        (f, r) for f, r in build_events(read_rows(default_data_files()).rows)
        if window.keep(f.league, f.kickoff)
    ]  # fmt: skip
    first = sum(f.kickoff.date() < args.incident[0] for f, _ in events)
    last = sum(f.kickoff.date() < args.incident[1] for f, _ in events)
    print(
        f"{len(events)} matches; demo-incident broken over learned examples {first} .. {last - 1}"
    )
    models = {
        catalog.INCIDENT_WRAPS: catalog.create(catalog.INCIDENT_WRAPS),
        catalog.INCIDENT_MODEL_ID: catalog.incident(first, last),
    }
    monitors: dict[tuple[str, str], ScopeMonitor] = {}
    seen = dict.fromkeys(models, 0)
    for day, group in itertools.groupby(events, key=lambda event: event[0].kickoff.date()):
        matches = list(group)
        xs = [model_input(f) for f, _ in matches]
        predicted = {m: model.predict_proba_many(xs) for m, model in models.items()}
        for model_id, model in models.items():
            for x, (f, r), row in zip(xs, matches, predicted[model_id], strict=True):
                p = dict(zip("HDA", row.tolist(), strict=True))
                seen[model_id] += 1
                for scope in ("all", f"league:{f.league}"):
                    monitor = monitors.setdefault(
                        (model_id, scope),
                        ScopeMonitor(
                            window=args.window, threshold=0.05, detector_name="page-hinkley"
                        ),
                    )
                    for d in monitor.observe(
                        f"{model_id}:{f.match_id}", log_loss(p, r.outcome),
                        max(p, key=p.__getitem__) == r.outcome,
                        reference_log_loss(x, r.outcome), match_id=f.match_id, outcome=r.outcome,
                    ):  # fmt: skip
                        print(
                            f"{day} {model_id} {scope} {d.kind} ({d.detector}) at evaluation "
                            f"{seen[model_id]}: window {d.window}, current {d.current:+.4f}"
                        )
                model.learn_one(x, r.outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
