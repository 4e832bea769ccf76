"""The loop every agent runs: take a batch of raw events, handle it, then ack it.

Faust acks an event when the loop body finishes, even if it raised, so an exception would skip
the event silently. Agents therefore take events without auto-ack, handle the whole batch
(transient failures are retried inside, with the batch unacked: backpressure), and ack only
afterwards. A batch that fails with an unexpected error is retried one event at a time; the
event that still fails is dead-lettered with the error, and the agent carries on.

Batches form by themselves (:class:`Batcher`): while the agent handles one batch, which mostly
means waiting for the broker and the database, the next one fills up with what Faust fetched
meanwhile. A busy agent therefore gets full batches, and an idle one handles an event as soon
as it arrives instead of waiting for a fixed timer, as with Faust's ``take(max, within)``
(which held every event up to ``within``, 10 ms: half the scorer's median latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import structlog

from agents.dead_letters import processing_failure
from agents.runtime import AgentRuntime

log = structlog.get_logger(__name__)

Handler = Callable[[Sequence[Any]], Awaitable[None]]

BATCH_SIZE = 500
"""Most events per batch: a scorer batch (500 x 4 predictions) is one produce request per
partition, and a reconciler batch one database transaction."""
LINGER_S = 0.01
"""How long a batch may keep filling after its first event, for agents whose every batch
has a fixed cost worth spreading (a learner checkpoint, a database transaction): 10 ms. The
scorer does not linger: its latency is the product."""
FILL_AT_MOST_S = 0.05
"""Longest a batch keeps filling while Faust reports more events queued. A bound, not a
target: Faust clears its queues when a rebalance ends, and a batch must not wait for an event
that will never come. 500 events take ~35 ms to arrive from a backlog."""


class Batcher:
    """A bounded buffer between Faust's delivery of events (``put``) and an agent (``take``).

    A batch is handed over once the agent has caught up with what Faust has fetched (no event
    is queued behind the last one put, or ``FILL_AT_MOST_S`` passed) and ``linger`` seconds
    have passed since its first event, or as soon as it is full. An idle scorer (no linger)
    thus handles each event as it arrives, and a busy agent gets full batches. ``put`` waits
    while the buffer is full, which stops Faust's delivery: backpressure.
    """

    def __init__(self, max_size: int = BATCH_SIZE, linger: float = 0.0) -> None:
        if max_size < 1 or linger < 0:
            raise ValueError(f"need max_size >= 1 and linger >= 0, not {max_size}, {linger}")
        self.max_size = max_size
        self.linger = linger
        self._events: list[Any] = []
        self._first_at = 0.0
        self._ready = asyncio.Event()  # at least one event waits
        self._due = asyncio.Event()  # caught up, or full
        self._full = asyncio.Event()
        self._room = asyncio.Event()  # below max_size
        self._room.set()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def ready(self) -> asyncio.Event:
        """Set while at least one event waits."""
        return self._ready

    async def put(self, event: Any, *, more_queued: bool = False) -> None:
        """Add one event; ``more_queued`` when Faust holds more behind it. Waits while full."""
        while len(self._events) >= self.max_size:
            await self._room.wait()
        if not self._events:
            self._first_at = time.monotonic()
            self._ready.set()
        self._events.append(event)
        if len(self._events) >= self.max_size:
            self._full.set()
            self._room.clear()
        if not more_queued or self._full.is_set():
            self._due.set()

    async def take(self) -> list[Any]:
        """The next batch, in arrival order: never empty."""
        await self._ready.wait()
        if not self._due.is_set():
            remaining = self._first_at + FILL_AT_MOST_S - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), max(remaining, 0.0))
        remaining = self._first_at + self.linger - time.monotonic()
        if remaining > 0 and not self._full.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), remaining)
        events, self._events = self._events, []
        for flag in (self._ready, self._due, self._full):
            flag.clear()
        self._room.set()
        return events


async def batches(stream: Any, batcher: Batcher) -> AsyncIterator[list[Any]]:
    """Faust events of ``stream`` in batches, not acked: the caller acks each one when done.

    The same machinery as Faust's ``noack_take``: a stream processor hands every event to the
    batcher, and Faust drains the stream in the background (``_enable_passive``) while the
    agent handles the previous batch.
    """

    async def add_to_batch(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("stream delivered a value without its event")
        await batcher.put(event, more_queued=not stream.channel.empty())
        return value

    acks_were_enabled = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_batch)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            # Idle: wait for an event, or return when the stream stops (as noack_take does).
            if not batcher.ready.is_set() and await stream.wait_for_stopped(batcher.ready):
                break
            yield await batcher.take()
    finally:
        stream.enable_acks = acks_were_enabled
        stream._processors.remove(add_to_batch)


async def run_batches(
    stream: Any,
    runtime: AgentRuntime,
    agent: str,
    handle: Handler,
    *,
    batch_size: int = BATCH_SIZE,
    linger: float = LINGER_S,
    ack: bool = True,
) -> None:
    """Drive ``handle`` over the stream in batches; ack each batch after it was handled.

    With ``ack=False`` the handler acks events itself (the learner acks only after its model
    snapshot is stored, so a crash never loses a learn step).
    """
    async for events in batches(stream, Batcher(batch_size, linger)):
        started = time.perf_counter()
        await handle_batch(runtime, agent, handle, events)
        runtime.observe("batch_events", len(events), agent)
        runtime.observe("batch_seconds", time.perf_counter() - started, agent)
        if ack:
            for event in events:
                await stream.ack(event)


async def handle_batch(
    runtime: AgentRuntime, agent: str, handle: Handler, events: Sequence[Any]
) -> None:
    """Handle one batch; if it fails unexpectedly, retry it event by event and dead-letter the
    events that still fail (the agent carries on)."""
    try:
        await handle(events)
    except Exception as error:
        log.exception("batch failed, retrying event by event", agent=agent, error=repr(error))
        await _one_by_one(runtime, agent, handle, events)


async def _one_by_one(
    runtime: AgentRuntime, agent: str, handle: Handler, events: Sequence[Any]
) -> None:
    for event in events:
        try:
            await handle([event])
        except Exception as error:
            runtime.counters[f"faults:{agent}"] += 1
            log.exception("event failed, dead-lettered", agent=agent, error=repr(error))
            await runtime.publish_dead_letters(
                [processing_failure(event.message, error, agent)], invalid=False
            )
