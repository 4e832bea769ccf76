"""The features agent: its league books equal the offline builder, leak-free, corrections exact,
late facts refused with the reason; the agent and the league router through InMemoryRuntime."""

from __future__ import annotations

import base64
import dataclasses
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import msgspec
import pytest

from agents import features as features_agent
from agents.features_rules import (
    EVENT_TIME_HEADER,
    HISTORY,
    Idleness,
    LeagueBook,
    OpenMatch,
    add_fixture,
    add_result,
    apply_input,
    current_state,
    decode_book,
    encode_book,
    event_time,
    features_as_of,
    is_idle,
    league_input,
    low_watermark,
    router_sources,
    source_of,
)
from agents.testing import Event, InMemoryRuntime, MemoryTable, Message
from models.features import RESULT_DELAY, FeatureBuilder, build_events, fixture_of, result_event
from models.timeline import FIXTURE_LEAD
from schemas.codec import encode
from schemas.events import Fixture, LeagueInput, MatchFeatures, MatchResult, ValidationIssue
from schemas.football_csv import FootballRow, league_file, read_rows
from streams.settings import Settings
from streams.topics import Topics

NOW = datetime.now(UTC)
EPL = "england-premier-league"
Fact = Fixture | MatchResult


@cache
def _epl() -> tuple[FootballRow, ...]:
    return tuple(read_rows([league_file(EPL)]).rows)


def _between(start: str, end: str) -> list[FootballRow]:
    low, high = datetime.fromisoformat(start), datetime.fromisoformat(end)
    return [row for row in _epl() if low <= row.kickoff.replace(tzinfo=None) < high]


def in_event_time(rows: Iterable[FootballRow]) -> list[Fact]:
    """Every fixture at its kickoff and every result at its final whistle, in that order (a
    result known at a kickoff comes before the fixture)."""
    timed: list[tuple[tuple[datetime, int, str], Fact]] = []
    for row in rows:
        timed.append(((row.kickoff, 1, row.match_id), fixture_of(row)))
        timed.append(((row.kickoff + RESULT_DELAY, 0, row.match_id), result_event(row)))
    timed.sort(key=lambda item: item[0])
    return [fact for _, fact in timed]


def at(fact: Fact) -> datetime:
    """A fact's event time as a replay stamps it: a fixture just before kickoff, a result at
    the final whistle."""
    if isinstance(fact, Fixture):
        return fact.kickoff - FIXTURE_LEAD
    return fact.kickoff + RESULT_DELAY


SOURCES = router_sources(1)
"""The router's inputs in these tests: partition 0 of fixtures and of results."""


def routed(fact: Fact) -> LeagueInput:
    return league_input(fact, at(fact), source_of(isinstance(fact, Fixture), 0))


def feed(book: LeagueBook, facts: Iterable[Fact]) -> dict[str, MatchFeatures]:
    """The features the book issues for the facts, by match (the last issued for each)."""
    issued: dict[str, MatchFeatures] = {}
    for fact in facts:
        outcome = apply_input(book, routed(fact), now=NOW, sources=SOURCES)
        assert outcome.issue is None, outcome.issue
        for features in outcome.features:
            issued[features.match_id] = features
    return issued


def offline(rows: Iterable[FootballRow]) -> dict[str, MatchFeatures]:
    return {features.match_id: features for features, _ in build_events(rows)}


def unstamped(match: MatchFeatures, **changes: object) -> MatchFeatures:
    """The features without the agent's issue stamp (the offline builder has none)."""
    return msgspec.structs.replace(match, issued_at=None, revision=0, **changes)


def assert_equal_features(got: dict[str, MatchFeatures], want: dict[str, MatchFeatures]) -> None:
    assert got.keys() == want.keys()
    for match_id, features in want.items():
        other = got[match_id]
        assert unstamped(other, features={}) == unstamped(features, features={})
        for name, value in features.features.items():
            assert other.features[name] == pytest.approx(value, abs=1e-9), (match_id, name)


def test_league_book_equals_the_offline_builder_over_a_whole_league() -> None:
    """Fed the Premier League's fixtures and results in event-time order, the book issues for
    every match the features build_events gives it (to 1e-9), across every season; a book
    stored and restored on the way (as after a restart) changes nothing."""
    rows = list(_epl())
    book = LeagueBook.new(EPL)
    issued: dict[str, MatchFeatures] = {}
    for i, fact in enumerate(in_event_time(rows)):
        if i % 500 == 0:
            book = decode_book(encode_book(book))
        issued |= feed(book, [fact])
    assert len(issued) == len(rows) > 5000
    assert_equal_features(issued, offline(rows))
    assert book.checkpoint.applied > len(rows) - 200  # settled as it went: a bounded book
    assert len(book.open) < 200


def test_arrival_order_changes_no_state() -> None:
    """Whatever order three weeks' facts (within the kept history) arrive in, the book then
    computes every fixture's features as the offline builder does, and its current state is
    the same."""
    rows = _between("2012-09-01", "2012-09-22")
    want = offline(rows)
    states = []
    for seed in range(3):
        facts = in_event_time(rows)
        random.Random(seed).shuffle(facts)
        book = LeagueBook.new(EPL)
        feed(book, facts)
        got = {row.match_id: features_as_of(book, fixture_of(row)) for row in rows}
        assert_equal_features(got, want)
        states.append(msgspec.json.encode(current_state(book)))
    assert len(set(states)) == 1


def test_a_fixture_never_sees_a_result_from_after_its_kickoff() -> None:
    """A fixture that arrives after later results (within the kept history) gets exactly the
    features it gets when it arrives first: computed as of its kickoff."""
    rows = _between("2013-01-01", "2013-02-01")
    late = rows[len(rows) // 2]
    facts = [
        f for f in in_event_time(rows) if not (isinstance(f, Fixture) and f == fixture_of(late))
    ]
    book = LeagueBook.new(EPL)
    feed(book, facts)
    outcome = add_fixture(book, fixture_of(late), at=NOW)
    features, *reissued = outcome.features
    want = offline(rows)
    assert unstamped(features) == want[late.match_id]
    assert features.issued_at == NOW
    # Its result was known: the match is learned now, and every later fixture is re-issued
    # with it (what the offline builder, which had it all along, gives them).
    assert reissued
    assert all(f.kickoff >= late.kickoff + RESULT_DELAY for f in reissued)
    assert_equal_features(
        {f.match_id: f for f in reissued}, {f.match_id: want[f.match_id] for f in reissued}
    )


def test_a_fixture_older_than_the_kept_history_is_refused_with_the_reason() -> None:
    """A fixture whose kickoff is before what the book has settled is dead-lettered (it cannot
    be computed as of kickoff), and the book is not changed."""
    rows = _between("2013-01-01", "2013-04-01")
    first, rest = rows[0], rows[1:]
    book = LeagueBook.new(EPL)
    feed(book, [f for f in in_event_time(rows) if f != fixture_of(first)])
    assert book.settled_until is not None
    assert book.settled_until > first.kickoff
    before = encode_book(book)
    outcome = add_fixture(book, fixture_of(first), at=NOW)
    assert outcome.features == ()
    assert outcome.issue is not None
    assert outcome.issue.field == "kickoff"
    assert "cannot compute these features as of kickoff" in outcome.issue.rule
    assert encode_book(book) == before
    assert rest


def test_an_open_fixture_again_is_unchanged_even_once_its_kickoff_is_settled_past() -> None:
    """``settled_until`` is a horizon of final whistles: a match kicked off before it can still
    be open (its whistle after it). The same fixture again (a replay run twice) is a
    re-delivery, not a late fixture: nothing issued, nothing dead-lettered, the book unchanged.
    Seen in ``make chaos`` scenario 5 (replay twice): one valid fixture dead-lettered."""
    book = LeagueBook.new(EPL)
    found = None
    for fact in in_event_time(_between("2013-01-01", "2013-06-01")):
        outcome = apply_input(book, routed(fact), now=NOW, sources=SOURCES)
        assert outcome.issue is None, outcome.issue
        settled = book.settled_until
        found = next(
            (
                entry.fixture
                for entry in book.open.values()
                if entry.fixture is not None
                and settled is not None
                and entry.fixture.kickoff < settled
            ),
            None,
        )
        if found is not None:
            break
    assert found is not None, "no open match kicked off before settled_until in the window"
    before = encode_book(book)
    again = apply_input(book, routed(found), now=NOW, sources=SOURCES)
    assert (again.issue, again.features, again.kind) == (None, (), "unchanged")
    assert encode_book(book) == before


def _corrected(result: MatchResult) -> MatchResult:
    home = result.home_goals + 2
    return msgspec.structs.replace(
        result,
        home_goals=home,
        outcome="H" if home > result.away_goals else "D",
        half_time_home_goals=None,
        half_time_away_goals=None,
    )


def test_a_corrected_result_leaves_the_ratings_as_if_only_it_was_played() -> None:
    """A correction within the kept history: every later fixture's features, and the state,
    equal the offline builder's over the history with only the corrected score."""
    rows = _between("2014-03-01", "2014-03-22")
    target = rows[3]
    corrected_row = dataclasses.replace(
        target,
        home_goals=target.home_goals + 2,
        half_time_home_goals=None,
        half_time_away_goals=None,
    )
    book = LeagueBook.new(EPL)
    facts = in_event_time(rows)
    feed(book, facts)
    outcome = add_result(book, _corrected(result_event(target)), now=NOW, at=NOW)
    assert outcome.kind == "corrected"
    assert add_result(book, _corrected(result_event(target)), now=NOW, at=NOW).kind == "duplicate"
    fixed = [corrected_row if row is target else row for row in rows]
    want = offline(fixed)
    got = {row.match_id: features_as_of(book, fixture_of(row)) for row in rows}
    assert_equal_features(got, want)
    builder = FeatureBuilder()
    list(build_events(fixed, builder))
    assert msgspec.to_builtins(current_state(book)) == msgspec.to_builtins(builder.leagues[EPL])


def test_a_correction_of_a_settled_match_is_refused_and_a_duplicate_ignored() -> None:
    """Past the kept history a correction is not learned, with the reason (the ratings keep the
    first score); the same result again is a duplicate, and neither changes the book."""
    rows = _between("2014-01-01", "2014-05-01")
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(rows))
    old = result_event(rows[0])
    assert old.match_id in book.settled
    before = encode_book(book)
    assert add_result(book, old, now=NOW, at=NOW).kind == "duplicate"
    refused = add_result(book, _corrected(old), now=NOW, at=NOW)
    assert refused.issue is None
    assert refused.kind == "late_correction"
    assert refused.note is not None
    assert "ratings keep the first score" in refused.note
    assert encode_book(book) == before


def test_a_result_before_its_final_whistle_is_refused() -> None:
    """A result whose final whistle is still ahead of the wall clock cannot be true: not
    learned, with the reason."""
    row = _epl()[0]
    early = NOW - RESULT_DELAY + timedelta(minutes=30)
    result = msgspec.structs.replace(result_event(row), kickoff=early)
    book = LeagueBook.new(EPL)
    outcome = add_result(book, result, now=NOW, at=NOW)
    assert not outcome.changed
    assert outcome.note is not None
    assert "before its final whistle" in outcome.note
    assert book.open == {}


def test_the_book_stays_bounded() -> None:
    """Open facts stay within the kept history of the slower input (the latest result or the
    latest fixture); settled scores within two seasons."""
    rows = [row for row in _epl() if row.season in ("2010-2011", "2011-2012", "2012-2013")]
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(rows))
    assert book.clock is not None
    low = low_watermark(book, SOURCES)
    assert low is not None
    horizon = min(book.clock, low) - HISTORY
    assert all(m.key()[0] > horizon for m in book.open.values())
    assert {s.season for s in book.settled.values()} <= {"2011-2012", "2012-2013"}
    assert len(encode_book(book)) < 200_000


# The agents, through the in-memory runtime.


def _runtime() -> InMemoryRuntime:
    settings = Settings(partitions=1)
    return InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))


async def test_router_rekeys_by_league_in_order_and_dead_letters_bad_fixtures() -> None:
    """The router publishes every valid fact on league-inputs keyed by league, in the order
    taken; an invalid fixture is dead-lettered by it, an invalid result by its owner (the
    reconciler), not twice."""
    runtime = _runtime()
    topics = runtime.topics
    rows = _between("2012-09-01", "2012-09-20")
    facts = in_event_time(rows)
    events = runtime.events(
        *[(topics.fixtures if isinstance(f, Fixture) else topics.results, f) for f in facts],
        (topics.fixtures, b'{"match_id": "x"}'),
        (topics.results, b"not json"),
    )
    await runtime.drive(
        features_agent.ROUTER,
        lambda batch: features_agent.route_batch(runtime, batch, now=NOW),
        events,
    )
    published = [(t, k, r) for t, k, r in runtime.published if t == topics.league_inputs]
    assert [r for _, _, r in published] == [
        league_input(f, NOW, source_of(isinstance(f, Fixture), 0)) for f in facts
    ]
    assert {k for _, k, _ in published} == {EPL}
    assert [dl.source_topic for dl in runtime.dead_letters] == [topics.fixtures]


async def test_features_agent_publishes_the_offline_features_and_survives_a_restart() -> None:
    """Routed facts of a month give the offline builder's features on match-features; the book
    lives in the table, so a new agent on the same table (a restart) carries on alike; a
    re-delivered batch publishes the same features again and changes no book."""
    runtime = _runtime()
    topics = runtime.topics
    rows = _between("2012-09-01", "2012-10-01")
    facts = in_event_time(rows)
    table = MemoryTable()
    half = len(facts) // 2

    async def run(batch: Sequence[Fact], rt: InMemoryRuntime) -> None:
        events = rt.events(*[(topics.league_inputs, routed(f)) for f in batch])
        await rt.drive(
            features_agent.AGENT,
            lambda evs: features_agent.features_batch(rt, table, evs, now=NOW),
            events,
        )

    await run(facts[:half], runtime)
    stored = dict(table)
    restarted = _runtime()
    await run(facts[half:], restarted)
    issued = {f.match_id: f for f in runtime.on(topics.features) + restarted.on(topics.features)}
    assert all(isinstance(f, MatchFeatures) for f in issued.values())
    assert_equal_features(issued, offline(rows))  # type: ignore[arg-type]
    assert not runtime.dead_letters
    assert not restarted.dead_letters

    again = _runtime()
    before = dict(table)
    await run(facts[half:], again)
    assert again.on(topics.features) == []  # the same fixtures again: already issued
    assert table == before
    assert stored.keys() == {EPL.encode()}


async def test_features_agent_dead_letters_a_late_fixture_with_the_reason() -> None:
    """A fixture older than its league's kept history is on the dead-letter topic with the
    rule, its bytes kept; no features are published for it."""
    runtime = _runtime()
    topics = runtime.topics
    rows = _between("2013-01-01", "2013-04-01")
    facts = [f for f in in_event_time(rows) if f != fixture_of(rows[0])]
    table = MemoryTable()
    events = runtime.events(
        *[(topics.league_inputs, routed(f)) for f in [*facts, fixture_of(rows[0])]]
    )
    await features_agent.features_batch(runtime, table, events, now=NOW)
    assert rows[0].match_id not in {f.match_id for f in runtime.on(topics.features)}  # type: ignore[attr-defined]
    (letter,) = runtime.dead_letters
    assert letter.source_topic == topics.league_inputs
    assert letter.agent == features_agent.AGENT
    assert "as of kickoff" in letter.error.rule
    assert base64.b64decode(letter.payload_b64) == encode(routed(fixture_of(rows[0])))


def test_features_show_reads_the_changelog_of_the_deployments_own_group() -> None:
    """``tipstream features show`` reads the league books of the app id the worker uses,
    derived from the topic prefix when ``TIPSTREAM_APP_ID`` is unset."""
    from streams.cli.features import changelog_topic
    from streams.settings import Settings

    assert changelog_topic(Settings()) == "tipstream-league-books-changelog"
    assert changelog_topic(Settings(topic_prefix="staging")) == (
        "tipstream-staging-league-books-changelog"
    )


# Fixtures published early: re-issued as results come in (item 4 of the live path).


def _round(start: str, end: str) -> tuple[list[FootballRow], list[FootballRow]]:
    """The matches of a week (Saturday to Friday) and those of the week after."""
    this = _between(start, end)
    low = datetime.fromisoformat(end)
    following = _between(end, (low + timedelta(days=7)).isoformat())
    assert this
    assert following
    return this, following


def test_a_fixture_published_early_is_reissued_with_each_result_before_its_kickoff() -> None:
    """Next week's fixtures published before this week's results: each result re-issues
    every pending fixture it changes, with the next revision and a later issue time, and the
    last issue of each equals the offline builder's features (it includes those results)."""
    history = _between("2013-08-01", "2013-09-21")
    this, following = _round("2013-09-21", "2013-09-27")
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(history))
    early = this[0].kickoff - timedelta(days=3)
    issues: dict[str, list[MatchFeatures]] = {}
    for row in [*this, *following]:
        for features in add_fixture(book, fixture_of(row), at=early).features:
            issues.setdefault(features.match_id, []).append(features)
    for result in sorted((result_event(r) for r in this), key=lambda r: (r.kickoff, r.match_id)):
        outcome = add_result(book, result, now=NOW, at=result.kickoff + RESULT_DELAY)
        for features in outcome.features:
            issues.setdefault(features.match_id, []).append(features)
    want = offline([*history, *this, *following])
    # The offline builder also learns next week's early results before its later kickoffs;
    # the book was sent none: compare the matches that start before any of them ends.
    first_whistle = min(r.kickoff for r in following) + RESULT_DELAY
    comparable = [r for r in following if r.kickoff < first_whistle]
    assert comparable
    for row in following:
        issued = issues[row.match_id]
        assert [f.revision for f in issued] == list(range(len(issued)))
        assert len(issued) == len(this) + 1  # every result of the week came before its kickoff
        stamps = [f.issued_at for f in issued]
        assert all(s is not None for s in stamps)
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        if row in comparable:
            assert_equal_features({row.match_id: issued[-1]}, {row.match_id: want[row.match_id]})
    # The first issue did not know this week's results: it differs.
    first = issues[following[0].match_id][0]
    assert first.features != want[following[0].match_id].features


def test_a_result_reissues_only_the_fixtures_it_changes() -> None:
    """A result re-issues the open fixtures that kick off at or after its final whistle, played
    or not (their latest features must be exact), and none that kick off before it."""
    history = _between("2013-08-01", "2013-09-21")
    this, _ = _round("2013-09-21", "2013-09-27")
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(history))
    early = this[0].kickoff - timedelta(days=3)
    for row in this:
        add_fixture(book, fixture_of(row), at=early)
    # A match that others kick off alongside (before its final whistle), with later ones.
    first = next(
        r
        for r in sorted(this, key=lambda r: (r.kickoff, r.match_id))
        if sum(o.kickoff < r.kickoff + RESULT_DELAY for o in this) >= 2
        and sum(o.kickoff >= r.kickoff + RESULT_DELAY for o in this) >= 2
    )
    whistle = first.kickoff + RESULT_DELAY
    later = sorted((r for r in this if r.kickoff >= whistle), key=lambda r: r.kickoff)
    played = later[-1]
    add_result(book, result_event(played), now=NOW, at=played.kickoff + RESULT_DELAY)
    outcome = add_result(book, result_event(first), now=NOW, at=whistle)
    assert {f.match_id for f in outcome.features} == {r.match_id for r in later}
    assert all(f.revision == 1 for f in outcome.features)


def test_reissuing_in_one_pass_equals_features_as_of_each_kickoff() -> None:
    """The one-pass re-issue gives each fixture exactly ``features_as_of`` its kickoff."""
    history = _between("2014-08-01", "2014-09-20")
    this, following = _round("2014-09-20", "2014-09-26")
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(history))
    for row in following:
        add_fixture(book, fixture_of(row), at=NOW - timedelta(days=3650))
    for row in this:
        book.open.setdefault(row.match_id, OpenMatch()).fixture = fixture_of(row)
    for row in this[:-1]:
        book.open[row.match_id].result = result_event(row)
    last = result_event(this[-1])
    outcome = add_result(book, last, now=NOW, at=last.kickoff + RESULT_DELAY)
    assert outcome.features
    for features in outcome.features:
        fixture = book.open[features.match_id].fixture
        assert fixture is not None
        assert unstamped(features) == unstamped(features_as_of(book, fixture))


def test_results_running_ahead_of_fixtures_lose_nothing() -> None:
    """In a fast backfill one topic runs ahead of the other: two months of results before any
    of their fixtures. Nothing is refused or dropped, and every fixture gets the offline
    builder's features (settling waits for the slower input)."""
    rows = _between("2015-08-01", "2015-10-01")
    facts = in_event_time(rows)
    results = [f for f in facts if isinstance(f, MatchResult)]
    fixtures = [f for f in facts if isinstance(f, Fixture)]
    book = LeagueBook.new(EPL)
    issued = feed(book, [*results, *fixtures])
    assert_equal_features(issued, offline(rows))


def test_the_event_time_header() -> None:
    """A fact's event time is its header when it has one, else the router's clock; a header
    that is not an ISO time with an offset, or is ahead of the wall clock, is refused."""
    when = datetime(2015, 3, 1, 15, 0, tzinfo=UTC)
    assert event_time([(EVENT_TIME_HEADER, when.isoformat().encode())], now=NOW) == when
    assert event_time({EVENT_TIME_HEADER: b"2015-03-01T15:00:00Z"}, now=NOW) == when
    assert event_time(None, now=NOW) == NOW
    assert event_time([("other", b"x")], now=NOW) == NOW
    for raw, why in [
        (b"yesterday", "not an ISO 8601 time"),
        (b"2015-03-01T15:00:00", "needs a UTC offset"),
        ((NOW + timedelta(hours=1)).isoformat().encode(), "ahead of the wall clock"),
    ]:
        issue = event_time([(EVENT_TIME_HEADER, raw)], now=NOW)
        assert isinstance(issue, ValidationIssue)
        assert why in issue.rule
        assert issue.field == f"header {EVENT_TIME_HEADER}"


async def test_router_dead_letters_a_fact_with_a_bad_event_time_header() -> None:
    """A fixture whose event-time header is unusable is dead-lettered by the router with the
    reason, its bytes kept; the other facts are routed with their header's time."""
    runtime = _runtime()
    topics = runtime.topics
    good, bad = (fixture_of(row) for row in _between("2012-09-01", "2012-09-20")[:2])
    events = [
        Event(
            Message(
                topic=topics.fixtures,
                partition=0,
                offset=offset,
                key=fixture.match_id.encode(),
                value=encode(fixture),
                headers=((EVENT_TIME_HEADER, header),),
            )
        )
        for offset, (fixture, header) in enumerate(
            [(good, b"2012-09-01T14:59:00+00:00"), (bad, b"soon")]
        )
    ]
    await features_agent.route_batch(runtime, events, now=NOW)
    routed_inputs = runtime.on(topics.league_inputs)
    assert routed_inputs == [
        league_input(good, datetime(2012, 9, 1, 14, 59, tzinfo=UTC), "fixtures:0")
    ]
    (letter,) = runtime.dead_letters
    assert letter.agent == features_agent.ROUTER
    assert letter.error.field == f"header {EVENT_TIME_HEADER}"
    assert base64.b64decode(letter.payload_b64) == encode(bad)


def test_a_partition_running_behind_never_makes_its_fixtures_late() -> None:
    """In a fast backfill the router reads one partition weeks behind another: settling
    follows the slowest source, so a fixture of the lagging partition is still computed as
    of its kickoff (the offline builder's features), not refused."""
    rows = _between("2015-08-01", "2015-11-01")
    sources = router_sources(2)
    lagging = {row.match_id for row in rows[::2]}

    def on(fact: Fact) -> LeagueInput:
        partition = 1 if fact.match_id in lagging else 0
        return league_input(fact, at(fact), source_of(isinstance(fact, Fixture), partition))

    facts = in_event_time(rows)
    ahead = [f for f in facts if f.match_id not in lagging]
    behind = [f for f in facts if f.match_id in lagging]
    book = LeagueBook.new(EPL)
    issued: dict[str, MatchFeatures] = {}
    for fact in [*ahead, *behind]:  # one partition all read before the other
        outcome = apply_input(book, on(fact), now=NOW, sources=sources)
        assert outcome.issue is None, outcome.issue
        for features in outcome.features:
            issued[features.match_id] = features
    assert_equal_features(issued, offline(rows))
    assert book.settled_until is not None  # it did settle, once the slow source caught up


def _on_partition_zero(
    rows: Sequence[FootballRow], sources: frozenset[str], idle: Idleness
) -> tuple[LeagueBook, dict[str, MatchFeatures]]:
    """Every fact of ``rows`` through partition 0 only (a producer keying by league), one
    second of wall clock apart."""
    book = LeagueBook.new(EPL)
    issued: dict[str, MatchFeatures] = {}
    for step, fact in enumerate(in_event_time(rows)):
        item = league_input(fact, at(fact), source_of(isinstance(fact, Fixture), 0))
        now = NOW + timedelta(seconds=step)
        outcome = apply_input(book, item, now=now, sources=sources, idle=idle)
        assert outcome.issue is None, outcome.issue
        for features in outcome.features:
            issued[features.match_id] = features
    return book, issued


def test_a_league_on_one_partition_of_many_settles_once_the_others_are_idle() -> None:
    """With every fact on one of four partitions, the silent partitions are left out after the
    idle time: the book settles and stays bounded, and the features are still the offline
    builder's. Without the idle rule (an idle time longer than the feed) it never settles."""
    rows = [row for row in _epl() if row.season in ("2010-2011", "2011-2012", "2012-2013")]
    sources = router_sources(4)
    book, issued = _on_partition_zero(rows, sources, Idleness(after=timedelta(seconds=60)))
    assert_equal_features(issued, offline(rows))
    assert book.settled_until is not None
    assert len(encode_book(book)) < 200_000
    waiting, _ = _on_partition_zero(rows, sources, Idleness(after=timedelta(days=1)))
    assert waiting.settled_until is None
    assert len(encode_book(waiting)) > len(encode_book(book))


def test_a_silent_source_goes_idle_and_counts_again_once_it_delivers() -> None:
    """Silence counts from the book's first fact for a source never seen, from ``since`` when
    that is later (a restarted worker), and ends with the source's next fact."""
    first, second, third = in_event_time(_between("2015-08-08", "2015-08-09"))[:3]
    assert isinstance(first, Fixture)
    after = timedelta(seconds=60)
    silent = source_of(True, 1)
    book = LeagueBook.new(EPL)

    def deliver(fact: Fact, partition: int, seconds: int) -> None:
        item = league_input(fact, at(fact), source_of(isinstance(fact, Fixture), partition))
        now = NOW + timedelta(seconds=seconds)
        apply_input(book, item, now=now, sources=router_sources(2), idle=Idleness(after=after))

    deliver(first, 0, 0)
    deliver(second, 0, 30)
    assert not is_idle(book, silent, Idleness(after=after))
    deliver(third, 0, 61)
    assert is_idle(book, silent, Idleness(after=after))
    assert not is_idle(book, source_of(True, 0), Idleness(after=after))
    restarted = Idleness(after=after, since=NOW + timedelta(seconds=50))
    assert not is_idle(book, silent, restarted)
    deliver(first, 1, 62)
    assert not is_idle(book, silent, Idleness(after=after))
