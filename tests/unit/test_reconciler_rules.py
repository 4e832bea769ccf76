"""Reconciliation rules: predictions and results of one match joined in any order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.reconciler_rules import (
    MatchLedger,
    apply_features,
    apply_prediction,
    apply_result,
    counted_predictions,
    distrust,
    evaluation_id,
    feed,
    prediction_id,
)
from models.metrics import brier, log_loss, rps
from schemas.events import MatchFeatures, MatchResult, Odds, Prediction, Probabilities

NOW = datetime(2024, 1, 1, tzinfo=UTC)
KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)
MATCH = "england-premier-league:2023-12-30:arsenal:chelsea"


def prediction(
    model_id: str = "m1",
    version: int = 1,
    h: float = 0.5,
    d: float = 0.3,
    *,
    revision: int = 0,
    made_at: datetime | None = None,
) -> Prediction:
    probabilities = Probabilities(H=h, D=d, A=1.0 - h - d)
    as_dict = probabilities.as_dict()
    predicted = max(as_dict, key=lambda k: as_dict[k])
    return Prediction(
        prediction_id=prediction_id(MATCH, model_id, version, revision),
        made_at=made_at,
        features_revision=revision,
        match_id=MATCH,
        league="england-premier-league",
        kickoff=KICKOFF,
        model_id=model_id,
        model_version=version,
        is_champion=model_id == "m1",
        probabilities=probabilities,
        predicted=predicted,
        confidence=as_dict[predicted],
        created_at=NOW,
    )


def result(home: int = 2, away: int = 1) -> MatchResult:
    outcome = "H" if home > away else "A" if away > home else "D"
    return MatchResult(
        match_id=MATCH,
        league="england-premier-league",
        kickoff=KICKOFF,
        home_goals=home,
        away_goals=away,
        outcome=outcome,
    )


def features() -> MatchFeatures:
    return MatchFeatures(
        match_id=MATCH,
        league="england-premier-league",
        season="2023-2024",
        kickoff=KICKOFF,
        home_team="Arsenal",
        away_team="Chelsea",
        odds_open=Odds(home=2.0, draw=3.4, away=4.0),
        features={"elo_diff": 35.0},
    )


def test_ids_are_deterministic_and_distinct() -> None:
    """The same (match, model, version) always gives the same prediction id; anything else
    a different one; a different score gives a different evaluation id."""
    assert prediction_id(MATCH, "m1", 1) == prediction_id(MATCH, "m1", 1)
    assert (
        len(
            {
                prediction_id(MATCH, "m1", 1),
                prediction_id(MATCH, "m1", 2),
                prediction_id(MATCH, "m2", 1),
                prediction_id("other", "m1", 1),
            }
        )
        == 4
    )
    pid = prediction_id(MATCH, "m1", 1)
    assert evaluation_id(pid, 2, 1) == evaluation_id(pid, 2, 1)
    assert evaluation_id(pid, 2, 1) != evaluation_id(pid, 1, 2)


@pytest.mark.parametrize("result_first", [False, True])
def test_either_arrival_order_gives_the_same_evaluation(result_first: bool) -> None:
    """A prediction then its result, or the result then the prediction, yields one identical
    evaluation with the metrics of models.metrics."""
    ledger = MatchLedger()
    p, r = prediction(), result()
    if result_first:
        assert apply_result(ledger, r, now=NOW).evaluations == []
        evaluations = apply_prediction(ledger, p, now=NOW).evaluations
    else:
        assert apply_prediction(ledger, p, now=NOW).evaluations == []
        evaluations = apply_result(ledger, r, now=NOW).evaluations
    assert len(evaluations) == 1
    e = evaluations[0]
    assert e.evaluation_id == evaluation_id(p.prediction_id, 2, 1)
    assert e.hit
    assert e.outcome == "H"
    assert e.log_loss == pytest.approx(log_loss(p.probabilities.as_dict(), "H"))
    assert e.brier == pytest.approx(brier(p.probabilities.as_dict(), "H"))
    assert e.rps == pytest.approx(rps(p.probabilities.as_dict(), "H"))


def test_duplicates_change_nothing() -> None:
    """A re-delivered prediction or the same result again produces no evaluation."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction(), now=NOW)
    assert len(apply_result(ledger, result(), now=NOW).evaluations) == 1
    again_result = apply_result(ledger, result(), now=NOW)
    again_prediction = apply_prediction(ledger, prediction(), now=NOW)
    assert not again_result.changed
    assert again_result.evaluations == []
    assert not again_prediction.changed
    assert again_prediction.evaluations == []


def test_corrected_result_supersedes_every_evaluation() -> None:
    """Another score for the same match re-evaluates each prediction and names the evaluation
    it replaces."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction("m1"), now=NOW)
    apply_prediction(ledger, prediction("m2"), now=NOW)
    first = apply_result(ledger, result(2, 1), now=NOW).evaluations
    corrected = apply_result(ledger, result(1, 1), now=NOW)
    assert [e.outcome for e in corrected.evaluations] == ["D", "D"]
    assert {s.old_evaluation_id for s in corrected.superseded} == {e.evaluation_id for e in first}
    assert {e.supersedes for e in corrected.evaluations} == {e.evaluation_id for e in first}


def test_only_the_first_prediction_of_a_model_counts() -> None:
    """A model's later version re-scoring the match is ignored: it may have seen the result."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction("m1", version=1), now=NOW)
    later = apply_prediction(ledger, prediction("m1", version=2), now=NOW)
    assert not later.changed
    assert len(apply_result(ledger, result(), now=NOW).evaluations) == 1


def test_evaluations_wait_for_features_before_feeding_learners() -> None:
    """Evaluations made before the features arrived are fed, with inputs, once they do."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction(), now=NOW)
    evaluations = apply_result(ledger, result(), now=NOW).evaluations
    assert feed(ledger, evaluations) == []
    apply_features(ledger, features())
    items = feed(ledger, [])
    assert [i.evaluation.evaluation_id for i in items] == [e.evaluation_id for e in evaluations]
    assert items[0].inputs["elo_diff"] == 35.0
    assert feed(ledger, []) == []


def test_evaluation_id_is_the_uuid5_of_its_name() -> None:
    """The fast evaluation id is exactly ``uuid.uuid5`` of the documented name."""
    import uuid

    from agents.reconciler_rules import _NAMESPACE

    for pid in (prediction_id(MATCH, "m1", 1), "é-not-a-uuid", ""):
        for home, away in ((0, 0), (2, 1), (99, 10)):
            expected = uuid.uuid5(_NAMESPACE, f"evaluation|{pid}|{home}-{away}")
            assert evaluation_id(pid, home, away) == str(expected)


# Re-issued features: each model's last prediction made before kickoff counts.

BEFORE = KICKOFF - timedelta(days=2)


def test_a_prediction_from_a_later_revision_replaces_the_earlier_one() -> None:
    """Features re-issued before kickoff are scored again: the model's prediction from the
    later revision counts, and the result evaluates only it."""
    ledger = MatchLedger()
    first = prediction("m1", revision=0, made_at=BEFORE)
    second = prediction("m1", h=0.6, revision=1, made_at=BEFORE + timedelta(hours=5))
    apply_prediction(ledger, first, now=NOW)
    assert apply_prediction(ledger, second, now=NOW).changed
    assert list(ledger.predictions) == [second.prediction_id]
    (evaluation,) = apply_result(ledger, result(), now=NOW).evaluations
    assert evaluation.prediction_id == second.prediction_id
    # The earlier revision arriving again (re-delivered) changes nothing.
    assert not apply_prediction(ledger, first, now=NOW).changed


def test_a_prediction_made_at_or_after_kickoff_never_counts() -> None:
    """Made after kickoff in event time (a fixture published late, or re-issued after the
    match started): not evaluated, even when the model has no other prediction."""
    ledger = MatchLedger()
    assert not apply_prediction(ledger, prediction(made_at=KICKOFF), now=NOW).changed
    late = prediction("m1", revision=1, made_at=KICKOFF + timedelta(minutes=1))
    apply_prediction(ledger, prediction(made_at=BEFORE), now=NOW)
    assert not apply_prediction(ledger, late, now=NOW).changed
    assert [p.made_at for p in ledger.predictions.values()] == [BEFORE]


def test_a_revision_after_the_result_supersedes_the_evaluation_and_is_not_fed_again() -> None:
    """In a fast backfill a re-issued prediction can reach the reconciler after the result:
    its evaluation supersedes the first one (named), and is marked revised so the learner,
    which learned the match from the first, does not learn it twice."""
    ledger = MatchLedger()
    apply_features(ledger, features())
    apply_prediction(ledger, prediction(made_at=BEFORE), now=NOW)
    (old,) = apply_result(ledger, result(), now=NOW).evaluations
    revised = apply_prediction(
        ledger, prediction(h=0.7, d=0.2, revision=1, made_at=BEFORE), now=NOW
    )
    (new,) = revised.evaluations
    assert revised.revised
    assert new.supersedes == old.evaluation_id
    assert [(s.old_evaluation_id, s.new_evaluation_id) for s in revised.superseded] == [
        (old.evaluation_id, new.evaluation_id)
    ]
    assert ledger.evaluated == {new.prediction_id: new.evaluation_id}


def test_one_revision_scored_by_two_versions_counts_the_first() -> None:
    """The same features re-scored by a newer version (a second replay, a restart) do not
    replace the prediction that counts."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction(version=1, revision=2, made_at=BEFORE), now=NOW)
    assert not apply_prediction(
        ledger, prediction(version=2, revision=2, made_at=BEFORE), now=NOW
    ).changed


def test_counted_predictions_rebuilds_what_the_ledger_kept() -> None:
    """From every stored prediction in arrival order, the rebuild keeps what the ledger kept:
    per model the highest revision made before kickoff, the first of a revision."""
    stored = [
        prediction("m1", version=1, revision=0, made_at=BEFORE),
        prediction("m2", version=1, revision=0, made_at=BEFORE),
        prediction("m1", version=1, revision=1, made_at=BEFORE),
        prediction("m1", version=2, revision=1, made_at=BEFORE),
        prediction("m1", version=2, revision=2, made_at=KICKOFF),
    ]
    ledger = MatchLedger()
    for p in stored:
        apply_prediction(ledger, p, now=NOW)
    assert counted_predictions(stored) == ledger.predictions
    assert {
        (p.model_id, p.model_version, p.features_revision) for p in ledger.predictions.values()
    } == {
        ("m1", 1, 1),
        ("m2", 1, 0),
    }


def test_a_revision_with_a_forged_id_is_refused() -> None:
    """The id must be the one of (match, model, version, revision): a prediction claiming
    another revision than its id is distrusted."""
    honest = prediction(revision=1, made_at=BEFORE)
    forged = Prediction(
        **{
            **{f: getattr(honest, f) for f in honest.__struct_fields__},
            "features_revision": 3,
        }
    )
    assert distrust(honest, MatchLedger(), registered=True, knew_result=False) is None
    issue = distrust(forged, MatchLedger(), registered=True, knew_result=False)
    assert issue is not None
    assert issue.field == "prediction_id"
