"""One test deployment helper for the integration tests, ``make bench`` and ``make chaos``.

A deployment of its own (topic prefix, Faust app id, database, web port) isolates a test or a
harness run from every other user of the shared broker and database; subprocesses get its
settings through the environment.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from agents.testing import TEST_REGISTRY_KEY
from streams.db import create_database, drop_database, migrate_url
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker.app import prepare

REPO = Path(__file__).resolve().parents[1]


def base_settings() -> Settings:
    """The environment's settings; with no registry key and no development mode (pytest run
    without make), the test key: a harness always signs with an explicit key."""
    settings = Settings.from_env()
    if not settings.registry_key and not settings.dev_mode:
        settings = settings.replace(registry_key=TEST_REGISTRY_KEY.decode())
    return settings


def free_port() -> int:
    """A TCP port nobody listens on (each worker's web endpoint needs one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def isolated(base: Settings, tag: str, *, database: str, **changes: object) -> Settings:
    """``base`` with its own topic prefix ``tag`` (and so its own app id, derived from it),
    database and web port."""
    return base.with_database(database).replace(
        topic_prefix=tag, app_id="", web_port=free_port(), **changes
    )


def run_cli(
    settings: Settings, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``tipstream ARGS`` with ``settings``, as an operator runs it (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes a subprocess use ``settings`` (and find ``tests``,
    for the harnesses' own entry points)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ) | settings.as_env() | {"PYTHONPATH": path} | extra


async def create(settings: Settings, server: Settings, *, seeded: bool = True) -> None:
    """A fresh migrated database for ``settings`` on ``server``'s PostgreSQL (an earlier one of
    the same name is dropped), then its topics; with ``seeded``, also the registry."""
    name = settings.database_url.rsplit("/", 1)[1]
    await create_database(server.database_url, name, replace=True)
    await migrate_url(settings.database_url)
    if seeded:
        await prepare(settings)
    else:
        await ensure_topics(settings)


async def remove(settings: Settings, server: Settings, prefixes: Iterable[str] = ()) -> None:
    """Drop the deployment's database and delete its topics (and those named by ``prefixes``,
    e.g. Faust's internal topics); never fails: it runs in clean-ups."""
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        await drop_database(server.database_url, settings.database_url.rsplit("/", 1)[1])
    starts = (f"{settings.topic_prefix}.", settings.group_id, *prefixes)
    with contextlib.suppress(Exception):  # cleanup only: a leftover topic is harmless
        client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await client.start()
        try:
            mine = [t for t in await client.list_topics() if t.startswith(starts)]
            if mine:
                await client.delete_topics(mine)
        finally:
            await client.close()
