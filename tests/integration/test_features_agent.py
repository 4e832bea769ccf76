"""The features agent on the real broker: producers send fixtures and results only, the
service publishes the offline builder's features, and a killed worker changes none of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
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
from tests.integration.conftest import Worker, publish, read_topic, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, cli, count

pytestmark = pytest.mark.integration

EPL = "england-premier-league"


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
    half-way changes no feature (the league books come back from their changelog), and
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
        # The results known by this kickoff, routed before its fixtures are published (the
        # router reads two topics: a result sent first is not necessarily routed first).
        done = [r for r in unpublished if r.kickoff + RESULT_DELAY <= kickoff]
        unpublished = [r for r in unpublished if r not in done]
        if done:
            await publish(producer, topics.results, [(r.match_id, result_event(r)) for r in done])
            published += len(done)
            expected = published
            await wait_for(
                lambda n=expected: _at_least(topics.league_inputs, n),  # type: ignore[misc]
                timeout=120,
                what=f"{expected} routed facts",
            )
        starting = [row for row in rows if row.kickoff == kickoff]
        await publish(producer, topics.fixtures, [(r.match_id, fixture_of(r)) for r in starting])
        published += len(starting)
    await publish(producer, topics.results, [(r.match_id, result_event(r)) for r in unpublished])

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
        lambda: _count_is(db, "SELECT count(*) FROM evaluations", expected_predictions),
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
