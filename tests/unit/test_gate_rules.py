"""Promotion gate: a paired test decides, and every failed check is named."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.gate_rules import (
    HOLD,
    PROPOSE,
    GateSettings,
    PairedMatch,
    confidence_sequence,
    evaluate_gate,
    mixture_boundary,
    mixture_p_value,
    mixture_rho,
)
from models.metrics import log_loss
from schemas.events import OUTCOMES, Outcome

GATE = GateSettings(min_matches=300, league_min_matches=50)


def matches(n: int, gain: float, seed: int = 1, leagues: int = 3) -> list[PairedMatch]:
    """Calibrated-ish champion forecasts; the challenger moves ``gain`` towards the truth."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        truth = [0.45, 0.27, 0.28]
        outcome: Outcome = rng.choices(OUTCOMES, weights=truth)[0]
        noise = [rng.uniform(-0.1, 0.1) for _ in truth]
        champ = [max(t + e, 0.02) for t, e in zip(truth, noise, strict=True)]
        champ = [p / sum(champ) for p in champ]
        chall = [(1 - gain) * c + gain * t for c, t in zip(champ, truth, strict=True)]
        pc, ph = dict(zip(OUTCOMES, chall, strict=True)), dict(zip(OUTCOMES, champ, strict=True))
        market = dict(zip(OUTCOMES, truth, strict=True))
        out.append(
            PairedMatch(
                f"m{i}",
                f"L{i % leagues}",
                log_loss(pc, outcome),
                log_loss(ph, outcome),
                log_loss(market, outcome),
                pc,
                outcome,
            )
        )
    return out


def test_truly_better_challenger_is_proposed() -> None:
    report = evaluate_gate("c", "h", matches(3000, 0.8), GATE)
    assert report.decision == PROPOSE, report.reasons
    assert report.ci_low > 0
    assert report.p_value < 0.05


def test_too_few_matches_hold_with_a_reason() -> None:
    report = evaluate_gate("c", "h", matches(299, 0.8), GATE)
    assert report.decision == HOLD
    assert any("fewer than the 300" in r for r in report.reasons)


def test_calibration_limit_is_named() -> None:
    strict = GateSettings(min_matches=300, calibration_limit=0.0)
    report = evaluate_gate("c", "h", matches(3000, 0.8), strict)
    assert report.decision == HOLD
    assert any("calibration error" in r for r in report.reasons)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        GateSettings(confidence=1.0)


def test_report_is_json_ready() -> None:
    data = evaluate_gate("c", "h", matches(10, 0.5), GATE).as_json()
    assert data["decision"] == HOLD
    assert isinstance(data["reasons"], list)
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in data.values())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 600), seed=st.integers(0, 10_000))
def test_identical_models_never_pass(n: int, seed: int) -> None:
    same = [
        PairedMatch(
            m.match_id,
            m.league,
            m.champion_loss,
            m.champion_loss,
            m.market_loss,
            m.challenger_probabilities,
            m.outcome,
        )
        for m in matches(n, 0.0, seed)
    ]
    assert evaluate_gate("c", "h", same, GATE).decision == HOLD


@settings(max_examples=25, deadline=None)
@given(n=st.integers(300, 900), seed=st.integers(0, 10_000), gain=st.floats(-0.9, 0.9))
def test_deterministic_and_never_both_directions(n: int, seed: int, gain: float) -> None:
    ms = matches(n, gain, seed)
    forward = evaluate_gate("c", "h", ms, GATE)
    assert forward == evaluate_gate("c", "h", ms, GATE)
    swapped = [
        PairedMatch(
            m.match_id,
            m.league,
            m.champion_loss,
            m.challenger_loss,
            m.market_loss,
            m.challenger_probabilities,
            m.outcome,
        )
        for m in ms
    ]
    backward = evaluate_gate("h", "c", swapped, GATE)
    assert not (forward.decision == PROPOSE and backward.decision == PROPOSE)


def _first_crossing(
    rng: random.Random, mean: float, steps: int, confidence: float, fixed_z: float | None = None
) -> int | None:
    """The first step (from the 30th) at which the lower bound on the mean of a stream of
    normal differences is above 0, looking at every step; ``fixed_z``: the fixed-confidence
    interval instead of the confidence sequence (the test the gate used to run)."""
    total = squares = 0.0
    for n in range(1, steps + 1):
        x = rng.gauss(mean, 1.0)
        total += x
        squares += x * x
        if n < 30:
            continue
        m = total / n
        sd = math.sqrt(max(squares / n - m * m, 0.0))
        if fixed_z is None:
            low, _ = confidence_sequence(
                m, sd, n, confidence=confidence, boundary_matches=GateSettings().boundary_matches
            )
        else:
            low = m - fixed_z * sd / math.sqrt(n)
        if low > 0.0:
            return n
    return None


def test_null_streams_cross_the_boundary_at_most_alpha_of_the_time_when_looked_at_every_step() -> (
    None
):
    """Zero-mean differences, checked at every one of 2,000 steps: the confidence sequence is
    ever above 0 in at most ~5% of 400 streams (a generous 8% allowed: the bound is valid
    asymptotically, with an estimated variance); the fixed-confidence interval, looked at as
    often, is crossed far more often than its nominal 5%."""
    rng = random.Random(20261202)
    streams, steps = 400, 2000
    crossed = sum(_first_crossing(rng, 0.0, steps, 0.95) is not None for _ in range(streams))
    assert crossed <= 0.08 * streams
    peeking = sum(
        _first_crossing(rng, 0.0, steps, 0.95, fixed_z=1.645) is not None for _ in range(100)
    )
    assert peeking > 15


def test_a_clear_positive_mean_is_detected() -> None:
    """A mean of 0.2 standard deviations is found within 1,000 looks in nearly every stream."""
    rng = random.Random(7)
    found = [_first_crossing(rng, 0.2, 1000, 0.95) for _ in range(100)]
    assert sum(n is not None for n in found) >= 95


def test_mixture_p_value_inverts_the_boundary() -> None:
    """On the boundary at alpha the always-valid p is alpha; above it, smaller; below 0, 1."""
    rho = mixture_rho(2000, 0.05)
    for n in (300, 2000, 8000):
        edge = mixture_boundary(n, rho, 0.05)
        assert math.isclose(mixture_p_value(edge, n, rho), 0.05, rel_tol=1e-9)
        assert mixture_p_value(1.2 * edge, n, rho) < 0.05
    assert mixture_p_value(-1.0, 300, rho) == 1.0
