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
    HISTORY,
    LeagueBook,
    add_fixture,
    add_result,
    apply_input,
    current_state,
    decode_book,
    encode_book,
    features_as_of,
    league_input,
)
from agents.testing import InMemoryRuntime, MemoryTable
from models.features import RESULT_DELAY, FeatureBuilder, build_events, fixture_of, result_event
from schemas.codec import encode
from schemas.events import Fixture, MatchFeatures, MatchResult
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


def feed(book: LeagueBook, facts: Iterable[Fact]) -> dict[str, MatchFeatures]:
    """The features the book issues for the facts, by match (the last issued for each)."""
    issued: dict[str, MatchFeatures] = {}
    for fact in facts:
        outcome = apply_input(book, league_input(fact), now=NOW)
        assert outcome.issue is None, outcome.issue
        if outcome.features is not None:
            issued[outcome.features.match_id] = outcome.features
    return issued


def offline(rows: Iterable[FootballRow]) -> dict[str, MatchFeatures]:
    return {features.match_id: features for features, _ in build_events(rows)}


def assert_equal_features(got: dict[str, MatchFeatures], want: dict[str, MatchFeatures]) -> None:
    assert got.keys() == want.keys()
    for match_id, features in want.items():
        other = got[match_id]
        assert msgspec.structs.replace(other, features={}) == msgspec.structs.replace(
            features, features={}
        )
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
    outcome = add_fixture(book, fixture_of(late))
    assert outcome.features is not None
    assert outcome.features == offline(rows)[late.match_id]


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
    outcome = add_fixture(book, fixture_of(first))
    assert outcome.features is None
    assert outcome.issue is not None
    assert outcome.issue.field == "kickoff"
    assert "cannot compute these features as of kickoff" in outcome.issue.rule
    assert encode_book(book) == before
    assert rest


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
    outcome = add_result(book, _corrected(result_event(target)), now=NOW)
    assert outcome.kind == "corrected"
    assert add_result(book, _corrected(result_event(target)), now=NOW).kind == "duplicate"
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
    assert add_result(book, old, now=NOW).kind == "duplicate"
    refused = add_result(book, _corrected(old), now=NOW)
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
    outcome = add_result(book, result, now=NOW)
    assert not outcome.changed
    assert outcome.note is not None
    assert "before its final whistle" in outcome.note
    assert book.open == {}


def test_the_book_stays_bounded() -> None:
    """Open facts stay within the kept history of the latest result; settled scores within
    two seasons."""
    rows = [row for row in _epl() if row.season in ("2010-2011", "2011-2012", "2012-2013")]
    book = LeagueBook.new(EPL)
    feed(book, in_event_time(rows))
    assert book.clock is not None
    assert all(m.key()[0] > book.clock - HISTORY for m in book.open.values())
    assert {s.season for s in book.settled.values()} <= {"2011-2012", "2012-2013"}
    assert len(encode_book(book)) < 200_000


# The agents, through the in-memory runtime.


def _runtime() -> InMemoryRuntime:
    settings = Settings()
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
        features_agent.ROUTER, lambda batch: features_agent.route_batch(runtime, batch), events
    )
    published = [(t, k, r) for t, k, r in runtime.published if t == topics.league_inputs]
    assert [r for _, _, r in published] == [league_input(f) for f in facts]
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
        events = rt.events(*[(topics.league_inputs, league_input(f)) for f in batch])
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
        *[(topics.league_inputs, league_input(f)) for f in [*facts, fixture_of(rows[0])]]
    )
    await features_agent.features_batch(runtime, table, events, now=NOW)
    assert rows[0].match_id not in {f.match_id for f in runtime.on(topics.features)}  # type: ignore[attr-defined]
    (letter,) = runtime.dead_letters
    assert letter.source_topic == topics.league_inputs
    assert letter.agent == features_agent.AGENT
    assert "as of kickoff" in letter.error.rule
    assert base64.b64decode(letter.payload_b64) == encode(league_input(fixture_of(rows[0])))


def test_features_show_reads_the_changelog_of_the_deployments_own_group() -> None:
    """``tipstream features show`` reads the league books of the app id the worker uses,
    derived from the topic prefix when ``TIPSTREAM_APP_ID`` is unset."""
    from streams.cli.features import changelog_topic
    from streams.settings import Settings

    assert changelog_topic(Settings()) == "tipstream-league-books-changelog"
    assert changelog_topic(Settings(topic_prefix="staging")) == (
        "tipstream-staging-league-books-changelog"
    )
