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

Whole fetches (``TIPSTREAM_WHOLE_FETCH``, :data:`FETCH_SINKS`, set by
``streams.worker.whole_fetch``): an agent's batcher is registered as the sink of its Faust
channel, and the worker's fetch loop hands it each partition's fetched messages as one list
(:meth:`Batcher.put_many`), instead of one Faust event at a time through the conductor, the
channel's queue and the stream (three quarters of a relay's Faust overhead, per message). The
hand-over never waits: the batcher is then the agent's buffer, bounded as Faust's channel
queue is (:class:`Pressure`: a partition is taken out of the fetch while the buffer is at its
high-water mark), so one slow agent never stops the fetch loop that feeds every other one. The
agent gets :class:`Delivered` messages and acks them the same way, after handling the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import structlog
from faust.types.tuples import ack_lock

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


class Delivered:
    """A message handed over in a whole fetch: what an agent reads of a Faust event."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


class FetchSinks:
    """The batchers Faust's fetch loop may hand whole fetches to, by the channel they read.

    Off until the worker enables it (``streams.worker.whole_fetch.install``): without the
    patched fetch loop nothing would feed a registered batcher. Only channels of raw bytes
    qualify (every agent's topic): a whole fetch is handed over undecoded.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._sinks: dict[Any, Batcher] = {}

    def eligible(self, channel: Any) -> bool:
        return (
            self.enabled
            and getattr(channel, "key_serializer", None) == "raw"
            and getattr(channel, "value_serializer", None) == "raw"
            and getattr(channel, "key_type", None) is None
            and getattr(channel, "value_type", None) is None
        )

    def register(self, channel: Any, batcher: Batcher) -> None:
        self._sinks[channel] = batcher

    def unregister(self, channel: Any) -> None:
        self._sinks.pop(channel, None)

    def buffered(self) -> set[tuple[Any, int]]:
        """(partition, offset) of every message waiting in a registered batcher."""
        return {
            (event.message.tp, event.message.offset)
            for batcher in set(self._sinks.values())
            for event in batcher.buffered()
        }

    def sinks_for(self, channels: Any) -> list[Batcher] | None:
        """The batchers of every channel, or None unless each has one (Faust's own path)."""
        if not channels:
            return None
        sinks = [self._sinks.get(channel) for channel in channels]
        if any(sink is None for sink in sinks):
            return None
        return sinks  # type: ignore[return-value]


FETCH_SINKS = FetchSinks()
"""The one registry of a worker process (its fetch loop is one per process)."""


class Pressure:
    """Faust's flow control of a channel queue (``put_nowait_enhanced``), for a buffer fed
    whole fetches: a partition whose events bring the buffer to its high-water mark is paused
    (``on_full(tp)``: Faust's ``Consumer.on_buffer_full`` takes it out of the fetch, and says
    whether it did), and the paused partitions are resumed (``on_drop(tp)``,
    ``Consumer.on_buffer_drop``) once the buffer has drained to its low-water mark. What was
    fetched already is still accepted."""

    def __init__(
        self,
        high: int,
        low: int,
        on_full: Callable[[Any], bool],
        on_drop: Callable[[Any], None],
    ) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, not {low}, {high}")
        self.high = high
        self.low = low
        self._on_full = on_full
        self._on_drop = on_drop
        self.paused: set[Any] = set()

    @classmethod
    def of_queue(
        cls, maxsize: int, on_full: Callable[[Any], bool], on_drop: Callable[[Any], None]
    ) -> Pressure:
        """The marks of a Faust channel queue of ``maxsize`` (mode's ``FlowControlQueue``:
        high at ``maxsize / 1.25``, low at ``maxsize * 0.4``)."""
        return cls(math.floor(maxsize / 1.25), math.floor(maxsize * 0.4), on_full, on_drop)

    def put(self, tp: Any, size: int) -> None:
        """Events of ``tp`` were added; the buffer holds ``size``."""
        if size >= self.high and tp not in self.paused and self._on_full(tp):
            self.paused.add(tp)

    def taken(self, size: int) -> None:
        """Events were taken out; the buffer holds ``size``."""
        if self.paused and size <= self.low:
            paused, self.paused = self.paused, set()
            for tp in paused:
                self._on_drop(tp)


class Batcher:
    """A bounded buffer between Faust's delivery of events (``put``) and an agent (``take``).

    A batch is handed over once the agent has caught up with what Faust has fetched (no event
    is queued behind the last one put, or ``FILL_AT_MOST_S`` passed) and ``linger`` seconds
    have passed since its first event, or as soon as it is full. An idle scorer (no linger)
    thus handles each event as it arrives, and a busy agent gets full batches. ``put`` waits
    while the buffer is full, which stops Faust's delivery: backpressure. ``put_many`` (whole
    fetches) never waits: the buffer then grows past one batch, and its :attr:`pressure` takes
    the partitions out of the fetch instead.
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
        self.pressure: Pressure | None = None  # set when fed whole fetches

    def __len__(self) -> int:
        return len(self._events)

    @property
    def ready(self) -> asyncio.Event:
        """Set while at least one event waits."""
        return self._ready

    def _extend(self, events: Sequence[Any], more_queued: bool) -> None:
        """Append ``events`` and set the flags: ready from the first, full at ``max_size``,
        due unless more is queued behind them (or full)."""
        if events:
            if not self._events:
                self._first_at = time.monotonic()
                self._ready.set()
            self._events.extend(events)
            if len(self._events) >= self.max_size:
                self._full.set()
                self._room.clear()
        if self._events and (not more_queued or self._full.is_set()):
            self._due.set()

    async def put(self, event: Any, *, more_queued: bool = False) -> None:
        """Add one event; ``more_queued`` when Faust holds more behind it. Waits while full."""
        while len(self._events) >= self.max_size:
            await self._room.wait()
        self._extend((event,), more_queued)

    def put_many(self, tp: Any, events: Sequence[Any], *, more_queued: bool = False) -> None:
        """Add events of partition ``tp`` in order, never waiting (a whole fetch: the buffer
        may grow past ``max_size``; :attr:`pressure` pauses the partition instead)."""
        self._extend(events, more_queued)
        if events and self.pressure is not None:
            self.pressure.put(tp, len(self._events))

    def buffered(self) -> list[Any]:
        """What waits to be taken, in order (a copy)."""
        return list(self._events)

    def clear(self) -> list[Any]:
        """Everything buffered, taken out at once (an agent that stops abandons it)."""
        events, self._events = self._events, []
        for flag in (self._ready, self._due, self._full):
            flag.clear()
        self._room.set()
        return events

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
        events = self._events[: self.max_size]
        del self._events[: self.max_size]
        if self.pressure is not None:
            self.pressure.taken(len(self._events))
        if not self._events:
            for flag in (self._ready, self._due, self._full):
                flag.clear()
        elif len(self._events) < self.max_size:
            self._full.clear()
        if len(self._events) < self.max_size:
            self._room.set()
        return events


async def batches(stream: Any, batcher: Batcher) -> AsyncIterator[list[Any]]:
    """Faust events of ``stream`` in batches, not acked: the caller acks each one when done.

    The same machinery as Faust's ``noack_take``: a stream processor hands every event to the
    batcher, and Faust drains the stream in the background (``_enable_passive``) while the
    agent handles the previous batch. With whole fetches (:data:`FETCH_SINKS`) the batcher is
    fed by the fetch loop instead, and the stream only tells when to stop.
    """
    if FETCH_SINKS.eligible(stream.channel):
        async for batch in _fetched_batches(stream, batcher):
            yield batch
        return

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


async def _fetched_batches(stream: Any, batcher: Batcher) -> AsyncIterator[list[Any]]:
    """Batches of :class:`Delivered` messages, the batcher being fed whole fetches.

    What Faust's stream does per event when it takes one from the channel's queue is done here
    per batch: an event of an earlier consumer generation (fetched before a rebalance), or
    taken while a rebalance or the shutdown suspends the flow and not yet taken by another
    agent (:func:`split_current`), is abandoned (:func:`abandon`: never committed by this
    consumer, the new assignment reads it again from the committed offset), as is what is
    still buffered when the agent stops; the rest is tracked for the commit's bookkeeping.
    The buffer is bounded as the channel's queue (``stream_buffer_maxsize``).
    """
    app = stream.app
    consumer = app.consumer
    batcher.pressure = Pressure.of_queue(
        app.conf.stream_buffer_maxsize,
        lambda tp: pause_fetch(consumer, tp),
        lambda tp: resume_fetch(consumer, tp),
    )
    channel = stream.channel
    await stream.maybe_start()  # as iterating it would (its stop is what ends the loop)
    FETCH_SINKS.register(channel, batcher)
    try:
        while not stream.should_stop:
            if not batcher.ready.is_set() and await stream.wait_for_stopped(batcher.ready):
                break
            events, stale = split_current(
                await batcher.take(), app.consumer_generation_id, app.flow_control.is_active()
            )
            abandon(consumer, stale)
            if events:
                track(consumer, app.topics.acking_topics, events)
                mark_inbound(app.monitor, events)
                yield events
    finally:
        FETCH_SINKS.unregister(channel)
        batcher.pressure = None
        abandon(consumer, batcher.clear())


def pause_fetch(consumer: Any, tp: Any) -> bool:
    """Take ``tp`` out of the fetch (Faust's ``on_buffer_full``, which does nothing while a
    rebalance recovers the tables); whether it is out."""
    consumer.on_buffer_full(tp)
    return tp not in consumer._get_active_partitions()


def resume_fetch(consumer: Any, tp: Any) -> None:
    """Put ``tp`` back in the fetch (Faust's ``on_buffer_drop``), unless it was revoked or
    paused for a rebalance's recovery meanwhile: it must not be fetched before the recovery's
    seek, which resumes it (:mod:`streams.worker.faust_fixes`)."""
    if tp in consumer.assignment() and tp not in consumer._paused_partitions:
        consumer.on_buffer_drop(tp)
    else:
        consumer._buffered_partitions.discard(tp)


def split_current(
    events: list[Any], generation_id: int, flowing: bool
) -> tuple[list[Any], list[Any]]:
    """The delivered events this agent handles, in order, and those it abandons.

    Kept: a message of consumer generation ``generation_id`` that was not abandoned; while
    the flow is suspended (a rebalance or the shutdown waits in ``Consumer.wait_empty`` for
    every tracked message), only a message another agent already took (tracked): its offset
    commits once every reader acked it, so this agent finishes it too, instead of making the
    other agent's work be redone after the restart. A message nobody took yet is abandoned,
    by every reader alike: it is read again from the committed offset.
    """
    kept: list[Any] = []
    stale: list[Any] = []
    for event in events:
        message = event.message
        if (
            message.generation_id == generation_id
            and not message.acked
            and (flowing or message.tracked)
        ):
            kept.append(event)
        else:
            stale.append(event)
    return kept, stale


def abandon(consumer: Any, events: Sequence[Any]) -> None:
    """Give up delivered messages this agent will not handle (stale, or left at its stop).

    Each is marked acked without Faust's final ack, so its offset is never committed by this
    consumer (the next assignment reads it again from the committed offset) and another
    agent's ack of it is a no-op; and the shutdown no longer waits for it
    (``Consumer.wait_empty``). Merely skipping it would leave its reference count above zero
    when another agent reads the same message: tracked and never acked, it held a SIGTERM in
    ``wait_empty`` until the stop timed out.
    """
    if not events:
        return
    unacked = consumer._unacked_messages
    with ack_lock:
        for event in events:
            event.message.acked = True
            unacked.discard(event.message)


def track(consumer: Any, acking_topics: Any, events: Sequence[Any]) -> None:
    """Track each message for its ack, as Faust's stream does when it takes one (the shutdown
    waits for what is tracked, ``Consumer.wait_empty``)."""
    unacked = consumer._unacked_messages
    for event in events:
        message = event.message
        if not message.tracked and not message.acked and message.topic in acking_topics:
            message.tracked = True
            unacked.add(message)


def mark_inbound(monitor: Any, events: Sequence[Any]) -> None:
    """Tell Faust's monitor that each partition of a batch is being processed, as its stream
    does per event (``on_stream_event_in``): its consumer thread otherwise logs "Stream has
    not started processing" for every partition whose fetch is behind its high watermark."""
    inbound = monitor.stream_inbound_time
    now = time.monotonic()
    for tp in {event.message.tp for event in events}:
        inbound[tp] = now


async def ack_all(stream: Any, events: Sequence[Any]) -> None:
    """Ack a handled batch: Faust events through their stream, delivered messages directly
    (``Message.ack``, what ``Stream.ack`` does less its sensors: the offset is committed once
    every agent reading the message acked it)."""
    consumer = stream.app.consumer
    for event in events:
        if type(event) is Delivered:
            event.message.ack(consumer)
        else:
            await stream.ack(event)


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
            await ack_all(stream, events)


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
