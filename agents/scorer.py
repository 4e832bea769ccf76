"""Scorer agent: match features in, one prediction per active model out (shadow scoring).

State: the active models, loaded from the registry at start. A snapshot event (a new version,
a promotion, a rollback) makes every worker reload that model; the swap happens between two
batches, so no event is dropped or scored twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer

from agents.loop import run_batches
from agents.scoring import predict_many
from models import registry
from models.registry import RegisteredModel
from schemas.events import DeadLetter, MatchFeatures
from streams.log import get_logger
from streams.runtime import Runtime

log = get_logger(__name__)

AGENT = "scorer"
# Statuses can also change in the database alone (an operator's SQL); re-read it this often.
REGISTRY_POLL_S = 10.0


class ActiveModels:
    """The models a worker scores with, replaced as a whole so a batch sees one consistent set."""

    def __init__(self) -> None:
        self.models: tuple[RegisteredModel, ...] = ()
        self.signature: tuple[tuple[str, str, int], ...] = ()
        # Set after the first load: scoring waits for it rather than score with no model.
        self.loaded = asyncio.Event()

    async def reload(self, runtime: Runtime) -> bool:
        """Read the registry; swap in the new set if anything changed. True when swapped."""
        async with runtime.connection() as conn:
            loaded = await registry.load_active(conn, key=runtime.registry_key)
        # Champion first, then challengers, then references: consumers read them in this order.
        order = {"champion": 0, "challenger": 1, "reference": 2}
        loaded.sort(key=lambda m: (order.get(m.status, 3), m.model_id))
        signature = tuple((m.model_id, m.status, m.version) for m in loaded)
        self.loaded.set()
        if signature == self.signature:
            return False
        self.models, self.signature = tuple(loaded), signature
        log.info(
            "models swapped in", models=[f"{m.model_id}@{m.version}:{m.status}" for m in loaded]
        )
        return True


def register(app: faust.App, runtime: Runtime, active: ActiveModels) -> None:
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


async def score_batch(runtime: Runtime, active: ActiveModels, events: Sequence[Any]) -> None:
    """Score every valid event of a batch; dead-letter the rest; wait for the broker."""
    await active.loaded.wait()
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
    await runtime.publish_all(
        (topic, p.match_id, p) for p in predict_many(valid, active.models, now=now)
    )
    await runtime.publish_dead_letters(letters)
    runtime.counters["scored"] += len(events) - len(letters)


async def follow_registry(runtime: Runtime, active: ActiveModels) -> None:
    """Reload models when a snapshot event arrives (every worker sees every snapshot).

    The snapshot topic is read without a consumer group, from its end: each worker needs all
    snapshots, not a share of them. A slow poll of the registry covers changes made by SQL.
    """
    await runtime.retry_transient("load models", lambda: active.reload(runtime))
    consumer = AIOKafkaConsumer(
        runtime.topics.snapshots,
        bootstrap_servers=runtime.settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(REGISTRY_POLL_S * 1000))
            if batch:
                log.info("snapshot received", count=sum(len(v) for v in batch.values()))
            await runtime.retry_transient("load models", lambda: active.reload(runtime))
    except asyncio.CancelledError:
        raise
    finally:
        await consumer.stop()
