"""The pipeline on a production-shaped Kafka: the three-broker KRaft cluster of
``infra/kafka-cluster.sh`` (replication 3, min.insync.replicas 2) and the SASL_SSL broker of
``infra/kafka-secure.sh``, each started by the test in a state folder of its own and stopped
afterwards, failure or not. Workers are real subprocesses; nothing of Kafka or PostgreSQL is
mocked. Needs Java (the brokers are JVMs); without it the tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import decode
from schemas.events import Evaluation
from schemas.football_csv import league_file
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics, describe_existing, ensure_topics
from tests.deployment import environment, free_port
from tests.integration.conftest import BASE, REPO, TEST_SESSION_TIMEOUT, Worker, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, events_between, publish_events

pytestmark = pytest.mark.integration

JAVA = shutil.which("java")
SEASON_START, SEASON_END = "2010-08-01", "2010-09-30"  # about 60 matches, 120 events


def _free_block(size: int) -> int:
    """The first of ``size`` consecutive free loopback ports (the scripts take a base port)."""
    for _ in range(200):
        base = random.randrange(21000, 29000)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {size} consecutive free ports")


def _share_jars(state: Path) -> None:
    """Point the fresh state folder at the checkout's resolved broker jars (``make services``
    fetched them) instead of resolving them from Maven again."""
    source = Path(os.environ.get("TIPSTREAM_STATE_DIR") or REPO / ".local") / "kafka" / "libs"
    if (source / ".complete").exists():
        (state / "kafka").mkdir(parents=True, exist_ok=True)
        (state / "kafka" / "libs").symlink_to(source)


def _script(env: dict[str, str], *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [str(REPO / "infra" / args[0]), *args[1:]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if check and done.returncode:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


@dataclass
class Cluster:
    """The three-broker cluster of one test module."""

    env: dict[str, str]
    url: str

    def kill(self, node: int) -> None:
        _script(self.env, "kafka-cluster.sh", "kill", str(node))

    def restart(self, node: int) -> None:
        _script(self.env, "kafka-cluster.sh", "restart", str(node))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """infra/kafka-cluster.sh start in a fresh state folder; stopped at the end whatever
    happened (a failed start too)."""
    if JAVA is None:
        pytest.skip("java is not installed: the three-broker Kafka cluster needs it")
    state = tmp_path_factory.mktemp("cluster-state")
    _share_jars(state)
    env = dict(os.environ) | {
        "TIPSTREAM_STATE_DIR": str(state),
        "TIPSTREAM_CLUSTER_BASE_PORT": str(_free_block(6)),
    }
    try:
        _script(env, "kafka-cluster.sh", "start")
        yield Cluster(env, _script(env, "kafka-cluster.sh", "bootstrap").strip())
    finally:
        _script(env, "kafka-cluster.sh", "stop", check=False)


@pytest.fixture(scope="module")
def secure_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """infra/kafka-secure.sh start (SASL_SSL, throwaway CA); its client.env as a dict."""
    if JAVA is None:
        pytest.skip("java is not installed: the SASL_SSL broker needs it")
    state = tmp_path_factory.mktemp("secure-state")
    _share_jars(state)
    env = dict(os.environ) | {
        "TIPSTREAM_STATE_DIR": str(state),
        "TIPSTREAM_SECURE_KAFKA_PORT": str(_free_block(3)),
    }
    try:
        _script(env, "kafka-secure.sh", "start")
        client: dict[str, str] = {}
        for line in (state / "kafka-secure" / "client.env").read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").partition("=")
                client[key] = value.strip("'\"")
        yield client
    finally:
        _script(env, "kafka-secure.sh", "stop", check=False)


def deployment(kafka_url: str, database_url: str, **changes: Any) -> Settings:
    """An isolated deployment on another Kafka: the app id is left to follow the prefix."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_url": kafka_url,
        "topic_prefix": f"test-{tag}",
        "app_id": "",
        "database_url": database_url,
        "web_port": free_port(),
        "partitions": 4,
        "snapshot_every": 50,
        "snapshot_seconds": 2.0,
        "log_format": "json",
        "session_timeout": TEST_SESSION_TIMEOUT,
    }
    return BASE.replace(**(values | changes))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory of worker subprocesses, each on its own web port; all stopped at the end."""
    started: list[Worker] = []

    def start(settings: Settings) -> Worker:
        worker = Worker(
            settings.replace(web_port=free_port()), tmp_path / f"worker-{len(started)}.log"
        )
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@contextlib.asynccontextmanager
async def producer_for(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def evaluation_ids(settings: Settings) -> list[str]:
    """Every evaluation id on the evaluations topic, read from the start to its current end."""
    topic = Topics.from_settings(settings).evaluations
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    ids: list[str] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                ids += [decode(r.value, Evaluation).evaluation_id for r in records]
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return ids


async def scored(pool: asyncpg.Pool) -> tuple[int, int]:
    """(current evaluations, distinct (match, model) pairs among them): a pair twice is a
    duplicate. Superseded ones (a correction, or a re-issued fixture's later prediction) are
    history, not duplicates."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (match_id, model_id)) AS pairs "
            "FROM evaluations WHERE superseded_by IS NULL"
        )
    return int(row["n"]), int(row["pairs"])


def _reached(pool: asyncpg.Pool, floor: int) -> Callable[[], Any]:
    async def check() -> bool:
        return (await scored(pool))[0] >= floor

    return check


def web(worker: Worker, path: str) -> tuple[int, Any]:
    """(HTTP status, JSON body) of a worker's endpoint."""
    url = f"http://127.0.0.1:{worker.settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, None


def features_partitions(worker: Worker) -> set[int]:
    """The partitions of match-features a worker owns, from its /status/."""
    status, body = web(worker, "/status/")
    if status != 200:
        return set()
    topic = Topics.from_settings(worker.settings).features
    return {int(p.rsplit(":", 1)[1]) for p in body["partitions"] if p.startswith(f"{topic}:")}


def _ready(worker: Worker) -> Callable[[], Any]:
    async def check() -> bool:
        status, _ = await asyncio.to_thread(web, worker, "/ready")
        return status == 200

    return check


async def leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> leader broker id of a topic."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: p["leader"] for p in described["partitions"]}


async def busiest_partition(settings: Settings, topic: str) -> int:
    """The partition of ``topic`` holding the most messages."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return max(partitions, key=lambda tp: ends[tp]).partition


def duplicates(ids: list[str]) -> int:
    return sum(n - 1 for n in Counter(ids).values() if n > 1)


async def test_leader_broker_killed_mid_stream_loses_and_duplicates_nothing(
    cluster: Cluster,
    fresh_database: str,
    db: asyncpg.Pool,
    workers: Callable[..., Worker],
) -> None:
    """Replication 3, min.insync.replicas 2: SIGKILL the broker leading the busiest input
    partition half way through two months of matches; the pipeline scores and evaluates the
    second half while that broker is down, and once it is back every match is evaluated by every
    model exactly once, in the database and on the evaluations topic."""
    settings = deployment(cluster.url, fresh_database, replication_factor=3, min_insync_replicas=2)
    topics = Topics.from_settings(settings)
    await ensure_topics(settings)
    events = events_between(SEASON_START, SEASON_END)
    matches = sum(1 for e in events if e.kind == "features")
    expected = matches * SEEDED_MODELS
    half = len(events) // 2
    first_matches = sum(1 for e in events[:half] if e.kind == "features")
    worker = workers(settings)
    await wait_for(_ready(worker), timeout=120, what="the worker ready")
    killed: int | None = None
    try:
        async with producer_for(settings) as producer:
            await publish_events(producer, settings, events[:half])
            await wait_for(_reached(db, SEEDED_MODELS), timeout=120, what="the first evaluations")
            partition = await busiest_partition(settings, topics.features)
            killed = (await leaders(settings, topics.features))[partition]
            before = (await scored(db))[0]
            cluster.kill(killed)
            await publish_events(producer, settings, events[half:])
        # Everything, with one broker of three down: the pipeline kept going.
        await wait_for(
            _reached(db, expected), timeout=240, what=f"{expected} evaluations, broker down"
        )
        during = (await scored(db))[0] - before
        assert worker.process is not None
        assert worker.process.poll() is None
    finally:
        if killed is not None:
            cluster.restart(killed)
            # The next test shares the cluster: leave it with every replica caught up.
            await wait_for(lambda: _in_sync(settings), timeout=180, what="every replica in sync")
    # The changelog Faust created follows the settings too.
    described = await _describe_all(settings)
    changelog = f"{settings.group_id}-ledgers-changelog"
    assert described[changelog].replicas == 3
    assert described[changelog].configs["min.insync.replicas"] == "2"
    assert all(d.replicas == 3 for d in described.values())
    rows, pairs = await scored(db)
    ids = await evaluation_ids(settings)
    lost, duplicated = expected - pairs, rows - pairs
    print(
        f"CLUSTER killed broker {killed}, leader of match-features partition {partition}, after "
        f"{half} of {len(events)} events ({first_matches} of {matches} matches, {before} "
        f"evaluations); {during} evaluations while it was down; lost {lost}, duplicated "
        f"{duplicated}; evaluations topic {len(ids)} messages, {duplicates(ids)} duplicates"
    )
    assert (lost, duplicated) == (0, 0)
    assert len(ids) == expected
    assert duplicates(ids) == 0
    assert "Traceback" not in worker.log_text()


async def _in_sync(settings: Settings) -> bool:
    """Every partition of the cluster has all its replicas in sync (a restarted broker has
    caught up)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
        return all(len(p["isr"]) == len(p["replicas"]) for t in described for p in t["partitions"])
    finally:
        await admin.close()


async def _describe_all(settings: Settings) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        names = [
            t
            for t in await admin.list_topics()
            if t.startswith((f"{settings.topic_prefix}.", f"{settings.group_id}-"))
        ]
        return await describe_existing(admin, names)
    finally:
        await admin.close()


async def test_two_workers_share_the_partitions_and_a_rebalance_loses_nothing(
    cluster: Cluster,
    fresh_database: str,
    db: asyncpg.Pool,
    workers: Callable[..., Worker],
) -> None:
    """Two workers in one group on the cluster: the second, started mid-stream, takes a share
    of the partitions (both /ready); the first is stopped mid-stream and the second takes them
    all; every match is evaluated by every model exactly once."""
    settings = deployment(cluster.url, fresh_database, replication_factor=3, min_insync_replicas=2)
    await ensure_topics(settings)
    events = events_between(SEASON_START, SEASON_END)
    matches = sum(1 for e in events if e.kind == "features")
    expected = matches * SEEDED_MODELS
    third = len(events) // 3
    first = workers(settings)
    await wait_for(_ready(first), timeout=120, what="the first worker ready")
    async with producer_for(settings) as producer:
        await publish_events(producer, settings, events[:third])
        await wait_for(_reached(db, SEEDED_MODELS), timeout=120, what="the first evaluations")
        second = workers(settings)
        await wait_for(_ready(second), timeout=120, what="the second worker ready")
        await wait_for(_ready(first), timeout=120, what="the first worker ready again")

        async def shared() -> bool:
            a, b = features_partitions(first), features_partitions(second)
            return bool(a) and bool(b) and not a & b and a | b == set(range(4))

        await wait_for(shared, timeout=60, what="the partitions shared between two workers")
        shares = (sorted(features_partitions(first)), sorted(features_partitions(second)))
        await publish_events(producer, settings, events[third : 2 * third])
        first.stop()  # mid-stream: the second third is still being reconciled
        stopped_at = (await scored(db))[0]
        await publish_events(producer, settings, events[2 * third :])
    await wait_for(_reached(db, expected), timeout=240, what=f"{expected} evaluations")

    async def takes_all() -> bool:
        return features_partitions(second) == set(range(4))

    await wait_for(takes_all, timeout=60, what="the second worker owning every partition")
    rows, pairs = await scored(db)
    ids = await evaluation_ids(settings)
    print(
        f"REBALANCE shares {shares[0]} / {shares[1]}; first worker stopped at {stopped_at} of "
        f"{expected} evaluations; lost {expected - pairs}, duplicated {rows - pairs}; "
        f"evaluations topic {len(ids)} messages, {duplicates(ids)} duplicates"
    )
    assert (expected - pairs, rows - pairs) == (0, 0)
    assert set(ids)
    assert len(set(ids)) == expected
    assert "Traceback" not in second.log_text()


async def test_sasl_ssl_end_to_end_with_scram(
    secure_env: dict[str, str],
    fresh_database: str,
    db: asyncpg.Pool,
    workers: Callable[..., Worker],
) -> None:
    """Over SASL_SSL with SCRAM and the scripts' throwaway CA: `tipstream replay` publishes a
    month of matches, a worker scores and reconciles them, every match is evaluated by every
    model in PostgreSQL; the same deployment with a wrong password is refused."""
    settings = deployment(
        secure_env["TIPSTREAM_KAFKA_URL"],
        fresh_database,
        kafka_security_protocol=secure_env["TIPSTREAM_KAFKA_SECURITY_PROTOCOL"],
        kafka_sasl_mechanism=secure_env["TIPSTREAM_KAFKA_SASL_MECHANISM"],
        kafka_sasl_username=secure_env["TIPSTREAM_KAFKA_SASL_USERNAME"],
        kafka_sasl_password=secure_env["TIPSTREAM_KAFKA_SASL_PASSWORD"],
        kafka_ssl_cafile=secure_env["TIPSTREAM_KAFKA_SSL_CAFILE"],
        partitions=2,
    )
    assert settings.kafka_sasl_mechanism.startswith("SCRAM-")
    await ensure_topics(settings)
    worker = workers(settings)
    await wait_for(_ready(worker), timeout=120, what="the worker ready over SASL_SSL")
    start, end = "2010-08-01", "2010-08-31"
    matches = sum(1 for e in events_between(start, end) if e.kind == "features")
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m", "streams.cli", "replay",
            "--data", str(league_file("england-premier-league")),
            "--leagues", "england-premier-league", "--from", start, "--to", end, "--sync",
        ],
        cwd=REPO, env=environment(settings), capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    expected = matches * SEEDED_MODELS
    await wait_for(_reached(db, expected), timeout=180, what=f"{expected} evaluations")
    rows, pairs = await scored(db)
    assert (rows, pairs) == (expected, expected)
    print(f"SECURE {settings.kafka_sasl_mechanism}: {matches} matches, {rows} evaluations")
    wrong = settings.replace(kafka_sasl_password="wrong")
    admin = AIOKafkaAdminClient(**client_options(wrong), request_timeout_ms=10000)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal: it must not connect
        await asyncio.wait_for(admin.start(), 20)
    with contextlib.suppress(Exception):
        await admin.close()
