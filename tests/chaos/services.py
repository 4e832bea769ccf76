"""A private Kafka broker and PostgreSQL server for the scenarios that stop them.

The shared services on 9092/5432 serve everyone on the machine, so the broker-restart and
database-outage scenarios start their own pair with the project's scripts
(``infra/kafka.sh``, ``infra/postgres.sh``) on free ports under ``.local/chaos`` and stop only
that pair. The broker's jars are linked from the shared install rather than fetched again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from streams.settings import Settings
from tests.deployment import REPO, free_port


class PrivateServices:
    """One broker and one database server of our own."""

    def __init__(self, state: Path, log_path: Path) -> None:
        self.state = state
        self.log_path = log_path
        self.kafka_port = free_port()
        self.controller_port = free_port()
        self.pg_port = free_port()
        self.database_url = f"postgresql://tipstream:tipstream@127.0.0.1:{self.pg_port}/tipstream"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ) | {
            "TIPSTREAM_STATE_DIR": str(self.state),
            "TIPSTREAM_KAFKA_PORT": str(self.kafka_port),
            "TIPSTREAM_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "TIPSTREAM_DATABASE_URL": self.database_url,
            # A small heap: this broker carries one scenario's few thousand events.
            "TIPSTREAM_KAFKA_HEAP": "-Xms128m -Xmx512m",
        }

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at this pair."""
        return base.replace(
            kafka_url=f"kafka://127.0.0.1:{self.kafka_port}", database_url=self.database_url
        )

    async def _script(self, script: str, action: str) -> None:
        with self.log_path.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                str(REPO / "infra" / script), action, env=self.env, stdout=out, stderr=out
            )
            code = await process.wait()
        if code != 0:
            raise RuntimeError(f"infra/{script} {action} failed ({code}); see {self.log_path}")

    async def start(self) -> None:
        """Fresh data directories, then both servers."""
        shutil.rmtree(self.state, ignore_errors=True)
        (self.state / "kafka").mkdir(parents=True)
        shared_libs = REPO / ".local" / "kafka" / "libs"
        if (shared_libs / ".complete").exists():
            (self.state / "kafka" / "libs").symlink_to(shared_libs)
        await self.start_postgres()
        await self.start_kafka()

    async def start_kafka(self) -> None:
        await self._script("kafka.sh", "start")

    async def stop_kafka(self) -> None:
        await self._script("kafka.sh", "stop")

    async def start_postgres(self) -> None:
        await self._script("postgres.sh", "start")

    async def stop_postgres(self) -> None:
        await self._script("postgres.sh", "stop")

    async def close(self) -> None:
        """Stop both servers and remove their data."""
        for stop in (self.stop_kafka, self.stop_postgres):
            try:
                await stop()
            except RuntimeError as error:
                print(f"chaos: {error}", flush=True)
        shutil.rmtree(self.state, ignore_errors=True)
