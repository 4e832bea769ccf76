"""Feature drift agent: every match's features, one monitor for all leagues, ``drift`` alerts.

Two Faust agents. The **drift router** reads ``match-features`` (keyed by match id, spread over
every partition and so over every worker) and republishes each event unchanged on
``drift-inputs``, a one-partition topic, keyed by the partition it came from (any key lands in
the one partition; the key tells the monitor its source). The **drift monitor** reads
``drift-inputs``: the consumer group gives its one partition to one worker, so one owner sees
every league's features and runs the one :class:`agents.drift_rules.DriftMonitor`, with one
watermark per source partition (windows by kickoff time, closed on the watermarks, lateness
judged per source: which worker owns it, and how the partitions' events interleave, changes
nothing).

State: the monitor, in memory, and every match it took in PostgreSQL (``drift_observations``,
:mod:`agents.drift_store`, in the order taken); a new owner (a restart, a rebalance) rebuilds
the windows, watermarks, references and firing states by replaying those rows silently, with
the operator's resets where they took effect (``drift_resets``). Effects per batch, in this
order: alerts stored (idempotent on their deterministic id) and published, then the
observations, then the offsets. A crash in between re-derives the same alerts from the
re-delivered batch: stored once, published again with the same id (the alerts topic is
at-least-once). A replay of the same features finds their windows closed (late, left out) or
re-fills an open one with the same values: no new alert.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import structlog

from agents import alert_store, drift_store
from agents.dead_letters import dead_letter
from agents.drift_rules import DETECTOR, ROLLUP, DriftConfig, DriftDecision, DriftMonitor
from agents.drift_store import Observation
from agents.loop import run_batches
from agents.runtime import AgentRuntime
from agents.ticks import skip_ticks
from models.features import FEATURE_NAMES
from schemas.events import Alert, DeadLetter, MatchFeatures, ValidationIssue

log = structlog.get_logger(__name__)

AGENT = "feature-drift"
ROUTER = "drift-router"
SCOPE = "all"


def config_of(runtime: AgentRuntime) -> DriftConfig:
    """The monitor's parameters from the settings (``TIPSTREAM_DRIFT_*``)."""
    settings = runtime.settings
    return DriftConfig(
        window_days=settings.drift_window_days,
        grace_days=settings.drift_grace_days,
        min_window=settings.drift_min_window,
        reference_windows=settings.drift_reference_windows,
        min_reference=settings.drift_min_reference,
        resamples=settings.drift_resamples,
        alarms_per_year=settings.drift_alarms_per_year,
    )


def new_monitor(runtime: AgentRuntime, resets: Sequence[datetime] = ()) -> DriftMonitor:
    """A monitor of every feature the features agent publishes, one source per partition of
    ``match-features``."""
    return DriftMonitor(
        config_of(runtime), FEATURE_NAMES, resets, sources=runtime.settings.partitions
    )


class Drift:
    """The drift monitor this worker owns, or None until it is warm."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.monitor: DriftMonitor | None = None

    async def warm_up(self, conn: Any) -> DriftMonitor:
        """Rebuild the monitor from what it accepted before and the resets it took."""
        taken = [r.effective_at for r in await drift_store.resets(conn) if r.effective_at]
        monitor = new_monitor(self.runtime, taken)
        rows = await drift_store.history(conn)
        # In a thread: a long history is seconds of numpy, and the worker's other agents
        # share this event loop (and its heartbeats to the broker).
        await asyncio.to_thread(replay, monitor, rows)
        log.info("drift monitor rebuilt", observations=len(rows), late=monitor.late)
        return monitor

    def forget(self) -> None:
        self.monitor = None


def replay(monitor: DriftMonitor, rows: Sequence[Observation]) -> None:
    """Feed stored observations to a monitor in the order it took them, silently."""
    for row in rows:
        monitor.observe(
            row.match_id, row.kickoff, row.features, source=row.source, event_time=row.event_time
        )


def register(app: faust.App, runtime: AgentRuntime) -> Drift:
    """Declare the drift router and the drift monitor agent on ``app``."""
    drift = Drift(runtime)
    features = app.topic(runtime.topics.features, key_serializer="raw", value_serializer="raw")
    inputs = app.topic(runtime.topics.drift_inputs, key_serializer="raw", value_serializer="raw")

    @app.agent(features, name=ROUTER)
    async def route(stream: Any) -> None:
        await run_batches(stream, runtime, ROUTER, lambda events: route_batch(runtime, events))

    @app.agent(inputs, name=AGENT)
    async def watch(stream: Any) -> None:
        await run_batches(stream, runtime, AGENT, lambda events: drift_batch(drift, events))

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        drift.forget()

    return drift


async def route_batch(runtime: AgentRuntime, events: Sequence[Any]) -> None:
    """Republish a batch of features on ``drift-inputs``, keyed by their source partition.
    Invalid ones are the scorer's to dead-letter (the owner of the features topic's letters)."""
    letters: list[DeadLetter] = []
    outputs = []
    for event in skip_ticks(runtime, ROUTER, events):  # a backfill's ticks: not features
        record = runtime.decode(event.message, MatchFeatures, ROUTER)
        if isinstance(record, DeadLetter):
            letters.append(record)
        else:
            key = str(event.message.partition)
            outputs.append((runtime.topics.drift_inputs, key, record))
    await runtime.publish_all(outputs)
    await runtime.publish_dead_letters(letters)


async def drift_batch(drift: Drift, events: Sequence[Any], *, now: datetime | None = None) -> None:
    """Feed a batch of features to the monitor; store and publish the alerts of the windows it
    closes, then log every match it took. On an unexpected error the monitor is dropped, so the
    retry starts from what PostgreSQL holds, never from a half-fed monitor."""
    try:
        await _drift_batch(drift, events, now or datetime.now(UTC))
    except BaseException:
        drift.forget()
        raise


async def _drift_batch(drift: Drift, events: Sequence[Any], now: datetime) -> None:
    runtime = drift.runtime
    letters: list[DeadLetter] = []
    refused: list[DeadLetter] = []
    items: list[tuple[Any, int, MatchFeatures]] = []
    for event in events:
        record = runtime.decode(event.message, MatchFeatures, AGENT)
        if isinstance(record, DeadLetter):
            letters.append(record)
            continue
        source = source_of(event.message.key, runtime.settings.partitions)
        if isinstance(source, ValidationIssue):
            refused.append(dead_letter(event.message, source, AGENT))
        else:
            items.append((event.message, source, record))
    if drift.monitor is None:

        async def warm() -> DriftMonitor:
            async with runtime.connection() as conn:
                return await drift.warm_up(conn)

        drift.monitor = await runtime.retry_transient("drift warm-up", warm)
    monitor = drift.monitor
    await take_resets(runtime, monitor)
    decisions: list[DriftDecision] = []
    taken: list[Observation] = []
    took: Counter[str] = Counter()
    for message, source, record in items:
        values = {name: record.features.get(name) for name in FEATURE_NAMES}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            issue = ValidationIssue(
                field=f"features.{missing[0]}",
                value=None,
                rule=f"the drift monitor needs every feature it watches ({len(missing)} missing)",
            )
            refused.append(dead_letter(message, issue, AGENT))
            continue
        complete = {name: float(value) for name, value in values.items() if value is not None}
        at = record.issued_at or record.kickoff
        late = monitor.late
        decisions.extend(
            monitor.observe(record.match_id, record.kickoff, complete, source=source, event_time=at)
        )
        taken.append(Observation(record.match_id, source, at, record.kickoff, complete))
        took["drift:late" if monitor.late > late else "drift:observed"] += 1
    alerts = [to_alert(d, now) for d in decisions]
    if alerts:

        async def store_alerts() -> None:
            async with runtime.connection() as conn:
                await alert_store.write(conn, alerts)

        await runtime.retry_transient("alert log", store_alerts)
        await runtime.publish_all((runtime.topics.alerts, AGENT, a) for a in alerts)
        runtime.counters["alerts"] += len(alerts)
    if taken:

        async def store_observations() -> None:
            async with runtime.connection() as conn:
                await drift_store.write(conn, taken)

        await runtime.retry_transient("drift observations", store_observations)
    runtime.counters.update(took)  # counted once stored: a reader of them sees the effects
    await runtime.publish_dead_letters(letters)
    await runtime.publish_dead_letters(refused, invalid=False)


def source_of(key: bytes | None, partitions: int) -> int | ValidationIssue:
    """The ``match-features`` partition a ``drift-inputs`` event came from (its key).

    >>> source_of(b"1", 2), source_of(b"x", 2).rule
    (1, 'the partition of match-features it came from: 0 to 1')
    """
    text = (key or b"").decode(errors="replace")
    if text.isdecimal() and int(text) < partitions:
        return int(text)
    rule = f"the partition of match-features it came from: 0 to {partitions - 1}"
    return ValidationIssue(field="key", value=text[:100], rule=rule)


async def take_resets(runtime: AgentRuntime, monitor: DriftMonitor) -> None:
    """Take the operator's new resets: each takes effect at the first window not closed yet
    (or the later window it asked for), recorded so a replay applies it at the same place."""

    async def take() -> list[datetime]:
        async with runtime.connection() as conn:
            pending = await drift_store.resets(conn, pending_only=True)
            return [
                await drift_store.take_reset(conn, r.reset_id, monitor.next_reset(r.requested_at))
                for r in pending
            ]

    for effective in await runtime.retry_transient("drift resets", take):
        monitor.reset(effective)
        runtime.counters["drift:resets"] += 1


def to_alert(decision: DriftDecision, now: datetime) -> Alert:
    """The operator-facing event of a decision: the feature is the metric, PSI the value."""
    return Alert(
        alert_id=decision.alert_id,
        kind="drift",
        state=decision.state,
        source=AGENT,
        scope=SCOPE,
        metric=decision.feature,
        detector=DETECTOR,
        window=decision.window,
        current=decision.psi,
        threshold=decision.psi_level,
        first_match_id=decision.first_match_id,
        last_match_id=decision.last_match_id,
        message=sentence(decision),
        created_at=now,
    )


def sentence(d: DriftDecision) -> str:
    """One sentence an operator can act on: which feature, which window, by how much."""
    last_day = d.window_end - timedelta(days=1)
    window = (
        f"the {d.window} matches kicked off {d.window_start:%Y-%m-%d} to {last_day:%Y-%m-%d} "
        f"(matches {d.first_match_id} to {d.last_match_id})"
    )
    if d.feature == ROLLUP:
        if d.state == "firing":
            return (
                f"{len(d.features)} features ({d.psi:.0%} of those watched) drift together over "
                f"{window}: {', '.join(d.features)}; a change upstream (a feed, the odds source, "
                "the season itself) rather than one feature's bug."
            )
        return (
            f"The features no longer drift together over {window}: {d.psi:.0%} of them still "
            f"fire ({', '.join(d.features) or 'none'})."
        )
    levels = (
        f"PSI {d.psi:.3f} (level {d.psi_level:.3f}) and KS {d.ks:.3f} (level {d.ks_level:.3f}) "
        f"against its reference of {d.reference} matches ({DETECTOR})"
    )
    if d.state == "firing":
        return (
            f"Feature {d.feature} drifted over {window}: {levels}; check its input, or reset "
            "the reference once the change is understood (tipstream drift reset)."
        )
    return f"Feature {d.feature} is back within its levels over {window}: {levels}."
