"""How agents' batches form: at once when events wait, lingering only where asked, bounded."""

from __future__ import annotations

import asyncio

import pytest

from agents.loop import FILL_AT_MOST_S, Batcher


async def _fill(batcher: Batcher, events: range) -> None:
    for event in events:
        await batcher.put(event)


async def test_waiting_events_are_taken_at_once_in_arrival_order() -> None:
    """Without linger, a take returns what has arrived, without waiting for more."""
    batcher = Batcher(max_size=10)
    await _fill(batcher, range(3))
    assert await asyncio.wait_for(batcher.take(), 0.05) == [0, 1, 2]
    assert len(batcher) == 0
    assert not batcher.ready.is_set()


async def test_an_idle_take_returns_with_the_first_event() -> None:
    """An idle agent handles an event as soon as it arrives (no timer)."""
    batcher = Batcher(max_size=10)
    taker = asyncio.create_task(batcher.take())
    await asyncio.sleep(0.01)
    assert not taker.done()
    await batcher.put("first")
    assert await asyncio.wait_for(taker, 0.05) == ["first"]


async def test_a_batch_waits_while_more_events_are_queued_behind_it() -> None:
    """Under load (Faust holds more events), the batch grows until the agent has caught up."""
    batcher = Batcher(max_size=10)
    taker = asyncio.create_task(batcher.take())
    await batcher.put(1, more_queued=True)
    await asyncio.sleep(0.01)
    assert not taker.done()
    await batcher.put(2, more_queued=False)
    assert await asyncio.wait_for(taker, 0.05) == [1, 2]


async def test_a_batch_is_handed_over_even_if_the_queued_events_never_come() -> None:
    """Faust may clear its queue (a rebalance): the batch goes after FILL_AT_MOST_S anyway."""
    batcher = Batcher(max_size=10)
    await batcher.put(1, more_queued=True)
    assert await asyncio.wait_for(batcher.take(), FILL_AT_MOST_S + 0.5) == [1]


async def test_a_backlog_is_taken_in_full_batches() -> None:
    """With events still queued, a batch is handed over when full, and the rest follows."""
    batcher = Batcher(max_size=3)
    for event in range(5):
        if event == 3:
            assert await asyncio.wait_for(batcher.take(), 0.05) == [0, 1, 2]
        await batcher.put(event, more_queued=event < 4)
    assert await asyncio.wait_for(batcher.take(), 0.05) == [3, 4]


async def test_linger_collects_what_arrives_after_the_first_event() -> None:
    """With linger, the batch keeps filling until linger has passed since its first event."""
    batcher = Batcher(max_size=10, linger=0.05)
    taker = asyncio.create_task(batcher.take())
    await batcher.put(1)
    await asyncio.sleep(0.01)
    await batcher.put(2)
    assert await asyncio.wait_for(taker, 1.0) == [1, 2]


async def test_a_full_batch_does_not_wait_for_its_linger() -> None:
    """Linger never delays a batch that is already full."""
    batcher = Batcher(max_size=3, linger=60.0)
    await _fill(batcher, range(3))
    assert await asyncio.wait_for(batcher.take(), 0.5) == [0, 1, 2]


async def test_a_full_buffer_holds_back_delivery_until_taken() -> None:
    """Backpressure: the fourth event waits for room, then starts the next batch."""
    batcher = Batcher(max_size=3)
    filler = asyncio.create_task(_fill(batcher, range(5)))
    await asyncio.sleep(0.01)
    assert len(batcher) == 3
    assert not filler.done()
    assert await batcher.take() == [0, 1, 2]
    await asyncio.wait_for(filler, 0.5)
    assert await batcher.take() == [3, 4]


@pytest.mark.parametrize(("max_size", "linger"), [(0, 0.0), (10, -1.0)])
def test_nonsense_sizes_are_refused(max_size: int, linger: float) -> None:
    """A batch of at most zero events, or a negative linger, is a configuration error."""
    with pytest.raises(ValueError, match="max_size"):
        Batcher(max_size, linger)
