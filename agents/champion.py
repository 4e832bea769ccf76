"""Champion/challenger agent: compares models on the matches both have evaluated.

It runs on the leader worker only, every ``CHECK_EVERY_S``, over the evaluation log (the only
place where every partition's evaluations meet). When a challenger's log loss beats the
champion's by ``promotion_margin`` over at least ``promotion_min_matches`` shared matches it
emits one promotion alert per (challenger, champion) pair, and promotes only when
``auto_promote`` is set (off by default: a human approves).
"""

from __future__ import annotations

from datetime import UTC, datetime

import faust
import structlog

from agents import alert_store, reconciler_store, registry
from agents.champion_rules import PairedScore, promotion_alert, should_promote
from agents.runtime import AgentRuntime
from schemas.events import Alert

log = structlog.get_logger(__name__)
CHECK_EVERY_S = 10.0


async def check(runtime: AgentRuntime) -> list[Alert]:
    """One comparison round; returns the new promotion alerts."""
    settings = runtime.settings
    async with runtime.connection() as conn:
        scores = [PairedScore(**row) for row in await reconciler_store.paired_scores(conn)]
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
        known = await alert_store.known_ids(conn, "promotion")
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
        await alert_store.write(conn, alerts)
        if settings.auto_promote and any(a.model_id == best.challenger for a in alerts):
            await registry.promote(conn, best.challenger, reason=f"auto: {alerts[0].message}")
            await runtime.publish_all(
                [
                    (
                        runtime.topics.snapshots,
                        best.challenger,
                        await registry.status_snapshot(conn, best.challenger),
                    )
                ]
            )
    await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
    log.info("promotion candidates", alerts=[a.message for a in alerts])
    return alerts


def register(app: faust.App, runtime: AgentRuntime) -> None:
    """Declare the leader-only comparison timer on ``app``."""

    @app.timer(interval=CHECK_EVERY_S, on_leader=True)
    async def compare() -> None:
        await runtime.retry_transient("champion/challenger", lambda: check(runtime))
