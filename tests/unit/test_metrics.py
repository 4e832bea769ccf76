"""Scoring rules against hand-computed values and the data README's market reference figures."""

from __future__ import annotations

import math

import pytest

from models.metrics import (
    MetricSummary,
    ProbabilityMap,
    brier,
    calibration_bins,
    hit,
    log_loss,
    normalised_implied,
    predicted_outcome,
    rps,
)
from schemas.events import Odds, Outcome
from schemas.football_csv import default_data_files, read_rows

P = {"H": 0.5, "D": 0.3, "A": 0.2}


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("H", -math.log(0.5)), ("D", -math.log(0.3)), ("A", -math.log(0.2))],
)
def test_log_loss_is_minus_log_of_the_outcome_probability(
    outcome: Outcome, expected: float
) -> None:
    """Log loss is -ln p(outcome)."""
    assert log_loss(P, outcome) == pytest.approx(expected)


def test_log_loss_is_clipped_not_infinite() -> None:
    """A zero probability for what happened costs -ln(1e-15), not infinity."""
    assert log_loss({"H": 1.0, "D": 0.0, "A": 0.0}, "A") == pytest.approx(-math.log(1e-15))


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        # (0.5-1)^2 + 0.3^2 + 0.2^2 = 0.25 + 0.09 + 0.04
        ("H", 0.38),
        # 0.5^2 + (0.3-1)^2 + 0.2^2 = 0.25 + 0.49 + 0.04
        ("D", 0.78),
        # 0.5^2 + 0.3^2 + (0.2-1)^2 = 0.25 + 0.09 + 0.64
        ("A", 0.98),
    ],
)
def test_brier_sums_squared_errors_over_three_classes(outcome: Outcome, expected: float) -> None:
    """Brier is the sum of squared errors over H, D, A (0..2)."""
    assert brier(P, outcome) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        # cumulative (0.5, 0.8) vs (1, 1): (0.25 + 0.04) / 2
        ("H", 0.145),
        # vs (0, 1): (0.25 + 0.04) / 2
        ("D", 0.145),
        # vs (0, 0): (0.25 + 0.64) / 2
        ("A", 0.445),
    ],
)
def test_rps_is_half_the_sum_of_squared_cumulative_differences(
    outcome: Outcome, expected: float
) -> None:
    """RPS over ordered H, D, A: squared differences of the first two cumulatives, halved."""
    assert rps(P, outcome) == pytest.approx(expected)


def test_rps_and_brier_bounds() -> None:
    """A certain right answer scores 0; a certain wrong one scores Brier 2 and RPS 1 at most."""
    certain_home = {"H": 1.0, "D": 0.0, "A": 0.0}
    assert (brier(certain_home, "H"), rps(certain_home, "H")) == (0.0, 0.0)
    assert (brier(certain_home, "A"), rps(certain_home, "A")) == (2.0, 1.0)
    assert rps(certain_home, "D") == 0.5


def test_hit_takes_the_most_probable_and_breaks_ties_in_h_d_a_order() -> None:
    """The predicted outcome is the argmax; a tie goes to the earlier of H, D, A."""
    assert hit(P, "H")
    assert not hit(P, "D")
    assert predicted_outcome({"H": 0.3, "D": 0.35, "A": 0.35}) == "D"


def test_normalised_implied_removes_the_margin() -> None:
    """Implied probabilities 1/odds are divided by their sum; the margin is the sum minus 1."""
    implied = normalised_implied(Odds(home=2.0, draw=4.0, away=4.0))
    assert implied.probabilities == pytest.approx({"H": 0.5, "D": 0.25, "A": 0.25})
    assert implied.margin == pytest.approx(0.0)
    implied = normalised_implied(Odds(home=1.8, draw=3.6, away=4.5))
    total = 1 / 1.8 + 1 / 3.6 + 1 / 4.5
    assert implied.margin == pytest.approx(total - 1)
    assert implied.probabilities["H"] == pytest.approx((1 / 1.8) / total)


def test_normalised_implied_rejects_impossible_odds() -> None:
    """Odds of 1 or less, or NaN, are refused rather than turned into probabilities."""
    with pytest.raises(ValueError, match="decimal odds"):
        normalised_implied(Odds(home=1.0, draw=3.0, away=3.0))
    with pytest.raises(ValueError, match="decimal odds"):
        normalised_implied(Odds(home=math.nan, draw=3.0, away=3.0))


def test_calibration_bins_by_hand() -> None:
    """Bins hold the mean prediction, observed frequency and count of their class's predictions."""
    predictions: list[tuple[ProbabilityMap, Outcome]] = [
        ({"H": 0.62, "D": 0.25, "A": 0.13}, "H"),
        ({"H": 0.68, "D": 0.2, "A": 0.12}, "D"),
        ({"H": 0.15, "D": 0.25, "A": 0.6}, "A"),
        ({"H": 1.0, "D": 0.0, "A": 0.0}, "H"),
    ]
    bins = calibration_bins(predictions, bins=10)
    home = {(b.lower, b.upper): b for b in bins["H"]}
    assert sorted(home) == [(0.1, 0.2), (0.6, 0.7), (0.9, 1.0)]
    assert home[(0.6, 0.7)].mean_predicted == pytest.approx(0.65)
    assert home[(0.6, 0.7)].observed_frequency == 0.5
    assert home[(0.6, 0.7)].count == 2
    assert home[(0.9, 1.0)].observed_frequency == 1.0  # p == 1 falls in the last bin
    draws = {round(b.lower, 1): b for b in bins["D"]}
    assert draws[0.2].count == 3
    assert draws[0.2].observed_frequency == pytest.approx(1 / 3)
    assert sum(b.count for b in bins["A"]) == 4


def test_summary_means_match_the_functions() -> None:
    """MetricSummary's running means equal the means of the per-match functions."""
    matches: list[tuple[ProbabilityMap, Outcome]] = [
        (P, "H"),
        ({"H": 0.2, "D": 0.3, "A": 0.5}, "D"),
        (P, "A"),
    ]
    summary = MetricSummary()
    for probabilities, outcome in matches:
        summary.add(probabilities, outcome)
    assert summary.count == 3
    assert summary.log_loss == pytest.approx((-math.log(0.5) - math.log(0.3) - math.log(0.2)) / 3)
    assert summary.brier == pytest.approx((0.38 + 0.78 + 0.98) / 3)
    assert summary.rps == pytest.approx((0.145 + (0.04 + 0.25) / 2 + 0.445) / 3)
    assert summary.accuracy == pytest.approx(1 / 3)
    assert math.isnan(MetricSummary().log_loss)


def test_market_reference_figures_of_the_data_readme() -> None:
    """Normalised opening and closing odds over all 27,700 matches score as the README says."""
    rows = read_rows(default_data_files()).rows
    opening, closing = MetricSummary(), MetricSummary()
    for row in rows:
        opening.add(normalised_implied(row.odds_open).probabilities, row.outcome)
        closing.add(normalised_implied(row.odds_close).probabilities, row.outcome)
    assert opening.count == 27_700
    assert round(opening.log_loss, 4) == 0.9740
    assert round(opening.rps, 4) == 0.1967
    assert round(opening.brier, 4) == 0.5795
    assert round(opening.accuracy, 3) == 0.533
    assert round(closing.log_loss, 4) == 0.9671
    assert round(closing.rps, 4) == 0.1946
    assert round(closing.brier, 4) == 0.5748
    assert round(closing.accuracy, 3) == 0.538
