"""The Faust floor: a tipstream agent that only relays: ``python -m tests.bench.worker relay``.

Built exactly like the scorer (the production app, :func:`agents.loop.run_batches` without
linger, the runtime's output producer, acks after the broker has the outputs) but doing the
passthrough's work per event (JSON decode, JSON encode, one output). Its rate is the fastest a
Faust agent built like tipstream's gets on this machine and broker; the gap to the aiokafka
passthrough is Faust's per-message path, the gap from it to the scorer is the scorer's own work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import faust

from agents.loop import run_batches
from streams.settings import Settings
from streams.worker.runtime import Runtime

AGENT = "relay"


def relay_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.relay"


def register(app: faust.App, runtime: Runtime) -> None:
    """Declare the relay agent: features in, one re-encoded copy each out."""
    features = app.topic(runtime.topics.features, key_serializer="raw", value_serializer="raw")
    sink = relay_topic(runtime.settings)

    @app.agent(features, name=AGENT)
    async def relay(stream: Any) -> None:
        await run_batches(
            stream, runtime, AGENT, lambda events: relay_batch(runtime, sink, events), linger=0
        )


async def relay_batch(runtime: Runtime, sink: str, events: Sequence[Any]) -> None:
    """Re-encode every event to ``sink`` and wait for the broker, as the scorer does."""
    futures = await runtime.producer.send(
        (sink, event.message.key, json.dumps(json.loads(event.message.value)).encode())
        for event in events
    )
    await asyncio.gather(*futures)
