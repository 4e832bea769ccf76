"""Correctness fixes to the pinned faust-streaming (0.15.3) that ``make chaos`` showed are needed.

The first two *prevent* holes: offsets fetched from Kafka that Faust never hands to an agent.

First, ``Recovery.on_recovery_completed`` (the end of every rebalance, and of every start)
resumes the stream partitions and only *then* seeks them to the committed offsets, with the
flow already running (recovery resumed it to read the changelogs) and the fetch position still
wherever the previous fetches left it. The fetcher drains the resumed partitions at once, and
the agents process those records; then the seek rewinds the partitions and Faust delivers the
same offsets again (seen in ``make chaos`` scenario 7: 20-464 predictions published twice after
a SIGTERM restart). Worse, a record still being handed over when the seek finishes moves the
read offset past the seek, so the re-fetched records before it are dropped as already read
("DROPPED MESSAGE ROFF"): holes, which stalled the commit (below) until
:mod:`streams.worker.watchdog` re-read them 12 s later, a re-read that taught the online
models their feed out of order
(the other failure of scenario 7). Here the seek comes first, while the stream partitions
are still paused: nothing of theirs is drained before it, and aiokafka discards what it
fetched from the old positions (``FetchResult.check_assignment``). faust-streaming had this
order before (#217 fixed the same race in ``_resume_streams``, which is only used by apps
without tables; tipstream always has the reconciler's table).

Second, ``AIOKafkaConsumerThread._fetch_records`` passes Faust's *live* set of active
partitions to aiokafka, which reads it in the consumer thread while it waits up to a second for
records, and for which an empty set means *every* assigned partition. Recovery pauses the
changelog partitions after reading them, so a fetch in flight can find the set empty and
return records of the still paused stream partitions: aiokafka counts them as consumed, and
Faust drops them (``Consumer.getmany`` yields only active partitions). Once the first fix
seeks before resuming, such a fetch could land after the seek, and nothing would re-read the
records. The fetch now gets a snapshot of the set, and fetches nothing when it is empty.

Third, a shutdown that could hang for ever. ``App._stop_consumer`` clears every stream queue
and then ``Consumer.wait_empty`` waits until every message an agent started is acked. A message
of a topic two agents read (the model feed: learner and decay monitor) that one agent had taken
while its copy still sat in the other's queue keeps a reference count of one for good: the
worker logged "wait_empty: Waiting for tasks" every 10 s and never exited (seen once in ten
SIGTERMs of ``make chaos`` scenario 7). Here the wait ends after ``WAIT_EMPTY_S``; what was
acked is committed as Faust would, the rest is re-delivered after the restart, which every agent
handles idempotently. It also bounds a SIGTERM while an agent waits out a database outage.

The last two keep a hole from being committed over, should one still appear.
``Consumer._new_offset`` refuses to commit only when the lowest acked offset is *more than one*
past the committed offset (``min(acked) - committed > 1``), so exactly one missing message at
the committed offset (the next one to read) is committed over: lost. Here the lowest acked
offset must *be* the committed offset: a missing head message stalls the commit, and
:mod:`streams.worker.watchdog` re-reads a stalled partition.

``Consumer._drain_messages`` takes any jump in the offsets it drains for a "gap" (offsets a
compacted or transactional topic never hands out) and ``_new_offset`` then counts them as
acked: after a seek, a record of the previous fetch makes such a jump, and the re-read records,
dropped as already read, were committed as a gap. tipstream's input topics are neither
compacted nor written in transactions, so their offsets are dense and every jump is a race: no
gap is recorded (``_add_gap`` does nothing). Were an input topic ever made compacted or
transactional, this would have to be revisited (its commits would stall).

The speed changes are in :mod:`streams.worker.faust_speedups`; the pin and the record of the
source each patch was read from, in :mod:`streams.worker.faust_pin`.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from faust.transport.consumer import CONSUMER_WAIT_EMPTY, Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.utils.functional import consecutive_numbers
from mode import Service

from streams.worker import faust_pin
from streams.worker.faust_pin import Patch

_ORIGINAL = Consumer._new_offset  # what this module corrects, kept for reference

WAIT_EMPTY_S = 10.0
"""Longest wait at shutdown for the agents to ack what they started (their batches take well
under a second); a SIGTERM must end a worker within 30 s."""
_ORIGINAL_FETCH: Any = AIOKafkaConsumerThread._fetch_records  # wrapped, not replaced


def new_offset(self: Any, tp: Any) -> int | None:
    """``Consumer._new_offset`` of faust-streaming 0.15.3, with a strict check of the head."""
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        # Offsets the broker never hands out (compaction, transaction markers): count as acked.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            stuff_to_add: list[int] = []
            for entry in candidates:
                stuff_to_add.extend(range(entry.begin, entry.end))
            new_max_offset = max(stuff_to_add[-1], max_offset + 1)
            acked.extend(stuff_to_add)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed_offset = self._committed_offset[tp]
    # Faust: ``if committed_offset: if min(acked) - committed_offset > 1: return None``.
    if committed_offset is not None and min(acked) > committed_offset:
        return None  # the next message to read has not been acked: do not pass over it
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    result: int = batch[-1] + 1
    return result


async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Record nothing: our input topics have no gaps, a jump is a race (see above)."""


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` of faust-streaming 0.15.3, seeking *before* resuming.

    Faust resumes the stream partitions and only then seeks them to the committed offsets; the
    only change here is that order (see "First" above). Everything else is Faust's own code.
    """
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # Faust: resume_partitions(...) first, then perform_seek(). While the stream partitions
        # are still paused the fetcher drains none of their records, and aiokafka drops what it
        # fetched from the old positions (FetchResult.check_assignment).
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def fetch_records(
    self: Any,
    consumer: Any,
    active_partitions: Any,
    timeout: float | None = None,
    max_records: int | None = None,
) -> Any:
    """``AIOKafkaConsumerThread._fetch_records`` over a snapshot of the active partitions.

    Faust hands aiokafka its live set of active partitions, which aiokafka reads while it waits
    for records, and for which an *empty* set means every partition (see "Second" above).
    """
    partitions = frozenset(active_partitions or ())  # one C-level copy, atomic under the GIL
    if not partitions:
        return {}  # nothing is active: fetch nothing, as Faust's own caller intends
    return await _ORIGINAL_FETCH(
        self, consumer, partitions, timeout=timeout, max_records=max_records
    )


@Service.transitions_to(CONSUMER_WAIT_EMPTY)
async def wait_empty(self: Any) -> None:
    """``Consumer.wait_empty`` of faust-streaming 0.15.3, giving up after ``WAIT_EMPTY_S``."""
    deadline = time.monotonic() + WAIT_EMPTY_S
    while not self.should_stop and self._unacked_messages:
        if time.monotonic() >= deadline:
            self.log.warning(
                "wait_empty: gave up waiting for %d unacked message(s); they are re-delivered "
                "after the restart",
                len(self._unacked_messages),
            )
            break
        gc.collect()
        await self.commit()
        if not self._unacked_messages:
            break
        await self._wait_for_ack(timeout=1)
        self._clean_unacked_messages()
    await self.commit_and_end_transactions()


PATCHES: tuple[Patch, ...] = (
    Patch(
        "faust.tables.recovery",
        "Recovery.on_recovery_completed",
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac",
        on_recovery_completed,
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._fetch_records",
        "39a2c6c79fc1455a199629912b533458a720c64983bc957420a42feef6593baa",
        fetch_records,
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer._new_offset",
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
        new_offset,
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer._add_gap",
        "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
        add_gap,
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer.wait_empty",
        "e4662fe24f094819add590b2d75f233840e77823b432aea6504539768572102f",
        wait_empty,
    ),
)
"""The correctness fixes, each with the sha256 of the pinned source it replaces or wraps."""


def install() -> None:
    """Check the pinned Faust, then replace ``Recovery.on_recovery_completed``,
    ``AIOKafkaConsumerThread._fetch_records`` and ``Consumer._new_offset``, ``_add_gap`` and
    ``wait_empty`` (idempotent)."""
    faust_pin.install(PATCHES)
