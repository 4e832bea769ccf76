"""Reliability on the real broker and database: duplicates change nothing, bad input is kept.

The longer fault scenarios (kills, outages, rebalances) run in ``make chaos``
(``python -m tests.chaos``); these two run in ``make test``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import decode, encode
from schemas.events import DeadLetter, MatchFeatures, MatchResult
from streams.cli.replay import Drain
from streams.settings import Settings
from streams.topics import Topics
from tests.chaos import malformed
from tests.chaos.checker import Position, SentEvent, Verdict, check_dead_letters
from tests.chaos.harness import Outgoing
from tests.chaos.scenarios import metric_total, mix
from tests.integration.conftest import BASE, Worker, read_topic, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, count, events_between

pytestmark = pytest.mark.integration

MALFORMED = 1000


async def drained(settings: Settings) -> None:
    """Wait until the workers have processed and committed everything published so far."""
    drain = Drain(settings, timeout=180)
    await drain.start()
    try:
        await drain.wait()
    except SystemExit as stop:  # Drain's way of saying it timed out
        raise AssertionError(str(stop)) from None
    finally:
        await drain.stop()


async def send(settings: Settings, events: list[Outgoing]) -> list[SentEvent]:
    """Publish raw events in order; where the broker put each one."""
    producer = AIOKafkaProducer(
        bootstrap_servers=BASE.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=1_048_000,  # the huge malformed payloads (up to ~900 KB)
    )
    await producer.start()
    try:
        futures = [await producer.send(e.topic, e.value, key=e.key) for e in events]
        landed = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [
        SentEvent(Position(m.topic, m.partition, m.offset), e.key, e.value, e.malformed)
        for e, m in zip(events, landed, strict=True)
    ]


def valid(settings: Settings, start: str, end: str) -> tuple[list[Outgoing], int]:
    topics = Topics.from_settings(settings)
    events = events_between(start, end)
    out = [
        Outgoing(
            topics.features if e.kind == "features" else topics.results,
            e.key.encode(),
            encode(e.record),
        )
        for e in events
    ]
    return out, sum(1 for e in events if e.kind == "features")


async def database_state(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every row a replay can touch, without arrival times."""
    async with pool.acquire() as conn:
        return {
            "match_features": await conn.fetch(
                "SELECT match_id, payload FROM match_features ORDER BY match_id"
            ),
            "results": await conn.fetch(
                "SELECT match_id, home_goals, away_goals, outcome, revision, payload "
                "FROM results ORDER BY match_id"
            ),
            "predictions": await conn.fetch("SELECT * FROM predictions ORDER BY prediction_id"),
            "evaluations": await conn.fetch("SELECT * FROM evaluations ORDER BY evaluation_id"),
            "learned": await conn.fetch(
                "SELECT model_id, learned, state FROM learner_checkpoints ORDER BY model_id"
            ),
            "learned_evaluations": await conn.fetch(
                "SELECT * FROM learned_evaluations ORDER BY model_id, evaluation_id"
            ),
            "alerts": await conn.fetch("SELECT alert_id FROM alerts ORDER BY alert_id"),
        }


async def metrics(settings: Settings) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.web_port)
    writer.write(b"GET /metrics/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body.split(b"\r\n\r\n", 1)[-1].decode()


async def test_the_same_replay_twice_leaves_the_database_as_once(
    settings: Settings, start_worker: Callable[..., Worker], db: asyncpg.Pool
) -> None:
    """A replay published a second time adds no row, changes no row, evaluates nothing again,
    and teaches no model anything: learned counts and model states are those of one replay."""
    worker = start_worker()
    events, matches = valid(settings, "2017-08-01", "2017-09-30")
    await send(settings, events)
    await drained(settings)
    assert await count(db, "SELECT count(*) FROM evaluations") == matches * SEEDED_MODELS
    once = await database_state(db)
    assert [r["learned"] for r in once["learned"]] == [matches, matches]

    await send(settings, events)
    await drained(settings)
    twice = await database_state(db)
    for table, rows in once.items():
        assert twice[table] == rows, f"{table} changed after the second replay"
    assert await read_topic(Topics.from_settings(settings).dead_letters) == []
    assert worker.process is not None
    assert worker.process.poll() is None, "the worker stopped"


async def test_malformed_events_are_dead_lettered_once_with_their_bytes(
    settings: Settings, start_worker: Callable[..., Worker], db: asyncpg.Pool
) -> None:
    """1,000 malformed events of every kind mixed into a valid stream: each is on the
    dead-letter topic exactly once with its original bytes and key, its source position and a
    reason; no valid event is; every valid match is reconciled; the worker keeps running and
    counts the letters in its /metrics."""
    worker = start_worker()
    topics = Topics.from_settings(settings)
    events, matches = valid(settings, "2018-08-01", "2018-08-31")
    records = [
        decode(e.value, MatchFeatures if e.topic == topics.features else MatchResult)
        for e in events
    ]
    broken = malformed.generate(
        [r for r in records if isinstance(r, MatchFeatures)],
        [r for r in records if isinstance(r, MatchResult)],
        MALFORMED,
        seed=11,
        huge=2,
    )
    assert {b.kind for b in broken} == set(malformed.KINDS)
    bad = [
        Outgoing(
            topics.features if b.topic == "features" else topics.results, b.key, b.value, b.kind
        )
        for b in broken
    ]
    sent = await send(settings, mix(events, bad, random.Random(5)))
    await drained(settings)

    letters = [
        decode(m.value, DeadLetter, max_bytes=4_000_000)
        for m in await read_topic(topics.dead_letters, expect=MALFORMED)
    ]
    verdict = Verdict()
    check_dead_letters(sent, letters, verdict)
    assert verdict.problems == []
    assert verdict.deadlettered == verdict.malformed_sent == MALFORMED
    assert await count(db, "SELECT count(*) FROM evaluations") == matches * SEEDED_MODELS
    assert await count(db, "SELECT count(*) FROM match_features") == matches
    assert worker.process is not None
    assert worker.process.poll() is None, "the worker stopped"
    counted = await wait_for(
        lambda: _counted(settings), timeout=30, what=f"{MALFORMED} dead letters in /metrics"
    )
    assert counted == MALFORMED


async def _counted(settings: Settings) -> int | None:
    value = metric_total(await metrics(settings), "tipstream_dead_letters_total")
    return value if value == MALFORMED else None
