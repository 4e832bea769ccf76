"""``tipstream replay``: backfill history through the real topics, in event-time order.

A replay publishes what a live producer does, raw facts: a match's fixture just before its
kickoff (``FIXTURE_LEAD``) and its result ``RESULT_DELAY`` after it (the final whistle), each
with its event time in the ``tipstream-event-time`` header, so the service's features agent
computes the features and the reconciler knows which predictions were made before kickoff in
the history's own time. Replaying sorts all events on that time line, so a match's result
comes after its own fixture and a later fixture after the earlier results. Publishing is
idempotent (same keys and bytes, deterministic ids downstream) and resumable: after every
acknowledged chunk the position is checkpointed in PostgreSQL under a replay id derived from
the exact events, and ``--resume`` continues after it.

``--backfill`` (docs/BACKFILL.md) publishes at full speed with no waits, stamps every fact
with the replay id (``tipstream-backfill``) and, after every acknowledged chunk, sends a tick
(:class:`schemas.events.Tick`) with the chunk's last event time (the last chunk's just past
it, :data:`CLOSING_STEP`) to every partition of ``fixtures`` and ``match-results``: the
features agent holds each fixture until every partition has passed its kickoff, so it is issued
once, as of its kickoff, without any sync.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from agents import reconciler_store
from agents.features_rules import EVENT_TIME_HEADER
from agents.tick_rules import BACKFILL_HEADER, TICK_HEADERS
from models.features import RESULT_DELAY, result_event
from models.timeline import Filters, TimedEvent, fact_timeline
from schemas.codec import InvalidEvent, decode, encode
from schemas.events import Fixture, LeagueInput, MatchFeatures, MatchResult, Tick
from schemas.football_csv import FootballRow, RowError, parse_file
from streams.db import connect
from streams.kafka import client_options
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics, ensure_topics

log = get_logger(__name__)

CHUNK = 500
"""Default events per acknowledged chunk: the checkpoint granularity of ``--resume`` (one
PostgreSQL round trip per 500 events costs nothing next to publishing them)."""
PROGRESS_LOG_S = 10.0
"""Seconds between two progress log lines when there is no terminal for a bar."""
USAGE_EXIT = 2
"""Exit code of a command line the parser (or the data it names) refuses, as argparse's."""
_LEAGUE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
"""A league id as the CSV reader builds it: ``<country slug>-<league slug>``."""


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (a rate of -5 or nan would pace nothing or forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    parse.__name__ = f"whole number >= {minimum}"  # what argparse names in its message
    return parse


def league_list(text: str) -> frozenset[str]:
    """argparse type: comma-separated league ids (``england-premier-league,spain-laliga``);
    whether each exists is checked against the data once it is read."""
    leagues = [part.strip() for part in text.split(",") if part.strip()]
    bad = [league for league in leagues if not _LEAGUE_ID.match(league)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"not a league id: {', '.join(map(repr, bad))} (e.g. england-premier-league)"
        )
    return frozenset(leagues)


def unknown_leagues(wanted: Collection[str], known: Collection[str]) -> str | None:
    """The refusal of ``--leagues`` naming leagues the data does not have, with those it has;
    None when every wanted league is known. (An unknown id would replay nothing, silently.)"""
    missing = sorted(set(wanted) - set(known))
    if not missing:
        return None
    return (
        f"tipstream replay: unknown league {', '.join(missing)}; the data has "
        f"{', '.join(sorted(known)) or 'no leagues'}"
    )


def window_problem(start: date | None, end: date | None) -> str | None:
    """The refusal of a ``--from`` after ``--to`` (an empty window), or None."""
    if start is not None and end is not None and start > end:
        return f"tipstream replay: --from {start} is after --to {end}"
    return None


def backfill_problem(args: argparse.Namespace) -> str | None:
    """The refusal of ``--backfill`` with an option it contradicts, or None: a backfill goes
    at full speed without waiting for the workers, and only from CSV facts (``--from-db``
    re-drives features, which the features agent never sees)."""
    if not args.backfill:
        return None
    clashes = [
        option
        for option, given in (
            ("--sync", args.sync),
            ("--from-db", args.from_db),
            ("--rate", args.rate is not None),
            ("--speed", args.speed is not None),
        )
        if given
    ]
    if not clashes:
        return None
    return (
        f"tipstream replay: --backfill goes at full speed from CSV facts; drop {', '.join(clashes)}"
    )


def refuse(message: str) -> None:
    """Stop with a usage error: the message on stderr, exit code 2."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(USAGE_EXIT)


@dataclass
class ReplayCounts:
    """The figures of the closing ``REPLAY`` line."""

    rows: int = 0
    valid: int = 0
    rejected: int = 0
    published: int = 0
    warm_up: int = 0

    def line(self) -> str:
        return (
            f"REPLAY rows={self.rows} valid={self.valid} rejected={self.rejected} "
            f"published={self.published} warm_up={self.warm_up}"
        )


def read_csv(paths: Sequence[Path], on_error: str, counts: ReplayCounts) -> list[FootballRow]:
    """Rows of the files; each bad row reported with file and line, then skipped or fatal."""
    rows: list[FootballRow] = []
    seen: dict[str, FootballRow] = {}
    for path in paths:
        for item in parse_file(path):
            if isinstance(item, RowError) and item.line == 1:
                # The header: not a data row, and every row of the file is unusable without it.
                raise SystemExit(f"tipstream replay: {item} (the whole file is unusable)")
            counts.rows += 1
            error = item if isinstance(item, RowError) else _row_problem(item, seen)
            if error is not None:
                reject(error, on_error, counts)
                continue
            assert isinstance(item, FootballRow)
            seen[item.match_id] = item
            counts.valid += 1
            rows.append(item)
    return rows


def _row_problem(row: FootballRow, seen: dict[str, FootballRow]) -> RowError | None:
    """What the CSV parser cannot see: a duplicate match, or a rule of the event schema."""
    first = seen.get(row.match_id)
    if first is not None:
        return RowError(
            row.source,
            row.line,
            "match_id",
            row.match_id,
            f"duplicate of {first.source}:{first.line}",
        )
    try:
        decode(encode(result_event(row)), MatchResult)
    except (InvalidEvent, ValueError) as error:
        return RowError(row.source, row.line, "row", None, f"not a valid result event: {error}")
    return None


def reject(error: RowError | str, on_error: str, counts: ReplayCounts) -> None:
    """Report a bad row where a person sees it (stderr) and in the log; stop if asked to."""
    counts.rejected += 1
    log.warning("bad row", where=str(error))
    print(f"tipstream replay: bad row: {error}", file=sys.stderr, flush=True)
    if on_error == "stop":
        raise SystemExit(
            f"tipstream replay: stopped at the first bad row ({error}); nothing "
            "was published (--on-error skip reports bad rows and goes on)"
        )


async def read_database(
    settings: Settings, filters: Filters, on_error: str, counts: ReplayCounts
) -> list[TimedEvent]:
    """Events stored by the reconciler, re-validated, on the same time line: each stored
    match's features as the service computed them (a re-drive through new models, not a
    backfill: the features agent already holds these matches) and its result."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            stored = await reconciler_store.stored_inputs(conn)
    finally:
        await pool.close()
    events: list[TimedEvent] = []
    leagues: set[str] = set()
    for kind, match_id, payload in stored:
        counts.rows += 1
        table = "match_features" if kind == "features" else "results"
        origin = f"{table}:{match_id}"
        try:
            record = (
                decode(payload.encode(), MatchFeatures)
                if kind == "features"
                else decode(payload.encode(), MatchResult)
            )
        except InvalidEvent as error:
            reject(f"{origin}: {error}", on_error, counts)
            continue
        counts.valid += 1
        leagues.add(record.league)
        if filters.keep(record.league, record.kickoff):
            if isinstance(record, MatchResult):
                events.append(TimedEvent(record.kickoff + RESULT_DELAY, "result", record, origin))
            else:
                events.append(TimedEvent(record.kickoff, "features", record, origin))
    problem = unknown_leagues(filters.leagues, leagues)
    if problem is not None:
        refuse(problem)
    events.sort(key=lambda event: event.sort_key)
    return events


_RECORD_TYPES: dict[str, type[MatchFeatures | Fixture | MatchResult | LeagueInput]] = {
    "features": MatchFeatures,
    "fixture": Fixture,
    "result": MatchResult,
    "warm_up": LeagueInput,
}


def encode_all(
    events: Sequence[TimedEvent], on_error: str, counts: ReplayCounts
) -> tuple[list[TimedEvent], list[bytes]]:
    """The wire bytes of every event, each checked by the decoder the workers use.

    A built event the workers would dead-letter is a bad row: both events of its match are
    dropped (a result without its fixture would only be orphaned).
    """
    payloads = [encode(event.record) for event in events]
    bad: set[str] = set()
    for event, payload in zip(events, payloads, strict=True):
        try:
            decode(payload, _RECORD_TYPES[event.kind])
        except InvalidEvent as error:
            if event.key not in bad:
                bad.add(event.key)
                counts.valid -= 1
                reject(f"{event.origin}: {event.kind} event invalid: {error}", on_error, counts)
    if not bad:
        return list(events), payloads
    kept = [(e, p) for e, p in zip(events, payloads, strict=True) if e.key not in bad]
    return [e for e, _ in kept], [p for _, p in kept]


def replay_id(prefix: str, events: Sequence[TimedEvent], payloads: Sequence[bytes]) -> str:
    """Id of exactly this sequence of events into this deployment.

    Derived from the bytes, not the command line: a checkpoint is only ever applied to the very
    events it counted, so an edited file or another filter starts a new replay.
    """
    digest = hashlib.sha256(prefix.encode())
    for event, payload in zip(events, payloads, strict=True):
        digest.update(f"\n{event.kind}\n{event.key}\n".encode())
        digest.update(payload)
    return digest.hexdigest()[:16]


class Pacer:
    """Sleeps between events: a fixed rate, a time compression of event time, or not at all.
    Warm-up history goes at full speed: it only prepares the window, which is paced."""

    def __init__(self, rate: float | None, speed: float | None) -> None:
        self.rate, self.speed = rate, speed
        self.started = time.monotonic()
        self.first_at: datetime | None = None
        self.sent = 0

    async def wait(self, event: TimedEvent) -> None:
        if event.kind == "warm_up":
            self.started = time.monotonic()
            return
        self.sent += 1
        if self.rate:
            due = self.started + (self.sent - 1) / self.rate
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
    once per match day restores that order at a cost of a few commit intervals per day.
    """

    def __init__(self, settings: Settings, timeout: float) -> None:
        topics = Topics.from_settings(settings)
        self.group = settings.group_id
        self.timeout = timeout
        # Every hop between a result and the next prediction: router -> league-inputs ->
        # features agent -> features -> scorer -> predictions -> reconciler -> model-feed ->
        # learner.
        self.topics = [
            topics.fixtures,
            topics.results,
            topics.league_inputs,
            topics.features,
            topics.predictions,
            topics.model_feed,
        ]
        self.admin = AIOKafkaAdminClient(**client_options(settings))
        self.consumer = AIOKafkaConsumer(
            **client_options(settings), group_id=None, enable_auto_commit=False
        )
        self.waits = 0
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        described = await self.admin.describe_topics(self.topics)
        self.partitions = [
            TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
        ]

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def wait(self) -> None:
        """Return once the group's committed offsets reach the end of every topic it reads."""
        self.waits += 1
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            # Committed offsets first, then the ends: a scorer commits its features only after
            # its predictions are on the broker, so anything produced in between moves an end
            # past a committed offset and this round does not count as caught up.
            committed = await self.admin.list_consumer_group_offsets(self.group)
            ends = await self.consumer.end_offsets(self.partitions)
            if all(
                ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp])
                for tp in self.partitions
            ):
                return
            await asyncio.sleep(0.02)
        raise SystemExit(
            f"tipstream replay: workers of {self.group!r} did not catch up within "
            f"{self.timeout:.0f} s; is a worker running?"
        )


def sync_points(events: Sequence[TimedEvent]) -> set[int]:
    """Positions before which ``--sync`` waits: the first fixture of each later match day
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


class Progress:
    """A bar with rate and ETA on a terminal; a structured log line every 10 s otherwise."""

    def __init__(self, total: int, start: int, bar: bool) -> None:
        self.total, self.position = total, start
        self.bar = (
            tqdm(total=total, initial=start, unit="ev", desc="replay", dynamic_ncols=True)
            if bar
            else None
        )
        self.started = self.last_log = time.monotonic()
        self.start = start

    def update(self, count: int) -> None:
        self.position += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_LOG_S:
            self.last_log = now
            rate = (self.position - self.start) / max(now - self.started, 1e-9)
            log.info(
                "replay progress",
                position=self.position,
                total=self.total,
                rate_per_s=round(rate, 1),
                eta_s=round((self.total - self.position) / rate, 1) if rate else None,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Plan:
    """What one run publishes: the events with their bytes, from where, and how."""

    replay: str
    events: Sequence[TimedEvent]
    payloads: Sequence[bytes]
    start: int
    checkpoint_every: int
    backfill: bool = False
    ticks: int = 0  # ticks sent (to every partition of both input topics), with --backfill


async def publish(
    settings: Settings,
    plan: Plan,
    *,
    pacer: Pacer,
    counts: ReplayCounts,
    progress: Progress,
    drain: Drain | None = None,
) -> None:
    """Publish events from ``plan.start``; checkpoint after every acknowledged chunk."""
    topics = Topics.from_settings(settings)
    barriers = sync_points(plan.events) if drain is not None else set()
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    pool = await connect(settings.database_url, max_size=1)
    await producer.start()
    marker = [(BACKFILL_HEADER, plan.replay.encode())] if plan.backfill else []
    try:
        pending: list[tuple[bool, Any]] = []  # (a warm-up input?, its delivery)
        last = len(plan.events) - 1
        for position in range(plan.start, len(plan.events)):
            event = plan.events[position]
            if position in barriers and drain is not None:
                await _acknowledge(pending, counts, progress)
                pending = []
                await drain.wait()
            await pacer.wait(event)
            delivery = await producer.send(
                _topic(topics, event),
                plan.payloads[position],
                key=_key(event).encode(),
                headers=[(EVENT_TIME_HEADER, event.at.isoformat().encode()), *marker],
            )
            pending.append((event.kind == "warm_up", delivery))
            if len(pending) >= plan.checkpoint_every or position == last:
                await _acknowledge(pending, counts, progress)
                pending = []
                if plan.backfill:
                    at = event.at + CLOSING_STEP if position == last else event.at
                    plan.ticks += await _tick(producer, topics, plan.replay, at)
                await _checkpoint(pool, plan.replay, position)
        if drain is not None:
            await drain.wait()  # --sync returns once the workers have processed everything
    finally:
        progress.close()
        await producer.stop()
        await pool.close()


CLOSING_STEP = timedelta(microseconds=1)
"""The closing tick goes this far past the last event: ticks are strict (nothing *before* them
is still to come), and once the replay is complete nothing at its last event is either, so
the marks downstream pass the last result's final whistle (the learner may take it)."""


async def _tick(producer: AIOKafkaProducer, topics: Topics, replay: str, at: datetime) -> int:
    """Tell every partition of both input topics that nothing before ``at`` is still to come
    (sent after the chunk was acknowledged, so after every fact it covers); how many ticks.

    Per chunk, not per barrier: a first version ticked at every match day's barrier and was
    17% slower end to end (1,836 barriers: 58,784 ticks for 10,010 facts)."""
    payload = encode(Tick(event_time=at, backfill=replay))
    deliveries = [
        await producer.send(topic, payload, partition=partition, headers=list(TICK_HEADERS))
        for topic in (topics.fixtures, topics.results)
        for partition in sorted(await producer.partitions_for(topic))
    ]
    await asyncio.gather(*deliveries)
    return len(deliveries)


def _topic(topics: Topics, event: TimedEvent) -> str:
    """Facts go where a producer sends them; warm-up history straight to the features agent's
    input (past the router and the reconciler: nothing of it is scored or evaluated)."""
    return {
        "fixture": topics.fixtures,
        "result": topics.results,
        "features": topics.features,
        "warm_up": topics.league_inputs,
    }[event.kind]


def _key(event: TimedEvent) -> str:
    """The match id; a warm-up input is keyed by league, as the router keys it."""
    if isinstance(event.record, LeagueInput):
        return event.record.league
    return event.key


async def _acknowledge(
    pending: list[tuple[bool, Any]], counts: ReplayCounts, progress: Progress
) -> None:
    """Wait until the broker has every pending event."""
    if pending:
        await asyncio.gather(*(delivery for _, delivery in pending))
        warm_up = sum(is_warm_up for is_warm_up, _ in pending)
        counts.warm_up += warm_up
        counts.published += len(pending) - warm_up
        progress.update(len(pending))


async def _checkpoint(pool: Any, replay: str, position: int) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO replay_checkpoints (replay_id, position) VALUES ($1, $2)
               ON CONFLICT (replay_id) DO UPDATE SET position = EXCLUDED.position,
                                                     updated_at = now()""",
            replay,
            position,
        )


async def resume_position(settings: Settings, replay: str) -> int | None:
    """Index of the first event not acknowledged by an earlier run of this replay, or None."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            position = await conn.fetchval(
                "SELECT position FROM replay_checkpoints WHERE replay_id = $1", replay
            )
    finally:
        await pool.close()
    return None if position is None else int(position) + 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="publish historical matches through the topics in event-time order"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", nargs="+", type=Path, metavar="CSV", help="football-data.co.uk-style CSV files"
    )
    source.add_argument(
        "--from-db",
        action="store_true",
        help="re-publish the features and results stored in PostgreSQL",
    )
    parser.add_argument(
        "--leagues",
        type=league_list,
        default=frozenset(),
        help="comma-separated league ids to keep (each must be in the data)",
    )
    parser.add_argument("--from", dest="start", type=date.fromisoformat, help="first kickoff date")
    parser.add_argument("--to", dest="end", type=date.fromisoformat, help="last kickoff date")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=positive_number, help="events per second (> 0)")
    pace.add_argument(
        "--speed", type=positive_number, help="times real time (event time compression, > 0)"
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="before each new match day and at the end, wait until the workers "
        "have processed everything (results learned before the next predictions)",
    )
    parser.add_argument(
        "--backfill",
        action="store_true",
        help="as-of-correct backfill at full speed: every fixture's features are held until "
        "all input partitions have passed its kickoff, then issued once (no sync waits; "
        "ticks after every chunk; docs/BACKFILL.md)",
    )
    parser.add_argument(
        "--sync-timeout",
        type=positive_number,
        default=300.0,
        help="longest wait for the workers at one sync point, in seconds",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and count, publish nothing"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last acknowledged event of the same replay",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=at_least(1),
        default=CHUNK,
        metavar="N",
        help=f"events per acknowledged chunk and checkpoint (default {CHUNK})",
    )
    parser.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="skip",
        help="what a bad row does (default: report it and skip it)",
    )
    parser.add_argument("--progress", choices=("auto", "bar", "log"), default="auto")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    problem = window_problem(args.start, args.end) or backfill_problem(args)
    if problem is not None:
        refuse(problem)
    counts = ReplayCounts()
    filters = Filters(leagues=args.leagues, start=args.start, end=args.end)
    try:
        code = asyncio.run(run(args, settings, filters, counts))
    finally:
        print(counts.line(), flush=True)
    return code


async def run(
    args: argparse.Namespace, settings: Settings, filters: Filters, counts: ReplayCounts
) -> int:
    """The replay command: read, order, validate, then publish (or only count, on a dry run)."""
    if args.from_db:
        events = await read_database(settings, filters, args.on_error, counts)
    else:
        missing = [str(p) for p in args.data if not p.is_file()]
        if missing:
            raise SystemExit(f"tipstream replay: no such file: {', '.join(missing)}")
        rows = read_csv(args.data, args.on_error, counts)
        problem = unknown_leagues(filters.leagues, {row.league for row in rows})
        if problem is not None:
            refuse(problem)
        events = fact_timeline(rows, filters)
    events, payloads = encode_all(events, args.on_error, counts)
    matches = len({event.key for event in events if event.kind != "warm_up"})
    warm_up = sum(event.kind == "warm_up" for event in events)
    if args.dry_run:
        log.info("dry run: nothing published", matches=matches, events=len(events), warm_up=warm_up)
        return 0
    replay = replay_id(settings.topic_prefix, events, payloads)
    start = 0
    if args.resume:
        resumed = await resume_position(settings, replay)
        if resumed is None:
            log.warning(
                "no checkpoint of this replay: starting at the first event", replay_id=replay
            )
        start = resumed or 0
    await ensure_topics(settings)  # broker auto-creation would get the partition counts wrong
    log.info(
        "replay starting",
        replay_id=replay,
        matches=matches,
        events=len(events),
        warm_up=warm_up,
        start=start,
    )
    drain = Drain(settings, args.sync_timeout) if args.sync else None
    if drain is not None:
        await drain.start()
    bar = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    plan = Plan(replay, events, payloads, start, args.checkpoint_every, backfill=args.backfill)
    try:
        await publish(
            settings,
            plan,
            pacer=Pacer(args.rate, args.speed),
            counts=counts,
            progress=Progress(len(events), start, bar),
            drain=drain,
        )
    finally:
        if drain is not None:
            await drain.stop()
    log.info(
        "replay finished",
        replay_id=replay,
        published=counts.published,
        sync_waits=drain.waits if drain else 0,
        ticks=plan.ticks,
    )
    return 0
