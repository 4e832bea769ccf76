"""The yardsticks: plain Kafka consume -> JSON decode -> JSON encode -> produce loops.

``python -m tests.bench.passthrough CLIENT IN OUT COUNT`` with ``CLIENT`` ``aiokafka`` (the
asyncio client Faust is built on) or ``confluent`` (confluent-kafka on librdkafka, the fastest
Python Kafka client; broker and group from the environment). Both keep the guarantees the
scorer keeps, so they are compared like for like: batches of at most 500 records (the agents'
batch size), every output acknowledged by the broker (acks=all, as Faust's
``producer_acks=-1``) before the batch counts as done, offsets committed every second (Faust's
``broker_commit_interval``). Each exits once ``COUNT`` events were passed through. The faster
of the two is the ceiling the scorer is held to (``peer_passthrough_eps``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from agents.loop import BATCH_SIZE
from streams.settings import Settings

COMMIT_EVERY_S = 1.0
CLIENTS = ("aiokafka", "confluent")


async def passthrough(settings: Settings, source: str, sink: str, count: int) -> int:
    """aiokafka: pass ``count`` events from ``source`` to ``sink``; how many were passed."""
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


def confluent_passthrough(settings: Settings, source: str, sink: str, count: int) -> int:
    """confluent-kafka: the same loop, synchronous (librdkafka fetches and sends on its own
    threads); ``flush`` returns once every output of the batch is acknowledged."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{settings.group_id}-passthrough-confluent",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    consumer.subscribe([source])
    passed = 0
    committed_at = time.monotonic()
    try:
        while passed < count:
            produced = 0
            for record in consumer.consume(num_messages=BATCH_SIZE, timeout=0.1):
                if record.error() is not None:
                    raise KafkaException(record.error())
                value = json.dumps(json.loads(record.value() or b"")).encode()
                producer.produce(sink, value, key=record.key(), on_delivery=delivered)
                produced += 1
            if produced:
                producer.flush()
                if failures:
                    raise KafkaException(failures[0])
                passed += produced
            if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                consumer.commit(asynchronous=False)
                committed_at = time.monotonic()
        consumer.commit(asynchronous=False)
    finally:
        producer.flush()
        consumer.close()
    return passed


def main(argv: list[str]) -> int:
    client, source, sink, count = argv[0], argv[1], argv[2], int(argv[3])
    settings = Settings.from_env()
    if client == "aiokafka":
        passed = asyncio.run(passthrough(settings, source, sink, count))
    elif client == "confluent":
        passed = confluent_passthrough(settings, source, sink, count)
    else:
        raise SystemExit(f"unknown client {client!r}; known: {', '.join(CLIENTS)}")
    print(f"PASSTHROUGH client={client} passed={passed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
