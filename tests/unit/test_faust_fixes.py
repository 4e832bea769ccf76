"""The correctness fixes to faust-streaming (recovery order, fetch snapshot, commit offsets,
bounded shutdown) and the stalled-partition watchdog."""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from intervaltree import IntervalTree
from structlog.testing import capture_logs

from agents.loop import Batcher, Delivered, FetchSinks
from streams.worker import faust_fixes, watchdog
from streams.worker.watchdog import STALL_AFTER_S, Watchdog, stalled

TP = ("t.match-features", 0)


class Offsets:
    """The consumer state ``_new_offset`` reads: acked offsets, gaps, the committed offset."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        self._acked: defaultdict[Any, list[int]] = defaultdict(list, {TP: list(acked)})
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set, {TP: set(acked)})
        self._gap: defaultdict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(
            lambda: None, {TP: committed}
        )


def test_faust_commits_past_one_unacked_message_at_the_head() -> None:
    """The pinned Faust's own rule moves the commit past the next message to read (29) when
    only that one is missing: the message is lost. This is the bug being corrected."""
    assert faust_fixes._ORIGINAL(Offsets(29, list(range(30, 41))), TP) == 41


def test_a_missing_head_message_stalls_the_commit() -> None:
    """With the correction, nothing is committed until the message at the committed offset is
    acked; then everything acked after it is."""
    offsets = Offsets(29, list(range(30, 41)))
    assert faust_fixes.new_offset(offsets, TP) is None
    offsets._acked[TP].append(29)
    offsets._acked_index[TP].add(29)
    assert faust_fixes.new_offset(offsets, TP) == 41


def test_gaps_the_broker_never_hands_out_still_count_as_acked() -> None:
    """Offsets Faust recorded as a gap (compaction, transaction markers) are filled in."""
    offsets = Offsets(29, [29, 33])
    offsets._gap[TP].addi(30, 33)
    assert faust_fixes.new_offset(offsets, TP) == 34


def test_a_fresh_partition_without_a_committed_offset_commits_what_is_acked() -> None:
    """Before any commit there is no head to check."""
    assert faust_fixes.new_offset(Offsets(None, [0, 1, 2]), TP) == 3


def test_a_partition_is_stalled_only_when_data_waits_and_the_commit_does_not_move() -> None:
    """Data beyond a committed offset that stays put for the whole window is a stall; a
    moving commit, or no data waiting, is not; the alarm re-arms after firing."""
    seen: dict[Any, Any] = {}
    assert stalled({"a": (29, 105), "b": (7, 7)}, seen, now=0.0, after=10.0) == []
    assert stalled({"a": (29, 105), "b": (7, 7)}, seen, now=9.0, after=10.0) == []
    assert stalled({"a": (29, 105), "b": (7, 7)}, seen, now=10.0, after=10.0) == [("a", 29)]
    assert stalled({"a": (29, 105)}, seen, now=15.0, after=10.0) == []
    assert stalled({"a": (40, 105)}, seen, now=30.0, after=10.0) == []
    assert stalled({"a": (None, 3)}, seen, now=30.0, after=10.0) == []
    assert stalled({"a": (None, 3)}, seen, now=40.0, after=10.0) == [("a", 0)]


def test_a_partition_whose_next_message_is_on_its_way_is_behind_not_stalled() -> None:
    """The message at the committed offset is still being delivered, handled or committed (a
    backlog, a slow commit): the timer restarts at every check that says so, and runs again
    once it is not (a hole)."""
    seen: dict[Any, Any] = {}
    assert stalled({"a": (29, 105)}, seen, now=0.0, after=10.0, on_its_way={"a"}) == []
    assert stalled({"a": (29, 105)}, seen, now=12.0, after=10.0, on_its_way={"a"}) == []
    assert stalled({"a": (29, 105)}, seen, now=20.0, after=10.0, on_its_way={"b"}) == []
    assert stalled({"a": (29, 105)}, seen, now=22.0, after=10.0, on_its_way={"b"}) == [("a", 29)]


STREAM_TPS = {("t.match-features", 0), ("t.match-results", 0)}
CHANGELOG_TP = ("t-ledgers-changelog", 0)


class FakeTables(dict[str, Any]):
    def on_actives_ready(self) -> None:
        return None

    def on_standbys_ready(self) -> None:
        return None


class FakeRecovery:
    """What ``on_recovery_completed`` touches, recording the consumer calls in order."""

    def __init__(self, generation_id: int = 3) -> None:
        self.calls: list[str] = []
        calls = self.calls

        async def perform_seek() -> None:
            await asyncio.sleep(0)  # the seek is a round trip: the fetcher could run meanwhile
            calls.append("perform_seek")

        async def noop() -> None:
            return None

        self.app = SimpleNamespace(
            consumer=SimpleNamespace(
                assignment=lambda: STREAM_TPS | {CHANGELOG_TP},
                perform_seek=perform_seek,
                resume_partitions=lambda tps: calls.append(f"resume {sorted(tps)}"),
                resume_flow=lambda: calls.append("resume_flow"),
            ),
            on_rebalance_complete=SimpleNamespace(send=noop),
            consumer_generation_id=generation_id,
            conf=SimpleNamespace(broker_request_timeout=1.0),
            flow_control=SimpleNamespace(resume=lambda: calls.append("flow_control.resume")),
            _fetcher=SimpleNamespace(maybe_start=noop),
            assignor=SimpleNamespace(assigned_standbys=lambda: set()),
            on_rebalance_end=lambda: calls.append("on_rebalance_end"),
        )
        self.log = SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=calls.append)
        self.tables = FakeTables()
        self.completed = asyncio.Event()
        self.actives_for_table: dict[Any, Any] = {}
        self.standbys_for_table: dict[Any, Any] = {}

    def _set_recovery_ended(self) -> None:
        return None

    def _is_changelog_tp(self, tp: Any) -> bool:
        return bool(tp == CHANGELOG_TP)

    async def _wait(self, coro: Any, timeout: float | None = None) -> None:
        await coro


async def test_recovery_seeks_the_stream_partitions_before_resuming_them() -> None:
    """Faust resumes the stream partitions, then seeks them: whatever the fetcher drains in
    between is processed and then delivered again. The fix seeks while they are paused."""
    recovery = FakeRecovery()
    await faust_fixes.on_recovery_completed(recovery, generation_id=3)
    resume = f"resume {sorted(STREAM_TPS)}"
    assert recovery.calls[:2] == ["perform_seek", resume]  # the changelog stays paused
    assert recovery.calls.index("resume_flow") > recovery.calls.index(resume)
    assert recovery.completed.is_set()


async def test_recovery_of_a_superseded_generation_neither_seeks_nor_resumes() -> None:
    recovery = FakeRecovery(generation_id=4)
    await faust_fixes.on_recovery_completed(recovery, generation_id=3)
    assert not any(c == "perform_seek" or c.startswith("resume") for c in recovery.calls)
    assert not recovery.completed.is_set()


def test_the_pinned_faust_resumes_before_it_seeks() -> None:
    """The order being corrected, read from the pinned source (fails if Faust changes it)."""
    (patch,) = [
        p for p in faust_fixes.PATCHES if p.replacement is faust_fixes.on_recovery_completed
    ]
    source = inspect.getsource(patch.original)  # Faust's, even once the fix is installed
    assert source.index("consumer.resume_partitions(") < source.index("consumer.perform_seek()")


async def test_a_fetch_gets_a_snapshot_of_the_active_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka reads the partitions it is given while it waits; Faust mutates its set from the
    other thread meanwhile. The fetch sees the set as it was when the fetch began."""
    seen: list[Any] = []

    async def original(self: Any, consumer: Any, partitions: Any, **kwargs: Any) -> dict[Any, Any]:
        active.clear()  # Faust pauses everything while aiokafka waits
        seen.append(partitions)
        return {"records": kwargs}

    monkeypatch.setattr(faust_fixes, "_ORIGINAL_FETCH", original)
    active = set(STREAM_TPS)
    result = await faust_fixes.fetch_records(
        _thread(held_back=set()), None, active, timeout=1.0, max_records=5
    )
    assert result == {"records": {"timeout": 1.0, "max_records": 5}}
    assert seen == [frozenset(STREAM_TPS)]


async def test_a_fetch_with_no_active_partition_fetches_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For aiokafka an empty set means every partition: the paused ones included."""

    async def original(*args: Any, **kwargs: Any) -> dict[Any, Any]:
        raise AssertionError("aiokafka must not be asked")

    monkeypatch.setattr(faust_fixes, "_ORIGINAL_FETCH", original)
    assert await faust_fixes.fetch_records(_thread(held_back=set()), None, set(), timeout=1.0) == {}


def _thread(held_back: set[Any]) -> Any:
    """The consumer thread as ``fetch_records`` is given it: Faust's consumer and what it holds
    back (partitions whose stream buffer is full)."""
    return SimpleNamespace(consumer=SimpleNamespace(_buffered_partitions=held_back))


class Draining:
    """The consumer state ``wait_empty`` reads: unacked messages, commits, acks."""

    def __init__(self, unacked: set[object], acked_after: int | None) -> None:
        self.should_stop = False
        self._unacked_messages = unacked
        self.acked_after = acked_after  # waits for acks after which the messages are acked
        self.waits = 0
        self.commits = 0
        self.final_commits = 0
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.log = SimpleNamespace(warning=lambda *args: None)

    async def commit(self) -> None:
        self.commits += 1

    async def _wait_for_ack(self, timeout: float) -> None:
        self.waits += 1
        await asyncio.sleep(0.01)

    def _clean_unacked_messages(self) -> None:
        if self.acked_after is not None and self.waits >= self.acked_after:
            self._unacked_messages.clear()

    async def commit_and_end_transactions(self) -> None:
        self.final_commits += 1


async def test_shutdown_waits_for_the_agents_to_ack_what_they_started() -> None:
    consumer = Draining({object()}, acked_after=3)
    await faust_fixes.wait_empty(consumer)
    assert consumer.waits == 3
    assert not consumer._unacked_messages
    assert consumer.final_commits == 1


async def test_shutdown_gives_up_on_a_message_no_agent_will_ack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message whose other copy was cleared from a stream queue keeps a reference for good:
    the wait ends after WAIT_EMPTY_S, commits what was acked, and leaves the rest unacked."""
    monkeypatch.setattr(faust_fixes, "WAIT_EMPTY_S", 0.1)
    stuck = object()
    consumer = Draining({stuck}, acked_after=None)
    await asyncio.wait_for(faust_fixes.wait_empty(consumer), timeout=5)
    assert consumer._unacked_messages == {stuck}
    assert 1 <= consumer.waits <= 11
    assert consumer.final_commits == 1


class SeekingConsumer:
    """What the watchdog reads of Faust's consumer, and which seek it calls."""

    def __init__(self, tp: Any, committed: int, highwater: int) -> None:
        self._committed_offset = {tp: committed}
        self._tp, self._highwater = tp, highwater
        self.sought: list[dict[Any, int]] = []
        self.fail: BaseException | None = None
        self._unacked_messages: set[Any] = set()
        self._read_offset: dict[Any, int | None] = {tp: highwater - 1}  # all delivered
        self._acked_index: dict[Any, set[int]] = {}

    def assignment(self) -> set[Any]:
        return {self._tp}

    def highwater(self, tp: Any) -> int:
        return self._highwater

    async def seek(self, tp: Any, offset: int) -> None:
        raise AssertionError("Faust's seek runs aiokafka's outside the consumer thread")

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.sought.append(dict(partitions))
        if self.fail is not None:
            raise self.fail


async def test_the_watchdog_rereads_a_stalled_partition_in_the_consumer_thread() -> None:
    """A partition stalled behind data is sought back through ``seek_wait`` (the consumer
    thread), never Faust's ``seek``, whose aiokafka call races the fetcher and crashes it."""
    tp = TopicPartition("t.predictions", 1)
    consumer = SeekingConsumer(tp, committed=2636, highwater=2900)
    app = SimpleNamespace(consumer=consumer, rebalancing=False)
    counters: defaultdict[str, int] = defaultdict(int)
    clock = [0.0]
    dog = Watchdog(app, {"t.predictions"}, counters, clock=lambda: clock[0])
    await dog.check()
    assert consumer.sought == []
    clock[0] = STALL_AFTER_S + 1
    await dog.check()
    assert consumer.sought == [{tp: 2636}]
    assert counters["partition_rereads:t.predictions"] == 1


class Held:
    """A fetched message, as the watchdog reads it (hashable, as Faust's are)."""

    def __init__(self, tp: Any, offset: int) -> None:
        self.tp, self.offset, self.acked = tp, offset, False


async def test_the_watchdog_leaves_a_partition_whose_next_message_is_on_its_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message at the committed offset is not delivered yet (the partition held back for a
    full buffer), then in an agent's whole-fetch buffer, then taken and not acked, then acked
    with the commit to come: no re-read. Delivered and dropped by everyone: a hole, re-read."""
    tp = TopicPartition("t.predictions", 1)
    consumer = SeekingConsumer(tp, committed=2636, highwater=2900)
    consumer._read_offset[tp] = 2635
    blocker = Held(tp, 2636)
    batcher = Batcher()
    sinks = FetchSinks()
    sinks.register(object(), batcher)
    monkeypatch.setattr(watchdog, "FETCH_SINKS", sinks)
    clock = [0.0]
    dog = Watchdog(
        SimpleNamespace(consumer=consumer, rebalancing=False),
        {"t.predictions"},
        defaultdict(int),
        clock=lambda: clock[0],
    )

    async def check_later() -> None:
        clock[0] += STALL_AFTER_S + 1
        await dog.check()

    await dog.check()
    await check_later()  # not delivered
    consumer._read_offset[tp] = 2899
    batcher.put_many(tp, [Delivered(blocker)])
    await check_later()  # buffered
    batcher.clear()
    consumer._unacked_messages.add(blocker)
    await check_later()  # taken, being handled
    blocker.acked = True
    consumer._acked_index[tp] = {2636}
    await check_later()  # acked, the commit is slow
    assert consumer.sought == []
    consumer._acked_index[tp] = set()  # it was abandoned: delivered, and nobody has it
    await check_later()
    assert consumer.sought == [{tp: 2636}]


async def test_a_failed_reread_is_logged_and_tried_again() -> None:
    """``seek_wait`` also waits for the partition's position: a broker away makes it time
    out. The watchdog logs it and seeks again at the next alarm; the timer goes on."""
    tp = TopicPartition("t.predictions", 1)
    consumer = SeekingConsumer(tp, committed=10, highwater=20)
    consumer.fail = TimeoutError()
    counters: defaultdict[str, int] = defaultdict(int)
    clock = [0.0]
    dog = Watchdog(
        SimpleNamespace(consumer=consumer, rebalancing=False),
        {"t.predictions"},
        counters,
        clock=lambda: clock[0],
    )
    with capture_logs() as logs:
        for moment in (0.0, STALL_AFTER_S, 2 * STALL_AFTER_S):
            clock[0] = moment
            await dog.check()
    assert consumer.sought == [{tp: 10}, {tp: 10}]
    failed = [e for e in logs if e["event"].startswith("partition re-read failed")]
    assert [(e["partition"], e["error"]) for e in failed] == [(1, "TimeoutError()")] * 2
