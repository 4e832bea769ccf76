"""Speed changes to the pinned faust-streaming (0.15.3), with the same behaviour.

The correctness fixes are in :mod:`streams.worker.faust_fixes`; the pin and the record of the
source each patch was read from, in :mod:`streams.worker.faust_pin`. There are three changes.

When a stream's buffer fills (a backlog: the agent is slower than the fetcher), Faust takes
the partition out of the set it fetches until the buffer has drained to 40%, and asks for
records of the other partitions with a one-second wait. A worker always reads some partitions
with nothing to read (Faust's leader topic at least), so with the busy partitions held back
that wait ran its full second, although the buffer drained in milliseconds. ``make bench``
showed it: the scorer handled 500-event batches every ~30 ms, then stood still 0.4-1.0 s after
every ~3,400 events (one fetch), three quarters of its time; 4,500 events/s, and a Faust agent
doing no work at all was no faster. While a partition is held back the wait is now
``HELD_BACK_WAIT_S`` (10 ms): 9,800 events/s. It is set where the Faust consumer asks its
consumer thread for records (``_getmany``), which passes the wait on to aiokafka unchanged.

aiokafka keeps one fetch in flight per broker, and Faust creates its consumer with
``fetch_max_wait_ms=1500``: the broker holds a fetch for partitions without new records that
long, and a partition drained meanwhile cannot be fetched before it returns. At low load that
made the latency's tail (p99 at 1,000 events/s: 275-330 ms once the stall above was gone); the
broker now holds a fetch ``FETCH_MAX_WAIT_MS`` (10 ms) at most (p99 14-24 ms), at the price of
~100 small fetches a second from an idle worker.

The third: ``_drain_messages`` hands every message to the conductor through
``Consumer.wait_first(callback(message), suspend_flow.wait())``: four tasks and an
``asyncio.wait`` per message, so that a rebalance can interrupt a delivery that blocks (flow
control, a full stream buffer). Almost every delivery completes without blocking, and those
four tasks were the largest cost of Faust's per-message path (measured alone: the scorer's
throughput +20%, p99 at 1,000 events/s 23 -> 11 ms).
:func:`wait_first` runs the callback up to its first suspension first; only one that does
suspend goes through the original race, resumed where it stopped (:class:`_Resumed`).
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator
from functools import partial
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode import Service
from mode.services import WaitResults

from streams.worker import faust_pin
from streams.worker.faust_pin import Patch

HELD_BACK_WAIT_S = 0.01
"""Longest wait for records of the active partitions while others are held back (Faust: 1 s)."""
_ORIGINAL_GETMANY: Any = faust_aiokafka.Consumer._getmany  # wrapped, not replaced


async def getmany(self: Any, active_partitions: Any, timeout: float) -> Any:
    """Faust's ``_getmany``, waiting :data:`HELD_BACK_WAIT_S` at most while a partition is held
    back for a full stream buffer, so that it is fetched again soon (see the first change)."""
    if timeout and self._buffered_partitions:
        timeout = min(timeout, HELD_BACK_WAIT_S)
    return await _ORIGINAL_GETMANY(self, active_partitions, timeout)


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
    """``Service.wait_first``, without its tasks when the first coroutine finishes at once.

    Only when nothing else could win the race yet (flow not suspended, service not stopped or
    crashed, no timeout): then the first coroutine is run to its first suspension here. If it
    finishes, that is the result, as the race would have found; if it suspends, the race is
    run as before, on the coroutine resumed where it stopped.
    """
    first = coros[0] if coros else None
    if (
        len(coros) == 2
        and timeout is None
        and inspect.iscoroutine(first)
        and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
    ):
        try:
            yielded = first.send(None)
        except BaseException as ended:  # finished (StopIteration) or failed: no race to run
            _close(coros[1])
            if isinstance(ended, StopIteration):
                return WaitResults([first], [ended.value], False)
            raise
        coros = (_Resumed(first, yielded).run(), coros[1])
    return await Service.wait_first(self, *coros, timeout=timeout)


class _Resumed:
    """A coroutine that already ran up to ``yielded``, to be finished by a task.

    Awaiting it delegates exactly as ``yield from`` would: what the coroutine yields goes to
    the task (which waits for that future, or for one loop turn if it is None), and what the
    task sends or throws in (a result, a cancellation) goes back to the coroutine.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    async def run(self) -> Any:
        return await self

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as error:  # noqa: BLE001 - everything goes to the coroutine
                step = partial(coro.throw, error)
            else:
                step = partial(coro.send, sent)
            try:
                yielded = step()
            except StopIteration as finished:
                return finished.value


def _close(awaitable: Any) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


FETCH_MAX_WAIT_MS = 10
"""How long the broker may hold a fetch for partitions without new records (Faust: 1,500)."""
_ORIGINAL_CREATE_CONSUMER: Any = AIOKafkaConsumerThread._create_worker_consumer  # wrapped


def create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's worker consumer, with ``fetch_max_wait_ms`` = :data:`FETCH_MAX_WAIT_MS`."""
    consumer = _ORIGINAL_CREATE_CONSUMER(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
    return consumer


PATCHES: tuple[Patch, ...] = (
    Patch(
        "faust.transport.drivers.aiokafka",
        "Consumer._getmany",
        "f9d47aa9010b5ff2b874ba65f927871f3612718d8a9db00b58601554a35236c4",
        getmany,
    ),
    Patch(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread._create_worker_consumer",
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
        create_worker_consumer,
    ),
    Patch(
        "faust.transport.consumer",
        "Consumer.wait_first",  # inherited: mode's Service.wait_first
        "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e",
        wait_first,
    ),
)
"""The speed changes, each with the sha256 of the pinned source it wraps or replaces."""


def install() -> None:
    """Check the pinned Faust, then wrap the aiokafka ``Consumer._getmany`` and
    ``AIOKafkaConsumerThread._create_worker_consumer`` and replace ``Consumer.wait_first``
    (idempotent)."""
    faust_pin.install(PATCHES)
