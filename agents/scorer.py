"""Scorer agent: match features in, one prediction per active model out (shadow scoring).

State: the active models, loaded from the registry at start (a row whose signed state does not
verify is skipped and reported, never a crash: ``agents.state_faults``). A snapshot event (a
new version, a promotion, a rollback) makes every worker reload that model; the swap happens
between two batches, so no event is dropped or scored twice.

Estimates before results (:mod:`agents.estimates_rules`): every prediction made updates its
model's rolling expected log loss, cross-entropy against the closing line and expected edge
against the opening line, kept per process. The features topic is keyed by match, so a worker
sees its partitions' share of every model's matches: its windows are a sample of the model's,
which is what an estimate needs (the realised-log-loss monitor, which needs all of a model's
evaluations, reads the model-keyed feed instead). A window whose edge turns negative raises an
``estimate`` alert; the windows are in memory and start empty after a restart, so the alert log
decides (``alert_store.admit_estimates``): one open firing alert per model across workers,
restarts and replays, resolved by the ``resolved`` alert of the window that is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import structlog

from agents import alert_store, estimates_rules, registry
from agents.loop import run_batches
from agents.registry import RegisteredModel
from agents.runtime import AgentRuntime
from agents.scorer_rules import predict_many
from agents.state_faults import FaultReporter
from agents.ticks import skip_ticks
from models.catalog import REFERENCE_MODEL_IDS
from schemas.events import Alert, DeadLetter, MatchFeatures, Prediction

log = structlog.get_logger(__name__)

AGENT = "scorer"
# Statuses can also change in the database alone (an operator's SQL); re-read it this often.
REGISTRY_POLL_S = 10.0


class ActiveModels:
    """The models a worker scores with, replaced as a whole so a batch sees one consistent set."""

    def __init__(self) -> None:
        self.models: tuple[RegisteredModel, ...] = ()
        self.faults = FaultReporter(AGENT)
        self.signature: tuple[tuple[str, str, int], ...] = ()
        # Set after the first load: scoring waits for it rather than score with no model.
        self.loaded = asyncio.Event()
        # Estimates before results of the predictions this worker made (status, metrics).
        self.estimates = estimates_rules.ModelEstimates(silent=REFERENCE_MODEL_IDS)

    async def reload(self, runtime: AgentRuntime) -> bool:
        """Read the registry; swap in the new set if anything changed. True when swapped.

        A model whose stored state is refused is scored at its newest version that verifies,
        or not at all; the others are scored as ever, and the refused row is reported once
        (a fault alert and a dead letter, ``agents.state_faults``).
        """
        async with runtime.connection() as conn:
            active = await registry.load_active(conn, keys=runtime.registry_keys)
            if active.refused:
                await self.faults.report(runtime, conn, active.refused)
        loaded = active.models
        # Champion first, then challengers, then references: consumers read them in this order.
        order = {"champion": 0, "challenger": 1, "reference": 2}
        loaded.sort(key=lambda m: (order.get(m.status, 3), m.model_id))
        signature = tuple((m.model_id, m.status, m.version) for m in loaded)
        self.loaded.set()
        if signature == self.signature:
            return False
        self.models, self.signature = tuple(loaded), signature
        self.estimates.retain(m.model_id for m in loaded)
        log.info(
            "models swapped in", models=[f"{m.model_id}@{m.version}:{m.status}" for m in loaded]
        )
        return True


def register(app: faust.App, runtime: AgentRuntime, active: ActiveModels) -> None:
    """Declare the scorer agent and its snapshot listener on ``app``."""
    features = app.topic(runtime.topics.features, key_serializer="raw", value_serializer="raw")

    @app.agent(features, name=AGENT)
    async def scorer(stream: Any) -> None:
        await run_batches(
            stream, runtime, AGENT, lambda events: score_batch(runtime, active, events), linger=0
        )

    @app.task
    async def follow_snapshots() -> None:
        await follow_registry(runtime, active)


async def score_batch(runtime: AgentRuntime, active: ActiveModels, events: Sequence[Any]) -> None:
    """Score every valid event of a batch; dead-letter the rest; wait for the broker."""
    await active.loaded.wait()
    events = skip_ticks(runtime, AGENT, events)
    now = datetime.now(UTC)
    letters: list[DeadLetter] = []
    valid: list[MatchFeatures] = []
    for event in events:
        decoded = runtime.decode(event.message, MatchFeatures, AGENT)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        else:
            valid.append(decoded)
    topic = runtime.topics.predictions
    predictions = predict_many(valid, active.models, now=now)
    await runtime.publish_all((topic, p.match_id, p) for p in predictions)
    await runtime.publish_dead_letters(letters)
    runtime.counters["scored"] += len(events) - len(letters)
    await record_estimates(runtime, active.estimates, valid, predictions, now)


async def record_estimates(
    runtime: AgentRuntime,
    estimates: estimates_rules.ModelEstimates,
    features: Sequence[MatchFeatures],
    predictions: Sequence[Prediction],
    now: datetime,
) -> None:
    """Update the rolling estimates; store and publish the edge alerts they raise that the
    alert log admits (one firing alert per model across workers, restarts and replays)."""
    transitions = observe_estimates(estimates, features, predictions)
    if not transitions:
        return
    versions = {p.model_id: p.model_version for p in predictions}
    alerts = [estimate_alert(m, versions.get(m), t, now) for m, t in transitions]

    async def store() -> list[Alert]:
        async with runtime.connection() as conn:
            return await alert_store.admit_estimates(conn, alerts)

    alerts = await runtime.retry_transient("alert log", store)
    await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
    runtime.counters["alerts"] += len(alerts)


def observe_estimates(
    estimates: estimates_rules.ModelEstimates,
    features: Sequence[MatchFeatures],
    predictions: Sequence[Prediction],
) -> list[tuple[str, estimates_rules.EdgeTransition]]:
    """Add a batch's predictions to the rolling estimates: the scorer's work per batch after
    publishing it (``make bench`` times it as ``estimates_us``); the alarm transitions."""
    by_match = {f.match_id: f for f in features}
    return estimates.observe(
        (
            p.model_id,
            p.match_id,
            {"H": p.probabilities.H, "D": p.probabilities.D, "A": p.probabilities.A},
            by_match[p.match_id].odds_open,
            by_match[p.match_id].odds_close,
        )
        for p in predictions
    )


def estimate_alert(
    model_id: str,
    model_version: int | None,
    transition: estimates_rules.EdgeTransition,
    now: datetime,
) -> Alert:
    """The operator-facing event of an edge alarm transition."""
    summary = transition.summary
    return Alert(
        alert_id=estimates_rules.alert_id(model_id, transition),
        kind="estimate",
        state=transition.state,
        model_id=model_id,
        model_version=model_version,
        source=AGENT,
        scope="all",
        metric=estimates_rules.EDGE_METRIC,
        detector=estimates_rules.DETECTOR,
        window=summary.closing,
        current=summary.expected_edge,
        threshold=-estimates_rules.EDGE_FLOOR if transition.state == "firing" else 0.0,
        first_match_id=summary.first_match_id,
        last_match_id=summary.last_match_id,
        message=estimates_rules.sentence(model_id, model_version, transition),
        created_at=now,
    )


async def follow_registry(runtime: AgentRuntime, active: ActiveModels) -> None:
    """Reload models when a snapshot event arrives (every worker sees every snapshot).

    A slow poll of the registry covers changes made by SQL alone.
    """
    await runtime.retry_transient("load models", lambda: active.reload(runtime))
    async with runtime.follow(runtime.topics.snapshots) as notices:
        while True:
            count = await notices.wait(REGISTRY_POLL_S)
            if count:
                log.info("snapshot received", count=count)
            await runtime.retry_transient("load models", lambda: active.reload(runtime))
