"""Champion/challenger agent: compares models on the matches both have evaluated.

It runs on the leader worker only, every ``CHECK_EVERY_S``, over the evaluation log (the only
place where every partition's evaluations meet). When a challenger's log loss beats the
champion's by ``promotion_margin`` over at least ``promotion_min_matches`` shared matches it
emits one promotion alert per (challenger, champion) pair, and promotes only when
``auto_promote`` is set (off by default, as in the earlier pipeline: a human approves).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from models import registry
from schemas.events import Alert, ModelSnapshot
from streams import alert_log
from streams.log import get_logger
from streams.runtime import Runtime

log = get_logger(__name__)
AGENT = "champion-challenger"
CHECK_EVERY_S = 10.0
_NAMESPACE = uuid.UUID("5a4b6c1e-7f0d-4c8e-b2a9-6d3e1f0a7c55")


@dataclass(frozen=True)
class PairedScore:
    """Mean log loss of a challenger and of the champion over the same matches."""

    challenger: str
    champion: str
    matches: int
    challenger_log_loss: float
    champion_log_loss: float

    @property
    def improvement(self) -> float:
        """Relative improvement of the challenger over the champion (> 0: challenger better)."""
        if self.champion_log_loss == 0:
            return 0.0
        return (self.champion_log_loss - self.challenger_log_loss) / self.champion_log_loss


def should_promote(score: PairedScore, *, margin: float, min_matches: int) -> bool:
    """The earlier pipeline's rule: enough shared matches and a clear enough improvement."""
    return score.matches >= min_matches and score.improvement >= margin


async def paired_scores(conn: Any) -> list[PairedScore]:
    """Each challenger against the champion over the matches both have a current evaluation of."""
    rows = await conn.fetch(
        """WITH champion AS (SELECT model_id FROM models WHERE status = 'champion')
           SELECT c.model_id AS challenger, h.model_id AS champion, count(*) AS matches,
                  avg(c.log_loss) AS challenger_log_loss, avg(h.log_loss) AS champion_log_loss
           FROM evaluations h
           JOIN champion ON h.model_id = champion.model_id
           JOIN evaluations c ON c.match_id = h.match_id AND c.model_id <> h.model_id
           JOIN models m ON m.model_id = c.model_id AND m.status = 'challenger'
           WHERE h.superseded_by IS NULL AND c.superseded_by IS NULL
           GROUP BY c.model_id, h.model_id"""
    )
    return [PairedScore(**dict(row)) for row in rows]


def promotion_alert(score: PairedScore, *, margin: float, promoted: bool, now: datetime) -> Alert:
    """One alert per (challenger, champion) pair: its id is derived from the pair."""
    action = (
        "promoted automatically" if promoted else "awaiting approval (tipstream models promote)"
    )
    return Alert(
        alert_id=str(uuid.uuid5(_NAMESPACE, f"{score.challenger}|{score.champion}")),
        kind="promotion",
        state="firing",
        model_id=score.challenger,
        source=AGENT,
        scope=f"vs:{score.champion}",
        metric="log_loss",
        detector="paired-comparison",
        window=score.matches,
        baseline=score.champion_log_loss,
        current=score.challenger_log_loss,
        threshold=margin,
        message=(
            f"{score.challenger} beats champion {score.champion} by "
            f"{score.improvement:.1%} log loss over {score.matches} shared matches; "
            f"{action}"
        ),
        created_at=now,
    )


async def check(runtime: Runtime) -> list[Alert]:
    """One comparison round; returns the new promotion alerts."""
    settings = runtime.settings
    async with runtime.connection() as conn:
        scores = await paired_scores(conn)
        candidates = [
            s
            for s in scores
            if should_promote(
                s, margin=settings.promotion_margin, min_matches=settings.promotion_min_matches
            )
        ]
        if not candidates:
            return []
        best = max(candidates, key=lambda s: s.improvement)
        known = {
            row["alert_id"]
            for row in await conn.fetch("SELECT alert_id FROM alerts WHERE kind = 'promotion'")
        }
        now = datetime.now(UTC)
        alerts = [
            promotion_alert(
                s,
                margin=settings.promotion_margin,
                promoted=settings.auto_promote and s is best,
                now=now,
            )
            for s in candidates
        ]
        alerts = [a for a in alerts if a.alert_id not in known]
        if not alerts:
            return []
        await alert_log.write(conn, alerts)
        if settings.auto_promote and any(a.model_id == best.challenger for a in alerts):
            await registry.promote(conn, best.challenger, reason=f"auto: {alerts[0].message}")
            await runtime.publish_all(
                [
                    (
                        runtime.topics.snapshots,
                        best.challenger,
                        await status_snapshot(conn, best.challenger),
                    )
                ]
            )
    await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
    log.info("promotion candidates", alerts=[a.message for a in alerts])
    return alerts


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


def register(app: faust.App, runtime: Runtime) -> None:
    """Declare the leader-only comparison timer on ``app``."""

    @app.timer(interval=CHECK_EVERY_S, on_leader=True)
    async def compare() -> None:
        await runtime.retry_transient("champion/challenger", lambda: check(runtime))
