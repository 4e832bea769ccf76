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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import structlog

from agents.dead_letters import dead_letter
from agents.features_rules import (
    Idleness,
    LeagueBook,
    apply_input,
    decode_book,
    encode_book,
    event_time,
    league_input,
    router_sources,
    source_of,
)
from agents.loop import run_batches
from agents.runtime import AgentRuntime, Output
from schemas.events import DeadLetter, Fixture, LeagueInput, MatchResult, ValidationIssue

log = structlog.get_logger(__name__)

AGENT = "features"
ROUTER = "league-router"
TABLE = "league-books"


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
            lambda events: features_batch(runtime, books, events, idle=idle),
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
    for event in events:
        record_type = Fixture if event.message.topic == topics.fixtures else MatchResult
        record = runtime.decode(event.message, record_type, ROUTER)
        if isinstance(record, DeadLetter):
            letters.append(record)
            continue
        assert isinstance(record, Fixture | MatchResult)
        at = event_time(getattr(event.message, "headers", None), now=now)
        if isinstance(at, ValidationIssue):
            refused.append(dead_letter(event.message, at, ROUTER))
            continue
        source = source_of(isinstance(record, Fixture), event.message.partition)
        outputs.append((topics.league_inputs, record.league, league_input(record, at, source)))
    await runtime.publish_all(outputs)
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
) -> None:
    """Apply a batch of routed facts to their leagues' books; publish the features, then store
    the changed books. ``idle``: when a silent router partition stops holding a league back
    (default: the settings' idle time, silence counted from the first fact)."""
    now = now or datetime.now(UTC)
    topics = runtime.topics
    sources = router_sources(runtime.settings.partitions)
    if idle is None:
        idle = Idleness(after=timedelta(seconds=runtime.settings.features_idle_seconds))
    loaded: dict[str, LeagueBook] = {}
    changed: set[str] = set()
    outputs: list[Output] = []
    letters: list[DeadLetter] = []
    for event in events:
        item = runtime.decode(event.message, LeagueInput, AGENT)
        if isinstance(item, DeadLetter):
            letters.append(item)
            continue
        league = item.league
        book = loaded.get(league)
        if book is None:
            stored = books.get(league.encode())
            book = loaded[league] = (
                decode_book(stored) if stored is not None else LeagueBook.new(league)
            )
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
    await runtime.publish_all(outputs)
    await runtime.publish_dead_letters(letters)
    for league in changed:
        books[league.encode()] = encode_book(loaded[league])
