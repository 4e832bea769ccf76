"""Scheduled retraining's pure rules: time-ordered folds, the leak-free training set, the
fit and its CV figures, the registered id, and when a schedule or a decay alert asks for a run."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from agents.trainer_rules import (
    EMBARGO,
    FitRequest,
    RefitPlan,
    StoredMatch,
    candidate_id,
    decay_triggers,
    expanding_folds,
    fit_candidate,
    parse_stored,
    refit_all,
    schedule_due,
    skip_reason,
    training_set,
)
from models import catalog
from tests.unit.synthetic_matches import match

START = datetime(2020, 8, 1, 15, tzinfo=UTC)


def kickoffs(n: int, seed: int = 1) -> list[datetime]:
    """Sorted kickoffs with many ties (several matches at 15:00 on a match day)."""
    rng = random.Random(seed)
    days = [rng.randrange(0, 300) for _ in range(n)]
    return sorted(START + timedelta(days=d, hours=rng.choice((0, 0, 0, 2, 5))) for d in days)


def stored(n: int, seed: int = 3) -> list[StoredMatch]:
    rng = random.Random(seed)
    out = []
    for i, kickoff in enumerate(kickoffs(n, seed)):
        inputs, outcome = match(rng)
        out.append(StoredMatch(f"m{i:05d}", kickoff, kickoff - timedelta(hours=1), inputs, outcome))
    return out


@pytest.mark.parametrize("n", [12, 100, 997])
@pytest.mark.parametrize("folds", [2, 5])
def test_no_fold_validates_before_or_alongside_its_training_data(n: int, folds: int) -> None:
    times = kickoffs(n)
    split = expanding_folds(times, folds)
    assert split, "every size here has folds"
    for fold in split:
        assert fold.train_end <= fold.validation_start < fold.validation_end <= n
        latest_train = max(times[i] for i in fold.train)
        earliest_validation = min(times[i] for i in fold.validation)
        assert latest_train <= earliest_validation - EMBARGO
        assert not set(fold.train) & set(fold.validation)


def test_folds_expand_and_cover_the_tail_in_order() -> None:
    times = kickoffs(600)
    split = expanding_folds(times, 5)
    assert [f.train_end for f in split] == sorted(f.train_end for f in split)
    assert split[-1].validation_end == 600
    for before, after in itertools.pairwise(split):
        assert before.validation_end == after.validation_start


def test_ties_at_a_boundary_stay_out_of_training() -> None:
    """Six matches at the same kickoff straddle the block boundary: none of them trains the
    fold that validates on the others."""
    times = [START] * 3 + [START + timedelta(days=1)] * 6 + [START + timedelta(days=2)] * 3
    fold = expanding_folds(times, 2, embargo=timedelta(0))[0]
    assert fold.validation_start == 4
    assert fold.train_end == 3


def test_unsorted_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        expanding_folds([START + timedelta(days=1), START], 2)


def test_too_few_rows_make_no_folds() -> None:
    assert expanding_folds([START, START], 5) == []


def test_a_matchs_own_result_never_enters_its_inputs() -> None:
    """The inputs are the stored features alone: flipping the outcome changes the label only;
    features issued at or after kickoff (which could have seen the result) are left out."""
    rng = random.Random(5)
    inputs, _ = match(rng)
    kickoff = START
    as_home = StoredMatch("m1", kickoff, kickoff - timedelta(hours=1), inputs, "H")
    as_away = StoredMatch("m1", kickoff, kickoff - timedelta(hours=1), inputs, "A")
    home, away = training_set([as_home]).examples[0], training_set([as_away]).examples[0]
    assert home.inputs == away.inputs == inputs
    assert (home.outcome, away.outcome) == ("H", "A")
    assert not {"home_goals", "away_goals", "outcome"} & set(home.inputs)
    late = StoredMatch("m2", kickoff, kickoff + timedelta(hours=2), inputs, "H")
    data = training_set([as_home, late])
    assert [e.match_id for e in data.examples] == ["m1"]
    assert data.excluded == {"features issued at or after kickoff": 1}


def test_training_set_is_in_kickoff_order() -> None:
    matches = stored(50)
    data = training_set(reversed(matches))
    keys = [(e.kickoff, e.match_id) for e in data.examples]
    assert keys == sorted(keys)


def test_parse_stored_reads_what_the_store_writes() -> None:
    text = json.dumps(
        [
            {
                "match_id": "m1",
                "kickoff": "2024-01-01T15:00:00+00:00",
                "issued_at": "2024-01-01T13:00:00Z",
                "features": {"elo_diff": 3},
                "outcome": "D",
            }
        ]
    )
    (row,) = parse_stored(text)
    assert row.issued_at is not None
    assert row.issued_at < row.kickoff
    assert row.features == {"elo_diff": 3.0}
    assert parse_stored("[]") == []


def test_fit_reports_time_ordered_cv_figures_and_a_model_that_restores() -> None:
    data = training_set(stored(600))
    result = fit_candidate(FitRequest("batch-logreg", "batch-logreg-refit", 4), data.examples)
    metrics = result.metrics
    assert metrics["rows"] == 600
    assert metrics["cv_folds"] == 4
    folds = [metrics[f"cv_fold_{k}_log_loss"] for k in range(4)]
    assert metrics["cv_log_loss"] == pytest.approx(sum(folds) / 4)
    assert 0 < metrics["cv_brier"] < 2
    assert "cv_market_log_loss" in metrics
    model = catalog.restore(result.kind, result.state)
    assert model.model_id == "batch-logreg-refit"
    p = model.predict_proba_one(data.examples[-1].inputs)
    assert sum(p.values()) == pytest.approx(1.0)


def test_refit_all_skips_a_small_set_and_reports_a_failing_fit() -> None:
    few = json.dumps(
        [
            {
                "match_id": m.match_id,
                "kickoff": m.kickoff.isoformat(),
                "issued_at": None,
                "features": m.features,
                "outcome": "H",  # one class only: logistic regression refuses to fit
            }
            for m in stored(120)
        ]
    )
    request = FitRequest("batch-logreg", "batch-logreg", 3)
    small = refit_all(RefitPlan(few, (request,), min_matches=500))
    assert small.examples == 120
    assert small.models[0].skipped is not None
    assert "too few results" in small.models[0].skipped
    failing = refit_all(RefitPlan(few, (request,), min_matches=100))
    assert failing.models[0].result is None
    assert failing.models[0].error is not None
    assert "ValueError" in failing.models[0].error


def test_skip_reason_names_the_setting() -> None:
    reason = skip_reason(10, min_matches=500, folds=5)
    assert reason is not None
    assert "TIPSTREAM_RETRAIN_MIN_MATCHES" in reason
    assert skip_reason(600, min_matches=500, folds=5) is None


def test_a_refit_never_replaces_the_champion() -> None:
    assert candidate_id("batch-logreg", {}) == ("batch-logreg", "new challenger")
    assert candidate_id("batch-logreg", {"batch-logreg": "challenger"})[0] == "batch-logreg"
    assert candidate_id("batch-logreg", {"batch-logreg": "champion"})[0] == "batch-logreg-refit"
    # Once the refit is promoted, the base is a challenger again and takes the next refit.
    promoted = {"batch-logreg": "challenger", "batch-logreg-refit": "champion"}
    assert candidate_id("batch-logreg", promoted)[0] == "batch-logreg"
    retired = {"batch-logreg": "champion", "batch-logreg-refit": "retired"}
    assert candidate_id("batch-logreg", retired)[0] is None
    assert candidate_id("batch-logreg", {"batch-logreg": "retired"})[0] is None


def test_schedule() -> None:
    now = START
    assert not schedule_due(now, None, 0)
    assert schedule_due(now, None, 60)
    assert not schedule_due(now, now - timedelta(seconds=59), 60)
    assert schedule_due(now, now - timedelta(seconds=60), 60)


def test_one_incident_one_refit() -> None:
    """Several decay alerts of one incident (window test, paired CUSUM, leagues): the first
    triggers, the rest fall in the cooldown; one on another model never triggers."""
    hour = 3600.0

    def triggers(**changes: object) -> bool:
        args: dict[str, object] = {
            "kind": "decay",
            "state": "firing",
            "model_id": "champ",
            "champion": "champ",
            "last_requested": None,
            "created_at": START,
            "cooldown_s": 6 * hour,
        }
        args.update(changes)
        return decay_triggers(**args)  # type: ignore[arg-type]

    assert triggers()
    assert not triggers(last_requested=START - timedelta(hours=1))
    assert triggers(last_requested=START - timedelta(hours=6))
    assert not triggers(model_id="other")
    assert not triggers(state="resolved")
    assert not triggers(kind="drift")
    assert not triggers(champion=None)
