"""The measurements that go through the broker: passthrough, scorer, latency, reconciliation."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import Settings
from streams.topics import Topics
from tests.bench.deployment import Process
from tests.bench.kafka_io import Offsets, load, read_all
from tests.bench.measure import Latency, Throughput, latency, throughput
from tests.bench.workload import Keyed


class BenchError(RuntimeError):
    """A phase could not complete (a process died, output never arrived)."""


async def _wait_or_fail(
    offsets: Offsets, topic: str, expected: int, process: Process, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = await offsets.count(topic)
        if count >= expected:
            return
        if not process.running:
            raise BenchError(f"{process.argv} exited; last log lines:\n{process.log_tail()}")
        await asyncio.sleep(0.25)
    raise BenchError(
        f"{topic}: {count} of {expected} messages after {timeout:.0f} s; log:\n{process.log_tail()}"
    )


async def create_topic(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=name, num_partitions=settings.partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


async def copied(settings: Settings, process: Process, sink: str, events: int,
                 timeout: float) -> Throughput:  # fmt: skip
    """Features topic -> ``sink``, one copy per event: the passthrough's or the relay's rate."""
    async with Offsets(settings.kafka_bootstrap, settings.partitions) as offsets:
        await _wait_or_fail(offsets, sink, events, process, timeout)
    return throughput(await read_all(settings.kafka_bootstrap, sink, settings.partitions), 1)


def passthrough_topic(settings: Settings, client: str) -> str:
    return f"{settings.topic_prefix}.passthrough-{client}"


async def scorer(settings: Settings, process: Process, events: int, models: int,
                 timeout: float) -> Throughput:  # fmt: skip
    """Wait for every prediction of the loaded features; the scorer's rate."""
    topic = Topics.from_settings(settings).predictions
    async with Offsets(settings.kafka_bootstrap, settings.partitions) as offsets:
        await _wait_or_fail(offsets, topic, events * models, process, timeout)
    return throughput(await read_all(settings.kafka_bootstrap, topic, settings.partitions), models)


class _Champion(msgspec.Struct):
    """The one field of a prediction the latency probe reads."""

    is_champion: bool


_CHAMPION = msgspec.json.Decoder(_Champion)


@dataclass
class _Probe:
    sent_at: dict[bytes, float]
    latencies: list[float]


async def latency_at(
    settings: Settings, process: Process, messages: Sequence[Keyed], rate: int, *, drain_s: float
) -> Latency:
    """Offer ``messages`` at ``rate`` events/s; time each until its champion prediction is read.

    Both clocks are this process's ``perf_counter``: stamped just before ``send`` and when the
    consumer hands the prediction over. The producer does not linger (``linger_ms=0``), as a
    producer publishing one match at a time would not. The probe keeps its own pauses out of
    the figures: its consumer's fetches are held 5 ms at most by the broker (aiokafka's one
    fetch in flight per broker would otherwise wait up to ``fetch_max_wait_ms`` for the
    partitions without news while the champion's was drained), and its garbage collector
    is off while it measures, so a collection of its own never counts as latency.
    """
    topics = Topics.from_settings(settings)
    probe = _Probe(sent_at={}, latencies=[])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    consumer.assign([TopicPartition(topics.predictions, p) for p in range(settings.partitions)])
    await consumer.seek_to_end()
    for partition in consumer.assignment():
        await consumer.position(partition)  # resolve the end now, before anything is sent
    reader = asyncio.create_task(_read_champions(consumer, probe, len(messages)))
    gc.collect()
    gc.disable()  # ~30 s of probe objects: memory, not pauses
    started = time.perf_counter()
    try:
        sent = await _offer(producer, topics.features, messages, rate, probe)
        offered_s = time.perf_counter() - started
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout=drain_s)
        except TimeoutError:
            if not process.running:
                raise BenchError(f"scorer exited; log:\n{process.log_tail()}") from None
    finally:
        gc.enable()
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    return latency(rate, offered_s, sent, probe.latencies)


async def _offer(producer: AIOKafkaProducer, topic: str, messages: Sequence[Keyed], rate: int,
                 probe: _Probe) -> int:  # fmt: skip
    """Send at ``rate`` per second: every millisecond, whatever has become due."""
    started = time.perf_counter()
    sent = 0
    pending = []
    while sent < len(messages):
        due = min(len(messages), int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            key, value = messages[sent]
            probe.sent_at[key] = time.perf_counter()
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*pending)
    return sent


async def _read_champions(consumer: AIOKafkaConsumer, probe: _Probe, expected: int) -> None:
    while len(probe.latencies) < expected:
        batch = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        for records in batch.values():
            for record in records:
                sent = probe.sent_at.get(record.key or b"")
                if sent is not None and _CHAMPION.decode(record.value or b"{}").is_champion:
                    probe.latencies.append(now - sent)


@dataclass(frozen=True)
class Reconciliation:
    """Results in, evaluations out and in PostgreSQL."""

    results: int
    evaluations: int  # messages on the evaluations topic
    evaluation_rows: int  # rows committed in PostgreSQL
    feed_items: int  # messages on the model-feed topic
    seconds: float
    eps: float  # evaluations per second
    changelog_records: int  # ledger writes (tombstones of retired ledgers included)
    changelog_bytes_per_match: float  # ledger bytes written to the changelog per match
    ledger_bytes: float  # mean size of a ledger as written (the table's values)
    # CPU the reconciler's process used from the first result to the last evaluation (all its
    # threads): on a shared machine a steadier comparison than the wall-clock rate.
    cpu_s: float
    cpu_us_per_evaluation: float


async def reconcile(
    settings: Settings, process: Process, results: Sequence[Keyed], expected: int, *,
    timeout: float,
) -> Reconciliation:  # fmt: skip
    """Publish results to a primed reconciler; time until the last evaluation is published.

    The reconciler writes PostgreSQL (one transaction per batch) before it publishes the batch's
    evaluations, so the last evaluation's broker timestamp is also after its row committed.
    """
    topics = Topics.from_settings(settings)
    cpu_before = process.cpu_s()
    started_ms = time.time() * 1000
    await load(settings.kafka_bootstrap, topics.results, results)
    async with Offsets(settings.kafka_bootstrap, settings.partitions) as offsets:
        await _wait_or_fail(offsets, topics.evaluations, expected, process, timeout)
        cpu_s = process.cpu_s() - cpu_before
        feed = await offsets.wait_for(topics.model_feed, expected, timeout=10)
    arrived = await read_all(settings.kafka_bootstrap, topics.evaluations, settings.partitions)
    seconds = max(max(arrived.timestamps_ms) - started_ms, 1.0) / 1000
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM evaluations")
    finally:
        await conn.close()
    changelog = await read_all(
        settings.kafka_bootstrap,
        f"{settings.group_id}-ledgers-changelog",
        settings.partitions,
        values=True,
    )
    written = [len(v) for v in changelog.values if v]
    return Reconciliation(
        results=len(results),
        evaluations=len(arrived.keys),
        evaluation_rows=rows,
        feed_items=feed,
        seconds=seconds,
        eps=len(arrived.keys) / seconds,
        changelog_records=len(changelog.keys),
        changelog_bytes_per_match=sum(written) / max(len(results), 1),
        ledger_bytes=sum(written) / max(len(written), 1),
        cpu_s=cpu_s,
        cpu_us_per_evaluation=cpu_s / max(len(arrived.keys), 1) * 1e6,
    )


async def wait_for_rows(settings: Settings, process: Process, table: str, expected: int,
                        timeout: float) -> None:  # fmt: skip
    """Poll ``table`` until it has ``expected`` rows (a primed reconciler)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await conn.fetchval(f"SELECT count(*) FROM {table}") >= expected:
                return
            if not process.running:
                raise BenchError(f"reconciler exited; log:\n{process.log_tail()}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    raise BenchError(f"{table}: fewer than {expected} rows after {timeout:.0f} s")
