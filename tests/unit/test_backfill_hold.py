"""The features agent's backfill hold: a backfill fixture is issued once, exactly when every
router source's mark has passed its kickoff, as of its kickoff, whatever the interleaving."""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.features_rules import (
    BackfillMarks,
    LeagueBook,
    apply_input,
    decode_book,
    decode_marks,
    encode_book,
    encode_marks,
    league_input,
    release_held,
    router_sources,
    source_of,
)
from models.features import RESULT_DELAY, build_events, fixture_of, result_event
from models.timeline import FIXTURE_LEAD
from schemas.events import Fixture, MatchFeatures, MatchResult
from schemas.football_csv import FootballRow, league_file, read_rows

EPL = "england-premier-league"
BACKFILL = "0123456789abcdef"
NOW = datetime.fromisoformat("2026-12-04T00:00:00+00:00")
Fact = Fixture | MatchResult


@cache
def _rows() -> tuple[FootballRow, ...]:
    """Two months of the Premier League (~80 matches; kickoffs on shared days and times)."""
    low, high = datetime(2012, 8, 1, tzinfo=UTC), datetime(2012, 10, 15, tzinfo=UTC)
    rows = read_rows([league_file(EPL)]).rows
    return tuple(r for r in rows if low <= r.kickoff < high)


@cache
def _offline() -> dict[str, MatchFeatures]:
    return {f.match_id: f for f, _ in build_events(_rows())}


def at(fact: Fact) -> datetime:
    """A fact's event time as the replay stamps it."""
    if isinstance(fact, Fixture):
        return fact.kickoff - FIXTURE_LEAD
    return fact.kickoff + RESULT_DELAY


@dataclass(frozen=True)
class Item:
    """One record a features agent reads: a fact of a source, or a tick of a source at ``at``."""

    source: str
    at: datetime
    fact: Fact | None = None


def source_streams(partitions: int, chunk: int) -> dict[str, list[Item]]:
    """What each router source (a partition of fixtures or results) delivers, in its own
    order: a replay's facts of its matches (partitioned by match id) in event-time order, and
    after every chunk of ``chunk`` facts and at the end, a tick at the chunk's last event time
    to every source."""
    facts: list[Fact] = [f for r in _rows() for f in (fixture_of(r), result_event(r))]
    facts.sort(key=lambda f: (at(f), isinstance(f, Fixture), f.match_id))
    sources = sorted(router_sources(partitions))
    streams: dict[str, list[Item]] = {s: [] for s in sources}
    for i, fact in enumerate(facts):
        partition = zlib.crc32(fact.match_id.encode()) % partitions
        source = source_of(isinstance(fact, Fixture), partition)
        streams[source].append(Item(source, at(fact), fact))
        if (i + 1) % chunk == 0 or i == len(facts) - 1:
            for s in sources:
                streams[s].append(Item(s, at(fact)))
    return streams


def interleave(streams: dict[str, list[Item]], rng: random.Random) -> list[Item]:
    """Every source's items, each source's in order, merged at random (how a router may read
    its partitions)."""
    queues = {s: list(items) for s, items in streams.items()}
    out: list[Item] = []
    while queues:
        source = rng.choice(sorted(queues))
        out.append(queues[source].pop(0))
        if not queues[source]:
            del queues[source]
    return out


def play(items: Sequence[Item], partitions: int, restart_at: int | None = None) -> list[Check]:
    """Feed the items to one league's book as the features agent does (marks of the
    partition, then a release); the checks of each step. ``restart_at``: from that item on, a
    book and marks decoded from their stored bytes (a restart)."""
    sources = router_sources(partitions)
    book, marks = LeagueBook.new(EPL), BackfillMarks()
    checks = []
    delivered: list[Fact] = []
    for i, item in enumerate(items):
        if i == restart_at:
            book = decode_book(encode_book(book))
            marks = decode_marks(encode_marks(marks))
        if item.fact is not None:
            routed = msgspec.structs.replace(
                league_input(item.fact, item.at, item.source), backfill=BACKFILL
            )
            outcome = apply_input(book, routed, now=NOW, sources=sources)
            assert outcome.issue is None, outcome.issue
            assert outcome.features == ()  # every fixture is a backfill's: held, never issued
            delivered.append(item.fact)
        marks.observe(BACKFILL, item.source, item.at, sources)
        through = marks.through(BACKFILL, sources)
        released = release_held(book, BACKFILL, through) if through is not None else ()
        checks.append(Check(through, released, tuple(delivered), book_kickoffs(book)))
    return checks


def book_kickoffs(book: LeagueBook) -> tuple[datetime, ...]:
    """The kickoffs of the fixtures the book still holds."""
    return tuple(
        e.fixture.kickoff
        for e in book.open.values()
        if e.fixture is not None and e.held_at is not None
    )


@dataclass(frozen=True)
class Check:
    through: datetime | None
    released: tuple[MatchFeatures, ...]
    delivered: tuple[Fact, ...]
    held: tuple[datetime, ...]


def assert_exact(checks: Sequence[Check]) -> None:
    """Each match issued once, when its kickoff was behind the mark and every result known at
    it delivered, with the offline builder's features; nothing held the mark has passed."""
    issued: dict[str, MatchFeatures] = {}
    for check in checks:
        for features in check.released:
            assert features.match_id not in issued, "issued twice"
            issued[features.match_id] = features
            assert check.through is not None
            assert features.kickoff < check.through
            known = {
                f.match_id
                for f in check.delivered
                if isinstance(f, MatchResult) and f.kickoff + RESULT_DELAY <= features.kickoff
            }
            due = {r.match_id for r in _rows() if r.kickoff + RESULT_DELAY <= features.kickoff}
            assert known == due, "released before every result known at kickoff arrived"
            assert features.backfill == BACKFILL
            assert features.revision == 0
            assert features.issued_at == features.kickoff - FIXTURE_LEAD
        if check.through is not None:
            assert all(kickoff >= check.through for kickoff in check.held)
    want = _offline()
    assert issued.keys() == want.keys()
    for match_id, features in want.items():
        got = msgspec.structs.replace(issued[match_id], issued_at=None, backfill=None)
        assert got == msgspec.structs.replace(features, features=got.features)
        for name, value in features.features.items():
            assert got.features[name] == pytest.approx(value, abs=1e-9), (match_id, name)


@settings(max_examples=25, deadline=None)
@given(
    partitions=st.integers(1, 3),
    chunk=st.sampled_from([1, 7, 40, 500]),
    seed=st.integers(0, 2**32 - 1),
    restart=st.floats(0.0, 1.0) | st.none(),
)
def test_a_held_fixture_is_released_once_exactly_when_every_mark_passes_its_kickoff(
    partitions: int, chunk: int, seed: int, restart: float | None
) -> None:
    """Whatever the partitions, chunk size and interleaving of the sources (and a restart
    anywhere: the book and the marks from their stored bytes), every fixture is held until
    the minimum source mark is past its kickoff, released then (never later than the step
    that passes it, never before), once, with the offline builder's features as of kickoff."""
    items = interleave(source_streams(partitions, chunk), random.Random(seed))
    restart_at = None if restart is None else int(restart * len(items))
    checks = play(items, partitions, restart_at)
    assert_exact(checks)


def test_without_a_tick_from_every_source_nothing_is_released() -> None:
    """A source that has said nothing (an idle partition before the first tick) holds every
    fixture: the mark is unknown, not the others' minimum."""
    streams = source_streams(2, 10_000)
    silent = sorted(streams)[0]
    items = [item for s, its in streams.items() if s != silent for item in its]
    checks = play(items, 2)
    assert all(check.released == () for check in checks)
    assert checks[-1].through is None


def test_another_backfills_marks_release_nothing() -> None:
    """Marks are per backfill: a later replay's ticks do not release this one's fixtures."""
    sources = router_sources(1)
    book, marks = LeagueBook.new(EPL), BackfillMarks()
    fixture = fixture_of(_rows()[0])
    routed = msgspec.structs.replace(
        league_input(fixture, at(fixture), "fixtures:0"), backfill=BACKFILL
    )
    assert apply_input(book, routed, now=NOW, sources=sources).kind == "held"
    later = fixture.kickoff + RESULT_DELAY
    for source in sources:
        marks.observe("another", source, later, sources)
    assert marks.through(BACKFILL, sources) is None
    assert book_kickoffs(book) == (fixture.kickoff,)
    assert release_held(book, BACKFILL, later)[0].match_id == fixture.match_id
    assert book_kickoffs(book) == ()
    assert release_held(book, BACKFILL, later) == ()


def test_a_tick_of_an_unknown_source_is_ignored() -> None:
    """A tick naming a partition the router does not have (another partition count) raises
    no mark."""
    sources = router_sources(1)
    marks = BackfillMarks()
    assert not marks.observe(BACKFILL, "fixtures:7", NOW, sources)
    assert marks.through(BACKFILL, sources) is None


def test_a_mark_at_the_kickoff_does_not_release_it() -> None:
    """Strictly past: with every mark at a kickoff K, a result whose final whistle is K may
    still come (two matches ended at K, a chunk's tick between their results), so the fixture
    kicking off at K waits for it, and is then issued with both learned."""
    sources = router_sources(1)
    a, b, c = _rows()[:3]
    whistle = a.kickoff + RESULT_DELAY
    b = dataclasses.replace(b, kickoff=a.kickoff)
    c = dataclasses.replace(c, kickoff=whistle)
    book, marks = LeagueBook.new(EPL), BackfillMarks()

    def deliver(fact: Fact, source: str) -> None:
        routed = league_input(fact, at(fact), source)
        outcome = apply_input(
            book, msgspec.structs.replace(routed, backfill=BACKFILL), now=NOW, sources=sources
        )
        assert outcome.issue is None
        marks.observe(BACKFILL, source, at(fact), sources)

    for row in (a, b, c):
        deliver(fixture_of(row), "fixtures:0")
    deliver(result_event(a), "results:0")
    for source in sources:  # the chunk ends with a's result: a tick at K
        marks.observe(BACKFILL, source, whistle, sources)
    assert marks.through(BACKFILL, sources) == whistle
    assert [f.match_id for f in release_held(book, BACKFILL, whistle)] == [a.match_id, b.match_id]
    deliver(result_event(b), "results:0")
    released = release_held(book, BACKFILL, whistle + RESULT_DELAY)
    assert [f.match_id for f in released] == [c.match_id]
    want = {f.match_id: f for f, _ in build_events([a, b, c])}[c.match_id]
    assert released[0].features == pytest.approx(want.features)
