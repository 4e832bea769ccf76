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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from models.base import OUTCOME_INDEX, FloatArray

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


FAVOURITE_ID = "market-open-favourite"
"""The reference bettor of :func:`table`: the opening line's favourite backed every match."""
SIDES = ("home", "draw", "away")


@dataclass(frozen=True, slots=True)
class BetLog:
    """Evaluated predictions as columns (one row per model and match, kickoff order), built in
    one pass over the rows: the per-model figures are then array slices, not Python loops
    (100,000 rows: ~1 s of per-row Python became ~0.2 s)."""

    model_ids: npt.NDArray[np.str_]
    match_ids: npt.NDArray[np.str_]
    probabilities: FloatArray
    odds_open: FloatArray
    odds_close: FloatArray
    outcomes: IntArray
    days: IntArray

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> BetLog:
        """Rows with ``model_id``, ``match_id``, ``kickoff`` (a datetime: its date is the match
        day), ``outcome`` (H/D/A), ``p_home/p_draw/p_away`` and ``open_*``/``close_*`` odds
        (None where unknown: NaN)."""

        def matrix(*names: str) -> FloatArray:
            values = list(map(itemgetter(*names), rows))  # None becomes NaN in a float array
            return np.array(values, dtype=np.float64).reshape(-1, len(names))

        def column(name: str) -> list[Any]:
            return list(map(itemgetter(name), rows))

        return cls(
            model_ids=np.array(column("model_id"), dtype=np.str_),
            match_ids=np.array(column("match_id"), dtype=np.str_),
            probabilities=matrix("p_home", "p_draw", "p_away"),
            odds_open=matrix(*(f"open_{side}" for side in SIDES)),
            odds_close=matrix(*(f"close_{side}" for side in SIDES)),
            outcomes=np.array([OUTCOME_INDEX[y] for y in column("outcome")], dtype=np.int64),
            days=np.array([k.toordinal() for k in column("kickoff")], dtype=np.int64),
        )

    def usable(self) -> npt.NDArray[np.bool_]:
        """Rows a bet can be judged on: finite opening odds above 1 on all three outcomes."""
        with np.errstate(invalid="ignore"):
            return np.asarray((np.isfinite(self.odds_open) & (self.odds_open > 1.0)).all(axis=1))

    def summary(self, mask: npt.NDArray[np.bool_], picks: IntArray | None = None) -> BettingSummary:
        """:func:`evaluate_bets` over the rows of ``mask``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            close = implied(self.odds_close[mask])  # NaN where there is no closing line
        return evaluate_bets(
            self.probabilities[mask],
            self.odds_open[mask],
            close,
            self.outcomes[mask],
            self.days[mask],
            picks=picks,
        )


def table(log: BetLog) -> list[tuple[str, BettingSummary]]:
    """Betting figures per model (id order), then :data:`FAVOURITE_ID` on every match
    ``market-open`` was evaluated on. Rows without usable opening odds are left out: no price,
    no bet.

    >>> from datetime import datetime
    >>> row = dict(model_id="m", match_id="a", kickoff=datetime(2020, 9, 12), outcome="H",
    ...            p_home=0.6, p_draw=0.2, p_away=0.2, open_home=2.0, open_draw=4.0,
    ...            open_away=4.0, close_home=None, close_draw=None, close_away=None)
    >>> log = BetLog.from_rows([row, {**row, "open_home": None}])
    >>> [(model_id, s.bets, s.roi) for model_id, s in table(log)]
    [('m', 1, 1.0)]
    """
    usable = log.usable()
    out = [
        (str(model_id), log.summary(usable & (log.model_ids == model_id)))
        for model_id in np.unique(log.model_ids[usable])
    ]
    opening = usable & (log.model_ids == "market-open")
    if opening.any():
        out.append((FAVOURITE_ID, log.summary(opening, favourite_picks(log.odds_open[opening]))))
    return out


def mean_margin(log: BetLog) -> tuple[int, float]:
    """How many distinct matches have usable opening odds, and the bookmaker's mean opening
    margin over them (inverse odds summing to ``1 + margin``; NaN without any).

    >>> from datetime import datetime
    >>> row = dict(model_id="m", match_id="a", kickoff=datetime(2020, 9, 12), outcome="H",
    ...            p_home=0.6, p_draw=0.2, p_away=0.2, open_home=2.0, open_draw=4.0,
    ...            open_away=3.0, close_home=None, close_draw=None, close_away=None)
    >>> matches, margin = mean_margin(BetLog.from_rows([row, {**row, "model_id": "n"}]))
    >>> matches, round(margin, 4)
    (1, 0.0833)
    """
    usable = log.usable()
    _, first = np.unique(log.match_ids[usable], return_index=True)
    if not len(first):
        return 0, math.nan
    inverse = 1.0 / log.odds_open[usable][first]
    return len(first), float(inverse.sum(axis=1).mean() - 1.0)
