"""``tipstream replay``: backfill history through the real topics, in event-time order.

A match's features are an event at its kickoff; its result an event ``RESULT_DELAY`` later
(the final whistle). Replaying sorts all events on that time line, so a match's result comes
after its own features and a later match's features come after the earlier results they were
built from. Publishing is idempotent (same keys and bytes, deterministic ids downstream) and
resumable: after every acknowledged chunk the position is checkpointed in PostgreSQL under a
replay id derived from the inputs, and ``--resume`` continues after it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from models.features import FeatureBuilder, result_event
from schemas.codec import InvalidEvent, decode, encode
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import FootballRow, RowError, parse_file
from streams.db import connect
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics

log = get_logger(__name__)

RESULT_DELAY = timedelta(minutes=115)
"""Kickoff to final whistle: 90 minutes, half-time and stoppage."""
CHUNK = 500
"""Events per acknowledged chunk: the checkpoint granularity of ``--resume``."""

Kind = Literal["features", "result"]


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """One event on the replay time line."""

    at: datetime
    kind: Kind
    record: MatchFeatures | MatchResult

    @property
    def key(self) -> str:
        return self.record.match_id


@dataclass
class ReplayCounts:
    """The figures of the closing ``REPLAY`` line."""

    rows: int = 0
    valid: int = 0
    rejected: int = 0
    published: int = 0

    def line(self) -> str:
        return (f"REPLAY rows={self.rows} valid={self.valid} rejected={self.rejected} "
                f"published={self.published}")


@dataclass(frozen=True)
class Filters:
    """Which matches to replay."""

    leagues: frozenset[str] = frozenset()
    start: date | None = None
    end: date | None = None

    def keep(self, league: str, kickoff: datetime) -> bool:
        return ((not self.leagues or league in self.leagues)
                and (self.start is None or kickoff.date() >= self.start)
                and (self.end is None or kickoff.date() <= self.end))


def timeline(rows: Sequence[FootballRow], filters: Filters = Filters()) -> list[TimedEvent]:
    """Every event of the rows in event-time order; features built from earlier results only.

    All rows feed the ratings (history before ``--from`` still shapes the features); only
    matches the filters keep are on the returned time line.
    """
    marks: list[tuple[datetime, int, int, FootballRow]] = []
    for index, row in enumerate(rows):
        # At equal times a result (order 0) is known before features (order 1) are built.
        marks.append((row.kickoff, 1, index, row))
        marks.append((row.kickoff + RESULT_DELAY, 0, index, row))
    marks.sort(key=lambda mark: (mark[0], mark[1], mark[2]))
    builder = FeatureBuilder()
    events = []
    for at, order, _, row in marks:
        kept = filters.keep(row.league, row.kickoff)
        if order == 1:
            features = builder.features_for(row)
            if kept:
                events.append(TimedEvent(at, "features", features))
        else:
            builder.learn_result(row)
            if kept:
                events.append(TimedEvent(at, "result", result_event(row)))
    return events


def read_csv(paths: Sequence[Path], on_error: str, counts: ReplayCounts) -> list[FootballRow]:
    """Rows of the files; bad rows reported with file and line, then skipped or fatal."""
    rows: list[FootballRow] = []
    for path in paths:
        for item in parse_file(path):
            counts.rows += 1
            if isinstance(item, RowError):
                counts.rejected += 1
                log.warning("bad row", file=item.path, line=item.line, field=item.field,
                            value=item.value, rule=item.rule)
                print(f"tipstream replay: {item}", file=sys.stderr)
                if on_error == "stop":
                    raise SystemExit(f"tipstream replay: stopped at the first bad row ({item})")
                continue
            counts.valid += 1
            rows.append(item)
    return rows


async def read_database(settings: Settings, filters: Filters, counts: ReplayCounts) -> list[TimedEvent]:
    """Events stored by the reconciler, re-validated, on the same time line."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            feature_rows = await conn.fetch("SELECT payload::text FROM match_features")
            result_rows = await conn.fetch("SELECT payload::text FROM results")
    finally:
        await pool.close()
    events: list[TimedEvent] = []
    for kind, rows in (("features", feature_rows), ("result", result_rows)):
        for row in rows:
            counts.rows += 1
            try:
                record: MatchFeatures | MatchResult = decode(
                    row[0].encode(), MatchFeatures if kind == "features" else MatchResult)
            except InvalidEvent as error:
                counts.rejected += 1
                log.warning("bad stored event", kind=kind, error=str(error))
                continue
            counts.valid += 1
            if filters.keep(record.league, record.kickoff):
                at = record.kickoff + (RESULT_DELAY if kind == "result" else timedelta(0))
                events.append(TimedEvent(at, kind, record))  # type: ignore[arg-type]
    events.sort(key=lambda e: (e.at, 0 if e.kind == "result" else 1, e.key))
    return events


def replay_id(sources: Sequence[str], filters: Filters) -> str:
    """Stable id of a replay's inputs: the same command resumes the same checkpoint."""
    text = "|".join([*sources, ",".join(sorted(filters.leagues)), str(filters.start),
                     str(filters.end)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pacer:
    """Sleeps between events: a fixed rate, a time compression of event time, or not at all."""

    def __init__(self, rate: float | None, speed: float | None) -> None:
        self.rate, self.speed = rate, speed
        self.started = time.monotonic()
        self.first_at: datetime | None = None
        self.sent = 0

    async def wait(self, event: TimedEvent) -> None:
        self.sent += 1
        if self.rate:
            due = self.started + self.sent / self.rate
        elif self.speed:
            self.first_at = self.first_at or event.at
            due = self.started + (event.at - self.first_at).total_seconds() / self.speed
        else:
            return
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class Drain:
    """Waits until the workers have processed and committed everything published so far.

    Used by ``--sync``: in reality Saturday's results are learned before Tuesday's predictions;
    a backfill at full speed would score every match before learning from any result. Syncing
    once per match day restores that order at a cost of about one commit interval per day.
    """

    def __init__(self, settings: Settings) -> None:
        topics = Topics.from_settings(settings)
        self.group = settings.app_id
        self.topics = [topics.features, topics.results, topics.predictions, topics.model_feed]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                         group_id=None, enable_auto_commit=False)
        self.waits = 0
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        described = await self.admin.describe_topics(self.topics)
        self.partitions = [TopicPartition(d["topic"], p["partition"])
                           for d in described for p in d["partitions"]]

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def wait(self, timeout: float = 300.0) -> None:
        """Return once the group's committed offsets reach the end of every topic it reads."""
        self.waits += 1
        deadline = time.monotonic() + timeout
        partitions = self.partitions
        while time.monotonic() < deadline:
            ends = await self.consumer.end_offsets(partitions)
            committed = await self.admin.list_consumer_group_offsets(self.group)
            behind = [tp for tp in partitions if ends[tp] > 0 and (
                tp not in committed or committed[tp].offset < ends[tp])]
            if not behind:
                return
            await asyncio.sleep(0.02)
        raise SystemExit(f"tipstream replay: workers of {self.group!r} did not catch up within "
                         f"{timeout:.0f} s; is a worker running?")


def sync_points(events: Sequence[TimedEvent]) -> set[int]:
    """Positions before which ``--sync`` waits: the first features of each later match day
    after results were published."""
    points: set[int] = set()
    results_since = False
    synced_day: date | None = None
    for position, event in enumerate(events):
        if event.kind == "result":
            results_since = True
        elif results_since and event.at.date() != synced_day:
            points.add(position)
            synced_day, results_since = event.at.date(), False
    return points


async def publish(
    settings: Settings, events: Sequence[TimedEvent], *, start: int, replay: str,
    pacer: Pacer, counts: ReplayCounts, progress: bool, drain: Drain | None = None,
) -> None:
    """Publish events from ``start``; checkpoint after every acknowledged chunk."""
    topics = Topics.from_settings(settings)
    barriers = sync_points(events) if drain is not None else set()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
        linger_ms=5, max_batch_size=256 * 1024,
    )
    pool = await connect(settings.database_url, max_size=1)
    await producer.start()
    bar = tqdm(total=len(events), initial=start, unit="ev", disable=not progress,
               desc="replay", dynamic_ncols=True)
    try:
        pending = []
        for position in range(start, len(events)):
            event = events[position]
            if position in barriers and drain is not None:
                await _acknowledge(pending, counts, bar)
                pending = []
                await drain.wait()
            await pacer.wait(event)
            topic = topics.features if event.kind == "features" else topics.results
            pending.append(await producer.send(topic, encode(event.record),
                                               key=event.key.encode()))
            if len(pending) >= CHUNK or position == len(events) - 1:
                await _acknowledge(pending, counts, bar)
                pending = []
                await _checkpoint(pool, replay, position)
                if not progress and counts.published % (CHUNK * 20) == 0:
                    log.info("replay progress", published=counts.published,
                             position=position + 1, total=len(events))
    finally:
        bar.close()
        await producer.stop()
        await pool.close()


async def _acknowledge(pending: list[Any], counts: ReplayCounts, bar: Any) -> None:
    """Wait until the broker has every pending event."""
    if pending:
        await asyncio.gather(*pending)
        counts.published += len(pending)
        bar.update(len(pending))


async def _checkpoint(pool: Any, replay: str, position: int) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO replay_checkpoints (replay_id, position) VALUES ($1, $2)
               ON CONFLICT (replay_id) DO UPDATE SET position = EXCLUDED.position,
                                                     updated_at = now()""",
            replay, position,
        )


async def resume_position(settings: Settings, replay: str) -> int:
    """Index of the first event not yet acknowledged by a previous run of this replay."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM replay_checkpoints WHERE replay_id = $1", replay)
    finally:
        await pool.close()
    return 0 if position is None else int(position) + 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="publish historical matches through the topics in event-time order")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", type=Path, metavar="CSV",
                        help="football-data.co.uk-style CSV files")
    source.add_argument("--from-db", action="store_true",
                        help="re-publish the features and results stored in PostgreSQL")
    parser.add_argument("--leagues", default="", help="comma-separated league ids to keep")
    parser.add_argument("--from", dest="start", type=date.fromisoformat, help="first kickoff date")
    parser.add_argument("--to", dest="end", type=date.fromisoformat, help="last kickoff date")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second")
    pace.add_argument("--speed", type=float, help="times real time (event time compression)")
    parser.add_argument("--sync", action="store_true",
                        help="before each new match day, wait until the workers have processed "
                        "everything (results learned before the next predictions)")
    parser.add_argument("--dry-run", action="store_true", help="validate and count, publish nothing")
    parser.add_argument("--resume", action="store_true",
                        help="continue after the last acknowledged event of the same replay")
    parser.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                        help="what a bad row does (default: report it and skip it)")
    parser.add_argument("--progress", choices=("auto", "bar", "log"), default="auto")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    counts = ReplayCounts()
    filters = Filters(
        leagues=frozenset(x for x in args.leagues.split(",") if x), start=args.start, end=args.end)
    try:
        code = asyncio.run(run(args, settings, filters, counts))
    finally:
        print(counts.line(), flush=True)
    return code


async def run(args: argparse.Namespace, settings: Settings, filters: Filters,
              counts: ReplayCounts) -> int:
    """The replay command: read, order, then publish (or only count, on a dry run)."""
    if args.from_db:
        events = await read_database(settings, filters, counts)
        sources = ["db"]
    else:
        missing = [str(p) for p in args.data if not p.is_file()]
        if missing:
            raise SystemExit(f"tipstream replay: no such file: {', '.join(missing)}")
        rows = read_csv(args.data, args.on_error, counts)
        events = timeline(rows, filters)
        sources = [str(p.resolve()) for p in args.data]
    if args.dry_run:
        log.info("dry run: nothing published", events=len(events))
        return 0
    replay = replay_id(sources, filters)
    start = await resume_position(settings, replay) if args.resume else 0
    progress = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    log.info("replay starting", replay_id=replay, events=len(events), start=start,
             started_at=datetime.now(UTC).isoformat())
    drain = Drain(settings) if args.sync else None
    if drain is not None:
        await drain.start()
    try:
        await publish(settings, events, start=start, replay=replay,
                      pacer=Pacer(args.rate, args.speed), counts=counts, progress=progress,
                      drain=drain)
    finally:
        if drain is not None:
            await drain.stop()
    return 0
