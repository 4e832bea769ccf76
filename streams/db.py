"""PostgreSQL access through asyncpg: the pool, and the migrations that ship with the project."""

from __future__ import annotations

import asyncio
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


async def migrate(conn: Any, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return those applied.

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
