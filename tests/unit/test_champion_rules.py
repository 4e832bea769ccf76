"""Champion/challenger rule: enough shared matches and a clear enough improvement."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.champion_rules import PairedScore, promotion_alert, should_promote


def score(matches: int, challenger: float, champion: float) -> PairedScore:
    return PairedScore(
        challenger="c",
        champion="h",
        matches=matches,
        challenger_log_loss=challenger,
        champion_log_loss=champion,
    )


def test_promotes_only_past_margin_and_minimum() -> None:
    """3% better over 100 matches promotes; 2% better, or 99 matches, does not."""
    assert should_promote(score(100, 0.97, 1.0), margin=0.03, min_matches=100)
    assert not should_promote(score(100, 0.98, 1.0), margin=0.03, min_matches=100)
    assert not should_promote(score(99, 0.90, 1.0), margin=0.03, min_matches=100)
    assert not should_promote(score(500, 1.05, 1.0), margin=0.03, min_matches=100)


def test_one_alert_id_per_pair() -> None:
    """Re-checking the same pair yields the same alert id, so it is emitted once."""
    now = datetime(2024, 1, 1, tzinfo=UTC)
    first = promotion_alert(score(120, 0.9, 1.0), margin=0.03, promoted=False, now=now)
    again = promotion_alert(score(300, 0.8, 1.0), margin=0.03, promoted=False, now=now)
    assert first.alert_id == again.alert_id
    assert first.kind == "promotion"
    assert "awaiting approval" in first.message
