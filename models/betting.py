"""Betting figures of 1X2 predictions at the opening odds, as pure functions (no I/O).

Log loss says how good a forecast is; these say whether it would have made money against the
line it was made next to. Per match, a model bets (one unit, flat stake) on the outcome whose
expected value ``p * odds - 1`` at the opening odds is largest, if that exceeds a threshold, and
at most one outcome per match. From those bets:

- ``roi``: profit per unit staked, with a percentile bootstrap interval that resamples *match
  days* (bets on one day share team news and weather, so they are not independent; a seeded
  generator makes the interval reproducible);
- ``kelly_growth``: the log of the bankroll's growth when each bet instead stakes a fraction
  ``kelly * (p * odds - 1) / (odds - 1)`` of the bankroll (fractional Kelly), bets settled one
  after another in kickoff order: 0 means no change, -0.69 half the bankroll lost;
- ``clv``: closing-line value, the mean of ``odds_open * q - 1`` over the bets, where ``q`` is
  the normalised closing-line probability of the backed outcome: what the bet was worth by the
  price the market settled on, a far less noisy signal of skill than the realised ROI.

A model whose probabilities equal the normalised opening line never bets: its expected value is
``1 / (1 + margin) - 1 < 0`` on every outcome. :func:`favourite_picks` gives the reference a
bettor level with the line can expect (back the line's favourite every match).

>>> summary = evaluate_bets(
...     np.array([[0.6, 0.2, 0.2]]), np.array([[2.0, 4.0, 4.0]]), np.array([[0.55, 0.25, 0.2]]),
...     np.array([0]), np.array([0]), threshold=0.0, kelly=0.5)
>>> summary.bets, summary.roi, round(summary.clv, 2)
(1, 1.0, 0.1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.base import FloatArray

IntArray = npt.NDArray[np.int64]

DEFAULT_THRESHOLD = 0.05
"""Minimum expected value per unit for a value bet: 5%, about the opening line's margin, so a
bet needs the model to disagree with the line by more than the bookmaker charges."""
DEFAULT_KELLY = 0.25
"""Quarter Kelly: full Kelly on estimated probabilities overbets (their error is not in the
formula); a quarter keeps ~44% of the growth rate at a fraction of the variance."""
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class BettingSummary:
    """What one model's bets came to; NaN where there is no bet to measure."""

    bets: int
    roi: float
    roi_lo: float
    roi_hi: float
    kelly_growth: float
    clv: float

    def line(self, model_id: str) -> str:
        """The ``BETTING`` line of ``tipstream evaluate`` (scripts parse it: format fixed)."""
        return (
            f"BETTING model={model_id} bets={self.bets} roi={self.roi:.4f} "
            f"roi_lo={self.roi_lo:.4f} roi_hi={self.roi_hi:.4f} "
            f"kelly_growth={self.kelly_growth:.4f} clv={self.clv:.4f}"
        )


def implied(odds: FloatArray) -> FloatArray:
    """Row-wise normalised implied probabilities of decimal odds ``(n, 3)``."""
    inverse = 1.0 / odds
    return np.asarray(inverse / inverse.sum(axis=1, keepdims=True), dtype=np.float64)


def expected_values(probabilities: FloatArray, odds: FloatArray) -> FloatArray:
    """Expected profit per unit staked on each outcome: ``p * odds - 1``."""
    return np.asarray(probabilities * odds - 1.0, dtype=np.float64)


def value_picks(probabilities: FloatArray, odds: FloatArray, threshold: float) -> IntArray:
    """Per match, the outcome (0, 1, 2 = H, D, A) of largest expected value if it exceeds
    ``threshold``, else -1 (no bet). Ties go to the first of H, D, A."""
    ev = expected_values(probabilities, odds)
    best = np.argmax(ev, axis=1)
    return np.where(ev[np.arange(len(ev)), best] > threshold, best, -1).astype(np.int64)


def bettable(odds: FloatArray) -> npt.NDArray[np.bool_]:
    """Matches whose line has a margin (inverse odds summing to at least one).

    The odds are averages over bookmakers, each with its own margin, so an average line that
    sums below one is a stale or mistyped quote (32 of the 27,700 shared matches, down to
    -61%: 4.13/3.10/3.69 for a match that closed 1.85/3.56/4.20), not a price anyone offered.
    No bet is placed on it; left in, those 32 lines alone gave the opening line itself a
    positive Kelly growth.
    """
    return np.asarray((1.0 / odds).sum(axis=1) >= 1.0)


def favourite_picks(odds: FloatArray) -> IntArray:
    """The line's favourite (shortest price) of every match: the reference bettor."""
    return np.asarray(np.argmin(odds, axis=1), dtype=np.int64)


def flat_profits(picks: IntArray, odds: FloatArray, outcomes: IntArray) -> FloatArray:
    """Profit of one unit on each pick: ``odds - 1`` if it won, -1 if it lost, 0 for no bet."""
    rows = np.arange(len(picks))
    price = odds[rows, np.maximum(picks, 0)]
    profit = np.where(picks == outcomes, price - 1.0, -1.0)
    return np.asarray(np.where(picks >= 0, profit, 0.0), dtype=np.float64)


def kelly_fractions(probability: FloatArray, price: FloatArray, kelly: float) -> FloatArray:
    """Bankroll fraction to stake at decimal ``price`` for win probability ``probability``:
    ``kelly`` times the Kelly optimum ``(p * price - 1) / (price - 1)``, 0 without an edge.
    At most ``kelly`` (the optimum is at most 1), so a loss never empties the bankroll."""
    edge = (probability * price - 1.0) / (price - 1.0)
    return np.asarray(kelly * np.clip(edge, 0.0, 1.0), dtype=np.float64)


def kelly_log_growth(fractions: FloatArray, price: FloatArray, won: npt.NDArray[np.bool_]) -> float:
    """Log of the bankroll's growth over bets settled in turn: the sum over bets of
    ``log(1 + f * (price - 1))`` when won and ``log(1 - f)`` when lost."""
    steps = np.where(won, np.log1p(fractions * (price - 1.0)), np.log1p(-fractions))
    return float(steps.sum())


def bootstrap_roi(
    profits: FloatArray,
    staked: FloatArray,
    days: IntArray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float]:
    """Percentile interval of profit / stake, resampling whole match days with replacement.

    Every match day counts, with or without a bet, so a resample's number of bets varies as it
    would have; resamples with no stake at all are dropped. NaN when nothing was staked.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if staked.sum() <= 0.0:
        return math.nan, math.nan
    _, day_index = np.unique(days, return_inverse=True)
    day_profit = np.bincount(day_index, weights=profits)
    day_staked = np.bincount(day_index, weights=staked)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(day_profit), size=(resamples, len(day_profit)))
    total_staked = day_staked[draws].sum(axis=1)
    usable = total_staked > 0.0
    rois = day_profit[draws].sum(axis=1)[usable] / total_staked[usable]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(rois, [tail, 1.0 - tail])
    return float(low), float(high)


def evaluate_bets(
    probabilities: FloatArray,
    odds_open: FloatArray,
    close_probabilities: FloatArray,
    outcomes: IntArray,
    days: IntArray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    kelly: float = DEFAULT_KELLY,
    picks: IntArray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> BettingSummary:
    """The betting figures of one model over ``n`` matches in kickoff order.

    ``probabilities`` ``(n, 3)`` are the model's H/D/A, ``odds_open`` the opening decimal odds,
    ``close_probabilities`` the normalised closing line (NaN rows: no closing line, left out of
    the CLV only), ``outcomes`` 0/1/2 and ``days`` any integer per match day. ``picks`` overrides
    the value rule (e.g. :func:`favourite_picks`); the Kelly stakes still use the model's
    probabilities, so a pick without an edge stakes nothing. No bet on a line without margin
    (:func:`bettable`).
    """
    n = len(outcomes)
    for name, array in (("probabilities", probabilities), ("odds_open", odds_open),
                        ("close_probabilities", close_probabilities)):  # fmt: skip
        if array.shape != (n, 3):
            raise ValueError(f"{name} must have shape ({n}, 3), got {array.shape}")
    if days.shape != (n,):
        raise ValueError(f"days must have shape ({n},), got {days.shape}")
    if not (np.isfinite(odds_open).all() and (odds_open > 1.0).all()):
        raise ValueError("opening odds must be finite and > 1")
    if not 0.0 <= kelly <= 1.0:
        raise ValueError(f"the Kelly fraction must be in [0, 1], got {kelly}")
    chosen = value_picks(probabilities, odds_open, threshold) if picks is None else picks
    chosen = np.where(bettable(odds_open), chosen, -1)
    profits = flat_profits(chosen, odds_open, outcomes)
    staked = (chosen >= 0).astype(np.float64)
    bets = int(staked.sum())
    if bets == 0:
        return BettingSummary(0, math.nan, math.nan, math.nan, 0.0, math.nan)
    placed = np.flatnonzero(chosen >= 0)
    backed = chosen[placed]
    price = odds_open[placed, backed]
    fractions = kelly_fractions(probabilities[placed, backed], price, kelly)
    growth = kelly_log_growth(fractions, price, backed == outcomes[placed])
    close = close_probabilities[placed, backed]
    known = np.isfinite(close)
    clv = float(np.mean(price[known] * close[known] - 1.0)) if known.any() else math.nan
    low, high = bootstrap_roi(profits, staked, days, resamples=resamples, seed=seed)
    return BettingSummary(bets, float(profits.sum() / bets), low, high, growth, clv)
