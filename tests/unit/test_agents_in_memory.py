"""Agents driven through the in-memory runtime: what they publish, persist and dead-letter."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from agents import dead_letters, learner
from agents.learner_rules import Learning
from agents.registry import RegisteredModel, version_context
from agents.scorer import ActiveModels, score_batch
from agents.scorer_rules import predict
from agents.testing import InMemoryRuntime
from models import catalog
from models.base import NonFiniteState
from models.online import RiverSoftmax
from models.policy import parse as parse_policy
from models.serialization import sign
from schemas.codec import encode
from schemas.events import (
    Alert,
    Evaluation,
    MatchFeatures,
    ModelFeedItem,
    ModelSnapshot,
    Odds,
    Prediction,
)
from streams.settings import Settings
from streams.topics import Topics

NOW = datetime(2024, 1, 1, tzinfo=UTC)
KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)


def runtime() -> InMemoryRuntime:
    settings = Settings(snapshot_every=2)
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


def entry(version: int = 3) -> RegisteredModel:
    model = catalog.create("online-logreg")
    model.version = version
    return RegisteredModel("online-logreg", model.kind, "champion", "all", version, model)


def learning(version: int = 3) -> Learning:
    return Learning(
        entry=entry(version),
        policy=parse_policy("all"),
        learned=10,
        learned_since_version=2,
        positions={},
        last_version_at=time.monotonic(),
    )


def feed_item(f: MatchFeatures, prediction: Prediction) -> ModelFeedItem:
    evaluation = Evaluation(
        evaluation_id=f"e-{f.match_id}",
        prediction_id=prediction.prediction_id,
        match_id=f.match_id,
        league=f.league,
        kickoff=f.kickoff,
        model_id=prediction.model_id,
        model_version=prediction.model_version,
        is_champion=True,
        probabilities=prediction.probabilities,
        predicted=prediction.predicted,
        outcome="H",
        home_goals=2,
        away_goals=1,
        hit=prediction.predicted == "H",
        confidence=prediction.confidence,
        log_loss=0.5,
        brier=0.2,
        rps=0.1,
        evaluated_at=NOW,
    )
    return ModelFeedItem(evaluation=evaluation, inputs={"elo_diff": 35.0})


async def test_a_commit_that_fails_once_leaves_the_version_lineage_gap_free() -> None:
    """A transient failure at the commit of a new model version is retried: the registry gets
    version v+1 with parent v exactly once, never v+2 on top of a rolled-back v+1."""
    rt = runtime()
    state = learning(version=3)
    rt.db.fail_next_commits(1)
    await learner.publish_versions(rt, [state])
    assert rt.retries["model version"] == 1
    stored = rt.db.rows("model_versions")
    assert [(row[0], row[1], row[2]) for row in stored] == [("online-logreg", 4, 3)]
    assert [args[1] for args in rt.db.rows("learner_checkpoints")] == [4]
    snapshots = rt.on(rt.topics.snapshots)
    assert len(snapshots) == 1
    assert isinstance(snapshots[0], ModelSnapshot)
    assert (snapshots[0].version, snapshots[0].parent_version) == (4, 3)
    # A live version announces no coverage in event time, and stores none (docs/BACKFILL.md).
    coverage = (snapshots[0].learned_from, snapshots[0].learned_until)
    assert (*coverage, snapshots[0].complete_through) == (None, None, None)
    assert [row[-3:] for row in stored] == [(None, None, None)]
    assert (state.entry.version, state.entry.model.version, state.learned_since_version) == (
        4,
        4,
        0,
    )


def registered_learner(rt: InMemoryRuntime) -> learner.Learner:
    """A learner whose registry holds online-logreg v0 (signed with the runtime's keys)."""
    model = entry(0).model
    row = {
        "model_id": "online-logreg",
        "kind": model.kind,
        "status": "champion",
        "policy": "all",
        "version": 0,
        "state": sign(
            model.snapshot(), rt.registry_keys, version_context("online-logreg", model.kind, 0)
        ),
        "learned": 0,
        "positions": "{}",
        "created_at": None,
    }
    rt.db.answer("FROM models m JOIN model_versions v", [row])
    return learner.Learner(rt)


async def test_the_learner_learns_once_and_checkpoints_with_the_evaluation_ids() -> None:
    """A feed batch is learned and checkpointed with the ids it learned; the same batch again
    (the registry says those ids were learned) is skipped: nothing is learned twice."""
    rt = runtime()
    agent = registered_learner(rt)
    f = features()
    prediction = predict(f, [entry(0)], now=NOW)[0]
    item = feed_item(f, prediction)
    batch = rt.events((rt.topics.model_feed, item))
    await rt.drive("learner", lambda events: learner.learn_batch(agent, events), batch)
    assert rt.counters["learned"] == 1
    learned_rows = rt.db.rows("learned_evaluations")
    assert len(learned_rows) == 1
    assert learned_rows[0][1] == [item.evaluation.evaluation_id]
    rt.db.answer(
        "FROM learned_evaluations",
        [{"model_id": "online-logreg", "evaluation_id": item.evaluation.evaluation_id}],
    )
    await rt.drive("learner", lambda events: learner.learn_batch(agent, events), batch)
    assert rt.counters["learned"] == 1
    assert rt.counters["learn_skipped_duplicate"] == 1
    assert rt.dead_letters == []


async def test_the_scorer_publishes_every_model_and_dead_letters_the_invalid() -> None:
    """Valid features get one prediction per active model; an invalid event becomes one dead
    letter with its original bytes, and the batch is not retried event by event."""
    rt = runtime()
    active = ActiveModels()
    active.models = (entry(1),)
    active.loaded.set()
    good = features(1)
    batch = rt.events((rt.topics.features, good), (rt.topics.features, b'{"schema_version": 1'))
    await rt.drive("scorer", lambda events: score_batch(rt, active, events), batch)
    predictions = rt.on(rt.topics.predictions)
    assert [p.match_id for p in predictions if isinstance(p, Prediction)] == [good.match_id]
    assert len(rt.dead_letters) == 1
    assert rt.dead_letters[0].error.rule.startswith("not valid JSON")
    assert rt.counters["faults:scorer"] == 0


async def test_a_decoder_crash_is_one_undecodable_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A payload that makes the decoder raise something other than InvalidEvent is the
    payload's fault: one dead letter with rule "undecodable", the rest of the batch scored."""
    rt = runtime()
    active = ActiveModels()
    active.models = (entry(1),)
    active.loaded.set()
    hostile = b'{"poison": true}'
    real_decode = dead_letters.decode

    def decode(raw: bytes | None, record_type: type[MatchFeatures]) -> MatchFeatures:
        if raw == hostile:
            raise RecursionError("maximum recursion depth exceeded")
        return real_decode(raw, record_type)

    monkeypatch.setattr(dead_letters, "decode", decode)
    good = features(2)
    batch = rt.events((rt.topics.features, hostile), (rt.topics.features, encode(good)))
    await rt.drive("scorer", lambda events: score_batch(rt, active, events), batch)
    assert [letter.error.rule for letter in rt.dead_letters] == [
        "undecodable: RecursionError: maximum recursion depth exceeded"
    ]
    assert len(rt.on(rt.topics.predictions)) == 1
    assert rt.counters["faults:scorer"] == 0


async def test_a_refused_learn_step_is_dead_lettered_and_the_model_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An example the model refuses (it would make its state non-finite) becomes a dead letter
    with the reason; nothing is learned from it and the batch is not retried."""
    rt = runtime()
    agent = registered_learner(rt)
    f = features()
    item = feed_item(f, predict(f, [entry(0)], now=NOW)[0])

    def refuse(self: object, x: object, y: object, weight: float = 1.0) -> None:
        raise NonFiniteState("model online-logreg: this example would make the state non-finite")

    monkeypatch.setattr(RiverSoftmax, "learn_one", refuse)
    batch = rt.events((rt.topics.model_feed, item))
    await rt.drive("learner", lambda events: learner.learn_batch(agent, events), batch)
    assert rt.counters["learned"] == 0
    assert [d.error.field for d in rt.dead_letters] == ["inputs"]
    assert "non-finite" in rt.dead_letters[0].error.rule
    assert rt.db.rows("learned_evaluations") == []
    assert rt.counters["faults:learner"] == 0


async def test_a_state_that_turned_non_finite_is_never_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If a model's state is not finite after a batch, it is neither checkpointed nor
    versioned: the learner forgets it (the next item reloads the stored state) and raises
    one fault alert, stored and published."""
    rt = runtime()
    rt.settings = Settings(dev_mode=True, snapshot_every=1)
    agent = registered_learner(rt)
    f = features()
    item = feed_item(f, predict(f, [entry(0)], now=NOW)[0])
    monkeypatch.setattr(RiverSoftmax, "state_is_finite", lambda self: False)
    batch = rt.events((rt.topics.model_feed, item))
    await rt.drive("learner", lambda events: learner.learn_batch(agent, events), batch)
    assert rt.db.rows("learner_checkpoints") == []
    assert rt.db.rows("model_versions") == []
    assert rt.on(rt.topics.snapshots) == []
    alerts = [a for a in rt.on(rt.topics.alerts) if isinstance(a, Alert)]
    assert [(a.kind, a.model_id, a.detector) for a in alerts] == [
        ("fault", "online-logreg", "non-finite-state")
    ]
    assert len(rt.db.rows("alerts")) == 1
    assert "online-logreg" not in agent.states
