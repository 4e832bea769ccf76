"""Learning policies: which reconciled results a model learns from, and with what weight.

- ``errors`` (the rule of the batch pipeline tipstream replaced): learn only from
  mispredictions, weight 1;
  ``errors:0.7`` only from those whose confidence (top probability) was at least 0.7.
- ``all``: every result, weight 1 (plain prequential learning).
- ``weighted``: every result, weight ``1 - p(outcome)``: a surprise teaches more than a result
  the model already expected, without throwing the expected ones away as ``errors`` does.

Learning only from errors biases a probabilistic model (it never sees the results it got right,
so it drifts away from its own hits); it is kept because it is the behaviour the service grew
out of, and the quality measurement compares it with the others.

>>> policy = parse("errors:0.7")
>>> policy.weight({"H": 0.75, "D": 0.15, "A": 0.10}, "A"), str(policy)
(1.0, 'errors:0.7')
>>> parse("weighted").weight({"H": 0.75, "D": 0.15, "A": 0.10}, "H")
0.25
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

from models.metrics import ProbabilityMap, predicted_outcome
from schemas.events import Outcome

Mode = Literal["errors", "all", "weighted"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True, slots=True)
class LearningPolicy:
    """A rule from (the model's probabilities, the outcome) to a learning weight (0 = skip)."""

    mode: Mode = "errors"
    min_confidence: float = 0.0
    """``errors`` only: skip misses whose top probability is below this."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown learning policy {self.mode!r}; expected one of {MODES}")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(f"confidence threshold must be in [0, 1), got {self.min_confidence}")
        if self.mode != "errors" and self.min_confidence:
            raise ValueError(f"a confidence threshold applies to `errors` only, not {self.mode!r}")

    def weight(self, probabilities: ProbabilityMap, outcome: Outcome) -> float:
        """How much the model should learn from this result; 0 means not at all."""
        if self.mode == "all":
            return 1.0
        if self.mode == "weighted":
            return max(0.0, 1.0 - probabilities[outcome])
        predicted = predicted_outcome(probabilities)
        if predicted == outcome or probabilities[predicted] < self.min_confidence:
            return 0.0
        return 1.0

    def __str__(self) -> str:
        return f"errors:{self.min_confidence!r}" if self.min_confidence else self.mode


def parse(text: str) -> LearningPolicy:
    """A policy from its text form: ``errors``, ``errors:<confidence>``, ``all``, ``weighted``."""
    mode, _, argument = text.strip().partition(":")
    if mode not in MODES:
        raise ValueError(
            f"unknown learning policy {text!r}; expected `errors`, `errors:<confidence>` "
            f"(e.g. `errors:0.7`), `all` or `weighted`"
        )
    if not argument:
        return LearningPolicy(cast(Mode, mode))
    if mode != "errors":
        raise ValueError(f"learning policy {mode!r} takes no argument, got {text!r}")
    try:
        threshold = float(argument)
    except ValueError:
        raise ValueError(
            f"confidence in {text!r} must be a number in [0, 1), e.g. `errors:0.7`"
        ) from None
    return LearningPolicy("errors", threshold)
