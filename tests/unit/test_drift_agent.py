"""The drift agent's batch functions in memory: the router's re-keying, bad inputs dead-lettered
with the reason, the alert an operator reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.drift import AGENT, Drift, drift_batch, route_batch, to_alert
from agents.drift_rules import ROLLUP, DriftDecision
from agents.testing import Event, InMemoryRuntime, Message
from schemas.codec import encode
from schemas.events import MatchFeatures, Odds
from streams.settings import Settings
from streams.topics import Topics

KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)


def runtime() -> InMemoryRuntime:
    settings = Settings()
    return InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))


def features(match: int = 0) -> MatchFeatures:
    return MatchFeatures(
        match_id=f"england-premier-league:2023-12-30:home-{match}:away-{match}",
        league="england-premier-league",
        season="2023-2024",
        kickoff=KICKOFF + timedelta(minutes=match),
        home_team=f"Home {match}",
        away_team=f"Away {match}",
        odds_open=Odds(home=2.0, draw=3.4, away=4.0),
        features={"elo_diff": 35.0 + match},
    )


def drift_event(rt: InMemoryRuntime, record: MatchFeatures, key: bytes) -> Event:
    return Event(Message(rt.topics.drift_inputs, 0, 0, key, encode(record)))


async def test_the_router_rekeys_every_event_by_its_source_partition() -> None:
    rt = runtime()
    events = rt.events(*[(rt.topics.features, features(i)) for i in range(3)])
    events += rt.events((rt.topics.features, b"not json"))
    await route_batch(rt, events)
    assert [(t, k) for t, k, _ in rt.published] == [(rt.topics.drift_inputs, "0")] * 3
    assert rt.dead_letters == []  # the features' invalid events are the scorer's to letter


async def test_incomplete_features_and_a_foreign_key_are_dead_lettered() -> None:
    rt = runtime()
    drift = Drift(rt)
    await drift_batch(
        drift,
        [drift_event(rt, features(0), b"0"), drift_event(rt, features(1), b"partition-9")],
    )
    letters = sorted(rt.dead_letters, key=lambda letter: letter.error.field)
    assert [(letter.agent, letter.error.field) for letter in letters] == [
        (AGENT, "features.elo_home"),
        (AGENT, "key"),
    ]
    assert "drift monitor needs every feature" in letters[0].error.rule
    assert rt.db.rows("drift_observations") == []
    assert rt.on(rt.topics.alerts) == []


def test_an_alert_says_feature_window_and_levels() -> None:
    start = datetime(2020, 5, 25, tzinfo=UTC)
    decision = DriftDecision(
        "open_p_H", "firing", start, start + timedelta(days=28), 100, 0.41, 0.17, 0.2, 0.12,
        "m1", "m100", reference=1800,
    )  # fmt: skip
    alert = to_alert(decision, start)
    assert (alert.kind, alert.state, alert.source, alert.metric) == (
        "drift", "firing", AGENT, "open_p_H",
    )  # fmt: skip
    assert alert.alert_id == decision.alert_id
    assert (alert.current, alert.threshold, alert.window) == (0.41, 0.2, 100)
    assert "2020-05-25 to 2020-06-21" in alert.message
    assert "reference of 1800 matches" in alert.message
    rollup = DriftDecision(
        ROLLUP, "firing", start, start + timedelta(days=28), 100, 0.3, 0.3, 0.25, 0.25,
        "m1", "m100", ("open_p_H", "open_p_A"),
    )  # fmt: skip
    assert "open_p_H, open_p_A" in to_alert(rollup, start).message
