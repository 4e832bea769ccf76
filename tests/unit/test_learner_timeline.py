"""A backfill's learner time line (agents.learner_rules.TimeLine; docs/BACKFILL.md, section 3).

The simulation plays the reconciler's partitions as the design has them: each sends, in event
order, the learn items of its results and a tick at each barrier of the replay, then a closing
tick; the learner receives the partitions in any interleaving. Whatever the interleaving, the
versions are the same, every fixture's kickoff is ``ready`` with a version that learned
exactly the results known at it (the rule of ``tipstream evaluate``), and nothing is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backfill_rules import Coverage, barriers, choose_version, known_at
from agents.learner_rules import Cut, TimeLine
from models.features import RESULT_DELAY

START = datetime(2024, 1, 6, 12, tzinfo=UTC)

Sent = tuple[Literal["item"], datetime, str] | tuple[Literal["tick"], datetime, list[datetime]]


def replay_barriers(kickoffs: list[datetime]) -> list[datetime]:
    """The kickoffs at the replay's barriers (results first at equal times: known at it)."""
    timeline: list[tuple[Literal["fixture", "result"], datetime]] = sorted(
        [("result", k + RESULT_DELAY) for k in kickoffs] + [("fixture", k) for k in kickoffs],
        key=lambda fact: (fact[1], fact[0] == "fixture"),
    )
    return [timeline[position][1] for position in barriers(timeline)]


def partition_queues(kickoffs: list[datetime], home: list[int], sources: int) -> list[list[Sent]]:
    """What each reconciler partition sends: its learn items and every barrier's tick, in event
    order, then the closing tick (the replay's end)."""
    marks = replay_barriers(kickoffs)
    end = max(kickoffs) + RESULT_DELAY
    queues: list[list[Sent]] = []
    for source in range(sources):
        sent: list[tuple[datetime, int, Sent]] = [
            (k + RESULT_DELAY, 0, ("item", k + RESULT_DELAY, f"m{m:03d}"))
            for m, k in enumerate(kickoffs)
            if home[m] == source
        ]
        sent += [(b, 1, ("tick", b, [b])) for b in marks]
        sent.append((end, 1, ("tick", end, [end])))
        queues.append([entry for _, _, entry in sorted(sent, key=lambda s: (s[0], s[1]))])
    return queues


def play(queues: list[list[Sent]], order: list[int]) -> list[Cut[str]]:
    """The learner over one interleaving (``order``: which partition delivers next)."""
    line: TimeLine[str] = TimeLine((str(s) for s in range(len(queues))), version=0)
    cuts: list[Cut[str]] = []
    positions = [0] * len(queues)
    for source in order:
        kind, at, payload = queues[source][positions[source]]
        positions[source] += 1
        if kind == "item":
            assert isinstance(payload, str)
            assert line.add(at, payload, payload)
        else:
            assert isinstance(payload, list)
            line.tick(str(source), at, barriers=payload)
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
    queues = partition_queues(kick, home, sources)
    cuts = play(queues, interleaving(data, queues))
    # The same versions from another interleaving: a restarted learner stores the same ones.
    assert play(queues, interleaving(data, queues)) == cuts

    coverages = [Coverage(0, None, None, None)] + [cut.coverage for cut in cuts]
    taken: list[set[str]] = [set()]
    for cut in cuts:
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


def test_items_wait_for_the_slowest_partition_then_go_in_whistle_and_match_order() -> None:
    line: TimeLine[str] = TimeLine(["r:0", "r:1"], version=3)
    whistle = START + RESULT_DELAY
    barrier = whistle + timedelta(hours=1)
    assert line.add(whistle, "b", "b")
    assert line.add(whistle, "a", "a")
    assert line.add(whistle - timedelta(minutes=30), "z", "z")
    line.tick("r:0", barrier, barriers=[barrier])
    assert line.cuts() == []  # r:1 has said nothing: it may still send an earlier result
    line.tick("r:1", barrier - timedelta(minutes=1), barriers=[barrier])
    assert line.cuts() == []
    line.tick("r:1", barrier, barriers=[barrier])
    (cut,) = line.cuts()
    assert cut.items == ["z", "a", "b"]
    assert cut.coverage == Coverage(4, whistle - timedelta(minutes=30), whistle, barrier)
    assert (line.version, line.cut_through, line.held) == (4, barrier, 0)
    assert line.cuts() == []  # a barrier is cut once


def test_an_item_behind_the_last_cut_is_refused_and_an_empty_interval_still_versions() -> None:
    line: TimeLine[str] = TimeLine(["r:0"], version=0, cut_through=START)
    assert not line.add(START, "m1", "m1")  # at the base's barrier: already covered
    line.tick("r:0", START + timedelta(hours=1), barriers=[START, START + timedelta(hours=1)])
    (cut,) = line.cuts()  # the barrier at the base's own is not cut again
    assert cut.items == []
    assert cut.coverage == Coverage(1, None, None, START + timedelta(hours=1))
    assert not line.add(START + timedelta(minutes=59), "m2", "late")
    assert line.held == 0
