"""Backfill ticks through the agents (in memory): the router carries the flag and forwards
ticks with their source, the features agent holds, releases once and forwards its mark, and
the scorer and the drift router skip ticks, counted, never dead-lettered."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from agents import features as features_agent
from agents.backfill_rules import marks_key
from agents.drift import route_batch as drift_route_batch
from agents.features_rules import league_input, router_sources, source_of
from agents.scorer import ActiveModels, score_batch
from agents.testing import Event, InMemoryRuntime, MemoryTable
from agents.tick_rules import BACKFILL_HEADER, TICK_HEADERS, backfill_of, is_tick
from models.features import RESULT_DELAY, build_events, fixture_of, result_event
from models.timeline import FIXTURE_LEAD
from schemas.events import Fixture, LeagueInput, MatchFeatures, MatchResult, Tick
from schemas.football_csv import FootballRow, league_file, read_rows
from streams.cli.replay import backfill_problem
from streams.settings import Settings
from streams.topics import Topics

EPL = "england-premier-league"
BACKFILL = "feedc0ffee123456"
NOW = datetime(2026, 12, 4, tzinfo=UTC)
Fact = Fixture | MatchResult


def _runtime() -> InMemoryRuntime:
    settings = Settings(partitions=1)
    return InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))


def _rows() -> list[FootballRow]:
    low, high = datetime(2012, 9, 1, tzinfo=UTC), datetime(2012, 10, 1, tzinfo=UTC)
    return [r for r in read_rows([league_file(EPL)]).rows if low <= r.kickoff < high]


def _at(fact: Fact) -> datetime:
    return fact.kickoff - FIXTURE_LEAD if isinstance(fact, Fixture) else fact.kickoff + RESULT_DELAY


def _facts(rows: Sequence[FootballRow]) -> list[Fact]:
    facts: list[Fact] = [f for r in rows for f in (fixture_of(r), result_event(r))]
    return sorted(facts, key=lambda f: (_at(f), isinstance(f, Fixture), f.match_id))


def _routed(fact: Fact) -> LeagueInput:
    source = source_of(isinstance(fact, Fixture), 0)
    return league_input(fact, _at(fact), source, backfill=BACKFILL)


def _ticks(at: datetime) -> list[Tick]:
    return [Tick(event_time=at, backfill=BACKFILL, source=s) for s in sorted(router_sources(1))]


def test_ticks_and_backfill_facts_are_told_apart_by_their_headers() -> None:
    """A tick by its record header, a backfill fact by its replay id; a bad id is refused."""
    rt = _runtime()
    (tick,) = rt.events((rt.topics.fixtures, Tick(event_time=NOW, backfill=BACKFILL)))
    assert is_tick(tick.message)
    assert tick.message.headers == TICK_HEADERS
    assert backfill_of([(BACKFILL_HEADER, BACKFILL.encode())]) == BACKFILL
    assert backfill_of(None) is None
    refused = backfill_of({BACKFILL_HEADER: b"no spaces allowed"})
    assert not isinstance(refused, str)
    assert refused is not None
    assert refused.field == f"header {BACKFILL_HEADER}"


async def test_the_router_carries_the_flag_and_forwards_each_sources_latest_tick() -> None:
    """Backfill facts go to league-inputs with their replay id; the latest tick of each
    input partition goes to every league-inputs partition, after the facts, named by its
    source; a malformed tick is counted and dropped, never dead-lettered."""
    rt = _runtime()
    topics = rt.topics
    fixture, result = fixture_of(_rows()[0]), result_event(_rows()[0])
    headers = ((BACKFILL_HEADER, BACKFILL.encode()),)
    events = [
        *rt.events((topics.fixtures, fixture), (topics.results, result), headers=headers),
        *rt.events(
            (topics.fixtures, Tick(event_time=_at(fixture), backfill=BACKFILL)),
            (topics.fixtures, Tick(event_time=_at(result), backfill=BACKFILL)),
            (topics.results, Tick(event_time=_at(result), backfill=BACKFILL)),
        ),
    ]
    (bad,) = rt.events((topics.results, b'{"record": "tick"}'))
    events.append(Event(dataclasses.replace(bad.message, headers=TICK_HEADERS)))
    await features_agent.route_batch(rt, events, now=NOW)
    routed = rt.on(topics.league_inputs)
    assert [r.backfill for r in routed if isinstance(r, LeagueInput)] == [BACKFILL, BACKFILL]
    assert rt.ticks == [
        (topics.league_inputs, Tick(event_time=_at(result), backfill=BACKFILL, source=s))
        for s in ("fixtures:0", "results:0")
    ]
    assert rt.dead_letters == []
    assert rt.counters[f"ticks:{features_agent.ROUTER}"] == 4
    assert rt.counters[f"ticks_refused:{features_agent.ROUTER}"] == 1


async def _feed(
    rt: InMemoryRuntime,
    table: MemoryTable,
    items: Sequence[LeagueInput | Tick],
    kept: features_agent.KeptBooks | None = None,
) -> None:
    events = rt.events(*[(rt.topics.league_inputs, item) for item in items])
    await rt.drive(
        features_agent.AGENT,
        lambda batch: features_agent.features_batch(rt, table, batch, now=NOW, kept=kept),
        events,
    )


async def test_the_features_agent_holds_releases_once_and_forwards_its_mark() -> None:
    """A month of backfill facts in batches, with ticks after each, and a restart (a new
    agent on the same table) half-way: every match's features are issued once, only once the
    partition's mark is past its kickoff, flagged, equal to the offline builder's; the
    agent forwards its mark to match-features as ``league-inputs:0``; the marks are in the
    table under the partition's own key."""
    rows = _rows()
    facts = _facts(rows)
    table = MemoryTable()
    chunks = [facts[i : i + 25] for i in range(0, len(facts), 25)]
    issued: list[MatchFeatures] = []
    forwarded: list[Tick] = []
    kept = features_agent.KeptBooks()
    for n, chunk in enumerate(chunks):
        rt = _runtime()  # a fresh runtime per batch: half-way, a fresh agent too
        if n == len(chunks) // 2:
            kept = features_agent.KeptBooks()
        await _feed(rt, table, [*(_routed(f) for f in chunk), *_ticks(_at(chunk[-1]))], kept)
        new = [f for f in rt.on(rt.topics.features) if isinstance(f, MatchFeatures)]
        for features in new:
            assert features.kickoff < _at(chunk[-1])  # released only once the mark passed
        issued.extend(new)
        forwarded.extend(tick for _, tick in rt.ticks)
        assert rt.dead_letters == []
    assert len(issued) == len({f.match_id for f in issued}) == len(rows)
    want = {f.match_id: f for f, _ in build_events(rows)}
    for features in issued:
        assert features.backfill == BACKFILL
        assert features.revision == 0
        assert features.features == pytest.approx(want[features.match_id].features, abs=1e-9)
    assert [t.source for t in forwarded] == ["league-inputs:0"] * len(chunks)
    assert [t.event_time for t in forwarded] == [_at(c[-1]) for c in chunks]
    assert marks_key(0, lambda _key: 0) in table


async def test_live_fixtures_are_issued_at_once_and_ticks_never_release_them_again() -> None:
    """A fixture without the backfill flag is issued as today (at once, re-issued by the
    results before its kickoff); a tick changes nothing of it."""
    rows = _rows()[:12]
    table = MemoryTable()
    rt = _runtime()
    live = [league_input(f, _at(f), source_of(isinstance(f, Fixture), 0)) for f in _facts(rows)]
    await _feed(rt, table, live)
    issued = rt.on(rt.topics.features)
    assert {f.match_id for f in issued if isinstance(f, MatchFeatures)} == {
        r.match_id for r in rows
    }
    assert all(isinstance(f, MatchFeatures) and f.backfill is None for f in issued)
    after = _runtime()
    await _feed(after, table, _ticks(_at(_facts(rows)[-1])))
    assert after.on(after.topics.features) == []


async def test_the_scorer_and_drift_router_skip_ticks() -> None:
    """Ticks on match-features are skipped by the readers that keep no event-time line:
    counted in ``ticks:<agent>``, no dead letter, no prediction, nothing stored or
    republished (the reconciler forwards them: ``tests/unit/test_learn_feed.py``)."""
    rt = _runtime()
    topics = rt.topics
    tick = Tick(event_time=NOW, backfill=BACKFILL, source="league-inputs:0")
    active = ActiveModels()
    active.loaded.set()
    await rt.drive(
        "scorer", lambda b: score_batch(rt, active, b), rt.events((topics.features, tick))
    )
    await rt.drive(
        "drift-router", lambda b: drift_route_batch(rt, b), rt.events((topics.features, tick))
    )
    assert rt.dead_letters == []
    assert rt.published == []
    assert rt.db.committed == []
    assert rt.counters["ticks:scorer"] == 1
    assert rt.counters["ticks:drift-router"] == 1
    assert rt.counters["faults:scorer"] == rt.counters["faults:drift-router"] == 0


def test_backfill_refuses_the_options_it_contradicts() -> None:
    """``--backfill`` goes at full speed from CSV facts: with ``--sync``, ``--rate``,
    ``--speed`` or ``--from-db`` the command line is refused, naming them."""
    plain = argparse.Namespace(backfill=True, sync=False, from_db=False, rate=None, speed=None)
    assert backfill_problem(plain) is None
    assert backfill_problem(argparse.Namespace(**{**vars(plain), "backfill": False})) is None
    clash = argparse.Namespace(**{**vars(plain), "sync": True, "rate": 5.0})
    problem = backfill_problem(clash)
    assert problem is not None
    assert problem.endswith("drop --sync, --rate")


async def test_a_tick_the_router_did_not_name_is_refused_not_dead_lettered() -> None:
    """On league-inputs, a tick without a source (not forwarded by the router) or with one the
    router does not have raises no mark: counted as refused, nothing published or stored."""
    rt, table = _runtime(), MemoryTable()
    await _feed(
        rt,
        table,
        [
            Tick(event_time=NOW, backfill=BACKFILL),
            Tick(event_time=NOW, backfill=BACKFILL, source="fixtures:9"),
        ],
    )
    assert rt.counters[f"ticks_refused:{features_agent.AGENT}"] == 2
    assert rt.ticks == []
    assert rt.dead_letters == []
    assert dict(table) == {}


async def test_the_router_dead_letters_a_fact_with_a_malformed_backfill_header() -> None:
    """A fact whose replay id is not an identifier is refused by the router with the header
    named (as a malformed event time is), not routed."""
    rt = _runtime()
    headers = ((BACKFILL_HEADER, b"not an id"),)
    events = rt.events((rt.topics.fixtures, fixture_of(_rows()[0])), headers=headers)
    await features_agent.route_batch(rt, events, now=NOW)
    assert rt.on(rt.topics.league_inputs) == []
    (letter,) = rt.dead_letters
    assert letter.error.field == f"header {BACKFILL_HEADER}"
    assert letter.agent == features_agent.ROUTER
