"""Whole-fetch delivery (streams/worker/whole_fetch.py, agents/loop.py): the pure parts, and one
list handed to two agents acked exactly as Faust would ack one message at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.loop import (
    FETCH_SINKS,
    Batcher,
    Delivered,
    FetchSinks,
    Pressure,
    abandon,
    ack_all,
    mark_inbound,
    pause_fetch,
    resume_fetch,
    split_current,
    track,
)
from streams.worker.whole_fetch import (
    WholeFetch,
    deliver,
    fresh_messages,
    split_fetch,
    with_more_queued,
)

TOPIC = "features"
TP_A, TP_B = TP(TOPIC, 0), TP(TOPIC, 1)


def message(offset: int, partition: int = 0, generation_id: int = 1) -> ConsumerMessage:
    return ConsumerMessage(
        TOPIC, partition, offset, 0.0, 0, [], b"k", b"v", None, 1, 1,
        TP(TOPIC, partition), generation_id=generation_id,
    )  # fmt: skip


class Channel:
    """What the registry reads of a Faust channel; hashed by identity, as Faust's topics."""

    def __init__(self, name: str = TOPIC, value_type: Any = None) -> None:
        self.name = name
        self.key_serializer = self.value_serializer = "raw"
        self.key_type, self.value_type = None, value_type


def raw_channel(name: str = TOPIC) -> Channel:
    return Channel(name)


@pytest.fixture
def sinks() -> Iterator[FetchSinks]:
    """The process's registry, enabled for the test and emptied afterwards."""
    enabled = FETCH_SINKS.enabled
    FETCH_SINKS.enabled = True
    yield FETCH_SINKS
    FETCH_SINKS.enabled = enabled
    FETCH_SINKS._sinks.clear()


def test_fresh_messages_keeps_fausts_read_offset_rule() -> None:
    """As ``_drain_messages`` per message: at or past the read offset is delivered (the read
    offset moves to it), below is dropped, a jump past a set read offset is a gap."""
    fresh = fresh_messages([message(o) for o in (4, 5, 5, 3, 9, 10)], read_offset=4)
    assert [m.offset for m in fresh.messages] == [4, 5, 5, 9, 10]
    assert [m.offset for m in fresh.dropped] == [3]
    assert fresh.gaps == [(6, 9)]
    assert fresh.read_offset == 10
    first = fresh_messages([message(0), message(1)], read_offset=None)
    assert [m.offset for m in first.messages] == [0, 1]
    assert first.read_offset == 1
    assert fresh_messages([], read_offset=7).read_offset == 7


def test_a_partition_goes_whole_only_if_every_channel_has_a_batcher(sinks: FetchSinks) -> None:
    scorer, drift, changelog = raw_channel(), raw_channel(), raw_channel("changelog")
    mine, theirs = Batcher(), Batcher()
    sinks.register(scorer, mine)
    sinks.register(drift, theirs)
    index = {"a": {scorer, drift}, "b": {scorer, changelog}, "c": set()}
    whole, rest = split_fetch({"a": [1, 2], "b": [3], "c": [4]}, index.get)
    assert [(tp, records) for tp, records, _ in whole] == [("a", [1, 2])]
    assert {id(s) for s in whole[0][2]} == {id(mine), id(theirs)}
    assert rest == {"b": [3], "c": [4]}  # Faust's own path: a changelog, no channel at all
    sinks.unregister(drift)
    assert split_fetch({"a": [1]}, index.get)[0] == []


def test_only_raw_channels_qualify_and_only_when_enabled() -> None:
    registry = FetchSinks()
    assert not registry.eligible(raw_channel())  # off until the worker enables it
    registry.enabled = True
    assert registry.eligible(raw_channel())
    assert not registry.eligible(Channel(value_type=dict))
    assert not registry.eligible(SimpleNamespace(key_serializer="json", value_serializer="raw"))


def test_a_batcher_is_caught_up_after_its_last_partition_of_a_fetch() -> None:
    a, b = Batcher(), Batcher()
    marked = with_more_queued([[a], [a, b], [b]])
    assert [[(id(s), more) for s, more in tp] for tp in marked] == [
        [(id(a), True)],
        [(id(a), False), (id(b), True)],
        [(id(b), False)],
    ]


async def test_put_many_never_waits_and_take_hands_over_full_batches_in_order() -> None:
    batcher = Batcher(max_size=3)
    batcher.put_many(TP_A, list(range(7)))  # a whole fetch is taken at once, past max_size
    assert await asyncio.wait_for(batcher.take(), 0.5) == [0, 1, 2]
    assert await asyncio.wait_for(batcher.take(), 0.5) == [3, 4, 5]
    assert await asyncio.wait_for(batcher.take(), 0.5) == [6]
    assert not batcher.ready.is_set()


async def test_put_many_with_more_queued_waits_for_the_rest_of_the_fetch() -> None:
    batcher = Batcher(max_size=10)
    batcher.put_many(TP_A, [1, 2], more_queued=True)
    taker = asyncio.create_task(batcher.take())
    await asyncio.sleep(0.005)
    assert not taker.done()  # the fetch's next partition is on its way
    batcher.put_many(TP_A, [3], more_queued=False)
    assert await asyncio.wait_for(taker, 0.05) == [1, 2, 3]
    batcher.put_many(TP_A, [], more_queued=False)  # nothing waits: nothing to hand over
    assert not batcher.ready.is_set()


class Fetch:
    """What :class:`Pressure` calls of Faust's consumer: the partitions out of the fetch."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse  # as Faust's on_buffer_full while the tables recover
        self.paused: set[Any] = set()
        self.calls: list[tuple[str, Any]] = []

    def full(self, tp: Any) -> bool:
        self.calls.append(("full", tp))
        if not self.refuse:
            self.paused.add(tp)
        return not self.refuse

    def drop(self, tp: Any) -> None:
        self.calls.append(("drop", tp))
        self.paused.discard(tp)


def test_pressure_has_the_marks_of_a_faust_channel_queue() -> None:
    pressure = Pressure.of_queue(4096, Fetch().full, Fetch().drop)
    assert (pressure.high, pressure.low) == (3276, 1638)
    with pytest.raises(ValueError, match="low < high"):
        Pressure(5, 5, Fetch().full, Fetch().drop)


async def test_a_full_buffer_pauses_its_partitions_until_it_drains() -> None:
    fetch = Fetch()
    batcher = Batcher(max_size=2)
    batcher.pressure = Pressure(high=4, low=2, on_full=fetch.full, on_drop=fetch.drop)
    batcher.put_many(TP_A, [1, 2, 3])
    assert fetch.paused == set()
    batcher.put_many(TP_B, [4, 5])  # 5 >= 4: B brought it there
    batcher.put_many(TP_A, [6])
    batcher.put_many(TP_B, [7])  # once per partition
    assert fetch.calls == [("full", TP_B), ("full", TP_A)]
    assert await batcher.take() == [1, 2]
    assert await batcher.take() == [3, 4]
    assert fetch.paused == {TP_A, TP_B}  # 3 left, above the low mark
    assert await batcher.take() == [5, 6]
    assert fetch.paused == set()  # 1 left
    assert await batcher.take() == [7]


def test_a_partition_the_consumer_did_not_pause_is_tried_again() -> None:
    fetch = Fetch(refuse=True)
    pressure = Pressure(high=2, low=1, on_full=fetch.full, on_drop=fetch.drop)
    pressure.put(TP_A, 2)
    pressure.put(TP_A, 3)
    assert fetch.calls == [("full", TP_A), ("full", TP_A)]
    pressure.taken(0)
    assert fetch.calls == [("full", TP_A), ("full", TP_A)]  # nothing to resume


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([TP_A, TP_B]), st.integers(0, 9)),  # put this many of tp
            st.just("take"),
        ),
        max_size=40,
    ),
    st.integers(1, 6),
)
def test_pressure_keeps_the_buffer_bounded_and_resumes_every_paused_partition(
    steps: list[Any], max_size: int
) -> None:
    """Whatever the order of fetches and takes (a paused partition is not fetched): a partition
    is paused whenever a put of it leaves the buffer at the high mark or above, and resumed once
    the buffer drained to the low mark; the buffer never holds more than the high mark plus
    one fetch; everything put is taken once, in order; and once the buffer is empty nothing is
    left paused."""
    fetch = Fetch()
    batcher = Batcher(max_size=max_size)
    batcher.pressure = Pressure(high=8, low=3, on_full=fetch.full, on_drop=fetch.drop)
    put: list[int] = []
    taken: list[int] = []

    def take_now() -> list[Any]:
        events = batcher._events[:max_size]  # what take() hands over, without its timers
        del batcher._events[:max_size]
        assert batcher.pressure is not None
        batcher.pressure.taken(len(batcher._events))
        return events

    for step in steps:
        if step == "take":
            taken.extend(take_now())
            if len(batcher) <= 3:
                assert fetch.paused == set()
        else:
            tp, count = step
            if tp in fetch.paused:
                continue  # a paused partition is not fetched
            events = list(range(len(put), len(put) + count))
            put.extend(events)
            batcher.put_many(tp, events)
            assert len(batcher) < 8 + 2 * 9  # the mark, plus one fetch of each partition
            if count and len(batcher) >= 8:
                assert tp in fetch.paused
    while len(batcher):
        taken.extend(take_now())
    assert taken == put
    assert fetch.paused == set()


def test_split_current_keeps_this_generation_and_while_suspended_only_what_was_started() -> None:
    old, started, untaken, abandoned = (
        Delivered(message(0, generation_id=1)),
        Delivered(message(1, generation_id=2)),
        Delivered(message(2, generation_id=2)),
        Delivered(message(3, generation_id=2)),
    )
    started.message.tracked = True  # another agent took it
    abandoned.message.acked = True
    events = [old, started, untaken, abandoned]
    assert split_current(events, 2, flowing=True) == ([started, untaken], [old, abandoned])
    assert split_current(events, 2, flowing=False) == ([started], [old, untaken, abandoned])


def test_track_tracks_each_message_of_an_acking_topic_once() -> None:
    consumer = SimpleNamespace(_unacked_messages=set())
    fed = Delivered(message(0))
    other = Delivered(ConsumerMessage(
        "other", 0, 0, 0.0, 0, [], b"k", b"v", None, 1, 1, TP("other", 0),
    ))  # fmt: skip
    abandoned = Delivered(message(1))
    abandon(consumer, [abandoned])
    track(consumer, {TOPIC}, [fed, other, abandoned])
    track(consumer, {TOPIC}, [fed])
    assert consumer._unacked_messages == {fed.message}
    assert fed.message.tracked
    assert not other.message.tracked


class Consumer:
    """What :func:`deliver` and ``Message.ack`` use of Faust's consumer and app."""

    def __init__(self) -> None:
        self._unacked_messages: set[Any] = set()
        self.final_acks: list[int] = []
        self.app = SimpleNamespace(
            flow_control=SimpleNamespace(acquire=_nothing, is_active=lambda: True),
            producer=SimpleNamespace(buffer=SimpleNamespace(wait_until_ebb=_nothing)),
            topics=SimpleNamespace(acking_topics={TOPIC}),
            consumer_generation_id=1,
            consumer=self,
        )

    def ack(self, message: Any) -> bool:
        """As Faust's ``Consumer.ack``: marks the message acked, counts it for the commit."""
        message.acked = True
        self.final_acks.append(message.offset)
        return True


async def _nothing() -> None:
    return None


async def test_a_whole_fetch_is_acked_once_every_agent_acked_it() -> None:
    consumer = Consumer()
    scorer, drift = Batcher(), Batcher()
    messages = [message(0), message(1), message(2, generation_id=0)]  # the last one is stale
    for each in messages:
        each.tp = TopicPartition(TOPIC, 0)  # what a fetched message carries
    fetch = Fetch()
    drift.pressure = Pressure(high=2, low=1, on_full=fetch.full, on_drop=fetch.drop)
    await deliver(consumer, WholeFetch(messages, [(scorer, False), (drift, False)]))
    scored, drifted = await scorer.take(), await drift.take()
    assert [type(e) for e in scored] == [Delivered, Delivered]
    assert [e.message.offset for e in scored] == [e.message.offset for e in drifted] == [0, 1]
    assert messages[2].refcount == 0
    assert fetch.calls == [("full", TP_A), ("drop", TP_A)]
    assert all(type(tp) is TP for _, tp in fetch.calls)  # Faust asserts its partitions are

    stream = SimpleNamespace(app=consumer.app)
    await ack_all(stream, scored)
    assert consumer.final_acks == []  # the drift agent still holds them
    await ack_all(stream, drifted)
    assert consumer.final_acks == [0, 1]
    await ack_all(stream, drifted)  # a second ack changes nothing
    assert consumer.final_acks == [0, 1]


class FaustConsumer:
    """Faust's ``on_buffer_full``/``on_buffer_drop`` and the sets they change, copied."""

    def __init__(self, assigned: set[Any], in_recovery: bool = False) -> None:
        self.assigned = assigned
        self.in_recovery = in_recovery
        self._active_partitions = set(assigned)
        self._paused_partitions: set[Any] = set()
        self._buffered_partitions: set[Any] = set()

    def assignment(self) -> set[Any]:
        return self.assigned

    def _get_active_partitions(self) -> set[Any]:
        return self._active_partitions

    def on_buffer_full(self, tp: Any) -> None:
        if not self.in_recovery:
            self._active_partitions.discard(tp)
            self._buffered_partitions.add(tp)

    def on_buffer_drop(self, tp: Any) -> None:
        if tp in self._buffered_partitions:
            self._active_partitions.add(tp)
            self._buffered_partitions.discard(tp)


def test_pause_says_whether_the_partition_left_the_fetch() -> None:
    consumer = FaustConsumer({TP_A, TP_B})
    assert pause_fetch(consumer, TP_A)
    assert consumer._active_partitions == {TP_B}
    recovering = FaustConsumer({TP_A}, in_recovery=True)
    assert not pause_fetch(recovering, TP_A)  # Faust keeps it while the tables recover


def test_resume_never_fetches_a_revoked_or_recovering_partition() -> None:
    consumer = FaustConsumer({TP_A, TP_B})
    pause_fetch(consumer, TP_A)
    pause_fetch(consumer, TP_B)
    consumer.assigned = {TP_B}  # A was revoked meanwhile
    consumer._paused_partitions = {TP_B}  # and B is paused for the recovery's seek
    consumer._active_partitions = set()
    resume_fetch(consumer, TP_A)
    resume_fetch(consumer, TP_B)
    assert consumer._active_partitions == set()
    assert consumer._buffered_partitions == set()
    consumer._paused_partitions = set()
    pause_fetch(consumer, TP_B)
    resume_fetch(consumer, TP_B)
    assert consumer._active_partitions == {TP_B}


async def test_a_message_another_agent_took_is_finished_while_the_flow_is_suspended() -> None:
    """The scorer takes a message, then the shutdown suspends the flow before the drift agent
    takes it: the drift agent still handles it, so its ack is the final one (the offset
    commits, the restart does not score it again). Abandoned, it would be read again and the
    scorer's predictions published twice; merely skipped, SIGTERM hung in ``wait_empty``."""
    consumer = Consumer()
    scorer, drift = Batcher(), Batcher()
    await deliver(consumer, WholeFetch([message(0)], [(scorer, False), (drift, False)]))
    scored, _ = split_current(await scorer.take(), 1, flowing=True)
    track(consumer, {TOPIC}, scored)
    stream = SimpleNamespace(app=consumer.app)
    await ack_all(stream, scored)
    assert consumer._unacked_messages == {scored[0].message}  # what wait_empty waits for
    drifted, stale = split_current(await drift.take(), 1, flowing=False)
    assert stale == []
    await ack_all(stream, drifted)
    assert consumer.final_acks == [0]


async def test_a_message_nobody_took_before_the_suspension_is_abandoned_by_every_agent() -> None:
    """Neither reader took it before the flow stopped: both abandon it, whichever first; no
    final ack (it is read again) and nothing left for the shutdown to wait for."""
    consumer = Consumer()
    scorer, drift = Batcher(), Batcher()
    await deliver(consumer, WholeFetch([message(0)], [(scorer, False), (drift, False)]))
    for batcher in (drift, scorer):
        kept, stale = split_current(await batcher.take(), 1, flowing=False)
        assert kept == []
        abandon(consumer, stale)
        track(consumer, {TOPIC}, kept)
    assert consumer.final_acks == []
    assert consumer._unacked_messages == set()


async def test_a_message_abandoned_at_an_agents_stop_is_not_awaited() -> None:
    """The scorer took and acked it; the drift agent stops with it still buffered: abandoned,
    so the shutdown does not wait for it, and it is not committed (read again)."""
    consumer = Consumer()
    scorer, drift = Batcher(), Batcher()
    await deliver(consumer, WholeFetch([message(0)], [(scorer, False), (drift, False)]))
    scored, _ = split_current(await scorer.take(), 1, flowing=True)
    track(consumer, {TOPIC}, scored)
    await ack_all(SimpleNamespace(app=consumer.app), scored)
    abandon(consumer, drift.clear())
    assert consumer.final_acks == []
    assert consumer._unacked_messages == set()


async def test_clear_empties_the_batcher_and_leaves_it_usable() -> None:
    batcher = Batcher(max_size=2)
    batcher.put_many(TP_A, [1, 2, 3])
    assert batcher.clear() == [1, 2, 3]
    assert len(batcher) == 0
    assert not batcher.ready.is_set()
    await batcher.put(4)
    assert await batcher.take() == [4]


def test_mark_inbound_tells_faust_every_partition_of_a_batch_is_processed() -> None:
    """Faust's consumer thread looks a partition's inbound time up by its ``TP``; a fetched
    message carries aiokafka's ``TopicPartition``, equal to it as a tuple."""
    monitor = SimpleNamespace(stream_inbound_time={})
    events = [Delivered(message(0, partition=0)), Delivered(message(5, partition=1))]
    for event in events:
        event.message.tp = TopicPartition(TOPIC, event.message.partition)
    mark_inbound(monitor, events)
    assert set(monitor.stream_inbound_time) == {TP_A, TP_B}
    assert all(isinstance(t, float) for t in monitor.stream_inbound_time.values())
