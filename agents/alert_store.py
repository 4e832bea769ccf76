"""The ``alerts`` table: written by the decay monitor, champion/challenger, the learner and the
state checks (idempotent on the deterministic alert id), read and worked by the operator
(``tipstream alerts``).

Lifecycle (migration 005): every alert is ``open`` when stored, except one whose event already
says it is over (``state = 'resolved'``: a recovery), which is stored ``resolved``. An operator
acknowledges (``open -> acknowledged``) and resolves (``open|acknowledged -> resolved``); both
are idempotent. A recovery resolves the open or acknowledged decay alerts of the same model,
scope and metric stored no later than itself: ``resolved_by = 'recovery'``,
``resolved_by_alert`` = the recovery's id. A feature drift alert that says a feature (or the
roll-up) stopped drifting resolves that feature's firing drift alerts the same way
(``resolved_by = 'drift-cleared'``); ``tipstream drift reset`` resolves every open one
(:func:`resolve_open_drift`). The scorers' pre-result ``estimate`` alerts go through
:func:`admit_estimates`: one open firing alert per model however many workers and restarts
raise it, and a ``resolved`` one resolves it (``resolved_by = 'estimate-recovered'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.events import Alert

STATUSES = ("open", "acknowledged", "resolved")
Action = Literal["acknowledge", "resolve"]
RESOLVED_BY_RECOVERY = "recovery"
RESOLVED_BY_DRIFT_CLEARED = "drift-cleared"
RESOLVED_BY_ESTIMATE = "estimate-recovered"
ESTIMATE_LOCK = "tipstream:estimate-alerts"
"""Advisory lock name: scorers on several workers admit estimate alerts one at a time."""
_INSERT = """INSERT INTO alerts (alert_id, kind, state, model_id, source, scope, metric, detector,
               window_size, baseline, current_value, threshold, first_evaluation_id,
               last_evaluation_id, message, created_at, model_version, first_match_id,
               last_match_id, status, resolved_at, resolved_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18, $19, $20, $21, $22)
           ON CONFLICT (alert_id) DO NOTHING"""


async def write(conn: Any, alerts: Sequence[Alert]) -> None:
    """Insert alerts; an alert already stored (a replay) is left as it is. Recoveries among
    them resolve the decay alerts they end."""
    await conn.executemany(_INSERT, [_row(a) for a in alerts])
    recoveries = [a.alert_id for a in alerts if a.kind == "recovery"]
    if recoveries:
        await resolve_by_recovery(conn, recoveries)
    cleared = [a.alert_id for a in alerts if a.kind == "drift" and a.state == "resolved"]
    if cleared:
        await resolve_cleared_drift(conn, cleared)


def _row(a: Alert) -> tuple[Any, ...]:
    return (
        a.alert_id,
        a.kind,
        a.state,
        a.model_id,
        a.source,
        a.scope,
        a.metric,
        a.detector,
        a.window,
        a.baseline,
        a.current,
        a.threshold,
        a.first_evaluation_id,
        a.last_evaluation_id,
        a.message,
        a.created_at,
        a.model_version,
        a.first_match_id,
        a.last_match_id,
        *initial_status(a),
    )


async def admit_estimates(conn: Any, alerts: Sequence[Alert]) -> list[Alert]:
    """Store the estimate alarm transitions that change what the log says; the ones stored.

    Each scorer's alarm lives in memory over the matches of its own partitions, so a restart,
    a replay or a second worker raises "firing" again for a model already firing in the log.
    A firing alert is admitted only when the model has no unresolved firing estimate alert, a
    resolved one only when it has (it then resolves it); an id already stored (a replay of the
    same window) is never admitted twice. Under an advisory lock, so two workers' scorers do
    not both admit a first firing."""
    admitted: list[Alert] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", ESTIMATE_LOCK)
        for alert in alerts:
            firing_id = await conn.fetchval(
                """SELECT alert_id FROM alerts
                   WHERE kind = 'estimate' AND state = 'firing' AND status <> 'resolved'
                     AND model_id IS NOT DISTINCT FROM $1
                   ORDER BY created_at DESC LIMIT 1""",
                alert.model_id,
            )
            if (alert.state == "firing") == (firing_id is not None):
                continue
            stored = await conn.fetchval(_INSERT + " RETURNING alert_id", *_row(alert))
            if stored is None:
                continue
            if alert.state == "resolved":
                await conn.execute(
                    """UPDATE alerts SET status = 'resolved', resolved_at = $2, resolved_by = $3,
                           resolved_by_alert = $4
                       WHERE kind = 'estimate' AND state = 'firing' AND status <> 'resolved'
                         AND model_id IS NOT DISTINCT FROM $1""",
                    alert.model_id,
                    alert.created_at,
                    RESOLVED_BY_ESTIMATE,
                    alert.alert_id,
                )
            admitted.append(alert)
    return admitted


def initial_status(alert: Alert) -> tuple[str, datetime | None, str | None]:
    """(status, resolved_at, resolved_by) of a newly stored alert: an event that says it is
    resolved (a recovery) needs no operator; everything else waits for one."""
    if alert.state == "resolved":
        return "resolved", alert.created_at, alert.source
    return "open", None, None


async def resolve_by_recovery(conn: Any, recovery_ids: Sequence[str]) -> int:
    """Resolve the open or acknowledged decay alerts that the stored recoveries end (same model,
    scope and metric, created no later than the recovery); the number resolved. Matched on the
    stored rows, so a redelivered recovery (stored once, with its first ``created_at``) never
    resolves a decay that fired after it."""
    result: str = await conn.execute(
        """UPDATE alerts d
           SET status = 'resolved', resolved_at = r.created_at, resolved_by = $2,
               resolved_by_alert = r.alert_id
           FROM alerts r
           WHERE r.alert_id = ANY($1::text[]) AND r.kind = 'recovery'
             AND d.kind = 'decay' AND d.status <> 'resolved'
             AND d.model_id IS NOT DISTINCT FROM r.model_id AND d.scope = r.scope
             AND d.metric IS NOT DISTINCT FROM r.metric AND d.created_at <= r.created_at""",
        list(recovery_ids),
        RESOLVED_BY_RECOVERY,
    )
    return int(result.split()[-1])


async def resolve_cleared_drift(conn: Any, cleared_ids: Sequence[str]) -> int:
    """Resolve the open or acknowledged firing drift alerts of the features (same source and
    metric) that the stored ``resolved`` drift alerts say stopped drifting; the number
    resolved."""
    result: str = await conn.execute(
        """UPDATE alerts d
           SET status = 'resolved', resolved_at = r.created_at, resolved_by = $2,
               resolved_by_alert = r.alert_id
           FROM alerts r
           WHERE r.alert_id = ANY($1::text[]) AND r.kind = 'drift' AND r.state = 'resolved'
             AND d.kind = 'drift' AND d.state = 'firing' AND d.status <> 'resolved'
             AND d.source = r.source AND d.metric IS NOT DISTINCT FROM r.metric
             AND d.created_at <= r.created_at""",
        list(cleared_ids),
        RESOLVED_BY_DRIFT_CLEARED,
    )
    return int(result.split()[-1])


async def resolve_open_drift(
    conn: Any, source: str, *, by: str, note: str | None, now: datetime
) -> int:
    """Resolve every open or acknowledged firing drift alert of ``source`` (a reset of the
    feature drift monitor's references accepts what they said as the new normal; the decay
    monitor's own ``drift`` alerts are another source); the number resolved."""
    result: str = await conn.execute(
        """UPDATE alerts SET status = 'resolved', resolved_at = $1, resolved_by = $2,
               note = CASE WHEN $3::text IS NULL THEN note
                           WHEN note IS NULL THEN $3::text
                           ELSE note || E'\\n' || $3::text END
           WHERE kind = 'drift' AND state = 'firing' AND status <> 'resolved'
             AND source = $4""",
        now,
        by,
        note,
        source,
    )
    return int(result.split()[-1])


async def known_ids(conn: Any, kind: str) -> set[str]:
    """Ids of every stored alert of one kind."""
    rows = await conn.fetch("SELECT alert_id FROM alerts WHERE kind = $1", kind)
    return {row["alert_id"] for row in rows}


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What ``alerts list`` and ``alerts tail`` select; None means any."""

    status: str | None = None
    kind: str | None = None
    model_id: str | None = None
    since: datetime | None = None


def filter_sql(where: AlertFilter, first_param: int = 1) -> tuple[str, list[Any]]:
    """The WHERE clause (``TRUE`` for no filter) and its parameters, numbered from
    ``first_param``."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value, operator in (
        ("status", where.status, "="),
        ("kind", where.kind, "="),
        ("model_id", where.model_id, "="),
        ("created_at", where.since, ">="),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {operator} ${first_param + len(params) - 1}")
    return (" AND ".join(clauses) or "TRUE"), params


async def list_alerts(conn: Any, where: AlertFilter, *, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts matching ``where``, newest first, every column."""
    clause, params = filter_sql(where)
    rows = await conn.fetch(
        f"SELECT * FROM alerts WHERE {clause} "
        f"ORDER BY created_at DESC, alert_id DESC LIMIT ${len(params) + 1}",
        *params,
        limit,
    )
    return [dict(row) for row in rows]


async def stored_since(conn: Any, where: AlertFilter, since: datetime) -> list[dict[str, Any]]:
    """Alerts matching ``where`` stored at or after ``since`` (the database's clock), in the
    order they were stored (``alerts tail``)."""
    clause, params = filter_sql(where, first_param=2)
    rows = await conn.fetch(
        f"SELECT * FROM alerts WHERE stored_at >= $1 AND {clause} ORDER BY stored_at, alert_id",
        since,
        *params,
    )
    return [dict(row) for row in rows]


class AlertNotFound(LookupError):
    """No alert has this id (or id prefix), or more than one has the prefix."""


async def find(conn: Any, id_or_prefix: str) -> dict[str, Any]:
    """The alert with this id, or the only one whose id starts with it (ids are UUIDs: the
    eight characters ``alerts list`` shows are enough in practice)."""
    row = await conn.fetchrow("SELECT * FROM alerts WHERE alert_id = $1", id_or_prefix)
    if row is not None:
        return dict(row)
    escaped = id_or_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await conn.fetch(
        "SELECT * FROM alerts WHERE alert_id LIKE $1 || '%' ORDER BY alert_id LIMIT 3", escaped
    )
    if not rows:
        raise AlertNotFound(f"no alert with id {id_or_prefix!r}")
    if len(rows) > 1:
        shown = ", ".join(r["alert_id"] for r in rows[:2])
        raise AlertNotFound(f"alert id {id_or_prefix!r} is ambiguous ({shown}, ...): give more")
    return dict(rows[0])


def next_status(status: str, action: Action) -> str | None:
    """The status after ``action``, or None when it changes nothing (acknowledging an alert
    already acknowledged or resolved, resolving a resolved one): both actions are idempotent,
    and an acknowledgement never reopens a resolved alert."""
    if action == "acknowledge":
        return "acknowledged" if status == "open" else None
    return "resolved" if status != "resolved" else None


async def change_status(
    conn: Any, id_or_prefix: str, action: Action, *, by: str, note: str | None, now: datetime
) -> tuple[dict[str, Any], bool]:
    """Acknowledge or resolve one alert: (the alert as stored now, whether it changed). The
    row is locked while deciding, so two operators acting at once change it once."""
    async with conn.transaction():
        alert_id = (await find(conn, id_or_prefix))["alert_id"]
        row = dict(
            await conn.fetchrow("SELECT * FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id)
        )
        status = next_status(row["status"], action)
        if status is None:
            return row, False
        when, who = (
            ("acknowledged_at", "acknowledged_by")
            if action == "acknowledge"
            else ("resolved_at", "resolved_by")
        )
        updated = await conn.fetchrow(
            f"""UPDATE alerts SET status = $2, {when} = $3, {who} = $4,
                    note = CASE WHEN $5::text IS NULL THEN note
                                WHEN note IS NULL THEN $5::text
                                ELSE note || E'\\n' || $5::text END
                WHERE alert_id = $1 RETURNING *""",
            alert_id,
            status,
            now,
            by,
            note,
        )
        return dict(updated), True
