"""A scripted incident for the demo: a model whose inputs break for a stretch, then mend.

:class:`IncidentModel` wraps an online model and, while the number of examples it has learned is
in ``[start, end)``, predicts from the fixture read the wrong way round: every home feature
holds the away side's and back, differences negated, the opening line's home and away
probabilities exchanged (a column-mapping bug on the scoring path, the fault of the first row
of issue 16's table). Outside that range it is the wrapped model, prediction for prediction.

Why a count of learned examples: a model sees no clock, only its inputs, and the learner
learns the replay's results in order, so the count is where the stream is; the registry
stores it with every version (``model_versions.learned``), so which predictions were broken
can be read back from the versions that made them.

Only predictions break: the wrapped model learns every example from the inputs as they came,
so once the range is past it predicts exactly as it would have without the incident, and the
recovery the monitor reports is about the monitor, not about a model re-learning.

>>> from models.online import RiverSoftmax
>>> inner = RiverSoftmax("inner", ("elo_diff",), prior=("open_p_H", "open_p_D", "open_p_A"))
>>> model = IncidentModel("demo-incident", inner, start=0, end=1)
>>> x = {"elo_diff": 0.0, "open_p_H": 0.6, "open_p_D": 0.25, "open_p_A": 0.15}
>>> model.broken, {k: round(v, 2) for k, v in model.predict_proba_one(x).items()}
(True, {'H': 0.15, 'D': 0.25, 'A': 0.6})
>>> model.learn_one(x, "H")
>>> model.broken, {k: round(v, 2) for k, v in model.predict_proba_one(x).items()}
(False, {'H': 0.6, 'D': 0.25, 'A': 0.15})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from models.base import BaseModel, FloatArray, Model
from models.features import FEATURE_NAMES
from schemas.events import Outcome


def _counterpart(name: str) -> str:
    """The feature of the other side: ``home`` and ``away`` exchanged, ``_H`` and ``_A``."""
    if name.endswith("_H"):
        return name[:-2] + "_A"
    if name.endswith("_A"):
        return name[:-2] + "_H"
    return name.replace("home", "\0").replace("away", "home").replace("\0", "away")


SWAPPED: dict[str, str] = {
    name: _counterpart(name) for name in FEATURE_NAMES if _counterpart(name) in FEATURE_NAMES
}
"""Features read from the other side's column while broken (``elo_home`` from ``elo_away``,
``open_p_H`` from ``open_p_A``, ``form_home_at_home_ppg`` from ``form_away_at_away_ppg``...)."""
NEGATED: tuple[str, ...] = ("elo_diff", "pi_exp_gd")
"""Home-minus-away features: the other way round they change sign."""
COMPLEMENTED: tuple[str, ...] = ("elo_p_home",)
"""A home side's probability: the other way round, one minus it."""


def mirrored(x: Mapping[str, float]) -> dict[str, float]:
    """The inputs of the fixture with home and away exchanged (a new dict; ``x`` is kept).

    >>> mirrored({"elo_diff": 40.0, "open_p_H": 0.5, "open_p_A": 0.2, "rest_home": 7.0})
    {'elo_diff': -40.0, 'open_p_A': 0.5, 'open_p_H': 0.2, 'rest_away': 7.0}
    """
    out: dict[str, float] = {}
    for name, value in x.items():
        if name in NEGATED:
            out[name] = -value
        elif name in COMPLEMENTED:
            out[name] = 1.0 - value
        else:
            out[SWAPPED.get(name, name)] = value
    return out


class IncidentModel(BaseModel):
    """An online model whose predictions read mirrored inputs while ``start <= learned < end``."""

    kind = "demo-incident"
    learns_online = True
    guarded = ("inner", "learned")

    def __init__(self, model_id: str, inner: Model, *, start: int, end: int) -> None:
        if not inner.learns_online:
            raise ValueError("an incident wraps a model that learns online")
        if not 0 <= start <= end:
            raise ValueError(f"the broken range needs 0 <= start <= end, got [{start}, {end})")
        missing = sorted(SWAPPED[n] for n in inner.inputs if SWAPPED.get(n, n) not in inner.inputs)
        if missing:
            raise ValueError(f"mirroring {inner.model_id}'s inputs also needs {missing}")
        super().__init__(model_id, inner.inputs)
        self.inner = inner
        self.start = start
        self.end = end
        self.learned = 0

    @property
    def broken(self) -> bool:
        """Whether predictions read mirrored inputs now."""
        return self.start <= self.learned < self.end

    def _rows(self, matrix: FloatArray) -> list[dict[str, float]]:
        """Rows back as inputs for the wrapped model, without the missing (NaN) values."""
        names = self.inputs
        return [
            {name: float(v) for name, v in zip(names, row, strict=True) if math.isfinite(v)}
            for row in matrix
        ]

    def _proba(self, matrix: FloatArray) -> FloatArray:
        xs = self._rows(matrix)
        if self.broken:
            xs = [mirrored(x) for x in xs]
        return np.asarray(self.inner.predict_proba_many(xs), dtype=np.float64)

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        self.inner.learn_one(self._rows(row[np.newaxis, :])[0], y, weight)
        self.learned += 1

    def _observe(self, row: FloatArray) -> None:
        self.inner.observe_one(self._rows(row[np.newaxis, :])[0])

    def _state(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "learned": self.learned,
            "inner": [self.inner.kind, self.inner.snapshot()],
        }

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        from models import catalog  # the catalog lists this kind: imported when first needed

        kind, data = state["inner"]
        model = cls(model_id, catalog.restore(kind, data), start=state["start"], end=state["end"])
        if model.inputs != inputs:
            raise ValueError(f"incident {model_id}: wraps a model of {model.inputs}, not {inputs}")
        model.learned = int(state["learned"])
        return model
