"""What every agent of one worker shares: settings, topic names, the database pool, the
producer, and the dead-letter route. Agents receive a :class:`Runtime`; they never build
their own connections.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas.codec import InvalidEvent, decode, encode
from schemas.events import DeadLetter, Record, ValidationIssue
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics
from streams.watchdog import CHECK_EVERY_S, Watchdog
from streams.worker import faust_fixes, faust_speedups

log = get_logger(__name__)
R = TypeVar("R", bound=Record)
T = TypeVar("T")

# Errors worth waiting out (database restarting, connection reset): retried, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # SQLSTATE 57: the server is shutting down (57P01, what `pg_ctl stop -m fast` sends every
    # session), crashed (57P02), starting (57P03), or cancelled the statement (57014).
    asyncpg.OperatorInterventionError,
    # SQLSTATE 53: too many connections, out of memory or disk: the server may recover.
    asyncpg.InsufficientResourcesError,
    # asyncpg's "cannot switch to state ...; another operation is in progress", raised by a
    # pooled connection whose server went away mid-statement (seen in `make chaos`).
    asyncpg.InternalClientError,
)

SHUTDOWN_HOOK_S = 10.0
"""Longest a shutdown hook may take: Faust's drain and commit come first, 30 s is the bar."""
HOOK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *TRANSIENT_ERRORS)

DEAD_LETTER_PAYLOAD_MAX = 512 * 1024
"""Original bytes a dead letter keeps in full. A letter is one Kafka record: base64 (x4/3) of
512 KiB plus the envelope stays under the broker's default 1 MiB ``message.max.bytes``. The
broker also accepts input records up to 1 MiB; a longer payload keeps its first 512 KiB and the
error value names its full size and SHA-256, so a letter can never be too large to publish (a
letter that cannot be published would stop its agent's partition)."""


OUTPUT_BATCH_BYTES = 256 * 1024
"""Largest record batch per partition: a scorer batch (500 matches x 4 predictions, ~0.9 MB
over 4 partitions) goes out in one produce request instead of ~14 round trips of Faust's
16 KiB batches; well under the broker's 1 MiB ``message.max.bytes``."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, as ``aiokafka.partitioner.murmur2`` (and the Java client)
    computes it, twice as fast: 4.5 instead of 9.5 us for a 62-byte match id, since every
    4-byte word is read at once instead of byte by byte. A unit test checks the two agree."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    if length & 3:
        h ^= int.from_bytes(data[words * 4 :], "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client), memoised.

    Partitioning by key is what keeps topics co-partitioned, so the choice is exactly the
    default one; only the hash is cached (and computed by the faster :func:`murmur2`). A
    match's key is hashed once per prediction (four per match), per evaluation and per
    changelog write.
    """

    MAX_KEYS = 65_536  # ~10 MB of keys at most; the working set is one batch's matches

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            partition: int = DefaultPartitioner()(key, all_partitions, available)
            return partition
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class OutputProducer:
    """The agents' output producer: whole record batches per partition, not one send each.

    ``AIOKafkaProducer.send`` costs ~17 us per message in Python (a coroutine, a future and a
    partitioner call each), Faust's wrapper more: at four predictions per match that was the
    scorer's largest cost. Appending to a batch builder (aiokafka's C record builder) and
    sending each partition's batch once costs ~4 us per message. Settings mirror the Faust
    producer's (acks, linger, request timeout: a broker outage still waits 20 minutes, i.e.
    backpressure, before a send fails); partitions are chosen by :class:`KeyPartitioner`,
    exactly as Faust's producer would choose them.
    """

    def __init__(self, settings: Settings, conf: Any, partitioner: KeyPartitioner) -> None:
        # Built on first use: AIOKafkaProducer binds the running event loop when created, and
        # the runtime is created before the worker's loop runs.
        self._make = partial(
            AIOKafkaProducer,
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{settings.app_id}-outputs",
            acks=conf.producer_acks,
            linger_ms=int(conf.producer_linger * 1000),
            max_batch_size=OUTPUT_BATCH_BYTES,
            max_request_size=max(conf.producer_max_request_size, 2 * OUTPUT_BATCH_BYTES),
            compression_type=conf.producer_compression_type,
            request_timeout_ms=int(conf.producer_request_timeout * 1000),
        )
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = partitioner
        self._started = False
        self._lock = asyncio.Lock()

    async def _ready(self) -> AIOKafkaProducer:
        if not self._started:
            async with self._lock:
                if not self._started:
                    self._producer = self._make()
                    await self._producer.start()
                    self._started = True
        assert self._producer is not None
        return self._producer

    async def stop(self) -> None:
        if self._started:
            assert self._producer is not None
            await self._producer.stop()
            self._started = False

    async def send(self, messages: Iterable[tuple[str, bytes | None, bytes]]) -> list[Any]:
        """Queue every message, in order per partition; the delivery futures of the batches."""
        producer = await self._ready()
        partitions: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], Any] = {}
        futures: list[Any] = []
        for topic, key, value in messages:
            all_partitions = partitions.get(topic)
            if all_partitions is None:
                # As aiokafka lists them for its partitioner (waits for metadata if needed).
                all_partitions = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = self._partitioner(key, all_partitions, all_partitions)
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                # Full: send it, and start the next batch of this partition with the message.
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for (topic, partition), batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


class Runtime:
    """Shared services of one worker process.

    Agents publish through the runtime's :class:`OutputProducer`; Faust's producer still
    writes the table changelogs, with the runtime's :class:`KeyPartitioner` (read when that
    producer starts, so it is set here: the runtime is built with the app, before it runs).
    """

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.app = app
        partitioner = KeyPartitioner()
        # Faust's own producer (table changelogs) partitions by key through the same cache.
        # Faust's stub types this setting without the key argument (see its own comment on
        # ``producer_partitioner``); the call Faust makes is (key, all, available).
        app.conf.producer_partitioner = partitioner  # type: ignore[assignment]
        self.producer = OutputProducer(settings, app.conf, partitioner)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.counters: Counter[str] = Counter()
        self.registry_key = settings.registry_key.encode()
        # Faust can drain a partition before seeking it after a rebalance (re-delivery, holes)
        # and commit past a hole: streams/worker/faust_fixes.py corrects both; streams/watchdog.py
        # re-reads a partition that stalls anyway (safety net).
        faust_fixes.install()  # each install first checks the pinned faust-streaming release
        faust_speedups.install()
        self.watchdog = Watchdog(
            app,
            [
                self.topics.features,
                self.topics.results,
                self.topics.predictions,
                self.topics.model_feed,
            ],
            self.counters,
        )
        app.timer(CHECK_EVERY_S, name="partition-watchdog")(self.watchdog.check)
        # Awaited by stop(), before the producer and the pool close (the learner's last version).
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        # Which agent dead-letters the invalid events of a topic that two agents read.
        self.dead_letter_owners = {
            self.topics.features: "scorer",
            self.topics.model_feed: "learner",
        }

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; the pool is opened on first use, in the worker's own loop."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    from streams.db import connect

                    self._pool = await connect(self.settings.database_url, min_size=1, max_size=6)
        async with self._pool.acquire() as conn:
            yield conn

    async def stop(self) -> None:
        """Run the agents' shutdown hooks, then close the producer and the pool.

        Faust calls this after the consumer has drained (every event taken was handled and
        acked) and the offsets were committed; each hook gets at most ``SHUTDOWN_HOOK_S`` so
        a SIGTERM still ends the worker well within 30 s when the database is down.
        """
        for hook in self.shutdown_hooks:
            try:
                await asyncio.wait_for(hook(), SHUTDOWN_HOOK_S)
            except HOOK_ERRORS as error:
                log.warning("shutdown hook gave up", hook=repr(hook), error=repr(error))
        await self.producer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def publish(self, topic: str, key: str | None, record: Record) -> Awaitable[Any]:
        """Hand one record to the producer; await the returned future for its delivery."""
        (future,) = await self.producer.send(
            [(topic, key.encode() if key is not None else None, encode(record))]
        )
        self.counters[f"produced:{topic}"] += 1
        return cast(Awaitable[Any], future)

    async def publish_all(self, items: Iterable[tuple[str, str | None, Record]]) -> None:
        """Publish many records and wait until the broker has acknowledged every one."""
        produced: Counter[str] = Counter()

        def messages() -> Iterator[tuple[str, bytes | None, bytes]]:
            for topic, key, record in items:
                produced[topic] += 1
                yield topic, key.encode() if key is not None else None, encode(record)

        try:
            futures = await self.producer.send(messages())
        finally:
            # One counter update per topic and batch, not per message (a batch is ~2,000).
            for topic, count in produced.items():
                self.counters[f"produced:{topic}"] += count
        if futures:
            await asyncio.gather(*futures)

    def decode(self, message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
        """Decode one consumed message, or return the dead letter that explains why not."""
        try:
            return decode(message.value, record_type)
        except InvalidEvent as error:
            return dead_letter(message, error.issue, agent)

    async def publish_dead_letters(
        self, letters: list[DeadLetter], *, invalid: bool = True
    ) -> None:
        """Publish dead letters and wait for the broker (before the batch is acked); count them.

        Two agents read some topics (the scorer and the reconciler read the features, the
        learner and the decay monitor the model feed): an invalid event there is dead-lettered
        by the one agent in ``dead_letter_owners`` only, or it would be on the dead-letter topic
        twice. ``invalid=False`` (an event that failed processing in one agent) always goes.
        """
        if invalid:
            letters = owned(letters, self.dead_letter_owners)
        if not letters:
            return
        await self.publish_all(
            (self.topics.dead_letters, _original_key(letter), letter) for letter in letters
        )
        for letter in letters:
            self.counters[f"dead_letters:{letter.source_topic}"] += 1
            log.warning(
                "event dead-lettered",
                agent=letter.agent,
                topic=letter.source_topic,
                partition=letter.partition,
                offset=letter.offset,
                field=letter.error.field,
                rule=letter.error.rule,
            )

    async def retry_transient(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` until it succeeds, backing off on transient failures.

        The calling agent does not ack its batch while this waits, so the stream stops moving
        (backpressure) instead of dropping or dead-lettering events during an outage.
        """
        delay = 0.1
        failing = False
        try:
            while True:
                try:
                    return await action()
                except TRANSIENT_ERRORS as error:
                    self.counters[f"retries:{what}"] += 1
                    log.warning(
                        "transient failure, retrying",
                        what=what,
                        error=repr(error),
                        retry_in_s=round(delay, 2),
                    )
                    if not failing:
                        failing = True
                        self.watchdog.busy += 1  # no progress is expected while we wait
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            if failing:
                self.watchdog.busy -= 1


def dead_letter(
    message: Any, issue: ValidationIssue, agent: str, *, now: datetime | None = None
) -> DeadLetter:
    """The envelope of a rejected message: its original key and bytes (base64), where it was
    (topic, partition, offset), why (field, value, rule), which agent, and when."""
    raw = message.value if message.value is not None else b""
    if len(raw) > DEAD_LETTER_PAYLOAD_MAX:
        digest = hashlib.sha256(raw).hexdigest()
        kept = f"first {DEAD_LETTER_PAYLOAD_MAX} of {len(raw)} bytes kept, sha256 {digest}"
        issue = ValidationIssue(
            field=issue.field,
            value=f"{issue.value}; {kept}" if issue.value else kept,
            rule=issue.rule,
        )
        raw = raw[:DEAD_LETTER_PAYLOAD_MAX]
    return DeadLetter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key_b64=base64.b64encode(message.key).decode() if message.key is not None else None,
        payload_b64=base64.b64encode(raw).decode(),
        error=issue,
        agent=agent,
        failed_at=now or datetime.now(UTC),
    )


def owned(letters: Iterable[DeadLetter], owners: Mapping[str, str]) -> list[DeadLetter]:
    """The letters whose agent answers for their source topic (any agent, for a topic not in
    ``owners``)."""
    return [dl for dl in letters if owners.get(dl.source_topic, dl.agent) == dl.agent]


def _original_key(letter: DeadLetter) -> str | None:
    if letter.key_b64 is None:
        return None
    return base64.b64decode(letter.key_b64).decode("utf-8", "replace")
