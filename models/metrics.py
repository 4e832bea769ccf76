"""Proper scoring rules and calibration for 1X2 predictions, as pure functions.

Probabilities are mappings over ``"H"``, ``"D"``, ``"A"``; the outcome is one of them. The same
functions score the offline evaluator, the reconciler's evaluations and the monitors' windows,
so a figure means the same thing wherever it appears.

>>> round(rps({"H": 0.5, "D": 0.3, "A": 0.2}, "H"), 4)
0.145
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from schemas.events import OUTCOMES, Odds, Outcome

ProbabilityMap = Mapping[str, float] | Mapping[Outcome, float]
"""H/D/A probabilities; both key types are accepted so callers need no cast."""

LOG_LOSS_CLIP = 1e-15
"""Smallest probability a log loss uses: a confident miss costs ~34.5, never infinity."""


def log_loss(probabilities: ProbabilityMap, outcome: Outcome) -> float:
    """Negative log of the probability given to what happened (natural log, clipped)."""
    return -math.log(min(max(probabilities[outcome], LOG_LOSS_CLIP), 1.0))


def brier(probabilities: ProbabilityMap, outcome: Outcome) -> float:
    """Sum over the three classes of the squared error; 0 (perfect) to 2 (certain and wrong)."""
    return sum((probabilities[cls] - (1.0 if cls == outcome else 0.0)) ** 2 for cls in OUTCOMES)


def rps(probabilities: ProbabilityMap, outcome: Outcome) -> float:
    """Ranked probability score over the ordered H, D, A, halved: 0 to 1.

    A home win predicted as a draw costs less than predicted as an away win, unlike log loss.
    """
    home_gap = probabilities["H"] - (1.0 if outcome == "H" else 0.0)
    not_away_gap = probabilities["H"] + probabilities["D"] - (0.0 if outcome == "A" else 1.0)
    return (home_gap * home_gap + not_away_gap * not_away_gap) / 2.0


def predicted_outcome(probabilities: ProbabilityMap) -> Outcome:
    """The most probable outcome; ties go to the first of H, D, A so the choice is stable."""
    return max(OUTCOMES, key=lambda cls: probabilities[cls])


def hit(probabilities: ProbabilityMap, outcome: Outcome) -> bool:
    """Whether the most probable outcome is what happened (one match's accuracy)."""
    return predicted_outcome(probabilities) == outcome


class Implied(NamedTuple):
    """Bookmaker odds as probabilities that sum to one, and the margin they removed."""

    probabilities: dict[Outcome, float]
    margin: float


def normalised_implied(odds: Odds) -> Implied:
    """Implied probabilities ``1/odds`` divided by their sum; margin is that sum minus one."""
    home, draw, away = odds.home, odds.draw, odds.away
    # Unrolled (the scorer calls this per match): false for NaN, infinities and prices <= 1.
    if not (1.0 < home < math.inf and 1.0 < draw < math.inf and 1.0 < away < math.inf):
        raise ValueError(f"decimal odds must be finite and > 1, got {(home, draw, away)}")
    inverse_home, inverse_draw, inverse_away = 1.0 / home, 1.0 / draw, 1.0 / away
    total = inverse_home + inverse_draw + inverse_away  # sum()'s order: H, D, A
    return Implied(
        probabilities={"H": inverse_home / total, "D": inverse_draw / total,
                       "A": inverse_away / total},
        margin=total - 1.0,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One bin of a reliability diagram for one outcome class."""

    lower: float
    upper: float
    mean_predicted: float
    observed_frequency: float
    count: int


def calibration_bins(
    predictions: Iterable[tuple[ProbabilityMap, Outcome]], bins: int = 10
) -> dict[Outcome, list[CalibrationBin]]:
    """Reliability diagram data: per class, equal-width bins of the predicted probability.

    Empty bins are left out (their frequency is undefined); a probability of exactly 1 falls in
    the last bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    sums = {cls: [[0.0, 0.0, 0] for _ in range(bins)] for cls in OUTCOMES}
    for probabilities, outcome in predictions:
        for cls in OUTCOMES:
            p = probabilities[cls]
            cell = sums[cls][min(int(p * bins), bins - 1)]
            cell[0] += p
            cell[1] += 1.0 if cls == outcome else 0.0
            cell[2] += 1
    return {
        cls: [
            CalibrationBin(i / bins, (i + 1) / bins, total / count, observed / count, int(count))
            for i, (total, observed, count) in enumerate(cells)
            if count
        ]
        for cls, cells in sums.items()
    }


@dataclass(slots=True)
class MetricSummary:
    """Running means of the scoring rules over evaluated matches, O(1) per match.

    >>> summary = MetricSummary()
    >>> summary.add({"H": 0.5, "D": 0.3, "A": 0.2}, "H")
    >>> summary.count, round(summary.log_loss, 4), summary.accuracy
    (1, 0.6931, 1.0)
    """

    count: int = 0
    total_log_loss: float = 0.0
    total_rps: float = 0.0
    total_brier: float = 0.0
    hits: int = 0

    def add(self, probabilities: ProbabilityMap, outcome: Outcome) -> None:
        """Score one more match."""
        self.count += 1
        self.total_log_loss += log_loss(probabilities, outcome)
        self.total_rps += rps(probabilities, outcome)
        self.total_brier += brier(probabilities, outcome)
        self.hits += hit(probabilities, outcome)

    def _mean(self, total: float) -> float:
        return total / self.count if self.count else math.nan

    @property
    def log_loss(self) -> float:
        """Mean log loss (NaN before the first match)."""
        return self._mean(self.total_log_loss)

    @property
    def rps(self) -> float:
        """Mean ranked probability score."""
        return self._mean(self.total_rps)

    @property
    def brier(self) -> float:
        """Mean Brier score."""
        return self._mean(self.total_brier)

    @property
    def accuracy(self) -> float:
        """Share of matches whose most probable outcome happened."""
        return self._mean(float(self.hits))

    def as_dict(self) -> dict[str, float]:
        """The means and the count, for logs and reports."""
        return {
            "matches": float(self.count),
            "logloss": self.log_loss,
            "rps": self.rps,
            "brier": self.brier,
            "accuracy": self.accuracy,
        }
