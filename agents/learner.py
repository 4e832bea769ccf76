"""Learner agent: the one owner of each online model, learning from its reconciled results.

The model feed is keyed by model id, so each model's evaluations arrive in one partition and
exactly one worker learns it. State per model: the River model, the policy, and the offsets
already applied. After every batch the learner checkpoints the state with those offsets and
the ids of the evaluations it learned (``learned_evaluations``) in one PostgreSQL transaction,
and only then acks the batch: a crash replays at most the batch, which the checkpoint already
covers, and an evaluation the reconciler re-published after a crash of its own has the same
id, so no result is learned twice and none is lost. Every
``snapshot_every`` learned examples or ``snapshot_seconds`` it also publishes a new version to
the registry and the snapshot topic, which the scorers swap in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import faust
import structlog

from agents import alert_store, learner_store, probes, registry
from agents.dead_letters import dead_letter
from agents.learner_rules import Learning, adopts_version, apply_learning, record_position
from agents.loop import run_batches
from agents.runtime import AgentRuntime
from agents.state_faults import FaultReporter
from models.base import NonFiniteState
from models.policy import parse as parse_policy
from models.serialization import sha256_hex, sign
from schemas.events import Alert, DeadLetter, ModelFeedItem, ModelSnapshot, ValidationIssue

log = structlog.get_logger(__name__)
AGENT = "learner"


class Learner:
    """The learner's state on this worker: the models whose feed partitions it owns."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.states: dict[str, Learning | None] = {}
        self.lock = asyncio.Lock()
        self.faults = FaultReporter(AGENT)

    async def state_for(self, model_id: str) -> Learning | None:
        """The model's learning state, from its checkpoint or its latest version; None if the
        model does not learn online (batch models, market references) or is retired."""
        if model_id in self.states:
            return self.states[model_id]
        async with self.runtime.connection() as conn:
            return await self._load(conn, model_id)

    async def _load(self, conn: Any, model_id: str) -> Learning | None:
        keys = self.runtime.registry_keys
        try:
            entry = await registry.load_model(conn, model_id, keys=keys)
        except registry.RegistryError:
            self.states[model_id] = None
            return None
        except registry.StateRefused as error:
            # Not learned here until a restart or rebalance: continuing from an older version
            # would fork the lineage. The scorer serves the newest good version meanwhile.
            await self.faults.report(self.runtime, conn, [error.refused])
            self.states[model_id] = None
            return None
        if not entry.model.learns_online or entry.status in ("retired", "reference"):
            self.states[model_id] = None
            return None
        state = Learning(
            entry=entry,
            policy=parse_policy(entry.policy or self.runtime.settings.learning_policy),
            learned=entry.learned,
            learned_since_version=0,
            positions=dict(entry.positions),
            last_version_at=time.monotonic(),
        )
        checkpoint = await learner_store.load_checkpoint(conn, model_id)
        if checkpoint is not None and not adopts_version(checkpoint["version"], entry.version):
            context = registry.checkpoint_context(model_id, entry.kind, checkpoint["version"])
            try:
                model = registry.restore_state(bytes(checkpoint["state"]), keys, context)
            except registry.StateRefused as error:
                # The version is verified: learn on from it (what the checkpoint had learned
                # since is lost; its evaluation ids stay recorded, so it is not learned twice).
                await self.faults.report(self.runtime, conn, [error.refused])
            else:
                state.entry.model, state.entry.version = model, checkpoint["version"]
                state.learned = checkpoint["learned"]
                state.learned_since_version = checkpoint["learned_since_version"]
                state.positions = json.loads(checkpoint["positions"])
        self.states[model_id] = state
        log.info(
            "learner took model",
            model_id=model_id,
            version=state.entry.version,
            learned=state.learned,
            policy=str(state.policy),
        )
        return state

    async def follow_registry(self, model_ids: set[str]) -> None:
        """Drop each held model whose registry version is newer than the one it holds (a
        rollback in time, :func:`adopts_version`): the next item reloads it from that version,
        and the batch's checkpoint records it, in the transaction with what the batch learns."""
        held = {m: s.entry.version for m in model_ids if (s := self.states.get(m)) is not None}
        if not held:
            return

        async def latest() -> dict[str, int]:
            async with self.runtime.connection() as conn:
                return await registry.latest_versions(conn, sorted(held))

        versions = await self.runtime.retry_transient("latest versions", latest)
        for model_id, version in held.items():
            if adopts_version(version, versions.get(model_id)):
                self.states.pop(model_id, None)
                log.info(
                    "learner adopts a version it did not produce",
                    model_id=model_id,
                    held=version,
                    latest=versions.get(model_id),
                )

    def forget(self) -> None:
        """Drop every model: after a rebalance another worker may own some of them."""
        self.states.clear()


def register(app: faust.App, runtime: AgentRuntime) -> Learner:
    """Declare the learner agent, its version timer and its rebalance hook on ``app``."""
    learner = Learner(runtime)
    feed = app.topic(runtime.topics.model_feed, key_serializer="raw", value_serializer="raw")

    @app.agent(feed, name=AGENT)
    async def learn(stream: Any) -> None:
        await run_batches(stream, runtime, AGENT, lambda events: learn_batch(learner, events))

    @app.timer(interval=max(1.0, runtime.settings.snapshot_seconds / 4))
    async def publish_due_versions() -> None:
        async with learner.lock:
            due = [
                s
                for s in learner.states.values()
                if s is not None
                and s.learned_since_version > 0
                and time.monotonic() - s.last_version_at >= runtime.settings.snapshot_seconds
            ]
            if due:
                await publish_versions(runtime, due)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        async with learner.lock:
            learner.forget()

    async def flush_versions() -> None:
        # At shutdown every learned result is in the checkpoint already; publishing the
        # pending version as well means scorers and the registry have the latest model too.
        async with learner.lock:
            due = [s for s in learner.states.values() if s is not None and s.learned_since_version]
            if due:
                await publish_versions(runtime, due)

    runtime.shutdown_hooks.append(flush_versions)
    return learner


async def learn_batch(learner: Learner, events: Sequence[Any]) -> None:
    """Learn from a batch of feed items, checkpoint what changed, publish versions that are due.

    An item is skipped when the model already learned its evaluation: the batch re-delivered
    after a crash of this worker, or the reconciler re-publishing it after a crash of its own
    (same evaluation id, a new offset). ``learned_evaluations`` is written with the checkpoint.
    """
    runtime = learner.runtime
    letters: list[DeadLetter] = []
    async with learner.lock:
        changed: dict[str, Learning] = {}
        fresh: list[tuple[Learning, ModelFeedItem, Any]] = []
        decoded: list[tuple[ModelFeedItem, Any]] = []
        for event in events:
            item = runtime.decode(event.message, ModelFeedItem, AGENT)
            if isinstance(item, DeadLetter):
                letters.append(item)
                continue
            decoded.append((item, event))
        await learner.follow_registry({item.evaluation.model_id for item, _ in decoded})
        for item, event in decoded:
            state = await runtime.retry_transient(
                "load model", partial(learner.state_for, item.evaluation.model_id)
            )
            if state is None:
                continue
            message = event.message
            record_position(state, message.topic, message.partition, message.offset)
            changed[state.entry.model_id] = state
            fresh.append((state, item, event))
        keys = [(s.entry.model_id, item.evaluation.evaluation_id) for s, item, _ in fresh]
        known = (
            await runtime.retry_transient("learned evaluations", partial(learned, runtime, keys))
            if keys
            else set()
        )
        learned_now: list[learner_store.Learned] = []
        for (state, item, event), key in zip(fresh, keys, strict=True):
            if key in known:
                runtime.counters["learn_skipped_duplicate"] += 1
                continue
            known.add(key)
            try:
                learned_it = apply_learning(state, item)
            except NonFiniteState as error:
                # The model refused the step and is as it was: keep the example, say why.
                runtime.counters["learn_refused"] += 1
                issue = ValidationIssue(field="inputs", value=None, rule=str(error)[:500])
                letters.append(dead_letter(event.message, issue, AGENT))
                continue
            if learned_it:
                runtime.counters["learned"] += 1
                evaluation = item.evaluation
                learned_now.append(
                    learner_store.Learned(*key, evaluation.match_id, state.entry.version)
                )
        if changed:
            probes.reach("learner.learned")  # learned in memory, not yet checkpointed
            broken = {
                s.entry.model_id for s in changed.values() if not s.entry.model.state_is_finite()
            }
            if broken:
                await _refuse_broken(learner, broken)
                learned_now = [item for item in learned_now if item.model_id not in broken]
            states = [s for s in changed.values() if s.entry.model_id not in broken]
            await runtime.retry_transient(
                "learner checkpoint", lambda: checkpoint(runtime, states, learned_now)
            )
            every = runtime.settings.snapshot_every
            due = [s for s in states if s.learned_since_version >= every]
            if due:
                await publish_versions(runtime, due)
    await runtime.publish_dead_letters(letters)
    if changed:
        probes.reach("learner.checkpointed")  # checkpointed, not yet acked


async def _refuse_broken(learner: Learner, model_ids: set[str]) -> None:
    """Models whose state is no longer finite are never checkpointed nor versioned: forget them
    (the next item reloads the last stored state) and raise one fault alert each. The batch's
    examples for them are not learned; the alert says so."""
    runtime = learner.runtime
    now = datetime.now(UTC)
    alerts = []
    for model_id in sorted(model_ids):
        state = learner.states.pop(model_id, None)
        # Deterministic: the same batch learned again after a crash gives the same alert.
        at = f"{state.entry.version}:{state.learned}" if state is not None else "unknown"
        runtime.counters["learn_broken_state"] += 1
        alerts.append(
            Alert(
                alert_id=f"fault:non-finite-state:{model_id}:{at}",
                kind="fault",
                state="firing",
                model_id=model_id,
                source=AGENT,
                scope="learner",
                detector="non-finite-state",
                message=(
                    f"{model_id}: the learned state is no longer finite; it was not stored, the "
                    "learner goes back to the last stored version and this batch's results for "
                    "the model are not learned"
                ),
                created_at=now,
            )
        )
        log.error("model state not finite, not stored", model_id=model_id)

    async def store() -> None:
        async with runtime.connection() as conn:
            await alert_store.write(conn, alerts)

    await runtime.retry_transient("fault alert", store)
    await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)


async def learned(runtime: AgentRuntime, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (model id, evaluation id) pairs were learned already (recorded by a checkpoint)."""
    async with runtime.connection() as conn:
        return await learner_store.learned(conn, keys)


async def checkpoint(
    runtime: AgentRuntime,
    states: Sequence[Learning],
    learned_now: Sequence[learner_store.Learned] = (),
) -> None:
    """Store each model's state with the offsets it has applied and the evaluations it has
    learned since the last checkpoint, in one transaction."""
    rows = [
        (
            s.entry.model_id,
            s.entry.version,
            s.learned,
            s.learned_since_version,
            s.positions,
            sign(
                s.entry.model.snapshot(),
                runtime.registry_keys,
                registry.checkpoint_context(s.entry.model_id, s.entry.kind, s.entry.version),
            ),
        )
        for s in states
    ]
    async with runtime.connection() as conn, conn.transaction():
        await learner_store.write_checkpoints(conn, rows, learned_now)


async def store_versions(runtime: AgentRuntime, states: Sequence[Learning]) -> list[int | None]:
    """Register the next version of each model and mark its checkpoint, in one transaction.

    The versions are computed from the states, which change only after the commit
    (:func:`publish_versions`), never v+2 on a rolled-back v+1. A model whose registry has
    moved past the state gets None and no version is stored over it: a rollback in time took
    the number, or (a failure reported at a commit that did happen) this very version is
    stored already, with its checkpoint marked; either way the next batch adopts the
    registry's (:func:`adopts_version`). The ``models`` rows are locked in id order, so two
    transactions never wait on each other's locks.
    """
    versions: list[int | None] = []
    try:
        async with runtime.connection() as conn, conn.transaction():
            latest = {
                model_id: await registry.locked_latest_version(conn, model_id)
                for model_id in sorted({state.entry.model_id for state in states})
            }
            versions = []
            for state in states:
                model = state.entry.model
                if adopts_version(state.entry.version, latest[model.model_id]):
                    versions.append(None)
                    continue
                version = state.entry.version + 1
                versions.append(version)
                model.version = version
                await registry.save_version(
                    conn,
                    model,
                    keys=runtime.registry_keys,
                    learned=state.learned,
                    last_evaluation_id=state.last_evaluation_id,
                    positions=state.positions,
                )
                context = registry.checkpoint_context(model.model_id, model.kind, version)
                await learner_store.mark_versioned(
                    conn,
                    model.model_id,
                    version,
                    sign(model.snapshot(), runtime.registry_keys, context),
                )
    except BaseException:
        for state in states:
            state.entry.model.version = state.entry.version
        raise
    return versions


async def publish_versions(runtime: AgentRuntime, states: Sequence[Learning]) -> None:
    """Register a new version of each model and announce it on the snapshot topic."""
    versions = await runtime.retry_transient(
        "model version", partial(store_versions, runtime, states)
    )
    snapshots = []
    for state, version in zip(states, versions, strict=True):
        if version is None:
            log.info(
                "model version not stored: the registry moved on", model_id=state.entry.model_id
            )
            continue
        state.entry.version = version
        state.learned_since_version = 0
        state.last_version_at = time.monotonic()
        snapshots.append(
            ModelSnapshot(
                model_id=state.entry.model_id,
                version=version,
                parent_version=version - 1,
                kind=state.entry.kind,
                status=state.entry.status,  # type: ignore[arg-type]
                learned=state.learned,
                last_evaluation_id=state.last_evaluation_id,
                state_sha256=sha256_hex(state.entry.model.snapshot()),
                created_at=datetime.now(UTC),
            )
        )
    await runtime.publish_all((runtime.topics.snapshots, s.model_id, s) for s in snapshots)
    if runtime.settings.keep_versions:
        await prune_versions(runtime, [s.model_id for s in snapshots])
    for snapshot in snapshots:
        log.info(
            "model version published",
            model_id=snapshot.model_id,
            version=snapshot.version,
            learned=snapshot.learned,
        )


async def prune_versions(runtime: AgentRuntime, model_ids: list[str]) -> None:
    """Apply the version retention policy (``TIPSTREAM_KEEP_VERSIONS``) to the models this
    learner just versioned: each new version would otherwise stay in the registry forever."""
    older_than = timedelta(days=runtime.settings.ledger_retention_days)

    async def prune() -> registry.PruneReport:
        async with runtime.connection() as conn:
            return await registry.prune_versions(
                conn,
                keep=runtime.settings.keep_versions,
                older_than=older_than,
                model_ids=model_ids,
            )

    report = await runtime.retry_transient("prune versions", prune)
    if report.pruned:
        runtime.counters["versions_pruned"] += len(report.pruned)
        log.info("model versions pruned", pruned=len(report.pruned), kept=report.kept)
