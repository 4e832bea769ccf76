"""Whole-fetch delivery: Faust's fetch loop hands each partition's fetched messages to the
agents as one list, instead of one event at a time (faust-streaming 0.15.3, pinned).

Why: ``make bench``'s relay (a Faust agent doing the passthrough's work) reached ~0.3 of the
confluent-kafka passthrough, and py-spy put ~31% of its samples (40% of its event loop) in
Faust's per-message path: for every message ``_drain_messages`` runs ``wait_first`` on the
conductor's handler (which takes a lock, waits on flow control and on the producer's buffer,
builds and decodes an ``Event`` and puts it in the channel's queue), the stream then takes
it out, calls its sensors, sets the current event and runs the processor that hands it to
the agent's :class:`agents.loop.Batcher`; the ack goes back through the stream's sensors.
Every tipstream agent reads raw bytes in batches (:func:`agents.loop.run_batches`), so none
of that per-message work does anything for it.

What changes: ``Consumer.getmany`` and ``Consumer._drain_messages`` are Faust's, copied, with
one branch more. A fetched partition whose every subscribed channel has a batcher registered
(:data:`agents.loop.FETCH_SINKS`: an agent in :func:`agents.loop.batches`, with whole fetches
enabled) is handed over as a list: the same checks per message as Faust's (flow active, the
consumer generation, the partition active, read offsets and their gaps, the commit every
``commit_every`` acks), then, once per list, what the conductor does per message (flow
control, the producer's buffer, one reference per agent) and
:meth:`agents.loop.Batcher.put_many` into every agent's batcher. Everything else, including any
partition one channel of which is not a batcher (a table's changelog during recovery), goes
through Faust's own per-message path unchanged.

What stays: the offsets, and the flow control. A message is acked by each agent after its
batch is handled (``Message.ack``, as ``Stream.ack`` does), and its offset is committed by
Faust's own commit once every agent reading it acked it, through the same ``Consumer.ack``,
``_acked`` and ``_new_offset`` (:mod:`streams.worker.faust_fixes`). The hand-over never waits
for an agent: each batcher is a buffer bounded as Faust's channel queue is, pausing a partition
at its high-water mark (``Consumer.on_buffer_full``) and resuming it when drained
(``on_buffer_drop``), so a slow agent (a learner's checkpoint, a reconciler's transaction)
holds back only its own partitions, never the fetch loop that feeds every other agent (the
prototype's blocking hand-over stalled ``make chaos``). An agent abandons what it takes
of an earlier consumer generation (:func:`agents.loop.abandon`: never committed, and no longer
awaited by the shutdown, even if another agent acks it), and tracks the rest for the ack.
What is no longer called: the channel's queue, the stream's sensors and Faust's per-message
``on_message_in``/``on_message_out`` sensors (its monitor's counters; tipstream's
``/metrics/`` does not read them). ``TIPSTREAM_WHOLE_FETCH=0`` turns it off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP
from mode import Service

from agents.loop import FETCH_SINKS, Batcher, Delivered
from streams.worker import faust_pin
from streams.worker.faust_pin import Patch


@dataclass(frozen=True)
class WholeFetch:
    """One partition's messages of one fetch, for the batchers of every agent reading it."""

    messages: list[Any]
    sinks: list[tuple[Batcher, bool]]  # and whether more of this fetch follows for it


@dataclass(frozen=True)
class Fresh:
    """What Faust's drain loop would deliver of a list, and what it would not."""

    messages: list[Any]  # to deliver, in order
    dropped: list[Any]  # at or below the read offset: already delivered
    gaps: list[tuple[int, int]]  # (from, to) offsets skipped, as ``_add_gap`` takes them
    read_offset: int | None  # the read offset after the list


def fresh_messages(messages: Sequence[Any], read_offset: int | None) -> Fresh:
    """Faust's per-message check of the read offset, over a list (``_drain_messages``).

    A message is delivered if there is no read offset yet or its offset is at least the read
    offset (Faust's condition, kept exactly), which then moves to it; a jump of more than one
    past a set read offset is a gap.
    """
    fresh: list[Any] = []
    dropped: list[Any] = []
    gaps: list[tuple[int, int]] = []
    for message in messages:
        offset = message.offset
        if read_offset is None or offset >= read_offset:
            if read_offset and offset - read_offset > 1:
                gaps.append((read_offset + 1, offset))
            fresh.append(message)
            read_offset = offset
        else:
            dropped.append(message)
    return Fresh(fresh, dropped, gaps, read_offset)


def split_fetch(
    records: dict[Any, list[Any]], channels_of: Any
) -> tuple[list[tuple[Any, list[Any], list[Batcher]]], dict[Any, list[Any]]]:
    """The partitions of a fetch to hand over whole (with their batchers), and the rest.

    ``channels_of(tp)`` is the channels subscribed to ``tp`` (the conductor's index); a
    partition is handed over whole only if each of them has a batcher registered.
    """
    whole: list[tuple[Any, list[Any], list[Batcher]]] = []
    rest: dict[Any, list[Any]] = {}
    for tp, tp_records in records.items():
        sinks = FETCH_SINKS.sinks_for(channels_of(tp))
        if sinks is None:
            rest[tp] = tp_records
        else:
            whole.append((tp, tp_records, sinks))
    return whole, rest


def with_more_queued(sinks: Sequence[Sequence[Batcher]]) -> list[list[tuple[Batcher, bool]]]:
    """For each partition handed over whole, in order, its batchers with whether a later
    partition of the same fetch goes to the same batcher: it is not caught up before that one
    (:meth:`agents.loop.Batcher.put_many`'s ``more_queued``)."""
    later: set[int] = set()
    marked: list[list[tuple[Batcher, bool]]] = []
    for tp_sinks in reversed(sinks):
        marked.append([(sink, id(sink) in later) for sink in tp_sinks])
        later.update(id(sink) for sink in tp_sinks)
    marked.reverse()
    return marked


async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    """``Consumer.getmany`` of faust-streaming 0.15.3, yielding ``(tp, WholeFetch)`` for the
    partitions handed over whole (first), then ``(tp, message)`` for the others, as Faust."""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    tp_index = self.app.topics._tp_index  # the conductor's channels by partition
    whole, records = split_fetch(records, tp_index.get)
    to_message = self._to_message  # localize
    if self.flow_active:
        marked = with_more_queued([sinks for _, _, sinks in whole])
        for (tp, tp_records, _), sinks in zip(whole, marked, strict=True):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return  # as Faust's loop below breaks: the rest is fetched again
            if (
                active_partitions is None
                or tp in active_partitions
                or (tp in self._buffered_partitions)
            ):
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                messages = [to_message(tp, record) for record in tp_records]
                yield tp, WholeFetch(messages, sinks)
        records_it = self.scheduler.iterate(records)
        for tp, record in records_it:
            if not self.flow_active:
                break
            new_generation_id = self.app.consumer_generation_id
            if new_generation_id != generation_id:
                self.log.dev(
                    "Generation id changed from %r to %r. Cancelling getmany.",
                    generation_id,
                    new_generation_id,
                )
                break
            if (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                highwater_mark = self.highwater(tp)
                self.app.monitor.track_tp_end_offset(tp, highwater_mark)
                # convert timestamp to seconds from int milliseconds.
                yield tp, to_message(tp, record)
    else:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:  # noqa: BLE001 - Faust's own handling, copied
            self.log.warning(f"exception performing seek when flow not active {ex}")


async def deliver(consumer: Any, fetched: WholeFetch) -> None:
    """What the conductor does per message, once for a list: wait for flow control and the
    producer's buffer, take one reference per agent, and hand the list to every agent's
    batcher, which takes it without waiting (its :class:`agents.loop.Pressure` pauses the
    partition instead, as a full channel queue does)."""
    app = consumer.app
    await app.flow_control.acquire()
    await app.producer.buffer.wait_until_ebb()
    if not app.flow_control.is_active():
        return  # a rebalance began: the stream would skip these; they are fetched again
    sinks = fetched.sinks
    count = len(sinks)
    generation_id = app.consumer_generation_id
    events = []
    for message in fetched.messages:
        if message.generation_id != generation_id:
            continue  # as the stream skips a message of an earlier generation
        message.incref(count)
        events.append(Delivered(message))
    # Faust's TP: a message carries aiokafka's TopicPartition (equal as a tuple), and Faust's
    # on_buffer_full/on_buffer_drop assert that its active partitions are TPs.
    tp = TP(fetched.messages[0].topic, fetched.messages[0].partition) if fetched.messages else None
    for sink, more_queued in sinks:
        sink.put_many(tp, events, more_queued=more_queued)


async def drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover
    """``Consumer._drain_messages`` of faust-streaming 0.15.3, handing a :class:`WholeFetch`
    to :func:`deliver` after the same read-offset, gap and commit checks per message."""
    callback = self.callback
    getmany_ = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator[Any], getmany_(timeout=1.0))

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    if type(message) is WholeFetch:
                        await _drain_whole(self, tp, message, get_read_offset, set_read_offset)
                        await sleep(0)
                        continue
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise


async def _drain_whole(
    self: Any, tp: Any, fetched: WholeFetch, get_read_offset: Any, set_read_offset: Any
) -> None:
    """The drain loop's body for a whole fetch: Faust's checks per message, one delivery."""
    fresh = fresh_messages(fetched.messages, get_read_offset(tp))
    for message in fresh.dropped:
        self.log.dev(
            "DROPPED MESSAGE ROFF %r: k=%r v=%r", message.offset, message.key, message.value
        )
    if not fresh.messages:
        for sink, more_queued in fetched.sinks:
            sink.put_many(None, [], more_queued=more_queued)  # caught up, if it was the last
        return
    if fresh.gaps and self.app.topics.acks_enabled_for(tp.topic):
        for offset_from, offset_to in fresh.gaps:
            await self._add_gap(tp, offset_from, offset_to)
    commit_every = self._commit_every
    if commit_every is not None and self._n_acked >= commit_every:
        self._n_acked = 0
        await self.commit()
    whole = WholeFetch(fresh.messages, fetched.sinks)
    await self.wait_first(deliver(self, whole), self.suspend_flow.wait())
    set_read_offset(tp, fresh.read_offset)


PATCHES: tuple[Patch, ...] = (
    Patch(
        "faust.transport.consumer",
        "Consumer.getmany",
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
        getmany,
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer._drain_messages",
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        drain_messages,
    ),
)
"""Whole-fetch delivery, each with the sha256 of the pinned source it replaces."""


def install(enabled: bool = True) -> None:
    """Check the pinned Faust, replace ``Consumer.getmany`` and ``_drain_messages``, and let
    agents register their batchers. Off (``enabled=False``, ``TIPSTREAM_WHOLE_FETCH=0``)
    nothing is replaced: the worker runs Faust's own delivery, untouched. Idempotent."""
    if enabled:
        faust_pin.install(PATCHES)
    FETCH_SINKS.enabled = enabled
