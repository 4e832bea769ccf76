"""The benchmark's own Kafka client side: load topics, wait for output, read what arrived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.bench.workload import Keyed

# Loading is not measured: large batches and a 5 ms linger let it run at ~50k events/s.
LOAD_CHUNK = 5_000


async def load(bootstrap: str, topic: str, messages: Sequence[Keyed]) -> None:
    """Publish every message and wait until the broker has them all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        for start in range(0, len(messages), LOAD_CHUNK):
            chunk = messages[start : start + LOAD_CHUNK]
            futures = [await producer.send(topic, value, key=key) for key, value in chunk]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Offsets:
    """Counts messages in topics from their end offsets (cheap to poll, reads nothing).

    Every topic the benchmark counts has the deployment's partition count.
    """

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self.partitions = partitions

    async def __aenter__(self) -> Offsets:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def count(self, topic: str) -> int:
        """Messages in ``topic`` (the sum of its partitions' end offsets)."""
        partitions = [TopicPartition(topic, p) for p in range(self.partitions)]
        ends = await self.consumer.end_offsets(partitions)
        return sum(ends.values())

    async def wait_for(self, topic: str, expected: int, *, timeout: float) -> int:
        """Poll until ``topic`` holds ``expected`` messages or ``timeout`` s passed; the count."""
        deadline = time.monotonic() + timeout
        count = await self.count(topic)
        while count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            count = await self.count(topic)
        return count


@dataclass(frozen=True)
class Arrived:
    """What a topic holds: one (key, broker timestamp in ms, value) per message."""

    keys: list[bytes]
    timestamps_ms: list[int]
    values: list[bytes]


async def read_all(bootstrap: str, topic: str, partitions: int, *, values: bool = False) -> Arrived:
    """Every message of ``topic`` (values kept only when asked: they cost memory)."""
    async with Offsets(bootstrap, partitions) as offsets:
        total = await offsets.count(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    await consumer.seek_to_beginning()
    keys: list[bytes] = []
    stamps: list[int] = []
    kept: list[bytes] = []
    try:
        idle = 0
        while len(keys) < total and idle < 20:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for record in records:
                    keys.append(record.key or b"")
                    stamps.append(record.timestamp)
                    if values:
                        kept.append(record.value or b"")
    finally:
        await consumer.stop()
    return Arrived(keys=keys, timestamps_ms=stamps, values=kept)
