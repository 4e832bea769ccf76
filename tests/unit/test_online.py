"""The online learners' own properties (the shared contract is in test_model_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models import catalog
from models.base import BASE_RATES
from models.online import RiverSoftmax, SoftmaxRegression
from schemas.events import OUTCOMES
from tests.unit.synthetic_matches import stream

RATINGS = ("elo_diff", "pi_exp_gd")
LINE = ("open_p_H", "open_p_D", "open_p_A")


@pytest.mark.parametrize("cls", [SoftmaxRegression, RiverSoftmax])
def test_a_model_with_a_prior_starts_at_that_line(cls: type[SoftmaxRegression]) -> None:
    """Before learning, a model with a prior predicts the prior's line, and the base rates
    where the line is missing or incomplete."""
    model = cls("m", RATINGS, prior=LINE)
    x, _ = stream(1)[0]
    expected = {outcome: x[name] for outcome, name in zip(OUTCOMES, LINE, strict=True)}
    assert model.predict_proba_one(x) == pytest.approx(expected, abs=1e-12)
    partial = {k: v for k, v in x.items() if k != "open_p_D"}
    assert model.predict_proba_one(partial) == pytest.approx(BASE_RATES, abs=1e-12)


@pytest.mark.parametrize("cls", [SoftmaxRegression, RiverSoftmax])
def test_a_model_without_a_prior_starts_at_the_base_rates(cls: type[SoftmaxRegression]) -> None:
    """Without a prior, the first prediction is the base rates whatever the inputs."""
    model = cls("m", RATINGS)
    assert model.predict_proba_one(stream(1)[0][0]) == pytest.approx(BASE_RATES, abs=1e-12)


def test_a_prior_must_be_one_line_of_three() -> None:
    """A prior of other than three probabilities is refused at construction."""
    for cls in (SoftmaxRegression, RiverSoftmax):
        with pytest.raises(ValueError, match="one line"):
            cls("m", RATINGS, prior=LINE[:2])


def test_river_and_numpy_softmax_learn_the_same_model() -> None:
    """The River build and the numpy build of the default model stay close on one stream
    (they differ only in L2 target, clipping and River's bias being regularised)."""
    river, numpy_twin = catalog.create("online-logreg"), catalog.create("online-logreg-numpy")
    assert river.inputs == numpy_twin.inputs
    for x, y in stream(500):
        river.learn_one(x, y)
        numpy_twin.learn_one(x, y)
    probe = [x for x, _ in stream(50, seed=3)]
    np.testing.assert_allclose(
        river.predict_proba_many(probe), numpy_twin.predict_proba_many(probe), atol=0.01
    )


def test_old_softmax_snapshots_without_a_prior_still_restore() -> None:
    """A snapshot written before priors existed (no ``prior`` key) restores to an equal model."""
    model = SoftmaxRegression("m", RATINGS)
    for x, y in stream(30):
        model.learn_one(x, y)
    state = model._state()
    del state["prior"]
    restored = SoftmaxRegression._from_state("m", model.inputs, state)
    x = stream(1, seed=5)[0][0]
    assert restored.predict_proba_one(x) == model.predict_proba_one(x)


def test_river_softmax_predicts_what_river_itself_predicts() -> None:
    """The vectorised prediction of the River model equals River's own ``predict_proba_one``
    on the same state, with and without missing inputs."""
    model = catalog.create("online-logreg")
    assert isinstance(model, RiverSoftmax)
    for x, y in stream(300):
        model.learn_one(x, y)
    probe = [x for x, _ in stream(40, seed=4)]
    probe += [{k: v for k, v in x.items() if k not in ("elo_diff", "open_p_D")} for x in probe]
    rows = model.robust(model.matrix(probe))
    river = [model.regression.predict_proba_one(model._features(row)) for row in rows]
    expected = np.array([[p[outcome] for outcome in OUTCOMES] for p in river])
    np.testing.assert_allclose(model.predict_proba_many(probe), expected, atol=1e-12)


def test_river_softmax_prediction_does_not_touch_its_state() -> None:
    """Predicting leaves the snapshot byte for byte as it was (no defaultdict keys appear)."""
    model = catalog.create("online-logreg")
    for x, y in stream(50):
        model.learn_one(x, y)
    state = model.snapshot()
    model.predict_proba_many([{}, *(x for x, _ in stream(5, seed=9))])
    assert model.snapshot() == state
