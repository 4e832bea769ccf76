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
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust

from agents.loop import run_batches
from models import registry
from models.policy import LearningPolicy
from models.policy import parse as parse_policy
from models.registry import RegisteredModel
from models.serialization import sha256_hex, sign, verify
from schemas.events import DeadLetter, ModelFeedItem, ModelSnapshot
from streams.chaos.crash import crash_point
from streams.log import get_logger
from streams.runtime import Runtime

log = get_logger(__name__)
AGENT = "learner"


@dataclass
class Learning:
    """What the learner holds for one online model."""

    entry: RegisteredModel
    policy: LearningPolicy
    learned: int
    learned_since_version: int
    positions: dict[str, int]
    last_version_at: float
    last_evaluation_id: str | None = None


class Learner:
    """The learner's state on this worker: the models whose feed partitions it owns."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.states: dict[str, Learning | None] = {}
        self.lock = asyncio.Lock()

    async def state_for(self, model_id: str) -> Learning | None:
        """The model's learning state, from its checkpoint or its latest version; None if the
        model does not learn online (batch models, market references) or is retired."""
        if model_id in self.states:
            return self.states[model_id]
        async with self.runtime.connection() as conn:
            return await self._load(conn, model_id)

    async def _load(self, conn: Any, model_id: str) -> Learning | None:
        try:
            entry = await registry.load_model(conn, model_id, key=self.runtime.registry_key)
        except registry.RegistryError:
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
        checkpoint = await conn.fetchrow(
            "SELECT version, learned, learned_since_version, positions, state "
            "FROM learner_checkpoints WHERE model_id = $1",
            model_id,
        )
        if checkpoint is not None and checkpoint["version"] >= entry.version:
            from models import catalog

            model = catalog.restore(
                entry.kind, verify(bytes(checkpoint["state"]), self.runtime.registry_key)
            )
            model.version = checkpoint["version"]
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

    def forget(self) -> None:
        """Drop every model: after a rebalance another worker may own some of them."""
        self.states.clear()


def register(app: faust.App, runtime: Runtime) -> Learner:
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
                await runtime.retry_transient(
                    "model version", lambda: publish_versions(runtime, due)
                )

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
        fresh: list[tuple[Learning, ModelFeedItem]] = []
        for event in events:
            item = runtime.decode(event.message, ModelFeedItem, AGENT)
            if isinstance(item, DeadLetter):
                letters.append(item)
                continue
            state = await runtime.retry_transient(
                "load model", partial(learner.state_for, item.evaluation.model_id)
            )
            if state is None:
                continue
            # The applied position is recorded, but an item at or before it is not skipped on
            # that ground: after Faust's partition hole is repaired (streams/watchdog.py) an
            # earlier offset can follow a later one. The evaluation id decides.
            position = f"{event.message.topic}:{event.message.partition}"
            state.positions[position] = max(event.message.offset, state.positions.get(position, -1))
            changed[state.entry.model_id] = state
            fresh.append((state, item))
        keys = [(s.entry.model_id, item.evaluation.evaluation_id) for s, item in fresh]
        known = (
            await runtime.retry_transient("learned evaluations", partial(learned, runtime, keys))
            if keys
            else set()
        )
        learned_now: list[tuple[str, str]] = []
        for (state, item), key in zip(fresh, keys, strict=True):
            if key in known:
                runtime.counters["learn_skipped_duplicate"] += 1
                continue
            known.add(key)
            if apply_learning(state, item):
                runtime.counters["learned"] += 1
                learned_now.append(key)
        if changed:
            crash_point("learner.learned")  # learned in memory, not yet checkpointed
            states = list(changed.values())
            await runtime.retry_transient(
                "learner checkpoint", lambda: checkpoint(runtime, states, learned_now)
            )
            every = runtime.settings.snapshot_every
            due = [s for s in states if s.learned_since_version >= every]
            if due:
                await runtime.retry_transient(
                    "model version", lambda: publish_versions(runtime, due)
                )
    await runtime.publish_dead_letters(letters)
    if changed:
        crash_point("learner.checkpointed")  # checkpointed, not yet acked


async def learned(runtime: Runtime, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (model id, evaluation id) pairs were learned already (recorded by a checkpoint)."""
    async with runtime.connection() as conn:
        rows = await conn.fetch(
            """SELECT model_id, evaluation_id FROM learned_evaluations
               WHERE (model_id, evaluation_id) IN
                     (SELECT * FROM unnest($1::text[], $2::text[]))""",
            [model_id for model_id, _ in keys],
            [evaluation_id for _, evaluation_id in keys],
        )
    return {(row["model_id"], row["evaluation_id"]) for row in rows}


def apply_learning(state: Learning, item: ModelFeedItem) -> bool:
    """One learn step under the model's policy; True when the model learned."""
    evaluation = item.evaluation
    weight = state.policy.weight(evaluation.probabilities.as_dict(), evaluation.outcome)
    if weight <= 0:
        return False
    state.entry.model.learn_one(item.inputs, evaluation.outcome, weight)
    state.learned += 1
    state.learned_since_version += 1
    state.last_evaluation_id = evaluation.evaluation_id
    return True


async def checkpoint(
    runtime: Runtime, states: Sequence[Learning], learned_now: Sequence[tuple[str, str]] = ()
) -> None:
    """Store each model's state with the offsets it has applied and the evaluations it has
    learned since the last checkpoint, in one transaction."""
    async with runtime.connection() as conn, conn.transaction():
        if learned_now:
            await conn.execute(
                """INSERT INTO learned_evaluations (model_id, evaluation_id)
                   SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING""",
                [model_id for model_id, _ in learned_now],
                [evaluation_id for _, evaluation_id in learned_now],
            )
        await conn.executemany(
            """INSERT INTO learner_checkpoints (model_id, version, learned,
                   learned_since_version, positions, state)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6)
               ON CONFLICT (model_id) DO UPDATE SET version = EXCLUDED.version,
                   learned = EXCLUDED.learned,
                   learned_since_version = EXCLUDED.learned_since_version,
                   positions = EXCLUDED.positions, state = EXCLUDED.state, updated_at = now()""",
            [
                (
                    s.entry.model_id,
                    s.entry.version,
                    s.learned,
                    s.learned_since_version,
                    json.dumps(s.positions),
                    sign(s.entry.model.snapshot(), runtime.registry_key),
                )
                for s in states
            ],
        )


async def publish_versions(runtime: Runtime, states: Sequence[Learning]) -> None:
    """Register a new version of each model and announce it on the snapshot topic."""
    snapshots = []
    async with runtime.connection() as conn, conn.transaction():
        for state in states:
            model = state.entry.model
            model.version = state.entry.version + 1
            await registry.save_version(
                conn,
                model,
                key=runtime.registry_key,
                learned=state.learned,
                last_evaluation_id=state.last_evaluation_id,
                positions=state.positions,
            )
            state.entry.version = model.version
            state.learned_since_version = 0
            state.last_version_at = time.monotonic()
            await conn.execute(
                """UPDATE learner_checkpoints SET version = $2, learned_since_version = 0
                   WHERE model_id = $1""",
                state.entry.model_id,
                model.version,
            )
            snapshots.append(
                ModelSnapshot(
                    model_id=state.entry.model_id,
                    version=model.version,
                    parent_version=model.version - 1,
                    kind=state.entry.kind,
                    status=state.entry.status,  # type: ignore[arg-type]
                    learned=state.learned,
                    last_evaluation_id=state.last_evaluation_id,
                    state_sha256=sha256_hex(model.snapshot()),
                    created_at=datetime.now(UTC),
                )
            )
    await runtime.publish_all((runtime.topics.snapshots, s.model_id, s) for s in snapshots)
    for snapshot in snapshots:
        log.info(
            "model version published",
            model_id=snapshot.model_id,
            version=snapshot.version,
            learned=snapshot.learned,
        )
