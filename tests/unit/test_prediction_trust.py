"""Trust on the predictions topic: only consistent, registered predictions made without the
result are evaluated; the others are dead-lettered with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from agents.reconciler import TrustedVersions, reconcile_batch
from agents.reconciler_rules import MatchLedger, distrust
from agents.registry import RegisteredModel
from agents.scorer_rules import predict
from agents.testing import InMemoryRuntime
from models import catalog
from schemas.events import Evaluation, MatchFeatures, MatchResult, Odds, Prediction
from streams.settings import Settings
from streams.topics import Topics

KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)
BEFORE = KICKOFF - timedelta(hours=2)
AFTER = KICKOFF + timedelta(days=400)  # a backfill: scored long after the historical kickoff


def features() -> MatchFeatures:
    return MatchFeatures(
        match_id="england-premier-league:2023-12-30:home:away",
        league="england-premier-league",
        season="2023-2024",
        kickoff=KICKOFF,
        home_team="Home",
        away_team="Away",
        odds_open=Odds(home=2.0, draw=3.4, away=4.0),
        features={"elo_diff": 35.0},
    )


def result(f: MatchFeatures) -> MatchResult:
    return MatchResult(
        match_id=f.match_id, league=f.league, kickoff=f.kickoff, home_goals=2, away_goals=1,
        outcome="H",
    )  # fmt: skip


def prediction(f: MatchFeatures, version: int = 3, *, at: datetime = BEFORE) -> Prediction:
    model = catalog.create("online-logreg")
    entry = RegisteredModel("online-logreg", model.kind, "champion", "all", version, model)
    return predict(f, [entry], now=at)[0]


def runtime(
    registered: set[tuple[str, int]], learned: set[tuple[str, str, int]] = frozenset()
) -> InMemoryRuntime:
    """A reconciler's runtime whose registry holds ``registered`` and whose learner learned
    each (model, match) of ``learned`` on top of the given version."""
    settings = Settings()
    rt = InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))
    rt.db.answer(
        "FROM model_versions",
        lambda args: [
            {"model_id": m, "version": v}
            for m, v in zip(*args, strict=True)
            if (m, v) in registered
        ],
    )
    rt.db.answer(
        "JOIN learned_evaluations",
        lambda args: [
            {"model_id": m, "match_id": x, "version": v}
            for m, x, v in zip(*args, strict=True)
            if any(lm == m and lx == x and after < v for lm, lx, after in learned)
        ],
    )
    return rt


async def reconcile(
    rt: InMemoryRuntime, *records: MatchFeatures | Prediction | MatchResult
) -> None:
    topic = {
        MatchFeatures: rt.topics.features,
        Prediction: rt.topics.predictions,
        MatchResult: rt.topics.results,
    }
    events = rt.events(*((topic[type(r)], r) for r in records))
    await reconcile_batch(rt, {}, events, TrustedVersions())


def evaluations(rt: InMemoryRuntime) -> list[Evaluation]:
    return [e for e in rt.on(rt.topics.evaluations) if isinstance(e, Evaluation)]


async def test_a_prediction_of_an_unregistered_version_is_refused() -> None:
    """A prediction naming a model version the registry does not hold is dead-lettered with
    the reason, and nothing is evaluated for it."""
    f = features()
    rt = runtime(registered={("online-logreg", 3)})
    await reconcile(rt, f, prediction(f, version=99), result(f))
    assert evaluations(rt) == []
    assert [(d.error.field, d.error.rule) for d in rt.dead_letters] == [
        ("model_version", "model version not in the registry")
    ]
    assert rt.dead_letters[0].source_topic == rt.topics.predictions


async def test_a_forged_prediction_id_is_refused() -> None:
    """A prediction whose id is not the deterministic id of its match, model and version is
    dead-lettered; a real one beside it is evaluated."""
    f = features()
    real = prediction(f)
    forged = msgspec.structs.replace(real, prediction_id="00000000-0000-5000-8000-000000000000")
    rt = runtime(registered={("online-logreg", 3)})
    await reconcile(rt, f, forged, real, result(f))
    assert [d.error.field for d in rt.dead_letters] == ["prediction_id"]
    assert [e.prediction_id for e in evaluations(rt)] == [real.prediction_id]


async def test_a_prediction_that_disagrees_with_the_match_is_refused() -> None:
    """A prediction whose kickoff is not the match's (per its features) is dead-lettered."""
    f = features()
    moved = msgspec.structs.replace(prediction(f), kickoff=KICKOFF + timedelta(days=1))
    rt = runtime(registered={("online-logreg", 3)})
    await reconcile(rt, f, moved, result(f))
    assert [d.error.field for d in rt.dead_letters] == ["kickoff"]
    assert evaluations(rt) == []


async def test_a_version_that_had_learned_the_result_cannot_predict_the_match() -> None:
    """In a backfill, a prediction made by a version that already learned this match's result
    is refused; one of a version before that is evaluated."""
    f = features()
    learned = {("online-logreg", f.match_id, 4)}  # learned on top of v4: part of v5 onwards
    registered = {("online-logreg", 4), ("online-logreg", 5)}
    leaky = runtime(registered, learned)
    await reconcile(leaky, f, prediction(f, version=5, at=AFTER), result(f))
    assert [d.error.rule for d in leaky.dead_letters] == [
        "made by a model version that had already learned this match's result"
    ]
    assert evaluations(leaky) == []
    honest = runtime(registered, learned)
    await reconcile(honest, f, prediction(f, version=4, at=AFTER), result(f))
    assert honest.dead_letters == []
    assert len(evaluations(honest)) == 1


async def test_a_rescored_match_is_ignored_not_dead_lettered() -> None:
    """A second prediction of the same model for a match (a second replay with a newer
    version) is ignored as before: no evaluation, no dead letter."""
    f = features()
    rt = runtime(registered={("online-logreg", 3), ("online-logreg", 8)})
    ledger: dict[bytes, bytes] = {}
    topic = {MatchFeatures: rt.topics.features, Prediction: rt.topics.predictions}
    first = rt.events((topic[MatchFeatures], f), (topic[Prediction], prediction(f)))
    await reconcile_batch(rt, ledger, first, TrustedVersions())
    again = rt.events((topic[Prediction], prediction(f, version=8, at=AFTER)))
    await reconcile_batch(rt, ledger, again, TrustedVersions())
    assert rt.dead_letters == []


async def test_registered_versions_are_looked_up_once() -> None:
    """The registry is asked about a model version once; later batches use the cache."""
    f = features()
    rt = runtime(registered={("online-logreg", 3)})
    versions = TrustedVersions()
    for _ in range(3):
        events = rt.events((rt.topics.predictions, prediction(f)))
        await reconcile_batch(rt, {}, events, versions)
    assert versions.known == {("online-logreg", 3)}
    assert rt.dead_letters == []


def test_distrust_accepts_a_consistent_registered_prediction() -> None:
    """The pure rule passes a prediction with the right id, facts and a registered version
    that had not learned the result."""
    f = features()
    ledger = MatchLedger(features=f)
    assert distrust(prediction(f), ledger, registered=True, knew_result=False) is None
    assert distrust(prediction(f), ledger, registered=False, knew_result=False) is not None
    assert distrust(prediction(f), ledger, registered=True, knew_result=True) is not None
