"""End to end: one league's season replayed with ``--backfill`` against a plain unsynced
replay, interleaved in one sitting (docs/BACKFILL.md, section 4).

Each run is a fresh deployment (database with the seeded registry, topics) with one worker at
a 0.1 s commit interval, then ``tipstream replay`` of the window (its warm-up history first,
at full speed in both modes). The clock runs from the replay's start until every match of the
window is evaluated by every seeded model *and* the worker group has committed the end of
every topic of the chain (the replay's ``Drain`` condition: nothing is left to do, so the
plain replay's re-issues count too). Prints one ``RUN`` line per run and ``BACKFILL_E2E`` last.

    .venv/bin/python -m tests.bench.backfill_e2e --rounds 2 \\
        --leagues england-premier-league --from 2022-07-01 --to 2023-06-30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from datetime import date

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.timeline import Filters, fact_timeline
from streams.cli.replay import Drain, ReplayCounts, league_list, read_csv
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics
from tests.bench.deployment import Deployment, Process, running
from tests.deployment import REPO, base_settings, run_cli

DATA = REPO / "data" / "football"
POLL_S = 0.2
"""How often the end condition is checked: the figures are seconds, this is their grain."""
MODES = ("plain", "backfill")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


async def ready(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until the worker's ``/ready`` answers 200 (recovered, partitions assigned)."""
    url = f"http://127.0.0.1:{settings.web_port}/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_answers, url):
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"worker not ready within {timeout:.0f} s")


async def evaluated(settings: Settings) -> tuple[int, int]:
    """(matches x models expected, current evaluations stored)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        models = await conn.fetchval("SELECT count(*) FROM models")
        matches = await conn.fetchval("SELECT count(*) FROM results")
        done = await conn.fetchval(
            "SELECT count(DISTINCT (match_id, model_id)) FROM evaluations "
            "WHERE superseded_by IS NULL"
        )
    finally:
        await conn.close()
    return int(models) * int(matches), int(done)


async def records(settings: Settings, topic: str) -> int:
    """Records ever written to ``topic`` (ticks included)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def one_run(base: Settings, mode: str, window: list[str], facts: int) -> dict[str, float]:
    """One fresh deployment, one worker, one replay in ``mode``; its figures."""
    run = Deployment(base)
    await run.create(["e2e"])
    settings = run.settings("e2e").replace(commit_interval=0.1, log_level="warning")
    worker = Process(["-m", "streams.cli", "worker"], settings, run.workdir / "worker.log")
    try:
        async with running(worker):
            await ready(settings)
            drain = Drain(settings, timeout=600.0)
            await drain.start()
            try:
                started = time.monotonic()
                args = ["replay", "--data", *map(str, sorted(DATA.glob("*.csv"))), *window]
                if mode == "backfill":
                    args.append("--backfill")
                done = await asyncio.to_thread(run_cli, settings, *args, timeout=1800)
                if done.returncode != 0:
                    raise SystemExit(f"replay failed: {done.stderr[-2000:]}")
                published = time.monotonic() - started
                while True:
                    await drain.wait()
                    expected, stored = await evaluated(settings)
                    if expected and stored >= expected:
                        break
                    await asyncio.sleep(POLL_S)
                seconds = time.monotonic() - started
            finally:
                await drain.stop()
            topics = Topics.from_settings(settings)
            return {
                "seconds": seconds,
                "published_s": published,
                "events_per_s": facts / seconds,
                "features_records": await records(settings, topics.features),
                "predictions": await records(settings, topics.predictions),
                "evaluations": stored,
                "worker_cpu_s": worker.cpu_s(),
            }
    finally:
        await run.remove()


def window_args(args: argparse.Namespace) -> list[str]:
    return ["--leagues", args.leagues, "--from", str(args.start), "--to", str(args.end)]


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--leagues", default="england-premier-league")
    parser.add_argument("--from", dest="start", type=date.fromisoformat, default="2022-07-01")
    parser.add_argument("--to", dest="end", type=date.fromisoformat, default="2023-06-30")
    args = parser.parse_args(argv)
    base = base_settings()
    window = window_args(args)
    rows = read_csv(sorted(DATA.glob("*.csv")), "skip", ReplayCounts())
    filters = Filters(leagues=league_list(args.leagues), start=args.start, end=args.end)
    facts = sum(event.kind != "warm_up" for event in fact_timeline(rows, filters))
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            figures = await one_run(base, mode, window, facts)
            results[mode].append(figures)
            shown = " ".join(f"{k}={v:.1f}" for k, v in figures.items())
            print(f"RUN round={round_} mode={mode} facts={facts} {shown}", flush=True)
    medians = {
        mode: statistics.median(r["events_per_s"] for r in runs) for mode, runs in results.items()
    }
    print(
        "BACKFILL_E2E "
        + " ".join(f"{mode}_events_per_s={value:.1f}" for mode, value in medians.items())
        + f" ratio={medians['backfill'] / medians['plain']:.2f} facts={facts} rounds={args.rounds}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
