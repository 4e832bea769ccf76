"""Checks of the Kafka the infra scripts start, with aiokafka from the project's venv.

    .venv/bin/python infra/kafka_check.py cluster [--messages N]
        On the three-broker cluster (infra/kafka-cluster.sh start): creates a topic with
        replication 3 and min.insync.replicas 2, produces N keyed messages with acks=all and
        idempotence, SIGKILLs the leader of partition 0 half way (infra/kafka-cluster.sh kill),
        keeps producing with one broker down, consumes everything back, restarts the broker.
        Exit 0 when lost 0 and duplicated 0.
    .venv/bin/python infra/kafka_check.py secure [--mechanism PLAIN|SCRAM-SHA-256] [--mtls]
        On the SASL_SSL broker (infra/kafka-secure.sh start): produces and consumes N messages over
        the connection settings of $STATE/kafka-secure/client.env (SCRAM-SHA-512 unless
        --mechanism), or of client-mtls.env (--mtls: TLS with a client certificate), and shows
        that a wrong password (or no client certificate) is refused.

Prints one line of figures; meant for a person or `make chaos`, not imported by the service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TIPSTREAM_STATE_DIR") or ROOT / ".local")


async def _script(*args: str) -> str:
    """Runs one of the infra scripts; its stdout, its log lines passed through to stderr."""
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {process.returncode}")
    return out.decode().strip()


def _security(env: dict[str, str]) -> dict[str, object]:
    protocol = env.get("TIPSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=env.get("TIPSTREAM_KAFKA_SSL_CAFILE"),
            certfile=env.get("TIPSTREAM_KAFKA_SSL_CERTFILE"),
            keyfile=env.get("TIPSTREAM_KAFKA_SSL_KEYFILE"),
        )
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = env.get("TIPSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        options["sasl_plain_username"] = env.get("TIPSTREAM_KAFKA_SASL_USERNAME")
        options["sasl_plain_password"] = env.get("TIPSTREAM_KAFKA_SASL_PASSWORD")
    return options


async def _consume_all(
    bootstrap: str, topic: str, expected: int, options: dict[str, object]
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"check-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                values.extend(r.value for r in records if r.value is not None)
        # A little longer, to see duplicates that would arrive after the expected count.
        for records in (await consumer.getmany(timeout_ms=2000)).values():
            values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


def _tally(sent: int, values: list[bytes]) -> tuple[int, int]:
    distinct = set(values)
    return sent - len(distinct), len(values) - len(distinct)


async def cluster(messages: int) -> int:
    script = str(ROOT / "infra/kafka-cluster.sh")
    bootstrap = (await _script(script, "bootstrap")).removeprefix("kafka://")
    topic = f"check-rf3-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 6, 3, topic_configs={"min.insync.replicas": "2"})]
        )
        await asyncio.sleep(1)
        described = await admin.describe_topics([topic])
        leader = next(p["leader"] for p in described[0]["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    killed_at = None
    started = time.monotonic()
    try:
        pending = []
        for i in range(messages):
            if i == messages // 2:  # mid-stream: up to 100 sends are still in flight
                await _script(script, "kill", str(leader))
                killed_at = time.monotonic()
            value = f"{i}".encode()
            pending.append(await producer.send(topic, value, key=f"k{i % 97}".encode()))
            if len(pending) >= 100:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    after_kill = time.monotonic() - (killed_at or started)
    values = await _consume_all(bootstrap, topic, messages, {})
    lost, duplicated = _tally(messages, values)
    await _script(script, "restart", str(leader))
    print(
        f"CLUSTER topic {topic} rf=3 min.insync=2: produced {messages} (acks=all), broker {leader} "
        f"(leader of partition 0) killed after {messages // 2}, second half sent in "
        f"{after_kill:.1f} s with it down; consumed {len(values)}: lost {lost}, "
        f"duplicated {duplicated}; broker {leader} restarted"
    )
    return 0 if lost == 0 and duplicated == 0 else 1


def _client_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (STATE / "kafka-secure" / name).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    return env


async def secure(messages: int, mechanism: str | None, mtls: bool) -> int:
    env = _client_env("client-mtls.env" if mtls else "client.env")
    if mechanism:
        env["TIPSTREAM_KAFKA_SASL_MECHANISM"] = mechanism
    bootstrap = env["TIPSTREAM_KAFKA_URL"].removeprefix("kafka://")
    options = _security(env)
    topic = f"check-secure-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    await producer.start()
    try:
        for i in range(messages):
            await producer.send(topic, f"{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    values = await _consume_all(bootstrap, topic, messages, options)
    lost, duplicated = _tally(messages, values)
    refused = False
    if mtls:  # the same CA, no client certificate
        wrong = {
            **options,
            "ssl_context": create_ssl_context(cafile=env["TIPSTREAM_KAFKA_SSL_CAFILE"]),
        }
    else:
        wrong = {**options, "sasl_plain_password": "wrong"}
    bad = AIOKafkaProducer(bootstrap_servers=bootstrap, **wrong)
    try:
        await asyncio.wait_for(bad.start(), 20)
    except Exception:  # noqa: BLE001 - any refusal will do: the point is that it does not connect
        refused = True
    finally:
        await bad.stop()
    print(
        f"SECURE {options['security_protocol']} {options.get('sasl_mechanism', '')} "
        f"as {env.get('TIPSTREAM_KAFKA_SASL_USERNAME', 'client certificate')} on {bootstrap}: "
        f"produced {messages}, consumed {len(values)}: lost {lost}, duplicated {duplicated}; "
        f"{'no client certificate' if mtls else 'wrong password'} refused: {refused}"
    )
    return 0 if lost == 0 and duplicated == 0 and refused else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=["cluster", "secure"])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--mechanism", choices=["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
    parser.add_argument("--mtls", action="store_true")
    args = parser.parse_args()
    if args.check == "cluster":
        return asyncio.run(cluster(args.messages))
    return asyncio.run(secure(args.messages, args.mechanism, args.mtls))


if __name__ == "__main__":
    sys.exit(main())
