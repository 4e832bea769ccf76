"""The commit-offset correction for faust-streaming and the stalled-partition watchdog."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from intervaltree import IntervalTree

from streams import faust_fixes
from streams.watchdog import stalled

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
