"""Decay rules: one alert when a window crosses the threshold, one recovery, no storms."""

from __future__ import annotations

import pytest

from agents.monitor_rules import ScopeMonitor, alert_id, relative_decay


def monitor(window: int = 20, threshold: float = 0.05) -> ScopeMonitor:
    return ScopeMonitor(window=window, threshold=threshold, detector_name="page-hinkley")


def feed(m: ScopeMonitor, start: int, count: int, log_loss: float, hit: bool) -> list:  # type: ignore[type-arg]
    decisions = []
    for i in range(start, start + count):
        decisions.extend(m.observe(f"e{i}", log_loss, hit))
    return decisions


def test_relative_decay_direction() -> None:
    """Log loss decays by rising, accuracy by falling."""
    assert relative_decay("log_loss", 1.0, 1.1) == pytest.approx(0.1)
    assert relative_decay("accuracy", 0.5, 0.45) == pytest.approx(0.1)
    assert relative_decay("accuracy", 0.5, 0.6) < 0


def test_first_full_window_is_the_baseline_and_stable_streams_stay_quiet() -> None:
    """No alert while the window fills or while quality holds."""
    m = monitor()
    assert [d for d in feed(m, 0, 60, 1.0, True) if d.kind != "drift"] == []
    assert m.baseline == {"log_loss": 1.0, "accuracy": 1.0}


def test_decay_fires_once_then_recovers_once() -> None:
    """A sustained rise fires one decay alert per metric, not one per evaluation; returning
    within half the threshold resolves it once."""
    m = monitor()
    feed(m, 0, 20, 1.0, True)
    worse = [d for d in feed(m, 20, 40, 1.3, False) if d.kind != "drift"]
    assert sorted((d.kind, d.metric) for d in worse) == [
        ("decay", "accuracy"),
        ("decay", "log_loss"),
    ]
    assert all(d.state == "firing" for d in worse)
    better = [d for d in feed(m, 60, 40, 1.0, True) if d.kind != "drift"]
    assert sorted((d.kind, d.metric) for d in better) == [
        ("recovery", "accuracy"),
        ("recovery", "log_loss"),
    ]
    assert all(d.state == "resolved" for d in better)


def test_fires_within_a_bounded_number_of_evaluations() -> None:
    """With the window's mean rising 30%, the alert fires before the window is replaced once."""
    m = monitor(window=20, threshold=0.05)
    feed(m, 0, 20, 1.0, True)
    for i in range(20, 40):
        decisions = [d for d in m.observe(f"e{i}", 1.3, True) if d.kind == "decay"]
        if decisions:
            assert i - 20 < 20
            return
    pytest.fail("no decay alert within one window")


def test_replayed_evaluations_are_ignored() -> None:
    """An evaluation seen again (a redelivery) does not move the window."""
    m = monitor(window=5)
    feed(m, 0, 5, 1.0, True)
    before = m.current("log_loss")
    assert m.observe("e4", 9.0, False) == []
    assert m.current("log_loss") == before


def test_drift_detector_flags_a_rise_in_loss() -> None:
    """Page-Hinkley detects a sustained rise of the per-prediction loss."""
    m = monitor(window=50)
    feed(m, 0, 300, 1.0, True)
    drifts = [d for d in feed(m, 300, 300, 1.6, False) if d.kind == "drift"]
    assert drifts
    assert drifts[0].detector == "page-hinkley"


def test_alert_ids_are_deterministic() -> None:
    """A monitor rebuilt from the same evaluations (a restart) decides with the same id; the
    same decision in another scope has another id."""
    decisions = []
    for _ in range(2):
        m = monitor()
        feed(m, 0, 20, 1.0, True)
        decisions.append(next(d for d in feed(m, 20, 40, 1.5, False) if d.kind == "decay"))
    first, rebuilt = decisions
    assert first is not rebuilt
    assert alert_id("m1", "all", first) == alert_id("m1", "all", rebuilt)
    assert alert_id("m1", "all", first) != alert_id("m1", "league:x", first)


def test_noise_alone_does_not_fire() -> None:
    """A stable but noisy stream (50% hits, log loss ~ N(1.0, 0.35)) raises no decay alert:
    a 5% move of a 200-match window is within noise, and the significance gate knows it."""
    import random

    rng = random.Random(7)
    m = monitor(window=200)
    decisions = []
    for i in range(5000):
        decisions += m.observe(f"e{i}", max(0.01, rng.gauss(1.0, 0.35)), rng.random() < 0.5)
    assert [d for d in decisions if d.kind == "decay"] == []
