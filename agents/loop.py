"""The loop every agent runs: take a batch of raw events, handle it, then ack it.

Faust acks an event when the loop body finishes, even if it raised, so an exception would skip
the event silently. Agents therefore take events without auto-ack (``noack_take``), handle the
whole batch (transient failures are retried inside, with the batch unacked: backpressure), and
ack only afterwards. A batch that fails with an unexpected error is retried one event at a
time; the event that still fails is dead-lettered with the error, and the agent carries on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from schemas.events import DeadLetter, ValidationIssue
from streams.runtime import Runtime, dead_letter

log = structlog.get_logger(__name__)

Handler = Callable[[Sequence[Any]], Awaitable[None]]

BATCH_SIZE = 500
"""Events per batch: large enough to amortise a database round trip over many events."""
BATCH_WITHIN_S = 0.01
"""Longest wait to fill a batch; bounds the latency a batch adds at low load (10 ms)."""


async def run_batches(
    stream: Any,
    runtime: Runtime,
    agent: str,
    handle: Handler,
    *,
    batch_size: int = BATCH_SIZE,
    within: float = BATCH_WITHIN_S,
    ack: bool = True,
) -> None:
    """Drive ``handle`` over the stream in batches; ack each batch after it was handled.

    With ``ack=False`` the handler acks events itself (the learner acks only after its model
    snapshot is stored, so a crash never loses a learn step).
    """
    async for events in stream.noack_take(batch_size, within=within):
        try:
            await handle(events)
        except Exception as error:
            log.exception("batch failed, retrying event by event", agent=agent, error=repr(error))
            await _one_by_one(runtime, agent, handle, events)
        if ack:
            for event in events:
                await stream.ack(event)


async def _one_by_one(runtime: Runtime, agent: str, handle: Handler, events: Sequence[Any]) -> None:
    for event in events:
        try:
            await handle([event])
        except Exception as error:
            runtime.counters[f"faults:{agent}"] += 1
            log.exception("event failed, dead-lettered", agent=agent, error=repr(error))
            await runtime.publish_dead_letters(
                [processing_failure(event.message, error, agent)], invalid=False
            )


def processing_failure(message: Any, error: Exception, agent: str) -> DeadLetter:
    """A dead letter for an event that was valid but could not be processed."""
    issue = ValidationIssue(field="$", value=None, rule=f"processing failed: {error!r}"[:500])
    return dead_letter(message, issue, agent)
