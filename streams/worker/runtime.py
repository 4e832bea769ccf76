"""What every agent of one worker shares: settings, topic names, the database pool, the
producer, and the dead-letter route. Agents receive a :class:`Runtime`; they never build
their own connections.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import faust
from aiokafka import AIOKafkaConsumer

from agents.dead_letters import dead_letter_owners, decode_or_letter, original_key, owned
from agents.runtime import Output
from agents.tick_rules import TICK_HEADERS
from models.base import Model
from schemas.codec import encode
from schemas.events import DeadLetter, Fixture, Prediction, Record, Tick
from streams import mlflow_log
from streams.kafka import client_options
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics
from streams.worker import faust_fixes, faust_speedups, whole_fetch
from streams.worker.metrics import TimedConnection, WorkerMetrics
from streams.worker.output import KeyPartitioner, OutputProducer
from streams.worker.watchdog import CHECK_EVERY_S, Watchdog

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
        # Faust types this setting as a method of its Settings class without the key argument
        # (see its own comment on ``producer_partitioner``), which mypy versions read
        # differently; the call Faust makes is (key, all, available), so set it untyped.
        conf: Any = app.conf
        conf.producer_partitioner = partitioner
        self.producer = OutputProducer(settings, app.conf, partitioner)
        self._partitioner = partitioner
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.counters: Counter[str] = Counter()
        # This worker's Prometheus registry (GET /metrics/): the counters above, read at scrape
        # time, and what the runtime measures itself (streams/worker/metrics.py).
        self.metrics = WorkerMetrics(self.counters, lambda: app.consumer)
        self.registry_keys = settings.registry_keys()
        # Faust can drain a partition before seeking it after a rebalance (re-delivery, holes)
        # and commit past a hole: streams/worker/faust_fixes.py corrects both;
        # streams/worker/watchdog.py re-reads a partition that stalls anyway (safety net).
        faust_fixes.install()  # each install first checks the pinned faust-streaming release
        faust_speedups.install()
        whole_fetch.install(settings.whole_fetch)
        self.watchdog = Watchdog(
            app,
            [
                self.topics.fixtures,
                self.topics.league_inputs,
                self.topics.features,
                self.topics.results,
                self.topics.predictions,
                self.topics.model_feed,
                self.topics.drift_inputs,
            ],
            self.counters,
        )
        app.timer(CHECK_EVERY_S, name="partition-watchdog")(self.watchdog.check)
        # Awaited by stop(), before the producer and the pool close (the learner's last version).
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self.dead_letter_owners = dead_letter_owners(self.topics)

    def partition_for(self, key: bytes) -> int:
        """The partition of ``key`` on the service's topics and changelogs (one count)."""
        partitions = list(range(self.settings.partitions))
        return self._partitioner(key, partitions, partitions)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection (asyncpg's API; its transactions are timed for /metrics/); the
        pool is opened on first use, in the worker's own loop."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    from streams.db import connect

                    self._pool = await connect(self.settings.database_url, min_size=1, max_size=6)
        async with self._pool.acquire() as conn:
            yield TimedConnection(conn, self.metrics)

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

    async def publish_all(self, items: Iterable[Output]) -> None:
        """Publish many records and wait until the broker has acknowledged every one."""
        produced: Counter[str] = Counter()
        champions: list[str] = []
        predictions = self.topics.predictions

        def messages() -> Iterator[tuple[str, bytes | None, bytes]]:
            for topic, key, record in items:
                produced[topic] += 1
                if topic == predictions and isinstance(record, Prediction) and record.is_champion:
                    champions.append(record.match_id)
                yield topic, key.encode() if key is not None else None, encode(record)

        try:
            futures = await self.producer.send(messages())
        finally:
            # One counter update per topic and batch, not per message (a batch is ~2,000).
            for topic, count in produced.items():
                self.counters[f"produced:{topic}"] += count
        if futures:
            await asyncio.gather(*futures)
        if champions:
            self.metrics.champion_acked(champions, time.time())

    async def publish_ticks(self, topic: str, ticks: Iterable[Tick]) -> None:
        """Publish each tick to every partition of ``topic`` and wait for the broker (after
        the records published before it: one producer, in order per partition)."""
        values = [encode(tick) for tick in ticks]
        if not values:
            return
        futures = await self.producer.broadcast(topic, values, TICK_HEADERS)
        self.counters[f"produced:{topic}"] += len(values) * self.settings.partitions
        await asyncio.gather(*futures)

    def decode(self, message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
        """Decode one consumed message, or return the dead letter that explains why not.

        A fixture's Kafka timestamp is remembered: the clock of
        ``tipstream_fixture_to_champion_seconds`` starts there (docs/OPERATIONS.md, "Metrics").
        """
        decoded = decode_or_letter(message, record_type, agent)
        if isinstance(decoded, Fixture) and message.timestamp:
            self.metrics.arrivals.arrived(decoded.match_id, message.timestamp)
        return decoded

    def observe(self, metric: str, value: float, label: str = "") -> None:
        """One measurement for a histogram of /metrics/ (``agents.runtime.AgentRuntime``)."""
        self.metrics.observe(metric, value, label)

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
            (self.topics.dead_letters, original_key(letter), letter) for letter in letters
        )
        for letter in letters:
            self.counters[f"dead_letters:{letter.source_topic}"] += 1
            self.metrics.dead_lettered(letter)
            log.warning(
                "event dead-lettered",
                agent=letter.agent,
                topic=letter.source_topic,
                partition=letter.partition,
                offset=letter.offset,
                field=letter.error.field,
                rule=letter.error.rule,
            )

    @asynccontextmanager
    async def follow(self, topic: str) -> AsyncIterator[Notices]:
        """Every message of ``topic`` from now on: read without a consumer group, from its end
        (each worker needs every snapshot notice, not a share of them)."""
        consumer = AIOKafkaConsumer(
            topic,
            **client_options(self.settings),
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            yield Notices(consumer)
        finally:
            await consumer.stop()

    async def record_fit(
        self,
        model: Model,
        *,
        version: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None:
        """Log a registered fit to MLflow where ``MLFLOW_TRACKING_URI`` is set, in a thread
        (MLflow's client blocks on files or HTTP). A failure is one warning and a count
        (``mlflow_failures``), never an error: the version stays registered, the registry is
        the source of truth. mlflow's presence was checked at start (``run_worker``)."""
        if mlflow_log.tracking_uri() is None:
            return
        try:
            run_id = await asyncio.to_thread(
                mlflow_log.log_fit, model, version=version, params=params, metrics=metrics
            )
        except (mlflow_log.MlflowFailed, mlflow_log.MlflowUnavailable) as error:
            self.counters["mlflow_failures"] += 1
            log.warning(
                "fit not logged to MLflow",
                model=model.model_id,
                version=version,
                error=str(error),
            )
            return
        log.info("fit logged to MLflow", model=model.model_id, version=version, run=run_id)

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


class Notices:
    """Counts the messages of a followed topic (:meth:`Runtime.follow`)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def wait(self, timeout: float) -> int:
        batch = await self._consumer.getmany(timeout_ms=int(timeout * 1000))
        return sum(len(messages) for messages in batch.values())
