"""The feature drift agent on the real broker and database: features whose distribution
shifts (home and away swapped, a mapping bug) raise one drift alert, stored and published once,
and neither a restart nor a replay of the same features raises it again; a stationary stream
raises none."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

import asyncpg
import msgspec
import pytest

from agents import alert_store
from agents.drift import AGENT, to_alert
from agents.drift_rules import ROLLUP, DriftDecision, window_bounds, window_index
from models.features import build_events
from schemas.codec import decode
from schemas.events import Alert, MatchFeatures
from schemas.football_csv import league_file, read_rows
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import Worker, publish, read_topic, wait_for
from tests.integration.test_pipeline import cli

pytestmark = pytest.mark.integration

WEEK = timedelta(days=7)
START = window_bounds(window_index(datetime(2016, 1, 4, tzinfo=UTC), 7), 7)[0]
PER_WEEK = 80
WEEKS = 9
SWAP_FROM = 5
"""Weeks 0-4 as they were (the reference fills in weeks 0-2), 5-8 with home and away swapped."""
DRIFT_ENV = {
    "TIPSTREAM_DRIFT_WINDOW_DAYS": "7",
    "TIPSTREAM_DRIFT_MIN_WINDOW": "30",
    "TIPSTREAM_DRIFT_MIN_REFERENCE": "240",
    "TIPSTREAM_DRIFT_REFERENCE_WINDOWS": "6",
    "TIPSTREAM_DRIFT_RESAMPLES": "100",
}


@cache
def pool() -> list[MatchFeatures]:
    """The offline builder's features of two Premier League seasons, shuffled (seeded): any
    week drawn from them has the same distribution as any other."""
    seasons = {"2014-2015", "2015-2016"}
    rows = read_rows([league_file("england-premier-league")]).rows
    events = [f for f, _ in build_events(rows) if f.season in seasons]
    random.Random(16).shuffle(events)
    return events


def swapped(features: MatchFeatures) -> MatchFeatures:
    """Home and away exchanged in every feature (and the odds): what a mapping bug upstream
    would publish."""
    values = dict(features.features)
    out = {}
    for name, value in values.items():
        twin = name.replace("home", "~").replace("away", "home").replace("~", "away")
        twin = {"open_p_H": "open_p_A", "open_p_A": "open_p_H"}.get(twin, twin)
        out[name] = values.get(twin, value)
    out["elo_diff"] = -values["elo_diff"]
    out["pi_exp_gd"] = -values["pi_exp_gd"]
    out["elo_p_home"] = 1.0 - values["elo_p_home"]
    odds = features.odds_open
    return msgspec.structs.replace(
        features,
        features=out,
        odds_open=msgspec.structs.replace(odds, home=odds.away, away=odds.home),
    )


def stream(*, shift: bool) -> list[MatchFeatures]:
    """``WEEKS`` weeks of ``PER_WEEK`` matches, then one match a week later that closes the
    last week's window."""
    events = []
    source = iter(pool())
    for week in range(WEEKS + 1):
        for i in range(PER_WEEK if week < WEEKS else 1):
            base = next(source)
            kickoff = START + week * WEEK + timedelta(hours=i)
            event = msgspec.structs.replace(base, kickoff=kickoff, season="2015-2016")
            events.append(swapped(event) if shift and week >= SWAP_FROM else event)
    return events


def after_reset() -> list[MatchFeatures]:
    """Five more weeks with home and away swapped (the pool read backwards, under new ids),
    then one match that closes the last."""
    events = []
    source = iter(reversed(pool()))
    for week in range(WEEKS + 1, WEEKS + 7):
        for i in range(PER_WEEK if week < WEEKS + 6 else 1):
            base = next(source)
            kickoff = START + week * WEEK + timedelta(hours=i)
            event = msgspec.structs.replace(
                base, match_id=f"{base.match_id}:again", kickoff=kickoff, season="2015-2016"
            )
            events.append(swapped(event))
    return events


def counters(settings: Settings) -> dict[str, int]:
    url = f"http://127.0.0.1:{settings.web_port}/status/"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
    except OSError:
        return {}
    seen: dict[str, int] = body.get("counters", {})
    return seen


async def handled(settings: Settings, count: int) -> bool:
    """Whether this worker's drift monitor took ``count`` matches (accepted or late)."""
    seen = await asyncio.to_thread(counters, settings)
    return seen.get("drift:observed", 0) + seen.get("drift:late", 0) >= count


async def drift_alerts(db: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT alert_id, state, metric, status, message FROM alerts WHERE kind = 'drift' "
        "ORDER BY alert_id"
    )
    return rows


async def published_drift(topics: Topics) -> list[Alert]:
    messages = await read_topic(topics.alerts)
    alerts = [decode(m.value, Alert) for m in messages]
    return [a for a in alerts if a.kind == "drift"]


async def test_a_shift_raises_one_drift_alert_across_a_restart_and_a_replay(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    topics = Topics.from_settings(settings)
    events = stream(shift=True)
    worker = start_worker(**DRIFT_ENV)
    await publish(producer, topics.features, [(f.match_id, f) for f in events])
    await wait_for(lambda: handled(settings, len(events)), timeout=120, what="drift monitor")
    stored = await drift_alerts(db)
    # One alert: the roll-up of the swap's first week (home and away swapped moves every
    # feature with a home advantage in it, the market's home and away probabilities first).
    assert [(row["metric"], row["state"], row["status"]) for row in stored] == [
        (ROLLUP, "firing", "open")
    ]
    assert f"kicked off {START + SWAP_FROM * WEEK:%Y-%m-%d}" in stored[0]["message"]
    assert "open_p_H" in stored[0]["message"]
    published = await published_drift(topics)
    assert [a.alert_id for a in published] == [stored[0]["alert_id"]]
    assert published[0].source == AGENT

    worker.stop()  # a restart, then a replay of the same features
    worker.start()
    await publish(producer, topics.features, [(f.match_id, f) for f in events])
    await wait_for(lambda: handled(settings, len(events)), timeout=120, what="the replay")
    seen = await asyncio.to_thread(counters, settings)
    # Rebuilt from drift_observations: the replayed matches of the closed windows are late.
    assert seen["drift:late"] >= (WEEKS - 2) * PER_WEEK
    assert await drift_alerts(db) == stored
    assert [a.alert_id for a in await published_drift(topics)] == [stored[0]["alert_id"]]

    # The operator accepts the swap as the new normal: the alert is resolved, the references
    # restart at the first window still open (the last weeks wait out their grace until every
    # partition is past it), and five more swapped weeks raise nothing.
    out = cli(settings, "drift", "reset", "--by", "ana", "--note", "the swap is deliberate")
    assert "1 open drift alert(s) resolved" in out
    row = await db.fetchrow(
        "SELECT status, resolved_by FROM alerts WHERE alert_id = $1", stored[0]["alert_id"]
    )
    assert (row["status"], row["resolved_by"]) == ("resolved", "ana")
    more = after_reset()
    await publish(producer, topics.features, [(f.match_id, f) for f in more])
    total = len(events) + len(more)
    await wait_for(lambda: handled(settings, total), timeout=120, what="the weeks after")
    effective = await db.fetchval("SELECT effective_at FROM drift_resets")
    assert START + SWAP_FROM * WEEK < effective <= START + WEEKS * WEEK
    assert [row["alert_id"] for row in await drift_alerts(db)] == [stored[0]["alert_id"]]
    assert f"{effective:%Y-%m-%d}" in cli(settings, "drift", "resets")


async def test_a_stationary_stream_raises_no_drift_alert(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    topics = Topics.from_settings(settings)
    events = stream(shift=False)
    start_worker(**DRIFT_ENV)
    await publish(producer, topics.features, [(f.match_id, f) for f in events])
    await wait_for(lambda: handled(settings, len(events)), timeout=120, what="drift monitor")
    seen = await asyncio.to_thread(counters, settings)
    assert seen.get("drift:late", 0) == 0
    assert await db.fetchval("SELECT count(*) FROM drift_observations") == len(events)
    assert await drift_alerts(db) == []


async def test_a_feature_that_stops_drifting_resolves_its_alert(db: asyncpg.Pool) -> None:
    """In PostgreSQL: a ``resolved`` drift alert resolves the same feature's firing one, and
    leaves the other features' and the decay monitor's ``drift`` alerts alone."""
    start = datetime(2020, 5, 25, tzinfo=UTC)

    def decision(feature: str, state: Literal["firing", "resolved"], weeks: int) -> DriftDecision:
        at = start + weeks * timedelta(days=28)
        return DriftDecision(
            feature, state, at, at + timedelta(days=28), 100, 0.4, 0.2, 0.2, 0.1, "m1", "m2"
        )

    firing = [to_alert(decision(f, "firing", 0), start) for f in ("open_p_H", "open_p_A")]
    decay_drift = msgspec.structs.replace(
        firing[0], alert_id="decay-drift", source="decay-monitor", model_id="online-logreg"
    )
    cleared = to_alert(decision("open_p_H", "resolved", 2), start + timedelta(days=56))
    async with db.acquire() as conn:
        await alert_store.write(conn, [*firing, decay_drift])
        await alert_store.write(conn, [cleared])
        rows = await conn.fetch("SELECT alert_id, status, resolved_by FROM alerts")
    status = {row["alert_id"]: (row["status"], row["resolved_by"]) for row in rows}
    assert status == {
        firing[0].alert_id: ("resolved", "drift-cleared"),
        firing[1].alert_id: ("open", None),
        "decay-drift": ("open", None),
        cleared.alert_id: ("resolved", AGENT),
    }
