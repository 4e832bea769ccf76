"""Decay monitor agent: rolling windows, a drift detector, a paired test against the market and a
test of the results against the opening line, per model and per model and league.

It reads the model feed (keyed by model id, so one worker watches each model). The paired
test needs the opening line's log loss on each match: it is computed from the feed item's own
model inputs (``open_p_H/D/A``, the normalised opening odds the market-open reference reads,
:func:`agents.monitor_rules.reference_log_loss`), so no join with the market-open model's
evaluation of the same match, which may arrive later or on another partition, is needed. State: one
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
from agents.monitor_rules import (
    LINE_METRIC,
    PAIRED_METRIC,
    Decision,
    ScopeMonitor,
    alert_id,
    reference_log_loss,
)
from agents.runtime import AgentRuntime
from models.catalog import REFERENCE_MODEL_IDS
from schemas.events import Alert, DeadLetter, Evaluation, ModelFeedItem, Outcome

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

    def observe(
        self, evaluation: Evaluation, inputs: dict[str, float]
    ) -> list[tuple[str, Decision]]:
        """Feed one evaluation (and its match's model inputs) to its model's overall and league
        monitors."""
        reference = market_reference(evaluation.model_id, inputs, evaluation.outcome)
        decisions = []
        for scope in ("all", f"league:{evaluation.league}"):
            for decision in self.scope(evaluation.model_id, scope).observe(
                evaluation.evaluation_id,
                evaluation.log_loss,
                evaluation.hit,
                reference,
                match_id=evaluation.match_id,
                outcome=evaluation.outcome,
            ):
                decisions.append((scope, decision))
        return decisions

    async def warm_up(self, conn: Any, model_id: str, before: datetime) -> None:
        """Replay the model's earlier evaluations without alerting, once per ownership."""
        rows = await reconciler_store.evaluation_history(conn, model_id, before)
        for row in rows:
            line = {"open_p_H": row["open_p_h"], "open_p_D": row["open_p_d"]}
            line["open_p_A"] = row["open_p_a"]
            inputs = {name: p for name, p in line.items() if p is not None}
            reference = market_reference(model_id, inputs, row["outcome"])
            for scope in ("all", f"league:{row['league']}"):
                self.scope(model_id, scope).observe(
                    row["evaluation_id"],
                    row["log_loss"],
                    row["hit"],
                    reference,
                    match_id=row["match_id"],
                    outcome=row["outcome"],
                )
        self.warm.add(model_id)

    def forget(self) -> None:
        self.scopes.clear()
        self.warm.clear()


def market_reference(model_id: str, inputs: dict[str, float], outcome: Outcome) -> float | None:
    """The opening line's log loss for the paired test; None for the market references
    themselves: they are the baseline (``market-open`` against itself is 0 on every match, a
    spread of 0 that the paired test would read as a decay at the first rounding)."""
    if model_id in REFERENCE_MODEL_IDS:
        return None
    return reference_log_loss(inputs, outcome)


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
        evaluation = item.evaluation
        for scope, decision in monitor.observe(evaluation, item.inputs):
            alerts.append(
                to_alert(evaluation.model_id, scope, decision, now, evaluation.model_version)
            )
    if alerts:

        async def store() -> None:
            async with runtime.connection() as conn:
                await alert_store.write(conn, alerts)

        await runtime.retry_transient("alert log", store)
        await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
        runtime.counters["alerts"] += len(alerts)
    await runtime.publish_dead_letters(letters)


def to_alert(
    model_id: str, scope: str, decision: Decision, now: datetime, model_version: int | None = None
) -> Alert:
    """The operator-facing event of a decision, with one plain sentence that says it all."""
    return Alert(
        alert_id=alert_id(model_id, scope, decision),
        kind=decision.kind,
        state=decision.state,
        model_id=model_id,
        model_version=model_version,
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
        first_match_id=decision.first_match_id,
        last_match_id=decision.last_match_id,
        message=sentence(model_id, model_version, scope, decision),
        created_at=now,
    )


def sentence(model_id: str, model_version: int | None, scope: str, decision: Decision) -> str:
    """One sentence an operator can act on: what changed, by how much, over which matches."""
    who = model_id if model_version is None else f"{model_id} v{model_version}"
    where = "all leagues" if scope == "all" else scope.removeprefix("league:")
    span = _span(decision)
    baseline = "none yet" if decision.baseline is None else f"{decision.baseline:+.4f}"
    if decision.metric == PAIRED_METRIC:
        if decision.kind == "decay":
            return (
                f"{who} ({where}) now loses to the opening line: its log loss is "
                f"{decision.current:+.4f} per match against the market's over the last "
                f"{_evaluations(decision.window)} ({span}), where its baseline was {baseline} "
                f"({decision.detector}, threshold {decision.threshold:g} robust deviations)."
            )
        return (
            f"{who} ({where}) is back at its usual distance to the opening line: "
            f"{decision.current:+.4f} per match over the last {_evaluations(decision.window)} "
            f"({span}) against a baseline of {baseline} ({decision.detector})."
        )
    if decision.metric == LINE_METRIC:
        if decision.kind == "decay":
            return (
                f"{who} ({where}): the recorded results no longer follow the opening line "
                f"(results joined to the wrong matches?): over the last "
                f"{_evaluations(decision.window)} ({span}) the base rates explain them better "
                f"than the line by {decision.current:+.4f} nats per match ({decision.detector}, "
                f"threshold {decision.threshold:g} nats)."
            )
        return (
            f"{who} ({where}): the recorded results follow the opening line again: "
            f"{decision.current:+.4f} nats per match for the base rates over the last "
            f"{_evaluations(decision.window)} ({span}) ({decision.detector})."
        )
    baseline = "none yet" if decision.baseline is None else f"{decision.baseline:.4f}"
    if decision.kind == "drift":
        return (
            f"{who} ({where}): {decision.detector} detected a rise of the log loss at "
            f"{span}; the window mean is {decision.current:.4f} against a baseline of "
            f"{baseline}."
        )
    verb = "got worse" if decision.kind == "decay" else "recovered"
    return (
        f"{who} ({where}): {decision.metric} {verb}, {decision.current:.4f} over the last "
        f"{_evaluations(decision.window)} ({span}) against a baseline of {baseline} "
        f"({decision.detector} test, threshold {decision.threshold:.0%})."
    )


def _evaluations(count: int) -> str:
    return "evaluation" if count == 1 else f"{count} evaluations"


def _span(decision: Decision) -> str:
    first = decision.first_match_id or decision.first_evaluation_id
    last = decision.last_match_id or decision.last_evaluation_id
    return f"match {first}" if first == last else f"matches {first} to {last}"
