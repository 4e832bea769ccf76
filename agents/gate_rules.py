"""Promotion gate: an always-valid paired test on per-match log-loss differences.

Pure (no I/O). A challenger is proposed only when, on the same evaluated matches since its
latest fit, it beats the champion at the set confidence, it is not worse than the opening line
by more than a margin, its calibration error is within a limit, and no league regresses beyond
a limit. Every check that fails is named in ``reasons``.

The gate looks again every few seconds as matches arrive, so its test must stay valid however
often it looks: a fixed-confidence test re-run on a growing (or sliding) sample proposes an
equal challenger far more often than ``1 - confidence``. The paired test is therefore a
confidence sequence for the mean difference: the one-sided normal-mixture boundary of Howard,
Ramdas, McAuliffe and Sekhon (2021, eq. 14) on the sum of the differences, in intrinsic time
"matches", standardised by the Newey-West long-run standard deviation so that runs of
correlated matches do not overstate the evidence (the asymptotic confidence sequence of
Waudby-Smith, Arnold, Wu and Ramdas, 2021, with a dependence-robust variance). Its probability
of ever proposing a challenger that is no better, over every look at a sample that only grows,
is at most ``1 - confidence`` (asymptotically). The sample must only grow: every shared match
since the latest fit, never a sliding window (dropping old matches restarts the evidence
without resetting the boundary).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import fmean
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
    boundary_matches: int = 2000
    """The sample size at which the confidence sequence is tightest (about a season of the
    five leagues); it stays valid at every other size, only a little wider."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_matches < 2 or self.league_min_matches < 1 or self.boundary_matches < 1:
            raise ValueError(
                "min_matches must be >= 2, league_min_matches and boundary_matches >= 1"
            )
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
    """Lower bound of the confidence sequence for the mean difference (> 0: proposed)."""
    ci_high: float
    """Upper bound (each bound one-sided at ``1 - confidence``)."""
    dm_statistic: float
    """The mean over its Newey-West standard error (the Diebold-Mariano statistic)."""
    p_value: float
    """Always-valid one-sided p-value at this look: the smallest ``1 - confidence`` at which
    the lower bound would be above 0."""
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


def mixture_rho(boundary_matches: int, alpha: float) -> float:
    """The mixture's precision (in matches) that makes the boundary tightest near
    ``boundary_matches`` (Howard et al. 2021, section 3.5).

    >>> round(mixture_rho(2000, 0.05), 1)
    252.0
    """
    log_inv = math.log(1.0 / alpha)
    return boundary_matches / (2.0 * log_inv + math.log(1.0 + 2.0 * log_inv))


def mixture_boundary(n: float, rho: float, alpha: float) -> float:
    """One-sided normal-mixture boundary (Howard et al. 2021, eq. 14) for a sum of ``n``
    standardised increments: the sum exceeds it at some ``n`` with probability at most
    ``alpha`` when their mean is 0.

    >>> round(mixture_boundary(2000, mixture_rho(2000, 0.05), 0.05) / math.sqrt(2000), 2)
    2.78
    """
    v = n + rho
    return math.sqrt(2.0 * v * math.log(math.sqrt(v / rho) / (2.0 * alpha) + 1.0))


def mixture_p_value(standardised_sum: float, n: float, rho: float) -> float:
    """The ``alpha`` at which ``standardised_sum`` is exactly on :func:`mixture_boundary`
    (capped at 1): the always-valid one-sided p-value at this look.

    >>> rho = mixture_rho(2000, 0.05)
    >>> round(mixture_p_value(mixture_boundary(900, rho, 0.05), 900, rho), 4)
    0.05
    """
    v = n + rho
    if standardised_sum <= 0.0:
        return 1.0
    excess = math.expm1(min(standardised_sum**2 / (2.0 * v), 700.0))
    return min(1.0, math.sqrt(v / rho) / (2.0 * excess))


def confidence_sequence(
    mean: float, long_run_sd: float, n: int, *, confidence: float, boundary_matches: int
) -> tuple[float, float]:
    """(lower, upper) bounds on the true mean difference after ``n`` matches, each one-sided at
    ``1 - confidence`` and valid simultaneously at every ``n`` (so at every look).

    >>> low, high = confidence_sequence(0.01, 0.2, 2000, confidence=0.95, boundary_matches=2000)
    >>> round(low, 4), round(high, 4)
    (-0.0024, 0.0224)
    """
    alpha = 1.0 - confidence
    half = long_run_sd * mixture_boundary(n, mixture_rho(boundary_matches, alpha), alpha) / n
    return mean - half, mean + half


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
    """Measure the pair over ``matches`` (every shared match since the challenger's latest
    fit, in kickoff order) and decide propose/hold."""
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
    sd = math.sqrt(newey_west_variance(diffs, lags))
    low, high = confidence_sequence(
        mean, sd, n, confidence=settings.confidence, boundary_matches=settings.boundary_matches
    )
    if sd > 0.0:
        dm = mean / (sd / math.sqrt(n))
        alpha = 1.0 - settings.confidence
        p_value = mixture_p_value(n * mean / sd, n, mixture_rho(settings.boundary_matches, alpha))
    else:  # identical losses on every match: no evidence either way
        dm, p_value = 0.0, 1.0
    if not (sd > 0.0 and low > 0.0):
        reasons.append(
            f"not better than the champion at {settings.confidence:.0%} "
            f"(mean gain {mean:+.4f}, confidence sequence {low:+.4f}..{high:+.4f}, "
            f"always-valid p {p_value:.3f})"
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
        ci_low=low,
        ci_high=high,
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
