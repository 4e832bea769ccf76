"""The batch model: cross-validates, trains, scores better than the base rates, round-trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import catalog
from models.base import BASE_RATES
from models.batch import BatchModel
from models.metrics import MetricSummary
from schemas.events import OUTCOMES
from tests.unit.synthetic_matches import stream

TRAIN, TEST = stream(600, seed=1), stream(300, seed=2)


def _score(model: BatchModel) -> float:
    summary = MetricSummary()
    probabilities = model.predict_proba_many([x for x, _ in TEST])
    for row, (_, y) in zip(probabilities, TEST, strict=True):
        summary.add(dict(zip(OUTCOMES, row, strict=True)), y)
    return summary.log_loss


@pytest.mark.parametrize("model_id", catalog.BATCH_MODEL_IDS)
def test_batch_model_trains_and_scores(model_id: str) -> None:
    """fit reports a finite 5-fold CV log loss and the fitted model beats the base rates."""
    model = catalog.create(model_id)
    assert isinstance(model, BatchModel)
    assert not model.learns_online
    report = model.fit([x for x, _ in TRAIN], [y for _, y in TRAIN])
    assert report.rows == len(TRAIN)
    assert len(report.fold_log_losses) == 5
    assert math.isfinite(report.cv_log_loss)
    assert report.cv_log_loss < math.log(3)
    base = MetricSummary()
    for _, y in TEST:
        base.add(BASE_RATES, y)
    assert _score(model) < base.log_loss - 0.02
    restored = BatchModel.restore(model.snapshot())
    assert restored.report == report
    probe = [x for x, _ in TEST[:20]]
    np.testing.assert_array_equal(
        restored.predict_proba_many(probe), model.predict_proba_many(probe)
    )


def test_unfitted_batch_model_predicts_base_rates() -> None:
    """Before its first fit a batch model answers the base rates instead of failing."""
    model = catalog.create("batch-logreg")
    assert model.predict_proba_one(TEST[0][0]) == pytest.approx(BASE_RATES)


def test_fast_linear_path_matches_scikit_learn() -> None:
    """The numpy shortcut for logistic regression gives scikit-learn's own probabilities."""
    model = BatchModel("batch-logreg", ("elo_diff", "pi_exp_gd", "open_p_H", "open_p_A"))
    model.fit([x for x, _ in TRAIN], [y for _, y in TRAIN])
    xs = [x for x, _ in TEST]
    expected = model.fitted.predict_proba(model.matrix(xs))
    np.testing.assert_allclose(model.predict_proba_many(xs), expected, rtol=1e-9)


def test_missing_inputs_take_the_training_means() -> None:
    """A missing input is imputed with its mean over the training rows."""
    model = BatchModel("batch-logreg", ("elo_diff",))
    model.fit([x for x, _ in TRAIN], [y for _, y in TRAIN])
    mean = float(np.mean([x["elo_diff"] for x, _ in TRAIN]))
    assert model.predict_proba_one({}) == pytest.approx(model.predict_proba_one({"elo_diff": mean}))


def test_fit_refuses_bad_tables() -> None:
    """Rows and outcomes of different lengths, or too few rows for the folds, are refused."""
    model = catalog.create("batch-logreg")
    assert isinstance(model, BatchModel)
    with pytest.raises(ValueError, match="outcomes"):
        model.fit([x for x, _ in TRAIN[:10]], list(OUTCOMES))
    with pytest.raises(ValueError, match="more than 5 rows"):
        model.fit([x for x, _ in TRAIN[:3]], [y for _, y in TRAIN[:3]])


def test_refit_skips_cross_validation_and_trains_the_same_model() -> None:
    """A scheduled refit trains on every row like ``fit`` but runs no folds (NaN CV loss)."""
    rows, outcomes = [x for x, _ in TRAIN], [y for _, y in TRAIN]
    refitted, fitted = catalog.create("batch-logreg"), catalog.create("batch-logreg")
    assert isinstance(refitted, BatchModel)
    assert isinstance(fitted, BatchModel)
    report = refitted.refit(rows, outcomes)
    fitted.fit(rows, outcomes)
    assert report.rows == len(TRAIN)
    assert report.fold_log_losses == ()
    assert math.isnan(report.cv_log_loss)
    probe = [x for x, _ in TEST[:20]]
    np.testing.assert_allclose(
        refitted.predict_proba_many(probe), fitted.predict_proba_many(probe), rtol=1e-12
    )
