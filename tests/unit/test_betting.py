"""Betting arithmetic at the opening odds: hand-computed cases and properties."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import betting
from models.betting import evaluate_bets
from models.evaluate import BettingRules, Entrant, run_prequential
from models.metrics import normalised_implied
from models.policy import LearningPolicy
from schemas.events import Odds
from tests.unit.test_evaluate import FIXED, Spy, _season_events

BETTING_LINE = re.compile(
    r"BETTING model=[\w.:\-]+ bets=\d+ roi=(-?\d+\.\d{4}|nan) roi_lo=(-?\d+\.\d{4}|nan) "
    r"roi_hi=(-?\d+\.\d{4}|nan) kelly_growth=-?\d+\.\d{4} clv=(-?\d+\.\d{4}|nan)"
)
NO_CLOSE = np.full((1, 3), math.nan)
Triple = tuple[float, float, float]
Row = tuple[Triple, Triple, int, int]
"""One match of the properties: probabilities, opening odds, outcome, match day."""


def _one(
    p: Triple,
    odds: Triple,
    outcome: int,
    *,
    threshold: float = betting.DEFAULT_THRESHOLD,
    kelly: float = betting.DEFAULT_KELLY,
) -> betting.BettingSummary:
    return evaluate_bets(
        np.array([p]), np.array([odds]), NO_CLOSE, np.array([outcome]), np.array([0]),
        threshold=threshold, kelly=kelly,
    )  # fmt: skip


def test_value_pick_is_the_largest_expected_value_above_the_threshold() -> None:
    """p = (0.5, 0.3, 0.2) at 2.2/3.0/4.0: EVs 0.1, -0.1, -0.2; H above 0.05, nothing above 0.15."""
    p, odds = np.array([[0.5, 0.3, 0.2]]), np.array([[2.2, 3.0, 4.0]])
    assert betting.expected_values(p, odds) == pytest.approx(np.array([[0.1, -0.1, -0.2]]))
    assert betting.value_picks(p, odds, 0.05).tolist() == [0]
    assert betting.value_picks(p, odds, 0.15).tolist() == [-1]


def test_flat_stake_roi_kelly_and_clv_by_hand() -> None:
    """Two H bets at 2.2 with p = 0.5, one won, one lost: ROI (1.2 - 1) / 2; quarter Kelly stakes
    (0.5 * 2.2 - 1) / 1.2 / 4 = 1/48; CLV against a closing q_H of 0.55 is 2.2 * 0.55 - 1."""
    p = np.array([[0.5, 0.3, 0.2]] * 2)
    odds = np.array([[2.2, 3.0, 4.0]] * 2)
    close = np.array([[0.55, 0.25, 0.2]] * 2)
    summary = evaluate_bets(p, odds, close, np.array([0, 2]), np.array([1, 2]), kelly=0.25)
    assert summary.bets == 2
    assert summary.roi == pytest.approx(0.1)
    stake = 1 / 48
    assert summary.kelly_growth == pytest.approx(math.log(1 + stake * 1.2) + math.log(1 - stake))
    assert summary.clv == pytest.approx(2.2 * 0.55 - 1)
    # Two days, one bet each: the resamples give ROI -1, 0.1 or 1.2.
    assert summary.roi_lo == pytest.approx(-1.0)
    assert summary.roi_hi == pytest.approx(1.2)


def test_no_bet_gives_nan_roi_and_zero_growth() -> None:
    """A model that never finds value reports 0 bets, NaN ROI and CLV, no bankroll change."""
    summary = _one((0.45, 0.3, 0.25), (2.0, 3.2, 3.8), 0)
    assert summary.bets == 0
    assert math.isnan(summary.roi)
    assert math.isnan(summary.clv)
    assert summary.kelly_growth == 0.0
    assert "bets=0 roi=nan" in summary.line("m")


def test_a_line_without_margin_is_not_bet() -> None:
    """Inverse odds summing below one is a bad quote, not a price: never bet on it."""
    assert betting.bettable(np.array([[4.13, 3.10, 3.69], [2.0, 3.5, 4.0]])).tolist() == [
        False,
        True,
    ]
    assert _one((0.9, 0.05, 0.05), (4.13, 3.10, 3.69), 0, threshold=0.0).bets == 0


def test_favourite_reference_backs_the_shortest_price() -> None:
    """The reference bettor backs the favourite every match: ROI is the favourite's return."""
    odds = np.array([[1.5, 4.0, 6.0], [3.0, 3.2, 2.4]])
    picks = betting.favourite_picks(odds)
    assert picks.tolist() == [0, 2]
    p = betting.implied(odds)
    summary = evaluate_bets(p, odds, p, np.array([0, 1]), np.array([0, 0]), picks=picks)
    assert summary.bets == 2
    assert summary.roi == pytest.approx((0.5 - 1.0) / 2)
    assert summary.kelly_growth == 0.0  # no edge, no Kelly stake


def test_bad_shapes_and_odds_are_refused() -> None:
    """Mismatched arrays, odds <= 1 or a Kelly fraction above one are clear errors."""
    with pytest.raises(ValueError, match="shape"):
        evaluate_bets(np.ones((2, 3)) / 3, np.full((1, 3), 2.0), NO_CLOSE, np.zeros(1, np.int64),
                      np.zeros(1, np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="> 1"):
        _one((0.5, 0.3, 0.2), (1.0, 3.0, 4.0), 0)
    with pytest.raises(ValueError, match="Kelly"):
        _one((0.5, 0.3, 0.2), (2.2, 3.0, 4.0), 0, kelly=1.5)


odds_rows = st.tuples(*[st.floats(1.05, 15.0)] * 3)
probability_rows = st.tuples(*[st.floats(0.01, 1.0)] * 3).map(
    lambda row: tuple(v / sum(row) for v in row)
)
matches = st.lists(
    st.tuples(probability_rows, odds_rows, st.integers(0, 2), st.integers(0, 9)),
    min_size=1,
    max_size=40,
)


def _arrays(rows: list[Row]) -> tuple[np.ndarray, ...]:
    p = np.array([r[0] for r in rows])
    odds = np.array([r[1] for r in rows])
    return (
        p,
        odds,
        betting.implied(odds),
        np.array([r[2] for r in rows]),
        np.array([r[3] for r in rows]),
    )


@settings(max_examples=60, deadline=None)
@given(matches, st.floats(0.0, 0.3), st.floats(0.0, 0.3))
def test_properties_of_the_bets(rows: list[Row], low: float, extra: float) -> None:
    """ROI and its bootstrap interval lie in [-1, max odds - 1], the interval ordered; a higher
    threshold never bets more; the same input gives the same figures (seeded bootstrap). The
    bounds allow one rounding step: the bootstrap's mean of one bet can differ from it in the
    last digit."""
    p, odds, close, outcomes, days = _arrays(rows)
    loose = evaluate_bets(p, odds, close, outcomes, days, threshold=low)
    strict = evaluate_bets(p, odds, close, outcomes, days, threshold=low + extra)
    assert strict.bets <= loose.bets
    if loose.bets:
        top, eps = odds.max() - 1.0, 1e-9
        assert -1.0 <= loose.roi <= top
        assert -1.0 - eps <= loose.roi_lo <= loose.roi_hi + eps <= top + 2 * eps
        assert math.isfinite(loose.kelly_growth)
    again = evaluate_bets(p, odds, close, outcomes, days, threshold=low)
    assert again == loose or (math.isnan(again.roi) and math.isnan(loose.roi))


@settings(max_examples=60, deadline=None)
@given(st.lists(odds_rows, min_size=1, max_size=30), st.floats(0.0, 0.2))
def test_a_forecast_equal_to_the_line_never_bets(odds_list: list[Triple], threshold: float) -> None:
    """At the normalised line, p * odds - 1 = 1 / (1 + margin) - 1 <= 0 on every outcome."""
    odds = np.array(odds_list)
    p = betting.implied(odds)
    n = len(odds)
    summary = evaluate_bets(p, odds, p, np.zeros(n, np.int64), np.arange(n), threshold=threshold)
    assert summary.bets == 0


@settings(max_examples=60, deadline=None)
@given(matches)
def test_clv_is_the_expected_value_when_the_close_agrees_with_the_model(rows: list[Row]) -> None:
    """With the closing line equal to the model's probabilities, CLV is the bets' mean EV; with
    no Kelly fraction, the bankroll never moves."""
    p, odds, _, outcomes, days = _arrays(rows)
    summary = evaluate_bets(p, odds, p, outcomes, days, threshold=0.0, kelly=0.0)
    picks = np.where(betting.bettable(odds), betting.value_picks(p, odds, 0.0), -1)
    placed = np.flatnonzero(picks >= 0)
    assert summary.bets == len(placed)
    assert summary.kelly_growth == 0.0
    if len(placed):
        ev = betting.expected_values(p, odds)[placed, picks[placed]]
        assert summary.clv == pytest.approx(float(ev.mean()))


def test_evaluate_prints_a_betting_line_per_model_and_the_references() -> None:
    """The spy (0.5/0.3/0.2 against 2.0/3.5/4.0) backs the draw (EV 0.05) at threshold 0 on the
    6 scored matches; two were draws at 3.5: ROI (2 * 2.5 - 4) / 6."""
    report = run_prequential(_season_events(), [Entrant(Spy(), LearningPolicy("all"))])
    lines = report.betting_lines(BettingRules(threshold=0.0))
    assert [line.split()[1] for line in lines] == [
        "model=spy",
        "model=market-open",
        "model=market-close",
        "model=market-open-favourite",
    ]
    assert all(BETTING_LINE.fullmatch(line) for line in lines)
    assert FIXED["D"] * 3.5 - 1 > 0.0
    close_d = normalised_implied(Odds(home=1.8, draw=3.6, away=5.0)).probabilities["D"]
    spy = dict(report.betting(BettingRules(threshold=0.0)))["spy"]
    assert spy.bets == 6
    assert spy.roi == pytest.approx((2 * 2.5 - 4) / 6)
    assert spy.clv == pytest.approx(3.5 * close_d - 1)
    assert dict(report.betting())["market-open"].bets == 0
    assert report.margin_line().startswith("MARGIN matches=6 open=0.0357 unbettable=0")
