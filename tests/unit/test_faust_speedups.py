"""The speed changes to faust-streaming (a brief fetch wait while a partition is held back,
10 ms broker-held fetches, deliveries without tasks); each must keep Faust's behaviour."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from mode import Service
from mode.utils.locks import Event as ModeEvent

from streams.worker import faust_speedups


def _consumer(held_back: set[Any]) -> Any:
    """Faust's consumer as ``getmany`` sees it: what it holds back (partitions whose stream
    buffer is full)."""
    return SimpleNamespace(_buffered_partitions=held_back)


@pytest.mark.parametrize(
    ("held_back", "expected_timeout"),
    [(set(), 1.0), ({("t.match-features", 0)}, faust_speedups.HELD_BACK_WAIT_S)],
)
async def test_a_fetch_waits_briefly_while_partitions_are_held_back(
    monkeypatch: pytest.MonkeyPatch, held_back: set[Any], expected_timeout: float
) -> None:
    """With a partition held back for a full stream buffer, the fetch for the others (often idle)
    returns after 10 ms instead of Faust's second, so the held-back one is fetched again soon."""
    timeouts: list[float] = []

    async def original(self: Any, active_partitions: Any, timeout: float) -> dict[Any, Any]:
        timeouts.append(timeout)
        return {}

    monkeypatch.setattr(faust_speedups, "_ORIGINAL_GETMANY", original)
    active = {("t.match-results", 0)}
    await faust_speedups.getmany(_consumer(held_back), active, timeout=1.0)
    assert timeouts == [expected_timeout]


async def test_the_broker_holds_a_worker_fetch_10_ms_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust makes its worker consumer with fetch_max_wait_ms=1500; the wrapper sets 10 ms on
    the consumer before it starts (its fetcher reads the value then)."""
    assert "fetch_max_wait_ms=1500" in inspect.getsource(faust_speedups._ORIGINAL_CREATE_CONSUMER)
    made = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1500)
    monkeypatch.setattr(faust_speedups, "_ORIGINAL_CREATE_CONSUMER", lambda thread, transport: made)
    try:
        consumer = faust_speedups.create_worker_consumer(None, None)
        assert consumer is made
        assert consumer._fetch_max_wait_ms == faust_speedups.FETCH_MAX_WAIT_MS == 10
    finally:
        await made.stop()


class Deliveries(Service):
    """The part of Faust's consumer that ``wait_first`` races against: its flow and state."""

    wait_first = faust_speedups.wait_first

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = ModeEvent()


async def _delivered(log: list[str], value: str) -> str:
    log.append(value)
    return value


async def test_a_delivery_that_does_not_block_finishes_without_tasks() -> None:
    """The callback runs to completion at once; its value is the result, nothing is stopped."""
    consumer, log = Deliveries(), []
    tasks_before = len(asyncio.all_tasks())
    result = await consumer.wait_first(_delivered(log, "m1"), consumer.suspend_flow.wait())
    assert log == ["m1"]
    assert result.results == ["m1"]
    assert not result.stopped
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_delivery_that_blocks_is_resumed_where_it_stopped() -> None:
    """A callback that waits (a full stream buffer) finishes once unblocked, with its value."""
    consumer, log = Deliveries(), []
    room = asyncio.get_running_loop().create_future()

    async def blocked() -> str:
        log.append("started")
        await asyncio.sleep(0)
        log.append(await room)
        return "delivered"

    waiting = asyncio.create_task(consumer.wait_first(blocked(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert log == ["started"]
    room.set_result("room")
    result = await asyncio.wait_for(waiting, 1.0)
    assert log == ["started", "room"]
    assert result.results == ["delivered"]


async def test_a_rebalance_still_interrupts_a_blocked_delivery() -> None:
    """Suspending the flow ends the wait and cancels the blocked callback, as in Faust."""
    consumer = Deliveries()
    cancelled = asyncio.Event()

    async def blocked() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.create_task(consumer.wait_first(blocked(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    await asyncio.wait_for(waiting, 1.0)
    await asyncio.wait_for(cancelled.wait(), 1.0)


async def test_a_delivery_error_propagates() -> None:
    """An exception of the callback reaches the drain loop, as the race would raise it."""
    consumer = Deliveries()

    async def broken() -> None:
        raise ValueError("cannot decode")

    with pytest.raises(ValueError, match="cannot decode"):
        await consumer.wait_first(broken(), consumer.suspend_flow.wait())
