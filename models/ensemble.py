"""An online ensemble: the online models' probabilities mixed by weights learned from log loss.

The exponentially weighted forecaster (Vovk's aggregating algorithm for log loss, with a
forgetting factor): each member ``i`` keeps a discounted sum ``L_i`` of its log losses on the
results the ensemble learned, and the ensemble predicts ``sum_i w_i p_i`` with
``w_i = softmax(-eta * L)_i``. With ``eta = 1`` and no forgetting this is the Bayesian mixture,
whose cumulative log loss is never more than ``ln(m)`` above the best of its ``m`` members;
the forgetting factor ``discount`` lets weight come back to a member that gets better later
(a sum over about ``1 / (1 - discount)`` recent results).

Each member learns every example the ensemble learns (same weight) and sees every input the
ensemble sees; a member's loss is taken on its prediction *before* it learns the result, so the
weights follow prequential quality. A learn step is all or nothing across the members: if one
member refuses an example, every member and the weights are put back as they were.

>>> from models.online import OrderedLogit
>>> ensemble = Ensemble("e", [OrderedLogit("a", ("elo_diff",)), OrderedLogit("b", ("pi_exp_gd",))])
>>> ensemble.weights().tolist()
[0.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from models.base import OUTCOME_INDEX, BaseModel, FloatArray, Model, floats
from schemas.events import Outcome

DEFAULT_ETA = 1.0
"""Learning rate of the weights: 1 is the rate at which mixing is optimal for log loss."""
DEFAULT_DISCOUNT = 0.999
"""Forgetting factor per learned result: the losses of about the last 1,000 results (two
months of five leagues) decide the weights."""


class Ensemble(BaseModel):
    """Exponentially weighted mixture of online models, weights from discounted log loss."""

    kind = "ensemble"
    learns_online = True
    guarded = ("members", "losses")

    def __init__(
        self,
        model_id: str,
        members: Sequence[Model],
        *,
        eta: float = DEFAULT_ETA,
        discount: float = DEFAULT_DISCOUNT,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if not all(member.learns_online for member in members):
            raise ValueError("ensemble members must learn online")
        if len({member.model_id for member in members}) != len(members):
            raise ValueError("ensemble members must have distinct ids")
        if not (math.isfinite(eta) and eta > 0.0):
            raise ValueError(f"eta must be finite and > 0, got {eta}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        inputs = dict.fromkeys(name for member in members for name in member.inputs)
        super().__init__(model_id, tuple(inputs))
        self.members: list[Model] = list(members)
        self.eta = eta
        self.discount = discount
        self.losses = np.zeros(len(self.members))

    def weights(self) -> FloatArray:
        """The members' current weights (summing to one), in member order."""
        scores = -self.eta * self.losses
        exp = np.exp(scores - scores.max())
        return np.asarray(exp / exp.sum(), dtype=np.float64)

    def member_weights(self) -> dict[str, float]:
        """Each member's weight by id: what the ensemble currently trusts."""
        return {m.model_id: float(w) for m, w in zip(self.members, self.weights(), strict=True)}

    def _rows(self, matrix: FloatArray) -> list[dict[str, float]]:
        """Rows back as inputs for the members, without the missing (NaN) values."""
        names = self.inputs
        return [
            {name: float(v) for name, v in zip(names, row, strict=True) if math.isfinite(v)}
            for row in matrix
        ]

    def _proba(self, matrix: FloatArray) -> FloatArray:
        xs = self._rows(matrix)
        stacked = np.stack([member.predict_proba_many(xs) for member in self.members])
        return np.asarray(np.tensordot(self.weights(), stacked, axes=1), dtype=np.float64)

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        x = self._rows(row[np.newaxis, :])[0]
        index = OUTCOME_INDEX[y]
        seen = np.array([member.predict_proba_many([x])[0, index] for member in self.members])
        self.losses = self.discount * self.losses - weight * np.log(seen)
        for member in self.members:
            member.learn_one(x, y, weight)

    def _learned_finite(self) -> bool:
        """Only the losses: each member's own ``learn_one`` has already refused a step that
        would leave its state non-finite (the generic walk of every member, forest included,
        took ~20 ms of a ~36 ms step)."""
        return bool(np.isfinite(self.losses).all())

    def _observe(self, row: FloatArray) -> None:
        x = self._rows(row[np.newaxis, :])[0]
        for member in self.members:
            member.observe_one(x)

    def _state(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "discount": self.discount,
            "losses": self.losses.tolist(),
            "members": [[member.kind, member.snapshot()] for member in self.members],
        }

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        from models import catalog  # the catalog lists this kind: imported when first needed

        members = [catalog.restore(kind, data) for kind, data in state["members"]]
        model = cls(model_id, members, eta=state["eta"], discount=state["discount"])
        if model.inputs != inputs:
            raise ValueError(f"ensemble {model_id}: members read {model.inputs}, not {inputs}")
        model.losses = floats(state["losses"])
        return model
