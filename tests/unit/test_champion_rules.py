"""Champion/challenger's rules around the gate: the sample from stored rows, the proposal that
wins, one alert per (challenger, champion, version)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.champion import gate_settings
from agents.champion_rules import (
    alert_id,
    best_proposal,
    opening_line_loss,
    promotion_alert,
    samples,
)
from agents.gate_rules import HOLD, PROPOSE, GateReport, GateSettings
from streams.settings import Settings

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def row(challenger: str, match: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "challenger": challenger,
        "champion": "h",
        "base_version": 3,
        "match_id": match,
        "league": "E0",
        "outcome": "H",
        "challenger_loss": 0.9,
        "champion_loss": 1.0,
        "p_home": 0.5,
        "p_draw": 0.3,
        "p_away": 0.2,
        "open_p_h": 0.45,
        "open_p_d": 0.3,
        "open_p_a": 0.25,
    }
    return values | overrides


def report(challenger: str, decision: str, gain: float) -> GateReport:
    return GateReport(challenger, "h", 400, gain, gain - 0.01, gain + 0.01, 2.0, 0.02, 7,
                      0.0, 0.01, "E0", 0.0, {}, decision, ())  # fmt: skip


def test_samples_group_rows_by_challenger_and_keep_every_challenger() -> None:
    """Rows become paired matches in the given order; a challenger without rows gets an empty
    sample (its report says why it holds); the opening line's loss comes from the features."""
    rows = [row("a", "m1"), row("a", "m2", outcome="A"), row("b", "m1")]
    found = {s.challenger: s for s in samples(rows, [("a", 3), ("b", 0), ("c", 5)], "h")}
    assert [m.match_id for m in found["a"].matches] == ["m1", "m2"]
    assert found["a"].version == 3
    assert found["a"].matches[1].market_loss == pytest.approx(-math.log(0.25))
    assert found["a"].matches[0].challenger_probabilities == {"H": 0.5, "D": 0.3, "A": 0.2}
    assert len(found["b"].matches) == 1
    assert found["c"].matches == ()


def test_a_match_without_an_opening_line_has_no_market_loss() -> None:
    """No usable line (missing or zero): NaN, which the gate's market check leaves out."""
    assert math.isnan(opening_line_loss(None, 0.3, 0.3, "D"))
    assert math.isnan(opening_line_loss(0.0, 0.5, 0.5, "D"))


def test_best_proposal_is_the_largest_gain_among_proposals() -> None:
    reports = [report("a", PROPOSE, 0.01), report("b", HOLD, 0.09), report("c", PROPOSE, 0.02)]
    best = best_proposal(reports)
    assert best is not None
    assert best.challenger == "c"
    assert best_proposal([report("b", HOLD, 0.09)]) is None


def test_one_alert_per_challenger_version() -> None:
    """The same version re-checked gives the same alert id (stored once); a new fit of the
    challenger, or another champion, a new one."""
    first = promotion_alert(report("a", PROPOSE, 0.01), version=3, promoted=False, now=NOW)
    again = promotion_alert(report("a", PROPOSE, 0.03), version=3, promoted=False, now=NOW)
    assert first.alert_id == again.alert_id == alert_id("a", "h", 3)
    assert alert_id("a", "h", 4) != first.alert_id
    assert alert_id("a", "x", 3) != first.alert_id
    assert (first.kind, first.model_version) == ("promotion", 3)
    assert "awaiting approval" in first.message
    promoted = promotion_alert(report("a", PROPOSE, 0.01), version=3, promoted=True, now=NOW)
    assert "promoted automatically" in promoted.message


def test_gate_settings_follow_the_service_settings() -> None:
    """Every TIPSTREAM_GATE_* setting reaches the gate; the defaults are the gate's own."""
    assert gate_settings(Settings()) == GateSettings()
    custom = Settings(gate_confidence=0.99, gate_min_matches=50)
    assert gate_settings(custom).confidence == 0.99
    assert gate_settings(custom).min_matches == 50
