"""The model registry's tables (``models``, ``model_versions``, ``champion_history``): versions,
status, metrics and signed serialized state. Learner, scorer, champion/challenger and the
operator commands all go through these functions; none writes SQL of its own on these tables.

State bytes are HMAC-signed with the deployment's registry key *for their row* (model id, kind,
version: ``models.serialization``) before they are stored, and verified before they are
restored, so the registry never unpickles bytes it did not write for that row. A row that fails
is skipped and reported (:class:`ActiveSet`), never raised out of a scorer's load.
Status lives in ``models`` (one row per model, at most one champion); every version in
``model_versions``, with its coverage in event time when a backfill stored it
(:func:`coverages`); every change of champion in ``champion_history`` for rollback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.backfill_rules import Coverage, rebuild_coverages
from models import catalog
from models.base import Model
from models.serialization import (
    LEGACY_MAGIC,
    MAGIC,
    IntegrityError,
    Keyring,
    StateContext,
    sha256_hex,
    sign,
    signed_key_id,
    verify,
    verify_legacy,
)
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
    keys: Keyring,
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
        version = await save_version(conn, model, keys=keys, metrics=metrics)
        if status == "champion":
            await _record_champion(conn, model.model_id, "registered as champion")
    return version


def version_context(model_id: str, kind: str, version: int) -> StateContext:
    """What a ``model_versions`` row's state is signed for."""
    return StateContext("version", model_id, kind, version)


def checkpoint_context(model_id: str, kind: str, version: int) -> StateContext:
    """What a ``learner_checkpoints`` row's state is signed for (its ``version`` column)."""
    return StateContext("checkpoint", model_id, kind, version)


async def save_version(
    conn: Any,
    model: Model,
    *,
    keys: Keyring,
    metrics: dict[str, float] | None = None,
    learned: int = 0,
    last_evaluation_id: str | None = None,
    positions: dict[str, int] | None = None,
    coverage: Coverage | None = None,
) -> int:
    """Store the model's current state as its version ``model.version`` (idempotent on it),
    signed for that model, kind and version; ``coverage``, what a backfill version took in
    event time (docs/BACKFILL.md), is stored with it (live versions have none)."""
    if coverage is not None and coverage.version != model.version:
        raise RegistryError(
            f"coverage of v{coverage.version} given for {model.model_id!r} v{model.version}"
        )
    state = model.snapshot()
    context = version_context(model.model_id, model.kind, model.version)
    await conn.execute(
        """INSERT INTO model_versions (model_id, version, parent_version, kind, metrics, learned,
                                       last_evaluation_id, positions, state, state_sha256,
                                       learned_from, learned_until, complete_through)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10, $11, $12, $13)
           ON CONFLICT (model_id, version) DO NOTHING""",
        model.model_id,
        model.version,
        model.version - 1 if model.version > 0 else None,
        model.kind,
        json.dumps(metrics or {}),
        learned,
        last_evaluation_id,
        json.dumps(positions or {}),
        sign(state, keys, context),
        sha256_hex(state),
        None if coverage is None else coverage.learned_from,
        None if coverage is None else coverage.learned_until,
        None if coverage is None else coverage.complete_through,
    )
    return model.version


@dataclass(frozen=True, slots=True)
class RefusedState:
    """A stored state that was not restored: which row, why, and its bytes (for the dead
    letter that keeps the evidence)."""

    purpose: str  # "version" (model_versions) or "checkpoint" (learner_checkpoints)
    model_id: str
    kind: str
    version: int
    reason: str
    state: bytes = field(repr=False)


class StateRefused(IntegrityError):
    """A model's stored state failed verification or could not be restored."""

    def __init__(self, refused: RefusedState) -> None:
        super().__init__(refused.reason)
        self.refused = refused


@dataclass
class ActiveSet:
    """What :func:`load_active` restored, and what it refused (skipped, never raised)."""

    models: list[RegisteredModel]
    refused: list[RefusedState]


FALLBACK_VERSIONS = 5
"""Older versions tried, newest first, when a model's latest state is refused: the scorer keeps
scoring with the newest version that verifies rather than drop the model."""

_MODEL_COLUMNS = """m.model_id, m.status, m.policy, v.version, v.kind,
                    v.state, v.learned, v.positions, v.created_at"""


async def load_active(conn: Any, *, keys: Keyring) -> ActiveSet:
    """Every model not retired, at its newest version whose state verifies and restores.

    One unverifiable row must not stop every worker (a crash loop under ``restart:
    unless-stopped``): it is skipped and returned in ``refused``; the model is served at its
    newest good version among the :data:`FALLBACK_VERSIONS` before it, or not at all.
    """
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (m.model_id) {_MODEL_COLUMNS}
           FROM models m JOIN model_versions v USING (model_id)
           WHERE m.status <> 'retired'
           ORDER BY m.model_id, v.version DESC"""
    )
    active = ActiveSet([], [])
    for row in rows:
        for _ in range(FALLBACK_VERSIONS + 1):
            try:
                active.models.append(_restore(row, keys))
                break
            except StateRefused as error:
                active.refused.append(error.refused)
            row = await conn.fetchrow(
                f"""SELECT {_MODEL_COLUMNS} FROM models m JOIN model_versions v USING (model_id)
                   WHERE m.model_id = $1 AND v.version < $2
                   ORDER BY v.version DESC LIMIT 1""",
                row["model_id"],
                row["version"],
            )
            if row is None:
                break
    return active


async def load_model(conn: Any, model_id: str, *, keys: Keyring) -> RegisteredModel:
    """One model at its latest version; :class:`StateRefused` if that state does not verify
    (no fallback: the learner must not continue a lineage from an older version)."""
    row = await conn.fetchrow(
        f"""SELECT {_MODEL_COLUMNS}
           FROM models m JOIN model_versions v USING (model_id)
           WHERE m.model_id = $1 ORDER BY v.version DESC LIMIT 1""",
        model_id,
    )
    if row is None:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return _restore(row, keys)


def restore_state(
    blob: bytes, keys: Keyring, context: StateContext, *, positions: Any = None
) -> Model:
    """The model a stored, signed state describes; :class:`StateRefused` for any failure.

    Any: a state that verifies but does not restore (a format this code no longer reads) is
    refused like a tampered one, so one row can never raise out of a load.
    """
    try:
        model = catalog.restore(context.kind, verify(blob, keys, context))
        if model.model_id != context.model_id or model.kind != context.kind:
            raise IntegrityError(f"state is of {model.model_id!r} ({model.kind})")
    except Exception as error:
        reason = str(error) if isinstance(error, IntegrityError) else f"restore failed: {error!r}"
        raise StateRefused(
            RefusedState(
                context.purpose,
                context.model_id,
                context.kind,
                context.version,
                reason[:500],
                blob,
            )
        ) from error
    model.version = context.version
    return model


def _restore(row: Any, keys: Keyring) -> RegisteredModel:
    context = version_context(row["model_id"], row["kind"], row["version"])
    model = restore_state(bytes(row["state"]), keys, context)
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


async def learner_candidates(conn: Any) -> list[str]:
    """The models a backfill's results are sent to (the reconciler's learn feed): every model
    neither retired nor a market reference. Whether one learns online is in its state, which
    only the learner loads: it skips the items of a model that does not."""
    rows = await conn.fetch(
        "SELECT model_id FROM models WHERE status NOT IN ('retired', 'reference') ORDER BY 1"
    )
    return [row["model_id"] for row in rows]


async def model_versions(conn: Any, model_id: str) -> list[dict[str, Any]]:
    """Every stored version of one model, newest first."""
    rows = await conn.fetch(
        """SELECT version, parent_version, kind, learned, last_evaluation_id, metrics,
                  state_sha256, created_at, learned_from, learned_until, complete_through
           FROM model_versions WHERE model_id = $1 ORDER BY version DESC""",
        model_id,
    )
    if not rows:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return [dict(row) for row in rows]


async def coverages(conn: Any, model_id: str) -> list[Coverage]:
    """The model's versions' coverages in version order, as a scorer restarting mid-backfill
    rebuilds them for :func:`agents.backfill_rules.choose_version`: pruned versions and
    versions without coverage are made conservative (:func:`rebuild_coverages`)."""
    rows = await conn.fetch(
        """SELECT version, learned_from, learned_until, complete_through
           FROM model_versions WHERE model_id = $1 ORDER BY version""",
        model_id,
    )
    if not rows:
        raise RegistryError(f"no model {model_id!r} in the registry")
    return rebuild_coverages(
        Coverage(row["version"], row["learned_from"], row["learned_until"], row["complete_through"])
        for row in rows
    )


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


@dataclass(frozen=True, slots=True)
class RolledBack:
    """A rollback in time: the new version and the earlier one whose state it restores."""

    model_id: str
    version: int
    parent_version: int
    learned: int
    state_sha256: str


async def rollback_to(
    conn: Any,
    model_id: str,
    *,
    keys: Keyring,
    to_version: int | None = None,
    before: datetime | None = None,
) -> RolledBack:
    """Restore a learning model's earlier state as a new version (latest + 1, parent = it).

    The earlier version is ``to_version``, or the newest created before ``before``. Its state is
    verified for its own row, then re-signed for the new one: a signature binds the version, so
    the bytes cannot simply be copied. The learner owning the model adopts the new version at
    its next batch (:func:`agents.learner_rules.adopts_version`) and learns on from it. The
    ``models`` row is locked, so a learner storing a version at the same time waits and then
    sees that the registry moved on.
    """
    if (to_version is None) == (before is None):
        raise RegistryError("give exactly one of a version or a time to roll back to")
    async with conn.transaction():
        model_row = await conn.fetchrow(
            "SELECT kind FROM models WHERE model_id = $1 FOR UPDATE", model_id
        )
        if model_row is None:
            raise RegistryError(f"no model {model_id!r} in the registry")
        columns = "version, kind, metrics, learned, last_evaluation_id, positions, state"
        if to_version is not None:
            row = await conn.fetchrow(
                f"SELECT {columns} FROM model_versions WHERE model_id = $1 AND version = $2",
                model_id,
                to_version,
            )
            if row is None:
                raise RegistryError(f"{model_id!r} has no version {to_version}")
        else:
            row = await conn.fetchrow(
                f"""SELECT {columns} FROM model_versions
                   WHERE model_id = $1 AND created_at < $2
                   ORDER BY created_at DESC, version DESC LIMIT 1""",
                model_id,
                before,
            )
            if row is None:
                raise RegistryError(f"{model_id!r} has no version created before {before}")
        context = version_context(model_id, row["kind"], row["version"])
        blob = bytes(row["state"])
        try:
            model = restore_state(blob, keys, context)
            payload = verify(blob, keys, context)
        except IntegrityError as error:
            raise RegistryError(
                f"{model_id!r} v{row['version']}: state refused, not restored: {error}"
            ) from error
        if not model.learns_online:
            raise RegistryError(
                f"{model_id!r} is not a learning model ({row['kind']}): nothing to roll back in "
                "time; use `tipstream models rollback` for the previous champion"
            )
        version = (
            int(
                await conn.fetchval(
                    "SELECT max(version) FROM model_versions WHERE model_id = $1", model_id
                )
            )
            + 1
        )
        state_sha256 = sha256_hex(payload)
        # No coverage: the restored state goes back in event time, off any backfill's time line
        # (inside one, rebuild_coverages makes this version and every later one unknown).
        await conn.execute(
            """INSERT INTO model_versions (model_id, version, parent_version, kind, metrics,
                                           learned, last_evaluation_id, positions, state,
                                           state_sha256)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10)""",
            model_id,
            version,
            row["version"],
            row["kind"],
            row["metrics"] if isinstance(row["metrics"], str) else json.dumps(row["metrics"]),
            row["learned"],
            row["last_evaluation_id"],
            row["positions"] if isinstance(row["positions"], str) else json.dumps(row["positions"]),
            sign(payload, keys, version_context(model_id, row["kind"], version)),
            state_sha256,
        )
        await conn.execute("UPDATE models SET updated_at = now() WHERE model_id = $1", model_id)
    return RolledBack(model_id, version, int(row["version"]), int(row["learned"]), state_sha256)


async def latest_versions(conn: Any, model_ids: Sequence[str]) -> dict[str, int]:
    """Each model's newest stored version: the learner compares it with what it holds."""
    rows = await conn.fetch(
        """SELECT model_id, max(version) AS version FROM model_versions
           WHERE model_id = ANY($1::text[]) GROUP BY model_id""",
        list(model_ids),
    )
    return {str(row["model_id"]): int(row["version"]) for row in rows}


async def locked_latest_version(conn: Any, model_id: str) -> int | None:
    """The model's newest version, its ``models`` row locked until the caller's transaction
    ends: a learner storing a version and a rollback in time never take the same number."""
    await conn.execute("SELECT 1 FROM models WHERE model_id = $1 FOR UPDATE", model_id)
    value = await conn.fetchval(
        "SELECT max(version) FROM model_versions WHERE model_id = $1", model_id
    )
    return None if value is None else int(value)


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
                  v.last_evaluation_id, v.state_sha256,
                  v.learned_from, v.learned_until, v.complete_through
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
        learned_from=row["learned_from"],
        learned_until=row["learned_until"],
        complete_through=row["complete_through"],
    )


async def next_version(conn: Any, model_id: str) -> int:
    """The version a newly fitted model of ``model_id`` gets: 0 for a new model."""
    current = await conn.fetchval(
        "SELECT max(version) FROM model_versions WHERE model_id = $1", model_id
    )
    return 0 if current is None else int(current) + 1


KEEP_AT_LEAST = FALLBACK_VERSIONS + 1
"""The fewest newest versions a prune keeps per model: the scorer's fallback needs them."""


@dataclass
class PruneReport:
    """What a prune deleted (or, dry, would delete), and how many versions it kept."""

    pruned: list[tuple[str, int]]
    kept: int


_PRUNABLE = """
    WITH ranked AS (
        SELECT model_id, version, created_at,
               row_number() OVER (PARTITION BY model_id ORDER BY version DESC) AS newest
        FROM model_versions
        WHERE $3::text[] IS NULL OR model_id = ANY($3::text[])
    ), champions AS (
        -- the version each champion was serving when it became champion
        SELECT DISTINCT ON (h.id) v.model_id, v.version
        FROM champion_history h
        JOIN model_versions v ON v.model_id = h.model_id AND v.created_at <= h.changed_at
        ORDER BY h.id, v.version DESC
    )
    SELECT r.model_id, r.version FROM ranked r
    WHERE r.newest > $1 AND r.created_at < now() - $2::interval
      AND NOT EXISTS (SELECT 1 FROM champions c
                      WHERE c.model_id = r.model_id AND c.version = r.version)
      AND NOT EXISTS (SELECT 1 FROM learner_checkpoints l
                      WHERE l.model_id = r.model_id AND l.version = r.version)
    ORDER BY r.model_id, r.version"""


async def prune_versions(
    conn: Any,
    *,
    keep: int,
    older_than: timedelta,
    dry_run: bool = False,
    model_ids: Sequence[str] | None = None,
) -> PruneReport:
    """Delete the model versions nothing needs any more, in one transaction.

    Kept: the ``keep`` newest of each model (at least :data:`KEEP_AT_LEAST`: the scorer falls
    back through them when the newest state is refused), the version each champion had when it
    became champion (``champion_history``), each learner checkpoint's version, and every
    version younger than ``older_than``: a prediction of it may still be on its way to the
    reconciler, whose trust check refuses a version that is not in the registry.
    Evaluations and predictions keep their version numbers; only the stored state goes.
    ``model_ids`` limits the prune to those models (a learner prunes its own).
    """
    if keep < KEEP_AT_LEAST:
        raise RegistryError(f"keep at least {KEEP_AT_LEAST} versions per model (got {keep})")
    async with conn.transaction():
        rows = await conn.fetch(
            _PRUNABLE, keep, older_than, None if model_ids is None else list(model_ids)
        )
        pruned = [(str(row["model_id"]), int(row["version"])) for row in rows]
        if pruned and not dry_run:
            await conn.execute(
                """DELETE FROM model_versions
                   WHERE (model_id, version) IN (SELECT * FROM unnest($1::text[], $2::int[]))""",
                [model_id for model_id, _ in pruned],
                [version for _, version in pruned],
            )
        total = int(
            await conn.fetchval(
                """SELECT count(*) FROM model_versions
                   WHERE $1::text[] IS NULL OR model_id = ANY($1::text[])""",
                None if model_ids is None else list(model_ids),
            )
            or 0
        )
    return PruneReport(pruned, total if not dry_run else total - len(pruned))


@dataclass
class ResignReport:
    """What ``tipstream models resign`` did: rows re-signed, rows already signed with the
    current key (left alone), and rows refused (left alone too, listed with the reason)."""

    resigned: int = 0
    current: int = 0
    refused: list[RefusedState] = field(default_factory=list)


async def resign(
    conn: Any, keys: Keyring, *, everything: bool = False, legacy_key: bytes | None = None
) -> ResignReport:
    """Re-sign every stored version and checkpoint with the keyring's signing key.

    Each row is verified with the accepted keys first (with ``legacy_key``, a first-format blob
    is also accepted once, verified with that key): nothing unverified is ever re-signed.
    Rows already signed with the current key are skipped unless ``everything``. One row at a
    time, so memory stays bounded; a checkpoint is replaced only if it is still the bytes that
    were read (``state = $old``), so a running learner's newer checkpoint is never overwritten.
    """
    report = ResignReport()
    versions = await conn.fetch("SELECT model_id, version FROM model_versions ORDER BY 1, 2")
    checkpoints = await conn.fetch("SELECT model_id FROM learner_checkpoints ORDER BY 1")
    targets = [("version", r["model_id"], r["version"]) for r in versions]
    targets += [("checkpoint", r["model_id"], None) for r in checkpoints]
    for purpose, model_id, version in targets:
        if purpose == "version":
            row = await conn.fetchrow(
                "SELECT kind, version, state FROM model_versions "
                "WHERE model_id = $1 AND version = $2",
                model_id,
                version,
            )
            context_of = version_context
        else:
            row = await conn.fetchrow(
                "SELECT m.kind, c.version, c.state FROM learner_checkpoints c "
                "JOIN models m USING (model_id) WHERE c.model_id = $1",
                model_id,
            )
            context_of = checkpoint_context
        if row is None:
            continue
        context = context_of(model_id, row["kind"], row["version"])
        blob = bytes(row["state"])
        try:
            if legacy_key is not None and blob.startswith(LEGACY_MAGIC):
                payload = verify_legacy(blob, legacy_key)
            else:
                payload = verify(blob, keys, context)
        except IntegrityError as error:
            report.refused.append(
                RefusedState(purpose, model_id, row["kind"], row["version"], str(error), blob)
            )
            continue
        if not everything and blob.startswith(MAGIC) and signed_key_id(blob) == keys.key_id:
            report.current += 1
            continue
        table = "model_versions" if purpose == "version" else "learner_checkpoints"
        status = await conn.execute(
            f"UPDATE {table} SET state = $1 WHERE model_id = $2 AND version = $3 AND state = $4",
            sign(payload, keys, context),
            model_id,
            row["version"],
            blob,
        )
        if status.endswith(" 1"):
            report.resigned += 1
    return report
