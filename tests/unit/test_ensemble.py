"""The online ensemble: weights follow the members' log loss; the catalog's one mixes them."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pytest

from models import catalog
from models.base import BaseModel, FloatArray, NonFiniteState
from models.ensemble import Ensemble
from schemas.events import Outcome
from tests.unit.synthetic_matches import stream


class Fixed(BaseModel):
    """An online model that never changes its answer: a member of known quality."""

    kind = "fixed"
    learns_online = True

    def __init__(self, model_id: str, probabilities: tuple[float, float, float]) -> None:
        super().__init__(model_id, ("n",))
        self.probabilities = probabilities

    def _proba(self, matrix: FloatArray) -> FloatArray:
        return np.tile(np.array(self.probabilities), (len(matrix), 1))

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        return None

    def _state(self) -> dict[str, Any]:
        return {"p": list(self.probabilities)}

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        low, middle, high = state["p"]
        return cls(model_id, (low, middle, high))


def _pair(**kwargs: float) -> Ensemble:
    return Ensemble("e", [Fixed("home", (0.6, 0.2, 0.2)), Fixed("away", (0.2, 0.2, 0.6))], **kwargs)


def test_weights_are_the_bayesian_posterior_without_forgetting() -> None:
    """eta 1, no discount: after one home win the weights are 0.6 : 0.2, i.e. 0.75 / 0.25, and
    the mixture is 0.75 * (0.6, 0.2, 0.2) + 0.25 * (0.2, 0.2, 0.6)."""
    ensemble = _pair(discount=1.0)
    ensemble.learn_one({"n": 0.0}, "H")
    assert ensemble.weights() == pytest.approx([0.75, 0.25])
    p = ensemble.predict_proba_one({"n": 1.0})
    assert p == pytest.approx({"H": 0.5, "D": 0.2, "A": 0.3})


def test_weights_move_toward_the_better_member() -> None:
    """On mostly home wins the weight of the member that favours home grows at every home win
    and ends near one; the ensemble's prediction follows it."""
    ensemble = _pair()
    pattern: list[Outcome] = ["H", "H", "D", "H", "A", "H", "H", "H", "D", "H"]
    outcomes = pattern * 5
    previous = ensemble.member_weights()["home"]
    for y in outcomes:
        ensemble.learn_one({"n": 0.0}, y)
        weight = ensemble.member_weights()["home"]
        if y == "H":
            assert weight > previous
        previous = weight
    assert previous > 0.99
    assert ensemble.predict_proba_one({})["H"] == pytest.approx(0.6, abs=0.01)


def test_forgetting_lets_weight_come_back() -> None:
    """After a run of home wins then a run of away wins, a discounted ensemble has moved to the
    away member; without forgetting the early run still dominates it longer."""
    home: list[Outcome] = ["H"]
    away: list[Outcome] = ["A"]
    outcomes = home * 200 + away * 150
    forgetting, remembering = _pair(discount=0.95), _pair(discount=1.0)
    for y in outcomes:
        forgetting.learn_one({}, y)
        remembering.learn_one({}, y)
    assert forgetting.member_weights()["away"] > 0.99
    assert remembering.member_weights()["away"] < 0.01


def test_zero_weight_learns_nothing_and_bad_settings_are_refused() -> None:
    """Weight 0 leaves the weights alone; empty, static or duplicate members are errors."""
    ensemble = _pair()
    ensemble.learn_one({}, "H", weight=0.0)
    assert ensemble.weights() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble("e", [])
    with pytest.raises(ValueError, match="learn online"):
        Ensemble("e", [catalog.create("market-open")])
    with pytest.raises(ValueError, match="distinct"):
        Ensemble("e", [Fixed("a", (0.4, 0.3, 0.3)), Fixed("a", (0.4, 0.3, 0.3))])
    with pytest.raises(ValueError, match="discount"):
        _pair(discount=0.0)


def test_catalog_ensemble_mixes_its_members_and_round_trips() -> None:
    """online-ensemble holds the listed members, its prediction is their weighted mean, and a
    restored copy holds the same weights and members."""
    model = catalog.create("online-ensemble")
    assert isinstance(model, Ensemble)
    assert [m.model_id for m in model.members] == list(catalog.ENSEMBLE_MEMBERS)
    for x, y in stream(80):
        model.learn_one(x, y)
    x = stream(1, seed=9)[0][0]
    members = np.array([list(m.predict_proba_one(x).values()) for m in model.members])
    expected = model.weights() @ members
    assert list(model.predict_proba_one(x).values()) == pytest.approx(expected.tolist())
    restored = catalog.restore(model.kind, model.snapshot())
    assert isinstance(restored, Ensemble)
    assert restored.member_weights() == pytest.approx(model.member_weights())
    assert restored.predict_proba_one(x) == pytest.approx(model.predict_proba_one(x))


class Breaking(Fixed):
    """A member that refuses (as a poisoned learner does) any example with ``n`` above 100."""

    kind = "breaking"

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        self.probabilities = (0.5, 0.25, 0.25)  # changed before refusing, as a step may be
        if row[0] > 100:
            raise NonFiniteState("poisoned")


def test_a_member_refusing_a_step_leaves_the_whole_ensemble_as_it_was() -> None:
    """One member refuses: the error reaches the learner, and every member and the weights are
    put back (the ensemble checks only its losses itself: each member checks its own state)."""
    ensemble = Ensemble("e", [Fixed("home", (0.6, 0.2, 0.2)), Breaking("b", (0.2, 0.2, 0.6))])
    for _ in range(3):
        ensemble.learn_one({"n": 1.0}, "H")
    before = ensemble.snapshot()
    with pytest.raises(NonFiniteState, match="poisoned"):
        ensemble.learn_one({"n": 1e9}, "A")
    assert ensemble.snapshot() == before
    assert ensemble.state_is_finite()
    ensemble.learn_one({"n": 2.0}, "H")  # and it learns on
    assert ensemble.member_weights()["home"] > 0.5
