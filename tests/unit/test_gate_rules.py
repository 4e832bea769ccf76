"""Promotion gate: a paired test decides, and every failed check is named."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.gate_rules import HOLD, PROPOSE, GateSettings, PairedMatch, evaluate_gate
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
