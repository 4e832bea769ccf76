"""A model version's coverage in event time: on the snapshot topic, in ``Coverage``, and rebuilt
from the registry's rows (``agents.backfill_rules.rebuild_coverages``; docs/BACKFILL.md).

The property test stores a learner's versions over a random time line, as the registry would
keep them (some pruned, some bases before the time line, one stored without coverage inside
it), rebuilds the coverages and checks the rule of ``tipstream evaluate``: a fixture found
``ready`` is scored by a version that learned exactly the results known at its kickoff.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backfill_rules import (
    Choice,
    Coverage,
    choose_version,
    known_at,
    rebuild_coverages,
    unknown,
)
from schemas.codec import decode, encode
from schemas.events import ModelSnapshot

START = datetime(2024, 1, 6, 12, tzinfo=UTC)
LIVE = ModelSnapshot(
    model_id="online-logreg",
    version=3,
    parent_version=2,
    kind="online-logreg",
    status="champion",
    learned=60,
    state_sha256="ab" * 32,
    created_at=START,
)


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def test_a_live_snapshot_carries_no_coverage() -> None:
    """A snapshot built as the learner and the registry build live ones has none of the three
    coverage fields, and decodes back with none."""
    assert (LIVE.learned_from, LIVE.learned_until, LIVE.complete_through) == (None, None, None)
    assert decode(encode(LIVE), ModelSnapshot) == LIVE


@pytest.mark.parametrize(
    ("learned_from", "learned_until", "complete_through"),
    [
        pytest.param(None, None, at(1), id="took-nothing-with-a-watermark"),
        pytest.param(at(1), at(1), None, id="one-whistle-no-watermark"),
        pytest.param(at(1), at(2), at(2), id="watermark-at-the-latest-whistle"),
    ],
)
def test_a_consistent_coverage_is_accepted_by_snapshot_and_coverage(
    learned_from: datetime | None, learned_until: datetime | None, complete_through: datetime | None
) -> None:
    """Whistles in order (or none) and a watermark not behind them make a snapshot and a
    Coverage alike, and the snapshot round-trips through the codec."""
    snapshot = msgspec.structs.replace(
        LIVE,
        learned_from=learned_from,
        learned_until=learned_until,
        complete_through=complete_through,
    )
    assert decode(encode(snapshot), ModelSnapshot) == snapshot
    coverage = Coverage(3, learned_from, learned_until, complete_through)
    assert coverage.complete_through == complete_through


@pytest.mark.parametrize(
    ("learned_from", "learned_until", "complete_through", "message"),
    [
        pytest.param(
            at(1), None, None, "^`learned_until` must be given with `learned_from`",
            id="from-without-until",
        ),
        pytest.param(
            None, at(1), at(2), "^`learned_from` must be given with `learned_until`",
            id="until-without-from",
        ),
        pytest.param(
            at(2), at(1), at(3), "^`learned_from` .* is after `learned_until`", id="order",
        ),
        pytest.param(
            at(1), at(3), at(2), "^`complete_through` .* is before `learned_until`",
            id="watermark-behind",
        ),
    ],
)  # fmt: skip
def test_an_inconsistent_coverage_is_refused_by_snapshot_and_coverage_alike(
    learned_from: datetime | None,
    learned_until: datetime | None,
    complete_through: datetime | None,
    message: str,
) -> None:
    """One rule (``schemas.events.check_coverage``) for the topic and the pure rules: the
    message names the field first, as the codec reports it."""
    with pytest.raises(ValueError, match=message):
        msgspec.structs.replace(
            LIVE,
            learned_from=learned_from,
            learned_until=learned_until,
            complete_through=complete_through,
        )
    with pytest.raises(ValueError, match=message):
        Coverage(3, learned_from, learned_until, complete_through)


def test_a_naive_coverage_time_built_in_python_is_refused() -> None:
    """Decoding refuses a time without an offset; a snapshot built in Python does too, with
    the field, instead of a TypeError when the times are compared."""
    with pytest.raises(ValueError, match=r"^`complete_through` 2024-01-06T14:00:00 must have a"):
        msgspec.structs.replace(
            LIVE,
            learned_from=at(1),
            learned_until=at(1),
            complete_through=at(2).replace(tzinfo=None),
        )


def test_contiguous_stored_versions_rebuild_unchanged() -> None:
    """With nothing pruned and every version of the time line covered, the rebuilt list is the
    stored one, bases included."""
    stored = [
        Coverage(0, None, None, None),
        Coverage(1, None, None, None),  # retrained: the base the backfill started from
        Coverage(2, at(1), at(2), at(2)),
        Coverage(3, None, None, at(3)),  # took nothing, the watermark moved on
        Coverage(4, at(4), at(5), at(6)),
    ]
    assert rebuild_coverages(stored) == stored
    assert rebuild_coverages([]) == []


def test_versions_pruned_inside_the_time_line_make_the_rest_unknown() -> None:
    """v2 and v3 pruned: they may have taken anything after v1's latest whistle, or been stored
    without coverage, so v4 and every later version are unknown and a kickoff after v1's
    whistles is missed (scored by v1 and counted), never ready with v1."""
    stored = [
        Coverage(0, None, None, None),
        Coverage(1, at(1), at(2), None),
        Coverage(4, at(6), at(7), at(8)),
        Coverage(5, at(8), at(9), at(10)),
    ]
    rebuilt = rebuild_coverages(stored)
    assert rebuilt == [*stored[:2], unknown(4), unknown(5)]
    assert choose_version(stored, at(4)) == Choice("ready", 1)  # what trusting the gap says
    assert {choose_version(rebuilt, at(h)) for h in (2, 4, 7.5, 9.5)} == {Choice("missed", 1)}
    assert choose_version(rebuilt, at(0.5)) == Choice("ready", 0)


def test_the_first_covered_version_after_pruned_ones_is_widened_to_the_earliest_time() -> None:
    """Versions pruned between the bases and the time line may have been its first versions:
    the base scores no kickoff as ready, the covered versions after the gap do."""
    stored = [Coverage(0, None, None, None), Coverage(4, at(6), at(7), at(8))]
    rebuilt = rebuild_coverages(stored)
    assert rebuilt[1] == Coverage(4, datetime.min.replace(tzinfo=UTC), at(7), at(8))
    assert choose_version(rebuilt, at(1)) == Choice("missed", 0)
    assert choose_version(rebuilt, at(7.5)) == Choice("ready", 4)
    # One that took nothing itself is bounded by its watermark; with no base kept, the first
    # stored version is taken as it is (what it holds does not depend on pruned ones).
    assert rebuild_coverages([Coverage(0, None, None, None), Coverage(3, None, None, at(5))])[
        1
    ] == Coverage(3, datetime.min.replace(tzinfo=UTC), at(5), at(5))
    assert rebuild_coverages(stored[1:]) == stored[1:]


def test_a_version_without_coverage_inside_the_time_line_makes_the_rest_unknown() -> None:
    """A live, rolled-back or refitted version after the time line began may hold any result:
    it and every version after it are unknown, so no later kickoff is ever ready."""
    stored = [
        Coverage(0, None, None, None),
        Coverage(1, at(1), at(2), at(3)),
        Coverage(2, None, None, None),
        Coverage(3, at(4), at(5), at(6)),
    ]
    rebuilt = rebuild_coverages(stored)
    assert rebuilt == [*stored[:2], unknown(2), unknown(3)]
    assert choose_version(rebuilt, at(0.5)) == Choice("ready", 0)
    assert choose_version(rebuilt, at(2.5)) == Choice("missed", 1)
    assert {choose_version(rebuilt, at(h)).outcome for h in (3, 5, 7)} == {"missed"}


def test_a_time_line_that_goes_back_is_unknown_from_there() -> None:
    """A version whose first whistle or watermark is before an earlier version's latest
    whistle belongs to another time line (a second backfill over the same model)."""
    for going_back in (Coverage(2, at(1), at(5), at(6)), Coverage(2, None, None, at(1))):
        rebuilt = rebuild_coverages([Coverage(1, at(1), at(2), at(3)), going_back])
        assert rebuilt[1] == unknown(2)


def test_versions_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="versions out of order: v1 after v2"):
        rebuild_coverages([Coverage(2, None, None, None), Coverage(1, None, None, None)])


NEVER = frozenset({-1})
"""What a version off the time line holds, for the test: never the results known at a kickoff."""


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=20),
    bases=st.integers(min_value=1, max_value=3),
    data=st.data(),
)
def test_rebuilt_coverages_never_make_an_inexact_version_ready(
    gaps: list[int], bases: int, data: st.DataObject
) -> None:
    """Whatever was pruned, and with a version stored without coverage inside the time line or
    not, a kickoff found ready on the rebuilt list is scored by a version that learned exactly
    the results known at it; with nothing pruned or lost, the rebuilt list is the stored one."""
    # Final whistles in order (ties allowed: a gap of 0), each taken by one learner version.
    whistles: list[datetime] = []
    for gap in gaps:
        whistles.append((whistles[-1] if whistles else START) + timedelta(minutes=30 * gap))
    # Bases: older ones hold anything; the latest took nothing of this time line.
    stored = [Coverage(v, None, None, None) for v in range(bases)]
    holds: list[frozenset[int]] = [NEVER] * (bases - 1) + [frozenset()]
    first = 0
    while first < len(whistles):
        size = data.draw(st.integers(min_value=1, max_value=len(whistles) - first))
        last = first + size - 1
        nxt = whistles[last + 1] if last + 1 < len(whistles) else None
        # The watermark when the version was stored: past its whistles, short of the next one
        # (every result behind the watermark is taken before the version is announced).
        complete: datetime | None = None
        if nxt is None or nxt > whistles[last]:
            room = 120 if nxt is None else (nxt - whistles[last]).total_seconds() / 60 - 1
            if data.draw(st.booleans()):
                complete = whistles[last] + timedelta(minutes=data.draw(st.integers(0, int(room))))
        stored.append(Coverage(len(stored), whistles[first], whistles[last], complete))
        holds.append(frozenset(range(last + 1)))
        first = last + 1
    truth = list(stored)
    # A version inside the time line stored without coverage (live, a rollback): it and every
    # version after it hold something off the time line.
    inside = st.integers(min_value=bases + 1, max_value=len(stored) - 1)
    lost = data.draw(st.none() | inside) if len(stored) > bases + 1 else None
    if lost is not None:
        stored[lost] = Coverage(lost, None, None, None)
        holds[lost:] = [NEVER] * (len(holds) - lost)
    pruned = data.draw(st.sets(st.integers(min_value=0, max_value=len(stored) - 1)))
    if lost is not None and pruned >= set(range(bases, lost)):
        # With every covered version before it pruned, a version without coverage cannot be
        # told from a base (rebuild_coverages says so): the registry keeps a running
        # backfill's versions (they are younger than the retention age).
        pruned.discard(bases)
    kept = [c for c in stored if c.version not in pruned]
    rebuilt = rebuild_coverages(kept)
    assert [c.version for c in rebuilt] == [c.version for c in kept]
    kickoffs = sorted({w + timedelta(minutes=d) for w in whistles for d in (-15, 0, 15)})
    for kickoff in kickoffs:
        choice = choose_version(rebuilt, kickoff)
        if choice.outcome == "ready":
            assert choice.version is not None
            known = frozenset(m for m, w in enumerate(whistles) if known_at(w, kickoff))
            assert holds[choice.version] == known, (kickoff, choice, rebuilt)
    if lost is None and not pruned:
        assert rebuilt == truth
