"""The RocksDB table store on the real broker and database: a restarted worker keeps its ledgers.

``TIPSTREAM_TABLE_STORE=rocksdb`` (docs/DEPLOYMENT.md, "What a restart costs"): a worker that
stops holds every ledger on disk, each in the database of its changelog partition, with the
offset of the last changelog record it wrote; started again it reads nothing of the changelog
it already has, and every match is reconciled once, from the ledgers it kept.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings
from streams.topics import Topics
from streams.worker.app import table_data_dir
from streams.worker.output import KeyPartitioner
from tests.integration.conftest import BASE, Worker, read_topic
from tests.integration.test_pipeline import SEEDED_MODELS, count
from tests.integration.test_reliability import drained, send, valid

pytestmark = pytest.mark.integration

rocksdict = pytest.importorskip("rocksdict")
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps a partition's offset


def local_ledgers(settings: Settings) -> dict[int, tuple[list[bytes], int | None]]:
    """Per partition, the ledger keys of the stopped worker's RocksDB databases and the
    changelog offset they hold."""
    found: dict[int, tuple[list[bytes], int | None]] = {}
    for path in sorted(table_data_dir(settings).glob("v*/tables/ledgers-*.db")):
        partition = int(path.name.removeprefix("ledgers-").removesuffix(".db"))
        db = rocksdict.Rdict(
            str(path),
            options=rocksdict.Options(raw_mode=True),
            access_type=rocksdict.AccessType.read_only(),
        )
        try:
            every = list(db.keys())
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        keys = [k for k in every if k != OFFSET_KEY]
        found[partition] = (keys, None if offset is None else int(offset))
    return found


async def changelog_ends(settings: Settings) -> dict[int, int]:
    """The offset of the last record of each partition of the ledgers changelog."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BASE.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        topic = f"{settings.group_id}-ledgers-changelog"
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: end - 1 for tp, end in ends.items()}


def counters(settings: Settings) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/status/") as response:
        status: dict[str, dict[str, int]] = json.load(response)
    return status["counters"]


async def test_a_restarted_rocksdb_worker_keeps_its_ledgers_and_reconciles_once(
    settings: Settings,
    start_worker: Callable[..., Worker],
    db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    """Features (and so predictions) of two months, a SIGTERM, then the results: the stopped
    worker's databases hold every match's ledger in its own partition, at the changelog's end;
    the restarted worker evaluates every match by every model once and teaches each learner
    each match once, rebuilding no ledger from PostgreSQL."""
    local = settings.replace(table_store="rocksdb", table_dir=str(tmp_path / "tables"))
    env = {"TIPSTREAM_TABLE_STORE": local.table_store, "TIPSTREAM_TABLE_DIR": local.table_dir}
    topics = Topics.from_settings(settings)
    events, matches = valid(settings, "2017-08-01", "2017-09-30")
    features = [e for e in events if e.topic == topics.features]
    results = [e for e in events if e.topic == topics.results]
    assert len(features) == matches
    assert results

    worker = start_worker(**env)
    await send(settings, features)
    await drained(settings)
    worker.stop()
    assert worker.process is not None
    assert worker.process.returncode == 0, worker.log_text()[-3000:]

    stored = local_ledgers(local)
    ends = await changelog_ends(settings)
    assert sorted(stored) == list(range(settings.partitions))
    partition_of = KeyPartitioner()
    every = list(range(settings.partitions))
    assert sum(len(keys) for keys, _ in stored.values()) == matches
    for partition, (keys, offset) in stored.items():
        assert {partition_of(k, every, every) for k in keys} <= {partition}, (
            f"a ledger of another partition in ledgers-{partition}.db"
        )
        assert offset == ends[partition], f"partition {partition} is behind its changelog"

    worker.start()
    await send(settings, results)
    await drained(settings)
    assert await count(db, "SELECT count(*) FROM evaluations") == matches * SEEDED_MODELS
    learned = await db.fetch("SELECT learned FROM learner_checkpoints ORDER BY model_id")
    assert [r["learned"] for r in learned] == [matches, matches]
    assert counters(settings).get("ledgers_rebuilt", 0) == 0
    assert await read_topic(topics.dead_letters) == []
    assert worker.process.poll() is None, "the worker stopped"
