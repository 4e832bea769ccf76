"""A ledgers changelog written by an earlier release (JSON values) recovers after the upgrade.

The reconciler writes its ledgers compactly (``agents/reconciler_codec.py``); a worker that
starts on a changelog whose ledgers are JSON, as releases before it wrote them, reads them as
they are: every match is reconciled once from the recovered ledgers (none rebuilt from
PostgreSQL), and each ledger the results change is written back in the compact encoding.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.reconciler_codec import FORMAT_V1, decode_ledger
from streams.settings import Settings
from streams.topics import Topics
from streams.worker.output import KeyPartitioner
from tests.integration.conftest import BASE, Worker, read_topic
from tests.integration.test_pipeline import SEEDED_MODELS, count
from tests.integration.test_reliability import drained, send, valid
from tests.integration.test_table_store import counters

pytestmark = pytest.mark.integration


async def latest_ledgers(settings: Settings) -> dict[bytes, bytes]:
    """The ledgers changelog compacted: the last value of each live key."""
    topic = f"{settings.group_id}-ledgers-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=BASE.kafka_bootstrap, group_id=None)
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    latest[record.key] = record.value
    finally:
        await consumer.stop()
    return {key: value for key, value in latest.items() if value is not None}


async def test_json_ledgers_of_an_earlier_release_recover_and_reconcile_once(
    settings: Settings, start_worker: Callable[..., Worker], db: asyncpg.Pool
) -> None:
    """Features (and so predictions) of a month, a SIGTERM, every ledger rewritten in the
    changelog as the JSON an earlier release wrote, then the results: the restarted worker
    evaluates every match by every model once and rebuilds no ledger."""
    topics = Topics.from_settings(settings)
    events, matches = valid(settings, "2017-08-01", "2017-08-31")
    features = [e for e in events if e.topic == topics.features]
    results = [e for e in events if e.topic == topics.results]
    assert results

    worker = start_worker()
    await send(settings, features)
    await drained(settings)
    worker.stop()
    assert worker.process is not None
    assert worker.process.returncode == 0, worker.log_text()[-3000:]

    compact = await latest_ledgers(settings)
    assert len(compact) == matches
    assert all(value[0] == FORMAT_V1 for value in compact.values())
    producer = AIOKafkaProducer(bootstrap_servers=BASE.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        partition_of, every = KeyPartitioner(), list(range(settings.partitions))
        for key, value in compact.items():
            legacy = msgspec.json.encode(decode_ledger(value))
            await producer.send_and_wait(
                f"{settings.group_id}-ledgers-changelog",
                legacy,
                key=key,
                partition=partition_of(key, every, every),
            )
    finally:
        await producer.stop()
    assert all(v.startswith(b"{") for v in (await latest_ledgers(settings)).values())

    worker.start()
    await send(settings, results)
    await drained(settings)
    assert await count(db, "SELECT count(*) FROM evaluations") == matches * SEEDED_MODELS
    assert counters(settings).get("ledgers_rebuilt", 0) == 0
    assert await read_topic(topics.dead_letters) == []
    rewritten = await latest_ledgers(settings)
    assert rewritten, "every reconciled ledger retired: nothing left to check"
    assert all(value[0] == FORMAT_V1 for value in rewritten.values())
    assert worker.process.poll() is None, "the worker stopped"
