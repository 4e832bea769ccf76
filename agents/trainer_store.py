"""SQL of scheduled retraining: the ``retrain_runs`` table (migration 011) and the trainer's
read of the stored features and results. The registry writes go through :mod:`agents.registry`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any


async def stored_matches(conn: Any) -> str:
    """Every stored match with both its (latest) pre-match features and its result, as one JSON
    array in kickoff order (:func:`agents.trainer_rules.parse_stored` reads it in the process
    pool: the worker's event loop only receives one string)."""
    text: str = await conn.fetchval(
        """SELECT coalesce(json_agg(json_build_object(
                      'match_id', f.match_id, 'kickoff', f.kickoff,
                      'issued_at', f.payload->'issued_at', 'features', f.payload->'features',
                      'outcome', r.outcome) ORDER BY f.kickoff, f.match_id), '[]')::text
           FROM match_features f JOIN results r USING (match_id)"""
    )
    return text


async def last_requested(conn: Any, trigger: str) -> datetime | None:
    """When the newest run of that trigger was requested."""
    value: datetime | None = await conn.fetchval(
        "SELECT max(requested_at) FROM retrain_runs WHERE trigger = $1", trigger
    )
    return value


async def request(
    conn: Any,
    trigger: str,
    *,
    requested_at: datetime,
    alert_id: str | None = None,
    model_id: str | None = None,
) -> int | None:
    """Record a requested run; None when that alert has asked already (a redelivery)."""
    value: int | None = await conn.fetchval(
        """INSERT INTO retrain_runs (trigger, alert_id, model_id, requested_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT (alert_id) DO NOTHING RETURNING run_id""",
        trigger,
        alert_id,
        model_id,
        requested_at,
    )
    return value


async def known_alert(conn: Any, alert_id: str) -> bool:
    """Whether an alert already asked for a run."""
    return bool(await conn.fetchval("SELECT 1 FROM retrain_runs WHERE alert_id = $1", alert_id))


async def next_pending(conn: Any) -> Any:
    """The oldest run not finished (requested, or started by a leader that died), or None."""
    return await conn.fetchrow(
        """SELECT run_id, trigger, alert_id, model_id, requested_at, started_at
           FROM retrain_runs WHERE finished_at IS NULL ORDER BY run_id LIMIT 1"""
    )


async def start(conn: Any, run_id: int) -> None:
    await conn.execute("UPDATE retrain_runs SET started_at = now() WHERE run_id = $1", run_id)


async def finish(conn: Any, run_id: int, outcome: str, detail: Sequence[dict[str, Any]]) -> None:
    await conn.execute(
        """UPDATE retrain_runs SET finished_at = now(), outcome = $2, detail = $3::jsonb
           WHERE run_id = $1""",
        run_id,
        outcome,
        json.dumps(list(detail)),
    )


async def locked_statuses(conn: Any, model_ids: Sequence[str]) -> dict[str, str]:
    """Statuses of those models, their rows locked until the caller's transaction ends (so a
    promotion cannot slip between the trainer's choice of id and its registration)."""
    rows = await conn.fetch(
        "SELECT model_id, status FROM models WHERE model_id = ANY($1::text[]) FOR UPDATE",
        list(model_ids),
    )
    return {str(row["model_id"]): str(row["status"]) for row in rows}


async def runs(conn: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs, newest first (operators, tests)."""
    rows = await conn.fetch(
        """SELECT run_id, trigger, alert_id, model_id, requested_at, started_at, finished_at,
                  outcome, detail::text AS detail
           FROM retrain_runs ORDER BY run_id DESC LIMIT $1""",
        limit,
    )
    return [dict(row) | {"detail": json.loads(row["detail"])} for row in rows]
