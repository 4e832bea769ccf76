"""Fixtures for tests against the real Kafka broker and PostgreSQL started by `make services`.

Each test gets its own topic prefix, Faust app id and database (cloned from a migrated
template), so tests never see each other's events or rows. Workers run as subprocesses, so a
kill in a test is a real kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.features_rules import EVENT_TIME_HEADER
from models.features import RESULT_DELAY
from models.timeline import FIXTURE_LEAD
from schemas.codec import encode
from schemas.events import Fixture, MatchResult, Record
from streams.db import create_database, drop_database, migrate_url
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.deployment import base_settings, environment, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BASE = base_settings()
TEST_SESSION_TIMEOUT = 8.0
"""``session_timeout`` of the tests' workers: a killed or stopped worker's partitions move
after this, not Faust's 60 s (the tests that kill one wait for its replacement's assignment)."""
WORKER_LOG_TAIL = 60
"""Lines of each worker's log shown with a failed test: CI keeps no tmp_path."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the tail of every worker log it wrote (the
    ``*.log`` files in its ``tmp_path``): a worker's traceback or stall is then in the CI
    output, not in a directory the next run deletes."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when != "call" or not report.failed or tmp_path is None:
        return
    for log_file in sorted(Path(tmp_path).glob("*.log")):
        lines = log_file.read_text(errors="replace").splitlines()[-WORKER_LOG_TAIL:]
        report.sections.append((f"worker log {log_file.name} (last lines)", "\n".join(lines)))


TEMPLATE_DB = f"tipstream_template_{os.getpid()}"


def database_url(name: str) -> str:
    """The base URL with another database name."""
    return BASE.with_database(name).database_url


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    """A migrated database that each test's database is cloned from."""
    await create_database(BASE.database_url, TEMPLATE_DB, replace=True)
    await migrate_url(database_url(TEMPLATE_DB))
    yield TEMPLATE_DB
    await drop_database(BASE.database_url, TEMPLATE_DB)


@pytest.fixture
async def fresh_database(template_database: str) -> AsyncIterator[str]:
    """A database of this test only, migrated; dropped afterwards."""
    name = f"tipstream_t_{uuid.uuid4().hex[:12]}"
    await create_database(BASE.database_url, name, template=template_database)
    yield database_url(name)
    await drop_database(BASE.database_url, name)


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def settings(fresh_database: str) -> Settings:
    """Settings of an isolated deployment: own prefix, app id, database and web port."""
    tag = uuid.uuid4().hex[:10]
    value = BASE.replace(
        topic_prefix=f"test-{tag}",
        app_id="",  # derived from the prefix
        database_url=fresh_database,
        web_port=free_port(),
        partitions=2,
        snapshot_every=50,
        snapshot_seconds=2.0,
        log_format="json",
        session_timeout=TEST_SESSION_TIMEOUT,
    )
    await ensure_topics(value)
    return value


@dataclass
class Worker:
    """A `tipstream worker` subprocess."""

    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.starts += 1
        env = environment(self.settings) | self.extra_env
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory: start a worker subprocess on this test's deployment."""
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        worker = Worker(settings, tmp_path / f"worker-{len(workers)}.log", extra_env=extra_env)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(
        bootstrap_servers=BASE.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await p.start()
    yield p
    await p.stop()


async def publish(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[str, Record]]
) -> None:
    """Publish records keyed by their key and wait until the broker has them all."""
    futures = [await producer.send(topic, encode(r), key=k.encode()) for k, r in records]
    await asyncio.gather(*futures)


async def publish_facts(
    producer: AIOKafkaProducer,
    topic: str,
    facts: Sequence[Fixture | MatchResult],
    *,
    at: datetime | None = None,
    partition: int | None = None,
) -> None:
    """Publish fixtures or results keyed by match id, each with the event-time header a
    backfill sets (``tipstream replay``: a fixture just before kickoff, a result at its final
    whistle), or ``at`` for all; historical facts without it would happen now, after their
    kickoff, and no prediction of theirs would count. ``partition``: all to that one (a
    producer that keys by league), instead of by the key's hash."""
    futures = []
    for fact in facts:
        when = at or (
            fact.kickoff - FIXTURE_LEAD
            if isinstance(fact, Fixture)
            else fact.kickoff + RESULT_DELAY
        )
        futures.append(
            await producer.send(
                topic,
                encode(fact),
                key=fact.match_id.encode(),
                partition=partition,
                headers=[(EVENT_TIME_HEADER, when.isoformat().encode())],
            )
        )
    await asyncio.gather(*futures)


async def publish_raw(
    producer: AIOKafkaProducer, topic: str, items: list[tuple[bytes | None, bytes]]
) -> None:
    futures = [await producer.send(topic, value, key=key) for key, value in items]
    await asyncio.gather(*futures)


async def read_topic(topic: str, *, expect: int | None = None, timeout: float = 60.0) -> list[Any]:
    """Every message of a topic from the start; waits until ``expect`` arrived (or timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=BASE.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                messages.extend(records)
            if expect is not None and len(messages) >= expect:
                # A little longer, to catch duplicates beyond the expected count.
                extra = await consumer.getmany(timeout_ms=1000)
                for records in extra.values():
                    messages.extend(records)
                break
            if expect is None and not batch:
                break
    finally:
        await consumer.stop()
    return messages


async def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float = 120.0,
    interval: float = 0.5,
    what: str = "condition",
) -> Any:
    """Poll an async condition until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
