"""Features agent: producers' fixtures and results in, the service's own match features out.

Two Faust agents. The **league router** reads ``fixtures`` and ``match-results`` (keyed by match
id), validates each fact and republishes it on ``league-inputs`` keyed by league, so every fact
of a league lands in one partition, in the order the router published it. The **features
agent** reads ``league-inputs``: each league's :class:`agents.features_rules.LeagueBook` lives
in the changelog-backed table ``league-books`` (keyed by league, routed by the same partitioner
as its input, so the partition that owns a league's inputs owns its book: one owner per league,
restored from the changelog after a restart or a rebalance). It applies every result and turns
each fixture into the ``match-features`` event the scorer and reconciler consume.

Effects per batch, in this order: features (and dead letters) published and acknowledged, the
books the batch changed written to the table, then the offsets. A crash replays the batch on
the books as they were; a re-delivered fixture gives byte-identical features (the scorer and
reconciler already take the same features twice as one).

Between batches the worker keeps each book it stored, decoded (:class:`KeptBooks`): decoding a
league's book is ~2 ms, and the kept book keeps its played states
(:class:`agents.features_rules.PlayedState`).

A backfill (``tipstream replay --backfill``, docs/BACKFILL.md) adds ticks: the router forwards
each input partition's latest tick to every ``league-inputs`` partition; the features agent
raises its partition's marks (:class:`agents.features_rules.BackfillMarks`, stored in the same
table under the partition's own key, before the ack) with the backfill's facts and ticks,
releases the held fixtures the marks have passed, in any league of the partition, and forwards
its mark to every ``match-features`` partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import msgspec
import structlog

from agents import probes
from agents.backfill_rules import marks_key
from agents.dead_letters import dead_letter
from agents.features_rules import (
    BackfillMarks,
    Idleness,
    LeagueBook,
    apply_input,
    decode_book,
    decode_marks,
    encode_book,
    encode_marks,
    event_time,
    is_book_key,
    league_input,
    release_held,
    router_sources,
    source_of,
)
from agents.loop import run_batches
from agents.runtime import AgentRuntime, Output
from agents.tick_rules import backfill_of, split_ticks
from agents.ticks import latest_ticks
from schemas.events import (
    DeadLetter,
    Fixture,
    LeagueInput,
    MatchFeatures,
    MatchResult,
    Tick,
    ValidationIssue,
)

log = structlog.get_logger(__name__)

AGENT = "features"
ROUTER = "league-router"
TABLE = "league-books"


class KeptBooks:
    """The books this worker stored last, decoded, with the bytes it stored.

    A book is decoded from the table only when its record is not the one kept (recovered
    from the changelog, written by another worker before a rebalance). A batch takes its
    books out and puts back only those it stored, so a batch that fails half-way leaves
    nothing half-applied behind."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[bytes, LeagueBook]] = {}

    def take(self, league: str, stored: bytes | None) -> LeagueBook:
        kept = self._books.pop(league, None)
        if stored is None:
            return LeagueBook.new(league)
        if kept is not None and kept[0] == stored:
            return kept[1]
        return decode_book(stored)

    def keep(self, league: str, stored: bytes, book: LeagueBook) -> None:
        self._books[league] = (stored, book)


def register(app: faust.App, runtime: AgentRuntime) -> None:
    """Declare the league router, the features agent and the league-book table on ``app``."""
    topics = runtime.topics
    books = app.Table(
        TABLE,
        partitions=runtime.settings.partitions,
        # Bytes in, bytes out (see agents/reconciler.py): otherwise Faust reads the changelog
        # back as JSON and recovery silently loses every book.
        key_type=bytes,
        value_type=bytes,
        # Route changelog records by key, like the router's league-keyed records: a league's
        # book is in the changelog partition numbered as its input partition.
        use_partitioner=True,
    )
    facts = app.topic(topics.fixtures, topics.results, key_serializer="raw", value_serializer="raw")
    inputs = app.topic(topics.league_inputs, key_serializer="raw", value_serializer="raw")
    kept = KeptBooks()

    @app.agent(facts, name=ROUTER)
    async def league_router(stream: Any) -> None:
        await run_batches(stream, runtime, ROUTER, lambda events: route_batch(runtime, events))

    @app.agent(inputs, name=AGENT)
    async def features(stream: Any) -> None:
        idle = Idleness(
            after=timedelta(seconds=runtime.settings.features_idle_seconds),
            since=datetime.now(UTC),
        )
        await run_batches(
            stream,
            runtime,
            AGENT,
            lambda events: features_batch(runtime, books, events, idle=idle, kept=kept),
        )


async def route_batch(
    runtime: AgentRuntime, events: Sequence[Any], *, now: datetime | None = None
) -> None:
    """Re-key a batch of fixtures and results by league, in the order they were taken, each
    with its event time.

    Invalid facts are dead-lettered here (results by the reconciler, their owner), so the
    features agent only ever sees valid ones. A fact with an unusable event-time header is
    dead-lettered by the router whatever its topic (the reconciler still takes such a result:
    only the league's ratings miss it, and the dead letter says so)."""
    now = now or datetime.now(UTC)
    topics = runtime.topics
    outputs: list[Output] = []
    letters: list[DeadLetter] = []
    refused: list[DeadLetter] = []
    facts, ticks = split_ticks(events)
    for event in facts:
        record_type = Fixture if event.message.topic == topics.fixtures else MatchResult
        record = runtime.decode(event.message, record_type, ROUTER)
        if isinstance(record, DeadLetter):
            letters.append(record)
            continue
        assert isinstance(record, Fixture | MatchResult)
        headers = getattr(event.message, "headers", None)
        at = event_time(headers, now=now)
        if isinstance(at, ValidationIssue):
            refused.append(dead_letter(event.message, at, ROUTER))
            continue
        backfill = backfill_of(headers)
        if isinstance(backfill, ValidationIssue):
            refused.append(dead_letter(event.message, backfill, ROUTER))
            continue
        source = source_of(isinstance(record, Fixture), event.message.partition)
        routed = league_input(record, at, source, backfill=backfill)
        outputs.append((topics.league_inputs, record.league, routed))
    await runtime.publish_all(outputs)
    # After the facts they follow: a tick says nothing before it is still to come.
    forwarded = [
        msgspec.structs.replace(tick, source=source_of(topic == topics.fixtures, partition))
        for topic, partition, tick in latest_ticks(runtime, ROUTER, ticks)
    ]
    await runtime.publish_ticks(topics.league_inputs, forwarded)
    await runtime.publish_dead_letters(letters)
    await runtime.publish_dead_letters(refused, invalid=False)
    runtime.counters["routed"] += len(outputs)


async def features_batch(
    runtime: AgentRuntime,
    books: Any,
    events: Sequence[Any],
    *,
    now: datetime | None = None,
    idle: Idleness | None = None,
    kept: KeptBooks | None = None,
) -> None:
    """Apply a batch of routed facts to their leagues' books, release the held backfill
    fixtures the batch's facts and ticks let go; publish the features, then the ticks, then
    store the changed books (held fixtures with them, before the ack). ``idle``: when a
    silent router partition stops holding a league back (default: the settings' idle time,
    silence counted from the first fact); ``kept``: the worker's decoded books (default:
    decode each from the table)."""
    now = now or datetime.now(UTC)
    topics = runtime.topics
    sources = router_sources(runtime.settings.partitions)
    if idle is None:
        idle = Idleness(after=timedelta(seconds=runtime.settings.features_idle_seconds))
    kept = kept if kept is not None else KeptBooks()
    loaded: dict[str, LeagueBook] = {}
    partition_of: dict[str, int] = {}
    changed: set[str] = set()
    outputs: list[Output] = []
    letters: list[DeadLetter] = []
    facts, ticks = split_ticks(events)
    marks = PartitionMarks(runtime, books, sources)
    for_ticks: set[str] = set()  # books taken only for a tick to release their fixtures
    for event in facts:
        item = runtime.decode(event.message, LeagueInput, AGENT)
        if isinstance(item, DeadLetter):
            letters.append(item)
            continue
        league = item.league
        book = loaded.get(league)
        if book is None:
            book = loaded[league] = kept.take(league, books.get(league.encode()))
        partition_of[league] = event.message.partition
        outcome = apply_input(book, item, now=now, sources=sources, idle=idle)
        runtime.counters[f"features:{outcome.kind}"] += 1
        runtime.counters["features:published"] += len(outcome.features)
        if outcome.issue is not None:
            letters.append(dead_letter(event.message, outcome.issue, AGENT))
        if outcome.note is not None and not item.warm_up:
            log.warning(
                "result not learned", league=league, match_id=item.match_id, why=outcome.note
            )
        outputs.extend((topics.features, issued.match_id, issued) for issued in outcome.features)
        if outcome.changed:
            changed.add(league)
        if item.backfill is not None and item.source is not None and item.event_time is not None:
            marks.observe(event.message.partition, item.backfill, item.source, item.event_time)
    ticked = latest_ticks(runtime, AGENT, ticks)
    for _, partition, tick in ticked:
        # A tick without a source did not come through the router: refused as unknown.
        if not marks.observe(
            partition, tick.backfill, tick.source or "", tick.event_time, tick=True
        ):
            continue
        # A tick can release the fixtures of any league of its partition.
        for key in _book_keys(runtime, books, partition):
            league = key.decode()
            if league not in loaded:
                loaded[league] = kept.take(league, books.get(key))
                partition_of[league] = partition
                for_ticks.add(league)
    released = _release(loaded, partition_of, marks)
    runtime.counters["features:released"] += len(released)
    outputs.extend((topics.features, issued.match_id, issued) for issued in released)
    changed.update(issued.league for issued in released)
    await runtime.publish_all(outputs)
    if released:
        probes.reach("features.released")  # published, the books and marks not yet stored
    await runtime.publish_ticks(topics.features, _forwarded(ticked, marks))
    await runtime.publish_dead_letters(letters)
    for league, book in loaded.items():
        if league in changed:
            stored = books[league.encode()] = encode_book(book)
            kept.keep(league, stored, book)
        elif league in for_ticks:
            kept.keep(league, books[league.encode()], book)  # as stored: the tick released none
    marks.store()


class PartitionMarks:
    """The batch's view of its partitions' :class:`BackfillMarks`: read from the table on
    first use, stored back (before the ack) only when a fact or a tick raised one."""

    def __init__(self, runtime: AgentRuntime, books: Any, sources: frozenset[str]) -> None:
        self._runtime, self._books, self.sources = runtime, books, sources
        self._marks: dict[int, BackfillMarks] = {}
        self._raised: set[int] = set()
        # (partition, backfill) pairs of the batch: where held fixtures may be released.
        self.touched: set[tuple[int, str]] = set()

    def _of(self, partition: int) -> BackfillMarks:
        marks = self._marks.get(partition)
        if marks is None:
            key = _marks_key(self._runtime, partition)
            marks = self._marks[partition] = decode_marks(self._books.get(key))
        return marks

    def observe(
        self, partition: int, backfill: str, source: str, at: datetime, *, tick: bool = False
    ) -> bool:
        """A fact's or tick's mark; False for a tick of a source the router does not have
        (counted as refused and logged)."""
        self.touched.add((partition, backfill))
        if source not in self.sources:
            if tick:
                self._runtime.counters[f"ticks_refused:{AGENT}"] += 1
                log.warning("tick of an unknown source", source=source, partition=partition)
            return False
        if self._of(partition).observe(backfill, source, at, self.sources):
            self._raised.add(partition)
        return True

    def through(self, partition: int, backfill: str) -> datetime | None:
        return self._of(partition).through(backfill, self.sources)

    def store(self) -> None:
        for partition in self._raised:
            key = _marks_key(self._runtime, partition)
            self._books[key] = encode_marks(self._marks[partition])


_MARKS_KEYS: dict[tuple[int, int], bytes] = {}


def _marks_key(runtime: AgentRuntime, partition: int) -> bytes:
    """The table key of a partition's marks, found once per partition count."""
    where = (runtime.settings.partitions, partition)
    key = _MARKS_KEYS.get(where)
    if key is None:
        key = _MARKS_KEYS[where] = marks_key(partition, runtime.partition_for)
    return key


def _book_keys(runtime: AgentRuntime, books: Any, partition: int) -> list[bytes]:
    """The table keys of the league books of ``partition`` (a handful: one per league)."""
    return [k for k in books if is_book_key(k) and runtime.partition_for(k) == partition]


def _release(
    loaded: dict[str, LeagueBook], partition_of: dict[str, int], marks: PartitionMarks
) -> list[MatchFeatures]:
    """The held fixtures of the batch's backfills that their partition's mark now releases."""
    released: list[MatchFeatures] = []
    for partition, backfill in sorted(marks.touched):
        through = marks.through(partition, backfill)
        if through is None:
            continue
        for league, book in loaded.items():
            if partition_of[league] == partition:
                released.extend(release_held(book, backfill, through))
    return released


def _forwarded(ticked: list[tuple[str, int, Tick]], marks: PartitionMarks) -> list[Tick]:
    """The ticks the features agent forwards: per ticked partition and backfill, its mark
    once known (every fixture kicking off before it has been issued), as ``league-inputs:p``."""
    out = []
    for partition, backfill in sorted(
        {(partition, tick.backfill) for _, partition, tick in ticked}
    ):
        through = marks.through(partition, backfill)
        if through is not None:
            source = f"league-inputs:{partition}"
            out.append(Tick(event_time=through, backfill=backfill, source=source))
    return out
