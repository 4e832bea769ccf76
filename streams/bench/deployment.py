"""The benchmark's own deployment: topic prefix, app id and database, made and removed per run.

Like the integration tests' fixtures, every run is isolated from the other users of the shared
broker and database, and leaves nothing behind: its database is dropped and its topics (and
the Faust internal topics named after its app ids) are deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from streams.app import prepare
from streams.db import connect, migrate
from streams.settings import Settings
from streams.topics import ensure_topics


def free_port() -> int:
    """A TCP port nobody listens on (each worker's web endpoint needs one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Deployment:
    """One benchmark run's settings; ``namespace`` makes a second, separate set of topics."""

    base: Settings
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tipstream-bench-")))

    @property
    def database(self) -> str:
        return f"tipstream_bench_{self.tag}"

    def settings(self, namespace: str) -> Settings:
        """Settings of one namespace of this run (``scorer``, ``reconciler``)."""
        return self.base.replace(
            topic_prefix=f"bench-{self.tag}-{namespace}",
            app_id=f"tipstream-bench-{self.tag}-{namespace}",
            database_url=self.base.database_url.rsplit("/", 1)[0] + "/" + self.database,
            web_port=free_port(),
            log_format="json",
            log_level="warning",
        )

    async def create(self, namespaces: Sequence[str]) -> None:
        """The database (migrated, registry seeded) and every namespace's topics."""
        admin = await asyncpg.connect(self.base.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        first = self.settings(namespaces[0])
        pool = await connect(first.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        finally:
            await pool.close()
        await prepare(first)
        for namespace in namespaces[1:]:
            await ensure_topics(self.settings(namespace))

    async def remove(self) -> None:
        """Drop the database and delete the run's topics; never fails the run."""
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            admin = await asyncpg.connect(self.base.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()
        client = AIOKafkaAdminClient(bootstrap_servers=self.base.kafka_bootstrap)
        await client.start()
        try:
            mine = [
                t
                for t in await client.list_topics()
                if t.startswith((f"bench-{self.tag}-", f"tipstream-bench-{self.tag}-"))
            ]
            if mine:
                await client.delete_topics(mine)
        finally:
            await client.close()


def environment(settings: Settings) -> dict[str, str]:
    """The process environment that makes a subprocess use ``settings``."""
    env = dict(os.environ)
    for name in settings.__dataclass_fields__:
        env[f"TIPSTREAM_{name.upper()}"] = str(getattr(settings, name))
    return env


@dataclass
class Process:
    """A subprocess under test (a worker or the passthrough), logging to a file."""

    argv: list[str]
    settings: Settings
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                [sys.executable, *self.argv],
                # Faust writes a data directory into its working directory: keep it out of the repo.
                cwd=self.log_path.parent,
                env=environment(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean Faust shutdown), then SIGKILL if it hangs."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@asynccontextmanager
async def running(process: Process) -> AsyncIterator[Process]:
    """Start ``process`` for the duration of a block."""
    process.start()
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)
