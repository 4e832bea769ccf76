"""The model registry's tables (``models``, ``model_versions``, ``champion_history``): versions,
status, metrics and signed serialized state. Learner, scorer, champion/challenger and the
operator commands all go through these functions; none writes SQL of its own on these tables.

State bytes are HMAC-signed with the deployment's registry key before they are stored and
verified before they are restored, so the registry never unpickles bytes it did not write.
Status lives in ``models`` (one row per model, at most one champion); every version in
``model_versions``; every change of champion in ``champion_history`` for rollback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models import catalog
from models.base import Model
from models.serialization import sha256_hex, sign, verify
from schemas.events import ModelSnapshot

STATUSES = ("champion", "challenger", "reference", "retired")


class RegistryError(RuntimeError):
    """An operator request the registry refuses, with the reason."""


@dataclass
class RegisteredModel:
    """One active model as a scorer or learner holds it."""

    model_id: str
    kind: str
    status: str
    policy: str | None
    version: int
    model: Model
    learned: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    created_at: datetime | None = None


async def register(
    conn: Any,
    model: Model,
    *,
    status: str,
    key: bytes,
    policy: str | None = None,
    metrics: dict[str, float] | None = None,
) -> int:
    """Add a model (or a new version of it) and set its status; returns the stored version."""
    if status not in STATUSES:
        raise RegistryError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    async with conn.transaction():
        if status == "champion":
            await conn.execute("UPDATE models SET status = 'challenger' WHERE status = 'champion'")
        await conn.execute(
            """INSERT INTO models (model_id, kind, status, policy) VALUES ($1, $2, $3, $4)
               ON CONFLICT (model_id) DO UPDATE
               SET kind = EXCLUDED.kind, status = EXCLUDED.status, policy = EXCLUDED.policy,
                   updated_at = now()""",
            model.model_id,
            model.kind,
            status,
            policy,
        )
        version = await save_version(conn, model, key=key, metrics=metrics)
        if status == "champion":
            await _record_champion(conn, model.model_id, "registered as champion")
    return version


async def save_version(
    conn: Any,
    model: Model,
    *,
    key: bytes,
    metrics: dict[str, float] | None = None,
    learned: int = 0,
    last_evaluation_id: str | None = None,
    positions: dict[str, int] | None = None,
) -> int:
    """Store the model's current state as its version ``model.version`` (idempotent on it)."""
    state = model.snapshot()
    await conn.execute(
        """INSERT INTO model_versions (model_id, version, parent_version, kind, metrics, learned,
                                       last_evaluation_id, positions, state, state_sha256)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10)
           ON CONFLICT (model_id, version) DO NOTHING""",
        model.model_id,
        model.version,
        model.version - 1 if model.version > 0 else None,
        model.kind,
        json.dumps(metrics or {}),
        learned,
        last_evaluation_id,
        json.dumps(positions or {}),
        sign(state, key),
        sha256_hex(state),
    )
    return model.version


async def load_active(conn: Any, *, key: bytes) -> list[RegisteredModel]:
    """Every model not retired, at its latest version, restored from verified state."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (m.model_id)
                  m.model_id, m.kind, m.status, m.policy, v.version, v.state, v.learned,
                  v.positions, v.created_at
           FROM models m JOIN model_versions v USING (model_id)
           WHERE m.status <> 'retired'
           ORDER BY m.model_id, v.version DESC"""
    )
    return [_restore(row, key) for row in rows]


async def load_model(conn: Any, model_id: str, *, key: bytes) -> RegisteredModel:
    """One model at its latest version."""
    row = await conn.fetchrow(
        """SELECT m.model_id, m.kind, m.status, m.policy, v.version, v.state, v.learned,
                  v.positions, v.created_at
           FROM models m JOIN model_versions v USING (model_id)
           WHERE m.model_id = $1 ORDER BY v.version DESC LIMIT 1""",
        model_id,
    )
    if row is None:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return _restore(row, key)


def _restore(row: Any, key: bytes) -> RegisteredModel:
    model = catalog.restore(row["kind"], verify(bytes(row["state"]), key))
    model.version = row["version"]
    positions = row["positions"]
    return RegisteredModel(
        model_id=row["model_id"],
        kind=row["kind"],
        status=row["status"],
        policy=row["policy"],
        version=row["version"],
        model=model,
        learned=row["learned"],
        positions=json.loads(positions) if isinstance(positions, str) else dict(positions),
        created_at=row["created_at"],
    )


async def list_models(conn: Any) -> list[dict[str, Any]]:
    """One row per model: status, latest version, learned count, metrics, created time."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (m.model_id) m.model_id, m.kind, m.status, m.policy,
                  v.version, v.learned, v.metrics, v.state_sha256, v.created_at
           FROM models m JOIN model_versions v USING (model_id)
           ORDER BY m.model_id, v.version DESC"""
    )
    return [dict(row) for row in rows]


async def model_versions(conn: Any, model_id: str) -> list[dict[str, Any]]:
    """Every stored version of one model, newest first."""
    rows = await conn.fetch(
        """SELECT version, parent_version, kind, learned, last_evaluation_id, metrics,
                  state_sha256, created_at
           FROM model_versions WHERE model_id = $1 ORDER BY version DESC""",
        model_id,
    )
    if not rows:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return [dict(row) for row in rows]


async def promote(conn: Any, model_id: str, *, reason: str) -> None:
    """Make a model the champion; the former champion becomes a challenger."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT kind, status FROM models WHERE model_id = $1", model_id)
        if row is None:
            raise RegistryError(f"no model {model_id!r} in the registry")
        if row["status"] == "reference":
            raise RegistryError(f"{model_id!r} is a reference model and is never promoted")
        if row["status"] == "champion":
            raise RegistryError(f"{model_id!r} is already the champion")
        await conn.execute(
            "UPDATE models SET status = 'challenger', updated_at = now() WHERE status = 'champion'"
        )
        await conn.execute(
            "UPDATE models SET status = 'champion', updated_at = now() WHERE model_id = $1",
            model_id,
        )
        await _record_champion(conn, model_id, reason)


async def rollback(conn: Any) -> str:
    """Restore the previous champion; returns its id."""
    async with conn.transaction():
        history = await conn.fetch(
            "SELECT id, model_id FROM champion_history ORDER BY id DESC LIMIT 2"
        )
        if len(history) < 2:
            raise RegistryError("no previous champion to roll back to")
        current, previous = history[0]["model_id"], history[1]["model_id"]
        await conn.execute(
            "UPDATE models SET status = 'challenger', updated_at = now() WHERE model_id = $1",
            current,
        )
        await conn.execute(
            "UPDATE models SET status = 'champion', updated_at = now() WHERE model_id = $1",
            previous,
        )
        # Rolling back removes the newest entry, so a second rollback goes one further back.
        await conn.execute("DELETE FROM champion_history WHERE id = $1", history[0]["id"])
        return str(previous)


async def champion_id(conn: Any) -> str | None:
    """The current champion's id, if any."""
    value = await conn.fetchval("SELECT model_id FROM models WHERE status = 'champion'")
    return None if value is None else str(value)


async def _record_champion(conn: Any, model_id: str, reason: str) -> None:
    await conn.execute(
        "INSERT INTO champion_history (model_id, reason) VALUES ($1, $2)", model_id, reason
    )


async def status_snapshot(conn: Any, model_id: str) -> ModelSnapshot:
    """A snapshot event announcing a model's current version and status (after promote/rollback)."""
    row = await conn.fetchrow(
        """SELECT m.status, v.version, v.parent_version, v.kind, v.learned,
                  v.last_evaluation_id, v.state_sha256
           FROM models m JOIN model_versions v USING (model_id)
           WHERE m.model_id = $1 ORDER BY v.version DESC LIMIT 1""",
        model_id,
    )
    return ModelSnapshot(
        model_id=model_id,
        version=row["version"],
        parent_version=row["parent_version"],
        kind=row["kind"],
        status=row["status"],
        learned=row["learned"],
        last_evaluation_id=row["last_evaluation_id"],
        state_sha256=row["state_sha256"],
        created_at=datetime.now(UTC),
    )


async def next_version(conn: Any, model_id: str) -> int:
    """The version a newly fitted model of ``model_id`` gets: 0 for a new model."""
    current = await conn.fetchval(
        "SELECT max(version) FROM model_versions WHERE model_id = $1", model_id
    )
    return 0 if current is None else int(current) + 1
