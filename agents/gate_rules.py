"""Promotion gate: a paired Diebold-Mariano test on per-match log-loss differences.

Pure (no I/O). A challenger is proposed only when, on the same evaluated matches, it beats the
champion at the set confidence (one-sided test of the mean loss difference, Newey-West
variance so that runs of correlated matches do not overstate the evidence), it is not worse
than the opening line by more than a margin, its calibration error is within a limit, and no
league regresses beyond a limit. Every check that fails is named in ``reasons``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist, fmean
from typing import Any

from models.metrics import ProbabilityMap, calibration_bins
from schemas.events import Outcome

PROPOSE = "propose"
HOLD = "hold"


@dataclass(frozen=True, slots=True)
class GateSettings:
    """The gate's limits; the defaults are the service's."""

    confidence: float = 0.95
    min_matches: int = 300
    market_margin: float = 0.02
    """Mean log loss may exceed the opening line's by at most this much."""
    calibration_limit: float = 0.03
    """Largest expected calibration error (10 bins, averaged over H/D/A)."""
    league_regression: float = 0.05
    """Largest mean log-loss excess over the champion in any one league..."""
    league_min_matches: int = 50
    """...among leagues with at least this many of the shared matches."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_matches < 2 or self.league_min_matches < 1:
            raise ValueError("min_matches must be >= 2 and league_min_matches >= 1")
        limits = (self.market_margin, self.calibration_limit, self.league_regression)
        if not all(math.isfinite(v) and v >= 0 for v in limits):
            raise ValueError("margins and limits must be finite and >= 0")


@dataclass(frozen=True, slots=True)
class PairedMatch:
    """One match both models were evaluated on, in kickoff order."""

    match_id: str
    league: str
    challenger_loss: float
    champion_loss: float
    market_loss: float
    """Log loss of the normalised opening line; NaN for a match without one (left out of the
    market check, which then covers the matches that have a line)."""
    challenger_probabilities: ProbabilityMap
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class GateReport:
    """What the gate measured, what it decided and why (stored as JSON, shown to operators)."""

    challenger: str
    champion: str
    matches: int
    mean_difference: float
    """Mean of champion loss minus challenger loss (> 0: challenger better)."""
    ci_low: float
    ci_high: float
    dm_statistic: float
    p_value: float
    """One-sided: probability of a mean difference this large if the challenger is no better."""
    lags: int
    market_excess: float
    """Challenger's mean log loss minus the opening line's."""
    calibration_error: float
    worst_league: str
    worst_league_excess: float
    league_excess: dict[str, float] = field(default_factory=dict)
    decision: str = HOLD
    reasons: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        } | {"reasons": list(self.reasons)}


def newey_west_variance(values: Sequence[float], lags: int) -> float:
    """Long-run variance of ``values`` (Bartlett weights); the variance of the mean is it / n.

    >>> round(newey_west_variance([1.0, -1.0, 1.0, -1.0], 0), 3)
    1.0
    """
    n = len(values)
    mean = fmean(values)
    centred = [v - mean for v in values]
    total = sum(c * c for c in centred) / n
    for lag in range(1, min(lags, n - 1) + 1):
        weight = 1.0 - lag / (lags + 1)
        cov = sum(centred[i] * centred[i - lag] for i in range(lag, n)) / n
        total += 2.0 * weight * cov
    return max(total, 0.0)


def calibration_error(predictions: Sequence[tuple[ProbabilityMap, Outcome]]) -> float:
    """Expected calibration error over 10 bins, averaged over the three outcome classes."""
    n = len(predictions)
    if n == 0:
        return math.nan
    per_class = [
        sum(b.count * abs(b.mean_predicted - b.observed_frequency) for b in bins) / n
        for bins in calibration_bins(predictions, 10).values()
    ]
    return fmean(per_class)


def evaluate_gate(
    challenger: str, champion: str, matches: Sequence[PairedMatch], settings: GateSettings
) -> GateReport:
    """Measure the pair over ``matches`` and decide propose/hold."""
    n = len(matches)
    reasons: list[str] = []
    if n < settings.min_matches:
        reasons.append(f"{n} shared matches, fewer than the {settings.min_matches} required")
    if n < 2:
        return GateReport(challenger, champion, n, math.nan, math.nan, math.nan, math.nan,
                          1.0, 0, math.nan, math.nan, "", math.nan, {}, HOLD,
                          tuple(reasons))  # fmt: skip
    diffs = [m.champion_loss - m.challenger_loss for m in matches]
    mean = fmean(diffs)
    lags = int(n ** (1.0 / 3.0))
    se = math.sqrt(newey_west_variance(diffs, lags) / n)
    normal = NormalDist()
    z = normal.inv_cdf(1.0 - (1.0 - settings.confidence) / 2.0)
    if se > 0.0:
        dm = mean / se
        p_value = 1.0 - normal.cdf(dm)
    else:  # identical losses on every match: no evidence either way
        dm, p_value = 0.0, 1.0
    if p_value >= 1.0 - settings.confidence:
        reasons.append(
            f"not better than the champion at {settings.confidence:.0%} "
            f"(mean gain {mean:+.4f}, DM {dm:.2f}, one-sided p {p_value:.3f})"
        )
    lined = [m.challenger_loss - m.market_loss for m in matches if math.isfinite(m.market_loss)]
    market_excess = fmean(lined) if lined else math.nan
    if market_excess > settings.market_margin:
        reasons.append(
            f"worse than the opening line by {market_excess:.4f}, "
            f"more than {settings.market_margin}"
        )
    ece = calibration_error([(m.challenger_probabilities, m.outcome) for m in matches])
    if ece > settings.calibration_limit:
        reasons.append(f"calibration error {ece:.4f} above {settings.calibration_limit}")
    by_league: dict[str, list[float]] = defaultdict(list)
    for m in matches:
        by_league[m.league].append(m.challenger_loss - m.champion_loss)
    league_excess = {
        league: fmean(values)
        for league, values in sorted(by_league.items())
        if len(values) >= settings.league_min_matches
    }
    worst = max(league_excess, key=lambda k: league_excess[k], default="")
    worst_excess = league_excess.get(worst, math.nan)
    if worst and worst_excess > settings.league_regression:
        reasons.append(
            f"league {worst} regresses by {worst_excess:.4f}, "
            f"more than {settings.league_regression}"
        )
    return GateReport(
        challenger=challenger,
        champion=champion,
        matches=n,
        mean_difference=mean,
        ci_low=mean - z * se,
        ci_high=mean + z * se,
        dm_statistic=dm,
        p_value=p_value,
        lags=lags,
        market_excess=market_excess,
        calibration_error=ece,
        worst_league=worst,
        worst_league_excess=worst_excess,
        league_excess=league_excess,
        decision=HOLD if reasons else PROPOSE,
        reasons=tuple(reasons),
    )
