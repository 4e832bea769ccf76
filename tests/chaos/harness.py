"""One chaos run's deployment: its database, topics, worker subprocesses, input and read-back.

Every run gets its own database, topic prefix and consumer group (like the integration tests),
so runs never see each other's events or rows and can compare what each one left behind.
Workers are ``tipstream worker`` subprocesses: a kill is a real kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agents.features_rules import EVENT_TIME_HEADER
from models.timeline import TimedEvent
from schemas.codec import decode, encode
from schemas.events import DeadLetter, LeagueInput, ModelFeedItem
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics
from tests import deployment
from tests.deployment import environment, free_port, isolated

log = get_logger(__name__)

WORKER_ENV = {
    # Faust reads these from the environment. A SIGKILLed member holds its partitions until its
    # session expires: 6 s (the broker's minimum) instead of Faust's 60 s keeps five kills and
    # restarts within the chaos budget; heartbeats every 1 s so a live worker is never dropped.
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}
# Producers may publish huge malformed payloads (up to ~900 KB, the broker takes 1 MB).
MAX_REQUEST_BYTES = 1_048_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: which topic, key and exact bytes, and its event time (the
    ``tipstream-event-time`` header; None: no header). ``paced``: false for warm-up history,
    which goes at full speed (as ``tipstream replay`` sends it)."""

    topic: str
    key: bytes | None
    value: bytes | None
    malformed: str | None = None  # the kind, for a malformed event
    at: datetime | None = None
    paced: bool = True

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [] if self.at is None else [(EVENT_TIME_HEADER, self.at.isoformat().encode())]


@dataclass(frozen=True, slots=True)
class Sent:
    """Where the broker put an event."""

    event: Outgoing
    topic: str
    partition: int
    offset: int


def valid_outgoing(topics: Topics, events: Sequence[TimedEvent]) -> list[Outgoing]:
    """The wire form of replay facts (``models.timeline.fact_timeline``) in event-time order,
    exactly as ``tipstream replay`` publishes them: fixtures and results keyed by match id,
    warm-up history straight to the features agent's input keyed by league, every one with its
    event time in the header."""
    out = []
    for e in events:
        if e.kind == "fixture":
            topic, key = topics.fixtures, e.key
        elif e.kind == "result":
            topic, key = topics.results, e.key
        elif e.kind == "warm_up" and isinstance(e.record, LeagueInput):
            topic, key = topics.league_inputs, e.record.league
        else:
            raise ValueError(f"chaos publishes facts, not {e.kind} events ({e.origin})")
        out.append(
            Outgoing(topic, key.encode(), encode(e.record), at=e.at, paced=e.kind != "warm_up")
        )
    return out


@dataclass
class Worker:
    """A ``tipstream worker`` subprocess of a deployment."""

    settings: Settings
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, **extra_env: str) -> None:
        self.starts += 1
        env = environment(self.settings) | WORKER_ENV | self.extra_env | extra_env
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.worker"],
                # Faust writes a data directory into its working directory: keep it out of the repo.
                cwd=self.log_path.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def signal(self, sig: int, timeout: float = 60.0) -> tuple[int | None, float]:
        """Send ``sig``; the exit code (None: still running after ``timeout``) and seconds."""
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - started
        return code, time.monotonic() - started

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to end by itself; its exit code, or None if it did not."""
        assert self.process is not None
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    async def kill(self) -> None:
        await self.signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 40 s."""
        if not self.running:
            return
        code, _ = await self.signal(signal.SIGTERM, timeout=40)
        if code is None:
            await self.kill()

    async def wait_web(self, timeout: float = 60.0) -> bool:
        """Wait until the worker answers on its web port (it has started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.settings.web_port)
                writer.close()
                return True
            await asyncio.sleep(0.2)
        return False

    async def metrics(self) -> str:
        """The worker's ``GET /metrics/`` text."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.settings.web_port)
        writer.write(b"GET /metrics/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        body = await reader.read()
        writer.close()
        return body.split(b"\r\n\r\n", 1)[-1].decode()


@dataclass
class Deployment:
    """One run's settings, database and topics on some broker and database server."""

    base: Settings
    name: str
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = isolated(
            self.base, f"chaos-{self.name}", database=self.database, log_format="json"
        )
        self.topics = Topics.from_settings(self.settings)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def database(self) -> str:
        return f"tipstream_chaos_{self.name.replace('-', '_')}"

    async def create(self) -> None:
        """A fresh migrated database with a seeded registry, and the topics."""
        await deployment.create(self.settings, self.base)

    def worker(self, **extra_env: str) -> Worker:
        """A new worker of this deployment (not started), with its own web port."""
        settings = (
            self.settings if not self.workers else self.settings.replace(web_port=free_port())
        )
        worker = Worker(settings, self.workdir / f"worker-{len(self.workers)}.log", extra_env)
        self.workers.append(worker)
        return worker

    async def stop_workers(self) -> None:
        for worker in self.workers:
            await worker.stop()

    async def remove(self) -> None:
        """Drop the database and delete the run's topics; never fails the run."""
        await self.stop_workers()
        await deployment.remove(self.settings, self.base)

    # -- input ---------------------------------------------------------------------------

    async def publish(self, events: Sequence[Outgoing], *, rate: float | None = None) -> list[Sent]:
        """Publish events in order (``rate`` per second, or as fast as possible); wait for the
        broker to acknowledge every one; return where each landed."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=MAX_REQUEST_BYTES,
            # The broker may be stopped on purpose for a while: keep retrying rather than fail.
            request_timeout_ms=180_000,
        )
        await producer.start()
        try:
            futures = []
            started = time.monotonic()
            paced = 0
            for event in events:
                if rate and event.paced:
                    delay = started + paced / rate - time.monotonic()
                    paced += 1
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif rate:
                    # The pace starts after the warm-up; a malformed event mixed into the
                    # warm-up goes at once, as the warm-up does.
                    started, paced = time.monotonic(), 0
                futures.append(
                    await producer.send(
                        event.topic, event.value, key=event.key, headers=event.headers
                    )
                )
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return [
            Sent(event, m.topic, m.partition, m.offset)
            for event, m in zip(events, metadata, strict=True)
        ]

    # -- progress ------------------------------------------------------------------------

    async def lagging(self) -> dict[str, int]:
        """Partitions whose committed offset is behind their end: ``topic:partition`` -> lag.

        Committed offsets are read before the ends: a worker commits its input only after its
        output is on the broker, so output still in flight moves an end past a committed
        offset and the partition counts as lagging until that output is consumed too.
        """
        topics = [
            self.topics.fixtures,
            self.topics.league_inputs,
            self.topics.features,
            self.topics.results,
            self.topics.predictions,
            self.topics.model_feed,
        ]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
        )
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.group_id)
            partitions = [
                TopicPartition(t, p) for t in topics for p in range(self.topics.partitions)
            ]
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
            await admin.close()
        lag = {}
        for tp in partitions:
            done = committed[tp].offset if tp in committed else 0
            if ends[tp] > done:
                lag[f"{tp.topic.rsplit('.', 1)[-1]}:{tp.partition}"] = ends[tp] - done
        return lag

    async def wait_drained(self, timeout: float = 240.0) -> dict[str, int]:
        """Wait until no partition lags, twice in a row (output of the last batch included);
        return the lag left when ``timeout`` ran out (empty: drained)."""
        deadline = time.monotonic() + timeout
        streak = 0
        lag: dict[str, int] = {"unknown": 1}
        while time.monotonic() < deadline:
            try:
                lag = await self.lagging()
            except (KafkaError, OSError) as error:  # the broker may be restarting: ask again
                log.info("drain check failed", error=repr(error))
                lag = {"unknown": 1}
            streak = 0 if lag else streak + 1
            if streak >= 2:
                return {}
            await asyncio.sleep(0.5)
        return lag

    async def count(self, sql: str) -> int:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            value: int = await conn.fetchval(sql)
            return value
        finally:
            await conn.close()

    # -- read-back -----------------------------------------------------------------------

    async def read_topic(self, topic: str) -> list[Any]:
        """Every message of a topic, from the first offset to the end as of now."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=8 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p)
                for p in sorted(
                    consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
                )
            ]
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            messages: list[Any] = []
            remaining = {tp for tp in partitions if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    messages.extend(records)
                    if records and records[-1].offset >= ends[tp] - 1:
                        remaining.discard(tp)
            return messages
        finally:
            await consumer.stop()

    async def dead_letters(self) -> list[DeadLetter]:
        # A dead letter carries its payload base64-encoded: far beyond an event's size limit.
        return [
            decode(m.value, DeadLetter, max_bytes=4 * MAX_REQUEST_BYTES)
            for m in await self.read_topic(self.topics.dead_letters)
        ]

    async def model_feed(self) -> list[tuple[int, int, ModelFeedItem]]:
        """Every feed item with its partition and offset."""
        return [
            (m.partition, m.offset, decode(m.value, ModelFeedItem))
            for m in await self.read_topic(self.topics.model_feed)
        ]


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()
