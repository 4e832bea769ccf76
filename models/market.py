"""Market references: the bookmakers' implied probabilities, as models that never learn.

``market-open`` reads ``open_p_H/D/A`` (known before kickoff); ``market-close`` reads
``close_p_H/D/A`` (known only at kickoff, so a reference, never a feature) and falls back to the
opening line where the closing one is missing. With neither, both answer :data:`BASE_RATES`.
They score in the same evaluation log as the learners, so every model is judged against them.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from models.base import BASE_RATES, BaseModel, FloatArray
from models.features import CLOSE_INPUTS

OPEN_INPUTS: tuple[str, str, str] = ("open_p_H", "open_p_D", "open_p_A")


class MarketModel(BaseModel):
    """Implied probabilities from the first complete line among its inputs (three per line)."""

    kind = "market"

    @classmethod
    def opening(cls, model_id: str = "market-open") -> Self:
        """The opening line."""
        return cls(model_id, OPEN_INPUTS)

    @classmethod
    def closing(cls, model_id: str = "market-close") -> Self:
        """The closing line, or the opening one where it is missing."""
        return cls(model_id, CLOSE_INPUTS + OPEN_INPUTS)

    def __init__(self, model_id: str, inputs: tuple[str, ...]) -> None:
        if not inputs or len(inputs) % 3:
            raise ValueError(f"a market model reads lines of three (H, D, A), got {inputs}")
        super().__init__(model_id, inputs)

    def _proba(self, matrix: FloatArray) -> FloatArray:
        result = np.tile(np.array(list(BASE_RATES.values())), (len(matrix), 1))
        # Later lines are fallbacks: fill from the last to the first, so the first usable wins.
        for start in range(len(self.inputs) - 3, -1, -3):
            line = matrix[:, start : start + 3]
            usable = (np.isfinite(line) & (line > 0.0)).all(axis=1)
            result[usable] = line[usable]
        return result

    def _state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        return cls(model_id, inputs)
