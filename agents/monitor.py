"""Decay monitor agent: rolling windows and a drift detector per model and per model and league.

It reads the model feed (keyed by model id, so one worker watches each model). State: one
:class:`ScopeMonitor` per (model, scope), in memory. After a restart or a rebalance a model's
monitors are rebuilt by replaying its evaluation log from PostgreSQL silently, which restores
the windows, the baselines and which alerts are firing; alert ids are deterministic, so an
alert re-derived after a crash is stored and published once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust

from agents import alert_store, reconciler_store
from agents.loop import run_batches
from agents.monitor_rules import Decision, ScopeMonitor, alert_id
from agents.runtime import AgentRuntime
from schemas.events import Alert, DeadLetter, Evaluation, ModelFeedItem

AGENT = "decay-monitor"


class Monitor:
    """Monitors of the models whose feed this worker owns."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.scopes: dict[tuple[str, str], ScopeMonitor] = {}
        self.warm: set[str] = set()

    def scope(self, model_id: str, scope: str) -> ScopeMonitor:
        key = (model_id, scope)
        monitor = self.scopes.get(key)
        if monitor is None:
            settings = self.runtime.settings
            monitor = self.scopes[key] = ScopeMonitor(
                window=settings.decay_window,
                threshold=settings.decay_threshold,
                detector_name=settings.drift_detector,
            )
        return monitor

    def observe(self, evaluation: Evaluation) -> list[tuple[str, Decision]]:
        """Feed one evaluation to its model's overall and league monitors."""
        decisions = []
        for scope in ("all", f"league:{evaluation.league}"):
            for decision in self.scope(evaluation.model_id, scope).observe(
                evaluation.evaluation_id, evaluation.log_loss, evaluation.hit
            ):
                decisions.append((scope, decision))
        return decisions

    async def warm_up(self, conn: Any, model_id: str, before: datetime) -> None:
        """Replay the model's earlier evaluations without alerting, once per ownership."""
        rows = await reconciler_store.evaluation_history(conn, model_id, before)
        for row in rows:
            for scope in ("all", f"league:{row['league']}"):
                self.scope(model_id, scope).observe(
                    row["evaluation_id"], row["log_loss"], row["hit"]
                )
        self.warm.add(model_id)

    def forget(self) -> None:
        self.scopes.clear()
        self.warm.clear()


def register(app: faust.App, runtime: AgentRuntime) -> Monitor:
    """Declare the decay monitor agent on ``app``."""
    monitor = Monitor(runtime)
    feed = app.topic(runtime.topics.model_feed, key_serializer="raw", value_serializer="raw")

    @app.agent(feed, name=AGENT)
    async def watch(stream: Any) -> None:
        await run_batches(stream, runtime, AGENT, lambda events: monitor_batch(monitor, events))

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        monitor.forget()

    return monitor


async def monitor_batch(monitor: Monitor, events: Sequence[Any]) -> None:
    """Update the windows with a batch of evaluations; store and publish the alerts."""
    runtime = monitor.runtime
    letters: list[DeadLetter] = []
    items: list[ModelFeedItem] = []
    for event in events:
        item = runtime.decode(event.message, ModelFeedItem, AGENT)
        if isinstance(item, DeadLetter):
            letters.append(item)
        else:
            items.append(item)
    cold = {}
    for item in items:
        model_id = item.evaluation.model_id
        if model_id not in monitor.warm and model_id not in cold:
            cold[model_id] = item.evaluation.evaluated_at
    for model_id, before in cold.items():

        async def warm(model_id: str = model_id, before: datetime = before) -> None:
            async with runtime.connection() as conn:
                await monitor.warm_up(conn, model_id, before)

        await runtime.retry_transient("monitor warm-up", warm)
    alerts = []
    now = datetime.now(UTC)
    for item in items:
        for scope, decision in monitor.observe(item.evaluation):
            alerts.append(to_alert(item.evaluation.model_id, scope, decision, now))
    if alerts:

        async def store() -> None:
            async with runtime.connection() as conn:
                await alert_store.write(conn, alerts)

        await runtime.retry_transient("alert log", store)
        await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
        runtime.counters["alerts"] += len(alerts)
    await runtime.publish_dead_letters(letters)


def to_alert(model_id: str, scope: str, decision: Decision, now: datetime) -> Alert:
    """The operator-facing event of a decision."""
    if decision.kind == "drift":
        message = (
            f"{model_id} ({scope}): {decision.detector} detected a rise of the log loss "
            f"(window mean {decision.current:.4f})"
        )
    else:
        verb = "decayed" if decision.kind == "decay" else "recovered"
        message = (
            f"{model_id} ({scope}): {decision.metric} {verb}: {decision.current:.4f} "
            f"over the last {decision.window} evaluations against a baseline of "
            f"{decision.baseline:.4f} (threshold {decision.threshold:.0%})"
        )
    return Alert(
        alert_id=alert_id(model_id, scope, decision),
        kind=decision.kind,
        state=decision.state,
        model_id=model_id,
        source=AGENT,
        scope=scope,
        metric=decision.metric,
        detector=decision.detector,
        window=decision.window,
        baseline=decision.baseline,
        current=decision.current,
        threshold=decision.threshold,
        first_evaluation_id=decision.first_evaluation_id,
        last_evaluation_id=decision.last_evaluation_id,
        message=message,
        created_at=now,
    )
