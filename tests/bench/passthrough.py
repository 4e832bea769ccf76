"""The yardstick: plain aiokafka consume -> JSON decode -> JSON encode -> produce.

``python -m tests.bench.passthrough IN OUT COUNT`` (broker and group from the environment).
It keeps the guarantees the scorer keeps, so the two are compared like for like: batches of at
most 500 records (the agents' batch size), every output acknowledged by the broker (acks=all,
as Faust's ``producer_acks=-1``) before the batch counts as done, offsets committed every second
(Faust's ``broker_commit_interval``). Exits once ``COUNT`` events were passed through.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.loop import BATCH_SIZE
from streams.settings import Settings

COMMIT_EVERY_S = 1.0


async def passthrough(settings: Settings, source: str, sink: str, count: int) -> int:
    """Pass ``count`` events from ``source`` to ``sink``; return how many were passed."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.group_id}-passthrough",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    passed = 0
    committed_at = time.monotonic()
    try:
        while passed < count:
            batch = await consumer.getmany(timeout_ms=100, max_records=BATCH_SIZE)
            futures = []
            for records in batch.values():
                for record in records:
                    value = json.dumps(json.loads(record.value)).encode()
                    futures.append(await producer.send(sink, value, key=record.key))
            if futures:
                await asyncio.gather(*futures)
                passed += len(futures)
            if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                await consumer.commit()
                committed_at = time.monotonic()
        await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    return passed


def main(argv: list[str]) -> int:
    source, sink, count = argv[0], argv[1], int(argv[2])
    passed = asyncio.run(passthrough(Settings.from_env(), source, sink, count))
    print(f"PASSTHROUGH passed={passed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
