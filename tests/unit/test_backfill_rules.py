"""The event-time ordering rules of as-of-correct backfills (agents/backfill_rules.py).

The simulation plays the learner of docs/BACKFILL.md over random time lines: results reach it
in any interleaving of its sources, it takes them in final-whistle order once its watermark
has passed them, and stores a version at each barrier and at random other points. Whatever the
interleaving, a fixture the scorer finds ``ready`` is scored by a version that has learned
exactly the results known at its kickoff, the rule of ``tipstream evaluate``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backfill_rules import Coverage, Watermarks, barriers, choose_version, known_at
from models.features import RESULT_DELAY

START = datetime(2024, 1, 6, 12, tzinfo=UTC)


def test_watermark_is_the_slowest_source_and_never_goes_back() -> None:
    marks = Watermarks(["results:0", "results:1"])
    assert marks.observe("results:0", START + timedelta(hours=3)) is None
    assert marks.observe("results:1", START + timedelta(hours=1)) == START + timedelta(hours=1)
    # A tick on the idle partition moves the stage on; an older record does not pull it back.
    assert marks.observe("results:1", START + timedelta(hours=5)) == START + timedelta(hours=3)
    assert marks.observe("results:1", START) == START + timedelta(hours=3)


def test_watermark_refuses_an_unknown_source_and_no_sources() -> None:
    with pytest.raises(ValueError, match="unknown source 'results:9'"):
        Watermarks(["results:0"]).observe("results:9", START)
    with pytest.raises(ValueError, match="at least one source"):
        Watermarks([])


def test_a_result_at_the_kickoff_is_known_one_after_it_is_not() -> None:
    assert known_at(START, START)
    assert not known_at(START + timedelta(seconds=1), START)


def test_one_version_taking_both_sides_of_a_kickoff_misses_it() -> None:
    versions = [
        Coverage(0, None, None, START),
        Coverage(
            1, START + timedelta(hours=1), START + timedelta(hours=3), START + timedelta(hours=4)
        ),
    ]
    # Kickoff at +2 h: v1 holds the +1 h result (known) and the +3 h one (not): no exact state.
    assert choose_version(versions, START + timedelta(hours=2)).outcome == "missed"
    assert choose_version(versions, START + timedelta(hours=2)).version == 0
    assert choose_version(versions, START + timedelta(minutes=30)).version == 0


def test_barriers_are_the_first_fixture_after_results() -> None:
    timeline: list[tuple[Literal["fixture", "result"], datetime]] = [
        ("fixture", START),
        ("fixture", START),
        ("result", START + RESULT_DELAY),
        ("result", START + RESULT_DELAY),
        ("fixture", START + timedelta(hours=3)),
        ("fixture", START + timedelta(hours=3)),
        ("result", START + timedelta(hours=5)),
    ]
    assert barriers(timeline) == [4]
    assert barriers([]) == []


matches = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(
    kickoffs=matches,
    sources=st.integers(min_value=1, max_value=3),
    at_barriers=st.booleans(),
    data=st.data(),
)
def test_a_ready_version_learned_exactly_the_results_known_at_kickoff(
    kickoffs: list[int], sources: int, at_barriers: bool, data: st.DataObject
) -> None:
    """Ready implies exact; with a version at every barrier, every kickoff ends up ready;
    without, a kickoff is ready or missed, never scored by an inexact version."""
    kick = [START + timedelta(minutes=15 * k) for k in kickoffs]
    whistle = [k + RESULT_DELAY for k in kick]
    # Each match's result goes to one source partition; each partition is in event order.
    home = [data.draw(st.integers(0, sources - 1)) for _ in kick]
    queues = [
        sorted((whistle[m], m) for m in range(len(kick)) if home[m] == s) for s in range(sources)
    ]
    # The learner must version at each kickoff that follows a whistle: the replay's barriers.
    needed = sorted(set(kick))
    marks = Watermarks(str(s) for s in range(sources))
    versions = [Coverage(0, None, None, None)]
    taken: list[set[int]] = [set()]
    pending: list[tuple[datetime, int]] = []

    def take(through: datetime) -> None:
        """What the learner does when its watermark moves to ``through``."""
        nonlocal pending
        pending.sort()
        ready = [(w, m) for w, m in pending if w <= through]
        pending = [(w, m) for w, m in pending if w > through]
        current: list[tuple[datetime, int]] = []
        for w, m in ready:
            # A version before a result the scorer must not see at some barrier kickoff.
            cut = at_barriers and current and any(current[-1][0] <= k < w for k in needed)
            if cut or (current and data.draw(st.booleans())):
                versions.append(Coverage(len(versions), current[0][0], current[-1][0], None))
                taken.append(taken[-1] | {n for _, n in current})
                current = []
            current.append((w, m))
        if current:
            versions.append(Coverage(len(versions), current[0][0], current[-1][0], None))
            taken.append(taken[-1] | {n for _, n in current})
        last = versions[-1]
        versions[-1] = Coverage(last.version, last.learned_from, last.learned_until, through)
        for k in needed:
            choice = choose_version(versions, k)
            if choice.outcome == "ready":
                assert choice.version is not None
                known = {m for m in range(len(kick)) if known_at(whistle[m], k)}
                assert taken[choice.version] == known
            else:
                assert choice.outcome == "wait" or (choice.outcome == "missed" and not at_barriers)

    while any(queues):
        source = data.draw(st.sampled_from([s for s in range(sources) if queues[s]]))
        at, match = queues[source].pop(0)
        pending.append((at, match))
        through = marks.observe(str(source), at)
        if through is not None:
            take(through)
    # The replay's closing tick on every partition: an idle one no longer holds the mark back.
    end = max(whistle)
    for source in range(sources):
        through = marks.observe(str(source), end)
    assert through == end
    take(end)
    outcomes = {choose_version(versions, k).outcome for k in needed}
    assert outcomes == {"ready"} if at_barriers else outcomes <= {"ready", "missed"}
