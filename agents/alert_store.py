"""The ``alerts`` table, written by the decay monitor and champion/challenger: idempotent on
the deterministic alert id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.events import Alert


async def write(conn: Any, alerts: Sequence[Alert]) -> None:
    """Insert alerts; an alert already stored (a replay) is left as it is."""
    await conn.executemany(
        """INSERT INTO alerts (alert_id, kind, state, model_id, source, scope, metric, detector,
               window_size, baseline, current_value, threshold, first_evaluation_id,
               last_evaluation_id, message, created_at, model_version, first_match_id,
               last_match_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18, $19)
           ON CONFLICT (alert_id) DO NOTHING""",
        [
            (
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
            )
            for a in alerts
        ],
    )


async def known_ids(conn: Any, kind: str) -> set[str]:
    """Ids of every stored alert of one kind."""
    rows = await conn.fetch("SELECT alert_id FROM alerts WHERE kind = $1", kind)
    return {row["alert_id"] for row in rows}
