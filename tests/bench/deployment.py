"""The benchmark's own deployment: topic prefix, app id and database, made and removed per run.

Like the integration tests' fixtures, every run is isolated from the other users of the shared
broker and database, and leaves nothing behind: its database is dropped and its topics (and
the Faust internal topics named after its app ids) are deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import Settings
from streams.topics import ensure_topics
from tests import deployment
from tests.deployment import environment, isolated


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
        return isolated(
            self.base,
            f"bench-{self.tag}-{namespace}",
            database=self.database,
            log_format="json",
            log_level="warning",
        )

    async def create(self, namespaces: Sequence[str]) -> None:
        """The database (migrated, registry seeded) and every namespace's topics."""
        await deployment.create(self.settings(namespaces[0]), self.base)
        for namespace in namespaces[1:]:
            await ensure_topics(self.settings(namespace))

    async def remove(self) -> None:
        """Drop the database and delete the run's topics; never fails the run."""
        await deployment.remove(
            self.settings("any"), self.base, (f"bench-{self.tag}-", f"tipstream-bench-{self.tag}-")
        )


@dataclass
class Process:
    """A subprocess under test (a worker or the passthrough), logging to a file."""

    argv: list[str]
    settings: Settings
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
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

    def cpu_s(self) -> float:
        """CPU seconds the process has used so far, user and system, all threads."""
        if self.popen is None:
            return 0.0
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
