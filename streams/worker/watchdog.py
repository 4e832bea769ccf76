"""Re-read a partition whose committed offset is stuck behind data that is already there.

A safety net. Faust 0.15.3 left holes after a rebalance: fetched messages no agent ever saw
(recovery resumed the stream partitions before seeking them; see :mod:`streams.worker.faust_fixes`,
which now prevents that). A message no agent acks stops the partition's committed offset there
for good (nothing lost while the worker runs, but nothing after it is committed either, and
every restart re-reads it all); so does an agent that Faust restarted after an error escaped it
(docs/RELIABILITY.md, trap 3).

The watchdog notices the symptom, not the cause: a partition with data beyond its committed
offset whose committed offset has not moved for ``STALL_AFTER_S``, while no agent is waiting
out an outage, is sought back to its committed offset, unless the message at that offset (the
next one to commit) is still on its way: not yet delivered (the partition is held back for a
full buffer, or the fetch loop is behind), held by an agent (in its whole-fetch buffer, or
taken and not acked), or acked and waiting for a commit that is slow. Only a message the fetch
loop delivered and nobody holds or acked is a hole. A false alarm only re-delivers events,
which every agent handles idempotently; the hole is refilled on the next fetch. Why the
message matters: a worker working through a backlog held a partition's commit for 10 s and
more, and each re-read put the backlog into the buffers once more (a ``make chaos``
replay-twice run went from ~70 s to not draining in 300 s, with 12 re-reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from agents.loop import FETCH_SINKS
from streams.log import get_logger

log = get_logger(__name__)

STALL_AFTER_S = 10.0
"""Ten commit intervals without progress, while data waits beyond the committed offset."""
CHECK_EVERY_S = 2.0


@dataclass
class Since:
    """A committed offset and when the watchdog first saw it."""

    committed: int
    at: float


def stalled(
    observed: Mapping[Any, tuple[int | None, int | None]],
    seen: dict[Any, Since],
    now: float,
    after: float = STALL_AFTER_S,
    on_its_way: Collection[Any] = (),
) -> list[tuple[Any, int]]:
    """Partitions to re-read, with the offset to re-read from.

    ``observed`` maps a partition to (committed offset, high watermark); ``seen`` is the
    watchdog's memory between calls, updated here. A partition is stalled when data lies
    beyond its committed offset and that offset has not changed for ``after`` seconds, while
    the partition was not among ``on_its_way`` at any check (its next message to commit is
    still being delivered, handled or committed: the commit moves once it gets there).

    >>> seen = {}
    >>> stalled({"p0": (29, 105)}, seen, now=0.0), stalled({"p0": (29, 105)}, seen, now=11.0)
    ([], [('p0', 29)])
    """
    out = []
    for tp, (committed, highwater) in observed.items():
        start = committed or 0
        if highwater is None or highwater <= start:
            seen.pop(tp, None)
            continue
        since = seen.get(tp)
        if since is None or since.committed != start or tp in on_its_way:
            seen[tp] = Since(start, now)
        elif now - since.at >= after:
            out.append((tp, start))
            seen[tp] = Since(start, now)  # give the re-read time before the next alarm
    return out


class Watchdog:
    """Watches the assigned partitions of the input topics of one worker."""

    def __init__(
        self,
        app: Any,
        topics: Collection[str],
        counters: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.clock = clock
        self.topics = set(topics)
        self.counters = counters
        self.seen: dict[Any, Since] = {}
        self.busy = 0
        """Agents waiting out a transient failure: no progress is expected meanwhile."""

    def on_its_way(self, consumer: Any, observed: Mapping[Any, tuple[int | None, Any]]) -> set[Any]:
        """The partitions whose next message to commit (at the committed offset) is not
        delivered yet, is held by an agent (taken and not acked, which Faust tracks, or in a
        whole-fetch buffer), or is acked and waits for the commit."""
        held = {
            (message.tp, message.offset)
            for message in list(consumer._unacked_messages)
            if not message.acked
        }
        held.update(FETCH_SINKS.buffered())
        pending = set()
        for tp, (committed, _) in observed.items():
            offset = committed or 0
            delivered = consumer._read_offset.get(tp)
            if (
                delivered is None
                or delivered < offset
                or (tp, offset) in held
                or offset in consumer._acked_index.get(tp, ())
            ):
                pending.add(tp)
        return pending

    async def check(self) -> None:
        consumer = self.app.consumer
        if self.busy or consumer is None or self.app.rebalancing:
            self.seen.clear()
            return
        observed = {}
        for tp in consumer.assignment():
            if tp.topic in self.topics:
                # Faust keeps the last committed offset of each partition here (private, but
                # the version is pinned); it is what its next commit would start from.
                committed = consumer._committed_offset.get(tp)
                observed[tp] = (committed, consumer.highwater(tp))
        on_its_way = self.on_its_way(consumer, observed)
        for tp, offset in stalled(observed, self.seen, self.clock(), on_its_way=on_its_way):
            self.counters[f"partition_rereads:{tp.topic}"] += 1
            log.warning(
                "partition stalled behind its committed offset: re-reading it",
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
            )
            # In the consumer's thread (``seek_wait``, which also rewinds the read offset):
            # Faust's ``seek`` runs aiokafka's from this thread, and a seek while the consumer
            # thread drains that partition's fetched records crashes aiokafka's fetcher
            # (``KeyError`` in ``Fetcher.fetched_records``), which stops the worker.
            try:
                await consumer.seek_wait({tp: offset})
            except (TimeoutError, KafkaError) as error:
                # seek_wait also waits for the position (up to the broker request timeout):
                # a broker away or the partition revoked meanwhile. The alarm comes again.
                log.warning(
                    "partition re-read failed; retried at the next alarm",
                    topic=tp.topic,
                    partition=tp.partition,
                    error=repr(error),
                )
