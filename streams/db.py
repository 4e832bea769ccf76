"""PostgreSQL access through asyncpg: the pool, and the migrations that ship with the project."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from streams.log import get_logger

log = get_logger(__name__)

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


async def connect(database_url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A connection pool; retries for a while because the database may still be starting."""
    delay = 0.2
    for attempt in range(8):
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                database_url, min_size=min_size, max_size=max_size, command_timeout=60
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError) as error:
            if attempt == 7:
                raise
            log.warning("database not reachable yet", error=str(error), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


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


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (its open sessions too), if it exists."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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
