"""The features agent on the real broker: producers send fixtures and results only, the
service publishes the offline builder's features, and a killed worker changes none of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from agents.features_rules import current_teams
from models.features import RESULT_DELAY, FeatureBuilder, build_events, fixture_of, result_event
from schemas.codec import decode
from schemas.events import MatchFeatures
from schemas.football_csv import FootballRow, league_file, read_rows
from streams.settings import Settings
from streams.topics import Topics
from tests.deployment import free_port
from tests.integration.conftest import Worker, publish_facts, read_topic, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, cli, count

pytestmark = pytest.mark.integration

EPL = "england-premier-league"


SATURDAY = datetime(2015, 9, 12, tzinfo=UTC)
WEEK = timedelta(days=7)
NEXT_SATURDAY = SATURDAY + WEEK
SEPTEMBER = datetime(2015, 9, 1, tzinfo=UTC)


def month_rows() -> list[FootballRow]:
    rows = read_rows([league_file(EPL)]).rows
    low, high = datetime(2015, 9, 1, tzinfo=UTC), datetime(2015, 10, 1, tzinfo=UTC)
    return [row for row in rows if low <= row.kickoff < high]


async def routed(topic: str) -> int:
    return len(await read_topic(topic))


async def test_fixtures_and_results_become_the_offline_features_across_a_kill(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """A month of one league as a producer sends it (each fixture before its kickoff, each
    result after its final whistle): the service publishes for every match exactly the features
    build_events gives it (to 1e-9), every seeded model scores them, a SIGKILL of the worker
    half-way and a second worker joining later (a rebalance) change no feature (the league
    books come back from their changelog), and
    `tipstream features show` prints the offline builder's final ratings."""
    topics = Topics.from_settings(settings)
    rows = month_rows()
    kickoffs = sorted({row.kickoff for row in rows})
    worker = start_worker()
    published = 0
    unpublished = sorted(rows, key=lambda row: row.kickoff)
    for step, kickoff in enumerate(kickoffs):
        if step == len(kickoffs) // 2:
            await asyncio.sleep(2.0)  # let the changelog and the offsets be committed
            worker.kill()
            worker.start()
        if step == 3 * len(kickoffs) // 4:  # a second worker: the leagues' books move
            start_worker(TIPSTREAM_WEB_PORT=str(free_port()))
        # The results known by this kickoff, routed before its fixtures are published (the
        # router reads two topics: a result sent first is not necessarily routed first).
        done = [r for r in unpublished if r.kickoff + RESULT_DELAY <= kickoff]
        unpublished = [r for r in unpublished if r not in done]
        if done:
            await publish_facts(producer, topics.results, [result_event(r) for r in done])
            published += len(done)
            expected = published
            await wait_for(
                lambda n=expected: _at_least(topics.league_inputs, n),  # type: ignore[misc]
                timeout=120,
                what=f"{expected} routed facts",
            )
        starting = [row for row in rows if row.kickoff == kickoff]
        await publish_facts(producer, topics.fixtures, [fixture_of(r) for r in starting])
        published += len(starting)
    await publish_facts(producer, topics.results, [result_event(r) for r in unpublished])

    messages = await read_topic(topics.features, expect=len(rows), timeout=120)
    issued: dict[str, MatchFeatures] = {}
    for message in messages:
        features = decode(message.value, MatchFeatures)
        assert message.key == features.match_id.encode()
        if features.match_id in issued:  # a batch replayed after the kill: the very same
            assert features == issued[features.match_id]
        issued[features.match_id] = features
    builder = FeatureBuilder()
    offline = {f.match_id: f for f, _ in build_events(rows, builder)}
    assert issued.keys() == offline.keys()
    for match_id, want in offline.items():
        got = issued[match_id]
        assert got.features.keys() == want.features.keys()
        for name, value in want.features.items():
            assert got.features[name] == pytest.approx(value, abs=1e-9), (match_id, name)
        assert (got.kickoff, got.home_team, got.odds_close) == (
            want.kickoff,
            want.home_team,
            want.odds_close,
        )

    expected_predictions = len(rows) * SEEDED_MODELS
    await wait_for(
        lambda: _count_is(
            db,
            "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL",
            expected_predictions,
        ),
        timeout=120,
        what=f"{expected_predictions} evaluations",
    )
    assert worker.starts == 2
    assert "Traceback" not in worker.log_text()

    shown = json.loads(cli(settings, "features", "show", "--league", EPL, "--json"))
    teams = current_teams(builder.leagues[EPL])
    assert shown["results"] == len(rows)
    assert {t["team"]: t["elo"] for t in shown["teams"]} == {
        name: round(team.elo, 1) for name, team in teams.items()
    }
    one = next(iter(teams))
    (row,) = json.loads(
        cli(settings, "features", "show", "--league", EPL, "--team", one, "--json")
    )["teams"]
    assert row["team"] == one


async def _at_least(topic: str, expected: int) -> bool:
    return await routed(topic) >= expected


async def _count_is(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return await count(pool, sql) == expected


async def test_fixtures_published_before_the_last_round_get_predictions_with_its_results(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """Live use: next week's fixtures are published days ahead, before this week's results.
    Each result re-issues them, every model scores each issue, and the prediction the
    evaluation log keeps for each model is the one from the last issue made before kickoff:
    its features are the offline builder's, which include this week's results."""
    topics = Topics.from_settings(settings)
    rows = read_rows([league_file(EPL)]).rows
    history = [r for r in rows if datetime(2015, 8, 1, tzinfo=UTC) <= r.kickoff < SATURDAY]
    this = [r for r in rows if SATURDAY <= r.kickoff < NEXT_SATURDAY]
    following = [r for r in rows if NEXT_SATURDAY <= r.kickoff < NEXT_SATURDAY + WEEK]
    start_worker()
    await publish_facts(producer, topics.fixtures, [fixture_of(r) for r in history])
    await publish_facts(producer, topics.results, [result_event(r) for r in history])
    await wait_for(
        lambda: _at_least(topics.league_inputs, 2 * len(history)),
        timeout=120,
        what="the history routed",
    )
    early = SATURDAY - timedelta(days=2)
    await publish_facts(
        producer, topics.fixtures, [fixture_of(r) for r in this + following], at=early
    )
    routed_so_far = 2 * len(history) + len(this) + len(following)
    await wait_for(
        lambda: _at_least(topics.league_inputs, routed_so_far),
        timeout=120,
        what="the early fixtures routed",
    )
    # This week's results, then (once routed: the router reads partitions in any order)
    # next week's.
    await publish_facts(producer, topics.results, [result_event(r) for r in this])
    await wait_for(
        lambda: _at_least(topics.league_inputs, routed_so_far + len(this)),
        timeout=120,
        what="this week's results routed",
    )
    # Next week's results once every model has scored the last issue of the matches that
    # start before any of them ends (else a model version that learned such a match's result
    # may score its last issue: that prediction is ignored, the previous issue's counts).
    first_whistle = min(r.kickoff for r in following) + RESULT_DELAY
    comparable = [r for r in following if r.kickoff < first_whistle]
    assert comparable
    assert len(comparable) < len(following)
    await wait_for(
        lambda: _count_is(
            db,
            "SELECT count(*) FROM predictions WHERE features_revision = "
            f"{len(this)} AND match_id IN ({', '.join(repr(r.match_id) for r in comparable)})",
            len(comparable) * SEEDED_MODELS,
        ),
        timeout=180,
        what="the last issue of next week's first matches scored",
    )
    await publish_facts(producer, topics.results, [result_event(r) for r in following])

    offline = {f.match_id: f for f, _ in build_events(history + this + following)}
    matches = len(history) + len(this) + len(following)
    expected = matches * SEEDED_MODELS
    await wait_for(
        lambda: _count_is(
            db, "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL", expected
        ),
        timeout=180,
        what=f"{expected} current evaluations",
    )
    async with db.acquire() as conn:
        counted = await conn.fetch(
            """SELECT e.match_id, p.features_revision, p.made_at, p.kickoff
               FROM evaluations e JOIN predictions p USING (prediction_id)
               WHERE e.superseded_by IS NULL AND e.match_id = ANY($1::text[])""",
            [r.match_id for r in following],
        )
        stored = {
            row["match_id"]: decode(row["payload"].encode(), MatchFeatures)
            for row in await conn.fetch(
                "SELECT match_id, payload::text AS payload FROM match_features "
                "WHERE match_id = ANY($1::text[])",
                [r.match_id for r in following],
            )
        }
    assert len(counted) == len(following) * SEEDED_MODELS
    settled_first = {r.match_id for r in comparable}
    for row in counted:
        assert row["made_at"] < row["kickoff"]
        if row["match_id"] in settled_first:
            # The last issue counts. (Later in the week a re-issue from next week's own
            # early results can lose the race with the match's result, learned first: the
            # earlier issue then keeps counting.)
            assert row["features_revision"] == stored[row["match_id"]].revision
    for row in following:
        features = stored[row.match_id]
        if row in comparable:  # no result of next week before its kickoff
            assert features.revision == len(this)  # re-issued once per result of this week
        want = offline[row.match_id].features
        for name, value in want.items():
            assert features.features[name] == pytest.approx(value, abs=1e-9), name


async def test_a_league_published_to_one_partition_settles_once_the_others_are_idle(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any
) -> None:
    """A producer that sends a league's facts to one partition of each topic (keyed by league)
    leaves the router's other partitions silent: after the idle time they no longer hold the
    league back, so its book settles (bounded) and every fixture still gets its features."""
    topics = Topics.from_settings(settings)
    assert settings.partitions > 1
    rows = read_rows([league_file(EPL)]).rows
    august = [r for r in rows if datetime(2015, 8, 1, tzinfo=UTC) <= r.kickoff < SEPTEMBER]
    september = [r for r in rows if SEPTEMBER <= r.kickoff < datetime(2015, 10, 1, tzinfo=UTC)]
    start_worker(TIPSTREAM_FEATURES_IDLE_SECONDS="2")
    routed_so_far = 0
    for chunk in (august, september):
        await publish_facts(producer, topics.fixtures, [fixture_of(r) for r in chunk], partition=0)
        await publish_facts(producer, topics.results, [result_event(r) for r in chunk], partition=0)
        routed_so_far += 2 * len(chunk)
        await wait_for(
            lambda n=routed_so_far: _at_least(topics.league_inputs, n),  # type: ignore[misc]
            timeout=120,
            what=f"{routed_so_far} routed facts",
        )
        await asyncio.sleep(3.0)  # longer than the idle time: the other partitions go idle
    await read_topic(topics.features, expect=len(august) + len(september), timeout=120)
    shown = json.loads(cli(settings, "features", "show", "--league", EPL, "--json"))
    assert shown["results"] == len(august) + len(september)
    assert shown["settled_until"] is not None
    assert datetime.fromisoformat(shown["settled_until"]) >= datetime(2015, 8, 1, tzinfo=UTC)
