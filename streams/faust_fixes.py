"""Two corrections to the pinned faust-streaming (0.15.3) that ``make chaos`` showed are needed.

``Consumer._new_offset`` picks the offset to commit from the acked offsets of a partition. It
refuses to commit when the lowest acked offset is *more than one* past the committed offset
(``min(acked) - committed > 1``), so exactly one message at the committed offset (the next one
to read) may be missing and the commit still moves past it. Faust can leave precisely such a
message unacked: after a rebalance its recovery resumes the partitions before seeking them, a
message drained in between is skipped by the stream (flow control is still off) and the
re-fetched copy is dropped as already read. Under SIGKILL restarts this committed past events
no agent ever saw: features, results and predictions missing from the database for good.

The fix requires the lowest acked offset to *be* the committed offset (the message Kafka will
hand out next): a missing head message stalls the commit instead of losing the message, and
:mod:`streams.watchdog` re-reads a stalled partition, which re-delivers it.

Second, ``Consumer._drain_messages`` takes any jump in the offsets it drains for a "gap"
(offsets a compacted or transactional topic never hands out) and ``_new_offset`` then counts
those offsets as acked. After a seek, a record of the previous fetch still being drained makes
such a jump, so the re-read records, dropped as already read, were committed as a gap: lost
again. tipstream's input topics are neither compacted nor written in transactions, so their
offsets are dense and every jump is this race: no gap is recorded (``_add_gap`` does nothing),
and a hole stalls the commit until the watchdog re-reads it. Were an input topic ever made
compacted or transactional, this would have to be revisited (its commits would stall).
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

_ORIGINAL = Consumer._new_offset  # what this module corrects, kept for reference


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


def install() -> None:
    """Replace ``Consumer._new_offset`` and ``Consumer._add_gap`` (idempotent)."""
    Consumer._new_offset = new_offset  # type: ignore[method-assign]
    Consumer._add_gap = add_gap  # type: ignore[method-assign]
