"""Where a ``tipstream replay --sync`` match day's time goes, read back after a run.

Reads every record of one deployment's topics with its broker timestamp (the producers' clock,
all on this machine) and the database's evaluation log, and prints per sync point (a gap
between the last result of a match day and the first fixture after it) the hops of the chain
that ``Drain`` waits for::

    last result published -> its league-input (router) -> last model-feed item of the day
    (reconciler) -> the learner's next snapshot -> the replay's next fixture (the drain's
    commit wait) -> its features -> its first prediction (features agent, scorer)

and how stale the models were: for every counting prediction of a learning model, the results
known at its kickoff (final whistle at or before it) that the model had learned (per
``learned_evaluations``) but that the version it predicted with had not. Nothing is written.

    TIPSTREAM_TOPIC_PREFIX=demo-<run> TIPSTREAM_DATABASE_URL=.../tipstream_demo \\
        .venv/bin/python -m tests.bench.sync_hops [reports/demo/logs/worker-0.log]

With ``--barriers CSV...`` (and ``--leagues``, ``--from``, ``--to`` as the replay takes them)
it reads no topic and prints how often ``--sync`` waits on that window against its exact
barriers, one ``BARRIERS`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.backfill_rules import barriers
from models.features import RESULT_DELAY
from models.timeline import Filters, fact_timeline
from streams.cli.replay import ReplayCounts, league_list, read_csv, sync_points
from streams.db import connect
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics


@dataclass(frozen=True)
class Record:
    """One record as read back: its topic, broker timestamp (s) and decoded value."""

    topic: str
    at: float
    value: dict[str, object]


async def read_topics(settings: Settings, names: Sequence[str]) -> dict[str, list[Record]]:
    """Every record of ``names`` from the beginning to the current end, by topic, in time."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    out: dict[str, list[Record]] = defaultdict(list)
    try:
        admin = AIOKafkaAdminClient(**client_options(settings))
        await admin.start()
        try:
            described = await admin.describe_topics(list(names))
        finally:
            await admin.close()
        partitions = [
            TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        todo = {tp for tp in partitions if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
            for tp, messages in batch.items():
                for message in messages:
                    value = json.loads(message.value) if message.value else {}
                    out[tp.topic].append(Record(tp.topic, message.timestamp / 1000, value))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    for records in out.values():
        records.sort(key=lambda r: r.at)
    return out


def _match(value: dict[str, object]) -> str:
    """The match id of a fixture, result, league input, features, prediction or feed item."""
    for key in ("result", "fixture", "evaluation"):
        inner = value.get(key)
        if isinstance(inner, dict):
            return str(inner["match_id"])
    return str(value["match_id"])


@dataclass
class Hops:
    """One sync point's timestamps (s since the epoch); None where the chain had no record."""

    result: float
    league_input: float | None
    feed: float | None
    snapshot: float | None
    fixture: float
    features: float | None
    prediction: float | None


def sync_hops(topics: Topics, records: dict[str, list[Record]]) -> list[Hops]:
    """The hops of each gap between a run of results and the next fixture on the replay's
    own order (fixtures and results by broker time)."""
    facts = sorted(records[topics.fixtures] + records[topics.results], key=lambda r: r.at)
    first_at: dict[tuple[str, str], float] = {}
    for name in (topics.league_inputs, topics.features, topics.predictions):
        for record in records[name]:
            key = (name, _match(record.value))
            if name != topics.league_inputs or "result" in record.value:
                first_at.setdefault(key, record.at)
    feed = records[topics.model_feed]
    snapshots = records[topics.snapshots]
    hops: list[Hops] = []
    day_results: list[Record] = []
    for record in facts:
        if record.topic == topics.results:
            day_results.append(record)
            continue
        if not day_results:
            continue
        matches = {_match(r.value) for r in day_results}
        last = day_results[-1]
        feed_times = [f.at for f in feed if _match(f.value) in matches]
        feed_at = max(feed_times) if feed_times else None
        snap = next((s.at for s in snapshots if feed_at is not None and s.at >= feed_at), None)
        fixture = _match(record.value)
        hops.append(
            Hops(
                result=last.at,
                league_input=first_at.get((topics.league_inputs, _match(last.value))),
                feed=feed_at,
                snapshot=snap,
                fixture=record.at,
                features=first_at.get((topics.features, fixture)),
                prediction=first_at.get((topics.predictions, fixture)),
            )
        )
        day_results = []
    return hops


def _ms(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else (later - earlier) * 1000


def swaps(log: Path) -> list[float]:
    """When the scorer swapped models in (a worker's JSON log), s since the epoch."""
    times = []
    for line in log.read_text().splitlines():
        if '"models swapped in"' in line:
            stamp = json.loads(line)["timestamp"].replace("Z", "+00:00")
            times.append(datetime.fromisoformat(stamp).timestamp())
    return sorted(times)


def reload_lags(snapshots: Sequence[Record], swapped: Sequence[float]) -> list[float | None]:
    """Per snapshot record, the time until the scorer's next swap (the registry reload)."""
    return [_ms(next((t for t in swapped if t >= s.at), None), s.at) for s in snapshots]


def line(name: str, values: Sequence[float | None]) -> str:
    """Count, median, p90 and mean of one hop, in ms."""
    kept = sorted(v for v in values if v is not None)
    if not kept:
        return f"{name:42s} n=0"
    p90 = kept[min(len(kept) - 1, int(0.9 * len(kept)))]
    return (
        f"{name:42s} n={len(kept):4d} median={statistics.median(kept):8.1f} "
        f"p90={p90:8.1f} mean={statistics.fmean(kept):8.1f} ms"
    )


def summarise(hops: Sequence[Hops]) -> list[str]:
    """Median, p90 and mean of each hop over the sync points, in ms, one line each."""
    rows = {
        "result -> league-input (router)": [_ms(h.league_input, h.result) for h in hops],
        "result -> last model-feed (reconciler)": [_ms(h.feed, h.result) for h in hops],
        "last model-feed -> snapshot (learner)": [_ms(h.snapshot, h.feed) for h in hops],
        "snapshot -> next fixture (drain)": [
            _ms(h.fixture, h.snapshot) if h.snapshot and h.snapshot < h.fixture else None
            for h in hops
        ],
        "last feed -> next fixture (drain)": [_ms(h.fixture, h.feed) for h in hops],
        "result -> next fixture (sync gap)": [_ms(h.fixture, h.result) for h in hops],
        "fixture -> features (router+features)": [_ms(h.features, h.fixture) for h in hops],
        "features -> prediction (scorer)": [_ms(h.prediction, h.features) for h in hops],
    }
    return [f"sync points: {len(hops)}"] + [line(n, v) for n, v in rows.items()]


STALENESS_SQL = """
WITH counting AS (
    SELECT e.match_id, e.model_id, e.model_version, e.kickoff
    FROM evaluations e JOIN models m ON m.model_id = e.model_id
    WHERE e.superseded_by IS NULL
      AND e.model_id IN (SELECT DISTINCT model_id FROM learned_evaluations)
)
SELECT c.model_id,
       count(*) AS predictions,
       count(*) FILTER (WHERE missing.n > 0) AS stale,
       coalesce(sum(missing.n), 0) AS missing_results,
       count(*) FILTER (WHERE leaked.n > 0) AS leaked
FROM counting c
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM learned_evaluations l JOIN results r ON r.match_id = l.match_id
    WHERE l.model_id = c.model_id AND l.learned_after_version >= c.model_version
      AND r.kickoff + $1::interval <= c.kickoff
) missing
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM learned_evaluations l JOIN results r ON r.match_id = l.match_id
    WHERE l.model_id = c.model_id AND l.learned_after_version < c.model_version
      AND r.kickoff + $1::interval > c.kickoff
) leaked
GROUP BY c.model_id ORDER BY c.model_id
"""


async def staleness(settings: Settings) -> list[str]:
    """Per learning model: counting predictions, how many were made with a version missing a
    result known at kickoff (and how many such results in all), and how many with a version
    that had learned a result not yet known (must be 0)."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(STALENESS_SQL, RESULT_DELAY)
    finally:
        await pool.close()
    return [
        f"STALE model={r['model_id']} predictions={r['predictions']} stale={r['stale']} "
        f"missing_results={r['missing_results']} leaked={r['leaked']}"
        for r in rows
    ]


def barrier_counts(data: Sequence[Path], filters: Filters) -> str:
    """How many times ``--sync`` waits on a window (once per match day) against its exact
    barriers (every first fixture after a result: :func:`agents.backfill_rules.barriers`)."""
    rows = read_csv(data, "skip", ReplayCounts())
    events = [e for e in fact_timeline(rows, filters) if e.kind in ("fixture", "result")]
    timeline: list[tuple[Literal["fixture", "result"], datetime]] = [
        ("result" if e.kind == "result" else "fixture", e.at) for e in events
    ]
    kickoffs = {e.at for e in events if e.kind == "fixture"}
    return (
        f"BARRIERS facts={len(events)} sync_waits={len(sync_points(events))} "
        f"exact={len(barriers(timeline))} kickoff_times={len(kickoffs)}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worker_log", nargs="?", type=Path, help="a worker's JSON log")
    parser.add_argument(
        "--barriers",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="count a window's sync waits and exact barriers instead (reads no topic)",
    )
    parser.add_argument("--leagues", type=league_list, default=frozenset())
    parser.add_argument("--from", dest="start", type=date.fromisoformat)
    parser.add_argument("--to", dest="end", type=date.fromisoformat)
    return parser.parse_args(argv)


async def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.barriers:
        print(barrier_counts(args.barriers, Filters(args.leagues, args.start, args.end)))
        return 0
    settings = Settings.from_env()
    topics = Topics.from_settings(settings)
    names = [
        topics.fixtures,
        topics.results,
        topics.league_inputs,
        topics.features,
        topics.predictions,
        topics.model_feed,
        topics.snapshots,
    ]
    records = await read_topics(settings, names)
    facts = records[topics.fixtures] + records[topics.results]
    if facts:
        span = max(r.at for r in facts) - min(r.at for r in facts)
        started = datetime.fromtimestamp(min(r.at for r in facts), UTC)
        print(f"facts: {len(facts)} published over {span:.1f} s from {started:%H:%M:%S} UTC")
        print(f"replay rate: {len(facts) / max(span, 1e-9):.1f} events/s")
    print(f"snapshots: {len(records[topics.snapshots])}")
    for text in summarise(sync_hops(topics, records)):
        print(text)
    if args.worker_log:  # how long the scorer took to swap each snapshot in
        lags = reload_lags(records[topics.snapshots], swaps(args.worker_log))
        print(line("snapshot -> scorer swapped in (reload)", lags))
    for text in await staleness(settings):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
