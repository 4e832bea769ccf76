"""Operator commands: ``tipstream models list|show|promote|rollback`` and ``tipstream reconcile``.

Promote and rollback change the registry and announce the change on the snapshot topic, so
running scorers swap champions without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from agents import registry
from schemas.codec import encode
from streams.cli import reports
from streams.db import connect
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` and ``reconcile`` subcommands."""
    models = subparsers.add_parser("models", help="list, inspect, promote or roll back models")
    commands = models.add_subparsers(dest="models_command", required=True)
    commands.add_parser("list", help="every model with its status and latest version")
    show = commands.add_parser("show", help="one model's versions")
    show.add_argument("model_id")
    promote = commands.add_parser("promote", help="make a model the champion")
    promote.add_argument("model_id")
    promote.add_argument("--reason", default="manual promotion")
    commands.add_parser("rollback", help="restore the previous champion")
    models.set_defaults(func=_models)

    reconcile = subparsers.add_parser(
        "reconcile",
        help="report predictions waiting for results, orphan results, and "
        "disagreements between the topics and the database",
    )
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    reconcile.add_argument(
        "--skip-topics", action="store_true", help="report on the database only (no Kafka read)"
    )
    reconcile.set_defaults(func=_reconcile)


def _models(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_models_async(args, settings))
    except registry.RegistryError as error:
        print(f"tipstream: {error}")
        return 1


async def _with_conn(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await action(conn)
    finally:
        await pool.close()


async def _models_async(args: argparse.Namespace, settings: Settings) -> int:
    command = args.models_command
    if command == "list":
        rows = await _with_conn(settings, registry.list_models)
        print(f"{'model':24} {'kind':16} {'status':11} {'version':>7} {'learned':>8}  created")
        for row in rows:
            print(
                f"{row['model_id']:24} {row['kind']:16} {row['status']:11} "
                f"{row['version']:>7} {row['learned']:>8}  {row['created_at']:%Y-%m-%d %H:%M:%S}"
            )
        return 0
    if command == "show":
        versions = await _with_conn(settings, lambda c: registry.model_versions(c, args.model_id))
        for row in versions:
            metrics = (
                json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
            )
            print(
                f"{args.model_id} v{row['version']} (parent {row['parent_version']}) "
                f"kind={row['kind']} learned={row['learned']} sha256={row['state_sha256'][:12]} "
                f"created={row['created_at']:%Y-%m-%d %H:%M:%S} metrics={json.dumps(metrics)}"
            )
        return 0

    async def change(conn: Any) -> list[str]:
        before = await registry.champion_id(conn)
        if command == "promote":
            await registry.promote(conn, args.model_id, reason=args.reason)
        else:
            await registry.rollback(conn)
        after = await registry.champion_id(conn)
        changed = [m for m in (before, after) if m is not None]
        await _announce(settings, [await registry.status_snapshot(conn, m) for m in changed])
        return changed

    before_after = await _with_conn(settings, change)
    print(f"champion: {' -> '.join(before_after)}")
    return 0


async def _announce(settings: Settings, snapshots: list[Any]) -> None:
    """Publish status snapshots so every running scorer reloads now."""
    topics = Topics.from_settings(settings)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for snapshot in snapshots:
            await producer.send_and_wait(
                topics.snapshots, encode(snapshot), key=snapshot.model_id.encode()
            )
    finally:
        await producer.stop()


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(
        reports.reconciliation_report(
            settings, now=datetime.now(UTC), read_topics=not args.skip_topics
        )
    )
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else report.render())
    return 0
