"""``make chaos``: the eight fault scenarios on real services; the ``CHAOS`` line comes last.

Runs a fault-free reference on the shared broker and database, then each scenario on its own
deployment (the broker-restart and database-outage scenarios on a private broker and database
started for them), prints one line per scenario and finally, on one line::

    CHAOS scenarios=<int> passed=<int> lost=<int> duplicated=<int> deadlettered=<int>
    malformed_sent=<int>

Exit status 0 when every scenario passed. Worker logs stay under ``.local/chaos-runs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from models.timeline import Filters, fact_timeline
from schemas.football_csv import RowError, default_data_files, read_rows
from streams.log import configure_logging
from tests.chaos.scenarios import Chaos, Outcome
from tests.deployment import REPO, base_settings

LEAGUE_FILE = "england-premier-league.csv"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"CSV file to replay (default: the shared {LEAGUE_FILE})",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        default=date(2018, 8, 1),
        help="first kickoff of the replay window",
    )
    parser.add_argument(
        "--to",
        dest="end",
        type=date.fromisoformat,
        default=date(2019, 5, 31),
        help="last kickoff of the replay window",
    )
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep a failed scenario's database and topics to investigate",
    )
    return parser.parse_args(argv)


def summary(outcomes: list[Outcome]) -> str:
    """The closing line, in the exact form the issue asks for."""
    return (
        f"CHAOS scenarios={len(outcomes)} "
        f"passed={sum(o.verdict.passed for o in outcomes)} "
        f"lost={sum(o.verdict.lost for o in outcomes)} "
        f"duplicated={sum(o.verdict.duplicated for o in outcomes)} "
        f"deadlettered={sum(o.verdict.deadlettered for o in outcomes)} "
        f"malformed_sent={sum(o.verdict.malformed_sent for o in outcomes)}"
    )


async def main_async(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base = base_settings()
    data = args.data or next(p for p in default_data_files() if p.name == LEAGUE_FILE)
    try:
        rows = read_rows([data]).rows
    except RowError as error:
        raise SystemExit(f"chaos: {error}") from None
    # What a producer publishes (fixtures and results, with their event times) and the warm-up
    # history before --from, as `tipstream replay` sends them: the features agent computes the
    # features in every scenario.
    events = fact_timeline(rows, Filters(start=args.start, end=args.end))
    run = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = REPO / ".local" / "chaos-runs" / run
    workdir.mkdir(parents=True, exist_ok=True)
    matches = sum(1 for e in events if e.kind == "fixture")
    warm_up = sum(1 for e in events if e.kind == "warm_up")
    print(
        f"chaos: {matches} matches of {data.name} ({args.start} to {args.end}), "
        f"{len(events) - warm_up} facts after {warm_up} warm-up inputs; logs in {workdir}",
        flush=True,
    )
    chaos = Chaos(base, workdir, events, args.seed, keep_failed=args.keep_failed)
    reference, seconds = await chaos.fault_free()
    print(
        f"reference (fault-free): {len(reference.evaluations)} evaluations, learned "
        f"{reference.learned} ({seconds:.0f} s)",
        flush=True,
    )
    only = {int(n) for n in args.only.split(",") if n}
    outcomes = await chaos.all(only or None)
    print(f"chaos: {time.monotonic() - started:.0f} s", flush=True)
    print(summary(outcomes), flush=True)
    return 0 if all(o.verdict.passed for o in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The runner's own log lines are few; the workers log to their files.
    configure_logging("console", "warning")
    # The runner's producers and readers retry through broker outages on purpose; aiokafka
    # would log every failed reconnect (thousands of lines) in between the scenario lines.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
