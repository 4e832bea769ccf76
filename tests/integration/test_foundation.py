"""The ground the pipeline stands on: the real broker, the real database, the topic registry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import decode
from schemas.events import MatchResult
from streams.db import bundled_migrations, create_database, drop_database, migrate
from streams.settings import Settings
from streams.topics import ALL_TOPICS, TopicMismatchError, Topics, ensure_topics
from tests.deployment import run_cli
from tests.integration.conftest import BASE, publish, read_topic

pytestmark = pytest.mark.integration


async def test_round_trip_through_the_broker(settings: Settings, producer) -> None:  # type: ignore[no-untyped-def]
    """A result published on the app's results topic comes back byte-for-byte decodable and
    equal, keyed by its match id."""
    topics = Topics.from_settings(settings)
    result = MatchResult(
        match_id=f"test:{uuid.uuid4().hex}",
        league="england-premier-league",
        kickoff=datetime(2024, 5, 19, 15, 0, tzinfo=UTC),
        home_goals=3,
        away_goals=1,
        outcome="H",
    )
    await publish(producer, topics.results, [(result.match_id, result)])
    messages = await read_topic(topics.results, expect=1)
    assert len(messages) == 1
    assert messages[0].key == result.match_id.encode()
    assert decode(messages[0].value, MatchResult) == result


async def test_topics_are_created_with_their_partitions() -> None:
    """ensure_topics creates every registry topic with its partition count, and is idempotent."""
    settings = BASE.replace(topic_prefix=f"test-{uuid.uuid4().hex[:8]}", partitions=3)
    created = await ensure_topics(settings)
    assert sorted(created) == sorted(Topics.from_settings(settings).name(s) for s in ALL_TOPICS)
    assert await ensure_topics(settings) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(created)
    finally:
        await admin.close()
    topics = Topics.from_settings(settings)
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    for spec in ALL_TOPICS:
        assert partitions[topics.name(spec)] == topics.partitions_of(spec)


async def test_existing_topics_that_differ_from_the_settings_are_refused() -> None:
    """Topics made with 2 partitions refuse a deployment that wants 3, naming each topic and
    both counts; a deployment asking for more replicas than a topic has still starts (a
    warning: a reassignment fixes it without downtime)."""
    settings = BASE.replace(topic_prefix=f"test-{uuid.uuid4().hex[:8]}", partitions=2)
    await ensure_topics(settings)
    topics = Topics.from_settings(settings)
    with pytest.raises(TopicMismatchError) as refused:
        await ensure_topics(settings.replace(partitions=3))
    assert f"{topics.features}: partitions is 2, the settings want 3" in str(refused.value)
    assert topics.snapshots not in str(refused.value)  # always 1 partition
    assert await ensure_topics(settings.replace(replication_factor=2)) == []


async def test_migrations_apply_on_empty_then_again(fresh_database: str) -> None:
    """On an empty database every migration applies; a second run applies none and changes
    nothing."""
    name = f"tipstream_empty_{uuid.uuid4().hex[:8]}"
    await create_database(BASE.database_url, name)
    try:
        conn = await asyncpg.connect(BASE.with_database(name).database_url)
        try:
            first = await migrate(conn)
            assert first == [m.version for m in bundled_migrations()]
            tables_before = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            assert await migrate(conn) == []
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                == tables_before
            )
            recorded = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in recorded] == first
        finally:
            await conn.close()
    finally:
        await drop_database(BASE.database_url, name)


async def test_a_topic_the_broker_refuses_to_create_is_one_clear_line() -> None:
    """Asking a one-broker development cluster for three replicas: the broker's refusal is
    reported per topic by ``tipstream topics create`` in one line (exit code 2), never
    reported as "topics created"."""
    settings = BASE.replace(topic_prefix=f"test-{uuid.uuid4().hex[:8]}", replication_factor=3)
    done = run_cli(settings, "topics", "create")
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("tipstream: could not create topics: ")
    assert "InvalidReplicationFactorError" in line
    assert "topics created" not in done.stdout
