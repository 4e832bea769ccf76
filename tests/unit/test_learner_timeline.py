"""A backfill's learner time line (agents.learner_rules.TimeLine; docs/BACKFILL.md, section 3).

The simulation plays the reconciler's partitions as they behave (``agents/reconciler.py``):
each sends the learn items of its results in whistle order and, at any point, a strict tick
(every item with an earlier final whistle sent), then the replay's closing tick; the learner
receives the partitions in any interleaving. Whatever the interleaving, the versions are the
same, every match's kickoff is ``ready`` with a version that learned exactly the results
known at it (the rule of ``tipstream evaluate``), and nothing is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backfill_rules import Coverage, choose_version, known_at
from agents.learner_rules import Cut, TimeLine
from models.features import RESULT_DELAY

START = datetime(2024, 1, 6, 12, tzinfo=UTC)
CLOSING = timedelta(microseconds=1)

Sent = tuple[Literal["item"], datetime, str] | tuple[Literal["tick"], datetime, str]


def partition_queues(
    kickoffs: list[datetime], home: list[int], sources: int, ticks: list[list[bool]]
) -> list[list[Sent]]:
    """What each reconciler partition sends: its items in whistle order, after any of them a
    tick at the next item's whistle (or later: the partition's next result is later still),
    then the closing tick just past the last whistle of all."""
    end = max(kickoffs) + RESULT_DELAY + CLOSING
    queues: list[list[Sent]] = []
    for source in range(sources):
        mine = sorted(
            (k + RESULT_DELAY, f"m{m:03d}") for m, k in enumerate(kickoffs) if home[m] == source
        )
        sent: list[Sent] = []
        for i, (whistle, match) in enumerate(mine):
            sent.append(("item", whistle, match))
            if ticks[source][i % len(ticks[source])]:
                nxt = mine[i + 1][0] if i + 1 < len(mine) else end
                sent.append(("tick", nxt, match))
        sent.append(("tick", end, ""))
        queues.append(sent)
    return queues


def play(queues: list[list[Sent]], order: list[int]) -> list[Cut[str]]:
    """The learner over one interleaving (``order``: which partition delivers next)."""
    sources = (str(s) for s in range(len(queues)))
    line: TimeLine[str] = TimeLine(sources, version=0)
    cuts: list[Cut[str]] = []
    positions = [0] * len(queues)
    for source in order:
        kind, at, match = queues[source][positions[source]]
        positions[source] += 1
        if kind == "item":
            assert line.add(at, match, match)
        else:
            line.tick(str(source), at)
            cuts += line.cuts()
    assert line.held == 0
    return cuts


def interleaving(data: st.DataObject, queues: list[list[Sent]]) -> list[int]:
    left = [len(q) for q in queues]
    order: list[int] = []
    while any(left):
        source = data.draw(st.sampled_from([s for s, n in enumerate(left) if n]))
        left[source] -= 1
        order.append(source)
    return order


@settings(max_examples=200, deadline=None)
@given(
    kickoffs=st.lists(st.integers(min_value=0, max_value=150), min_size=1, max_size=30),
    sources=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_every_kickoff_is_ready_with_exactly_its_known_results_in_any_interleaving(
    kickoffs: list[int], sources: int, data: st.DataObject
) -> None:
    kick = [START + timedelta(minutes=5 * k) for k in kickoffs]
    home = [data.draw(st.integers(0, sources - 1)) for _ in kick]
    ticks = [data.draw(st.lists(st.booleans(), min_size=1, max_size=8)) for _ in range(sources)]
    queues = partition_queues(kick, home, sources, ticks)
    cuts = play(queues, interleaving(data, queues))
    # The same versions from another interleaving: a restarted learner stores the same ones.
    assert play(queues, interleaving(data, queues)) == cuts

    coverages = [Coverage(0, None, None, None)] + [cut.coverage for cut in cuts]
    taken: list[set[str]] = [set()]
    for cut in cuts:
        assert cut.coverage.version == len(taken)
        assert not taken[-1] & set(cut.items)  # each result taken once
        taken.append(taken[-1] | set(cut.items))
        assert cut.items == sorted(cut.items, key=lambda m: (kick[int(m[1:])], m))
    assert taken[-1] == {f"m{m:03d}" for m in range(len(kick))}
    for k in kick:
        choice = choose_version(coverages, k)
        assert choice.outcome == "ready", (k, choice)
        assert choice.version is not None
        known = {f"m{m:03d}" for m in range(len(kick)) if known_at(kick[m] + RESULT_DELAY, k)}
        assert taken[choice.version] == known


def test_items_wait_for_the_slowest_partition_then_go_one_whistle_at_a_time() -> None:
    line: TimeLine[str] = TimeLine(["r:0", "r:1"], version=3)
    whistle = START + RESULT_DELAY
    earlier = whistle - timedelta(minutes=30)
    assert line.add(whistle, "b", "b")
    assert line.add(whistle, "a", "a")
    assert line.add(earlier, "z", "z")
    line.tick("r:0", whistle + timedelta(hours=1))
    assert line.cuts() == []  # r:1 has said nothing: it may still send an earlier result
    line.tick("r:1", whistle)  # strict: a and b's whistle not passed
    (first,) = line.cuts()
    assert first == Cut(["z"], Coverage(4, earlier, earlier, earlier))
    line.tick("r:1", whistle + timedelta(minutes=1))
    (second,) = line.cuts()
    assert second == Cut(["a", "b"], Coverage(5, whistle, whistle, whistle))
    assert (line.version, line.cut_through, line.held) == (5, whistle, 0)
    assert line.cuts() == []  # a whistle is cut once


def test_an_item_behind_the_last_cut_is_refused() -> None:
    line: TimeLine[str] = TimeLine(["r:0"], version=0, cut_through=START)
    assert not line.add(START, "m1", "m1")  # at the base's own cut: already covered
    assert line.add(START + timedelta(minutes=1), "m2", "m2")
    line.tick("r:0", START + timedelta(hours=1))
    (cut,) = line.cuts()
    assert cut.items == ["m2"]
    assert not line.add(START + timedelta(minutes=1), "m3", "late")
    assert line.held == 0
