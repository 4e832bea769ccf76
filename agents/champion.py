"""Champion/challenger agent: the promotion gate, run over the evaluation log.

It runs on the leader worker only, every ``CHECK_EVERY_S``, over the evaluation log (the only
place where every partition's evaluations meet). For each challenger it takes the matches its
latest fit and the champion both have a current evaluation of (``champion_store.gate_rows``)
and runs the gate (:func:`agents.gate_rules.evaluate_gate`: an always-valid paired test on the
per-match log-loss differences, so looking every few seconds does not inflate false proposals;
the opening line, calibration, leagues). Every report is stored
(``promotion_reports``, shown by ``tipstream models show``). A challenger the gate proposes gets
one promotion alert per (challenger, champion, version); with ``auto_promote`` (off by default:
a human approves) the proposal with the largest gain is promoted and the change announced on
the snapshot topic, so every scorer swaps champions without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

import faust
import structlog

from agents import alert_store, champion_store, registry
from agents.champion_rules import (
    HELD,
    PROMOTED,
    PROPOSED,
    alert_id,
    best_proposal,
    promotion_alert,
    samples,
)
from agents.gate_rules import PROPOSE, GateReport, GateSettings, evaluate_gate
from agents.runtime import AgentRuntime, AgentSettings
from schemas.events import Alert

log = structlog.get_logger(__name__)
CHECK_EVERY_S = 10.0


def gate_settings(settings: AgentSettings) -> GateSettings:
    """The gate's limits from the service's ``TIPSTREAM_GATE_*`` settings."""
    return GateSettings(
        confidence=settings.gate_confidence,
        min_matches=settings.gate_min_matches,
        market_margin=settings.gate_market_margin,
        calibration_limit=settings.gate_calibration_limit,
        league_regression=settings.gate_league_regression,
        league_min_matches=settings.gate_league_min_matches,
    )


async def check(runtime: AgentRuntime) -> list[Alert]:
    """One gate round over every challenger; returns the new promotion alerts."""
    settings = runtime.settings
    gate = gate_settings(settings)
    now = datetime.now(UTC)
    async with runtime.connection() as conn:
        champion = await registry.champion_id(conn)
        bases = await champion_store.challengers(conn)
        if champion is None or not bases:
            return []
        rows = await champion_store.gate_rows(conn)
        reports = [
            (evaluate_gate(s.challenger, s.champion, s.matches, gate), s.version)
            for s in samples(rows, bases, champion)
        ]
        known = await alert_store.known_ids(conn, "promotion")
        versions = {report.challenger: version for report, version in reports}

        def new(report: GateReport) -> bool:
            return (
                alert_id(report.challenger, report.champion, versions[report.challenger])
                not in known
            )

        best = best_proposal([report for report, _ in reports])
        promote = best if settings.auto_promote and best is not None and new(best) else None
        # One transaction: the promotion, its alert and the reports are stored together or
        # not at all (a crash in between would leave a champion change with no report).
        async with conn.transaction():
            if promote is not None:
                announced = promotion_alert(
                    promote, version=versions[promote.challenger], promoted=True, now=now
                )
                try:
                    await registry.promote(
                        conn, promote.challenger, reason=f"auto: {announced.message}"
                    )
                except registry.RegistryError as error:  # changed meanwhile (an operator's promote)
                    log.warning(
                        "auto-promotion refused", challenger=promote.challenger, error=str(error)
                    )
                    promote = None
            decided: list[tuple[GateReport, int, str]] = []
            alerts: list[Alert] = []
            for report, version in reports:
                action = HELD
                if report.decision == PROPOSE:
                    action = PROMOTED if report is promote else PROPOSED
                    if new(report):
                        alerts.append(
                            promotion_alert(
                                report, version=version, promoted=report is promote, now=now
                            )
                        )
                decided.append((report, version, action))
            await champion_store.save_reports(conn, decided, now=now)
            if alerts:
                await alert_store.write(conn, alerts)
        if promote is not None:
            snapshots = [
                await registry.status_snapshot(conn, model_id)
                for model_id in (promote.challenger, promote.champion)
            ]
            await runtime.publish_all((runtime.topics.snapshots, s.model_id, s) for s in snapshots)
    if alerts:
        await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
        log.info("promotion gate proposes", alerts=[a.message for a in alerts])
    if promote is not None:
        log.info("promotion gate promoted", champion=promote.challenger, former=promote.champion)
    return alerts


def register(app: faust.App, runtime: AgentRuntime) -> None:
    """Declare the leader-only gate timer on ``app``."""

    @app.timer(interval=CHECK_EVERY_S, on_leader=True)
    async def compare() -> None:
        await runtime.retry_transient("champion/challenger", lambda: check(runtime))
