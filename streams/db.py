"""PostgreSQL access through asyncpg: the pool, and the migrations that ship with the project."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from streams.log import get_logger, redact

log = get_logger(__name__)

SERVICE_PATIENCE_S = 20.0
"""How long :func:`connect` retries by default: a worker (or ``db migrate``) may start next to
a database that is still starting."""
CONNECT_PATIENCE: ContextVar[float] = ContextVar("connect_patience", default=SERVICE_PATIENCE_S)
"""Seconds :func:`connect` keeps retrying in this context; a one-shot command sets a few
seconds so an operator learns at once that the database is down."""
QUIET_BELOW_S = 5.0
"""Retries within a patience shorter than this are logged at debug only: the command's own
one-line error says what happened, a line per 200 ms retry would only bury it."""

# Any two processes migrating at once serialise on this advisory lock (an arbitrary constant).
_MIGRATION_LOCK = 724_190_331


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file from ``streams/migrations``; its version is the file name's stem."""

    version: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The project's migrations in version order."""
    folder = resources.files("streams") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [
        Migration(version=entry.name.removesuffix(".sql"), sql=entry.read_text()) for entry in files
    ]


async def connect(
    database_url: str, *, min_size: int = 1, max_size: int = 4, patience: float | None = None
) -> asyncpg.Pool:
    """A connection pool; retries for ``patience`` seconds (default: :data:`CONNECT_PATIENCE`)
    because the database may still be starting, logging each retry, then raises the last
    error."""
    budget = CONNECT_PATIENCE.get() if patience is None else patience
    report = log.warning if budget >= QUIET_BELOW_S else log.debug
    deadline = time.monotonic() + budget
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                database_url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=60,
                # One attempt must not outlast the whole budget (asyncpg's default is 60 s).
                timeout=max(1.0, min(60.0, budget)),
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError) as error:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            wait = min(delay, left)
            report(
                "database not reachable yet",
                url=redact(database_url),
                error=str(error) or type(error).__name__,
                attempt=attempt,
                retry_in_s=round(wait, 2),
                giving_up_in_s=round(left, 1),
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)


async def create_database(
    server_url: str, name: str, *, template: str | None = None, replace: bool = False
) -> None:
    """Create database ``name`` on the server of ``server_url`` (optionally a copy of
    ``template``; ``replace`` drops an existing one first)."""
    admin = await asyncpg.connect(server_url)
    try:
        if replace:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        copy = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await admin.close()


DROP_ATTEMPTS = 10
"""A database that autovacuum is working in cannot be dropped by a role without
``pg_signal_backend`` (``infra/postgres.sh`` grants it; another server may not): retried once a
second meanwhile."""


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (its open sessions too), if it exists."""
    admin = await asyncpg.connect(server_url)
    try:
        for attempt in range(DROP_ATTEMPTS):
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                if attempt == DROP_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await admin.close()


@asynccontextmanager
async def session(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a command's work (opened with :func:`connect`'s retries)."""
    pool = await connect(database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            yield conn
    finally:
        await pool.close()


async def migrate_url(database_url: str) -> list[str]:
    """:func:`migrate` the database at ``database_url`` over a connection of its own."""
    async with session(database_url) as conn:
        return await migrate(conn)


async def migrate(conn: Any, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not yet recorded, all in one transaction; return those applied.

    Idempotent: a migrated database is left as it is. Versions are recorded in
    ``schema_migrations`` so a later release only runs its new files.
    """
    pending = bundled_migrations() if migrations is None else migrations
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
            )
            applied.append(migration.version)
            log.info("migration applied", version=migration.version)
    return applied
