"""Feature drift rules: moving reference, reset, false-alarm budget, PSI/KS, hysteresis,
cooldown, roll-up."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import gamma

from agents.drift_rules import (
    ROLLUP,
    DriftConfig,
    DriftDecision,
    DriftMonitor,
    FeatureReference,
    frozen_edges,
    ks,
    psi,
    shares,
    smoothed,
    upper_quantile,
    window_bounds,
    window_index,
)

START = window_bounds(window_index(datetime(2020, 1, 6, tzinfo=UTC), 7), 7)[0]
WEEK = timedelta(days=7)
CONFIG = DriftConfig(
    window_days=7,
    grace_days=0,
    min_window=40,
    reference_windows=6,
    min_reference=320,
    resamples=50,
)
FEATURES = ("a", "b", "c", "d")
REFERENCE_END = START + 4 * WEEK
"""The first window evaluated: four weeks of 80 matches make the first reference."""

Rows = list[tuple[str, datetime, dict[str, float]]]


def stream(
    weeks: int,
    per_week: int,
    shift: Callable[[int], dict[str, float]] | None = None,
    *,
    fresh: bool = False,
    seed: int = 1,
) -> Rows:
    """Weeks of matches with standard normal features: the same values every week (so a window
    has exactly the reference's distribution) unless ``fresh``, plus ``shift(week)``."""
    rng = random.Random(seed)
    week_values = [{f: rng.gauss(0.0, 1.0) for f in FEATURES} for _ in range(per_week)]
    rows = []
    for week in range(weeks):
        if fresh:
            week_values = [{f: rng.gauss(0.0, 1.0) for f in FEATURES} for _ in range(per_week)]
        added = shift(week) if shift else {}
        for i, base in enumerate(week_values):
            kickoff = START + week * WEEK + timedelta(hours=i)
            values = {f: v + added.get(f, 0.0) for f, v in base.items()}
            rows.append((f"m{week}-{i}", kickoff, values))
    return rows


def after(
    first: int, values: dict[str, float], until: int = 10**6
) -> Callable[[int], dict[str, float]]:
    return lambda week: values if first <= week < until else {}


def run(
    rows: Rows, config: DriftConfig = CONFIG, resets: tuple[datetime, ...] = ()
) -> list[DriftDecision]:
    monitor = DriftMonitor(config, FEATURES, resets)
    decisions = [d for row in rows for d in monitor.observe(*row)]
    return decisions + monitor.close()


def states(decisions: list[DriftDecision]) -> list[tuple[str, str]]:
    return [(d.feature, d.state) for d in decisions]


def test_identical_distributions_do_not_fire() -> None:
    assert run(stream(weeks=30, per_week=80)) == []


def test_a_lasting_shift_fires_once_and_stays_out_of_the_reference() -> None:
    decisions = run(stream(weeks=30, per_week=80, shift=after(4, {"b": 1.0})))
    assert states(decisions) == [("b", "firing")]
    first = decisions[0]
    assert first.window_start == START + 4 * WEEK
    assert first.psi >= first.psi_level
    assert first.ks >= first.ks_level
    assert first.reference == 4 * 80


def test_nothing_is_evaluated_before_the_reference_is_full() -> None:
    monitor = DriftMonitor(CONFIG, FEATURES)
    for row in stream(weeks=6, per_week=80, shift=after(1, {"a": 3.0})):
        monitor.observe(*row)
    monitor.close()
    assert [r.start for r in monitor.reports] == [REFERENCE_END, REFERENCE_END + WEEK]


def test_the_reference_follows_a_slow_change() -> None:
    """A mean that moves by 0.03 sd a week (1.8 sd over the stream, while a sudden shift of 1
    sd fires at once): the moving reference of 6 weeks follows it."""
    rows = stream(
        weeks=60, per_week=80, fresh=True, shift=lambda w: dict.fromkeys(FEATURES, 0.03 * w)
    )
    config = replace(CONFIG, alarms_per_year=0.1)
    assert run(rows, config) == []


def test_arrival_order_within_windows_does_not_change_decisions() -> None:
    rows = stream(weeks=30, per_week=80, shift=after(5, {"a": 1.0}))
    shuffled = []
    for week in range(30):  # shuffle inside each week: windows close at the same matches
        block = rows[week * 80 : (week + 1) * 80]
        random.Random(week).shuffle(block)
        shuffled.extend(block)
    assert run(shuffled) == run(rows)
    assert [d.alert_id for d in run(shuffled)] == [d.alert_id for d in run(rows)]


def test_a_shift_that_ends_clears_then_cools_down() -> None:
    decisions = run(stream(weeks=30, per_week=80, shift=after(4, {"c": 2.0}, until=7)))
    assert states(decisions) == [("c", "firing"), ("c", "resolved")]
    assert decisions[1].window_start == START + 7 * WEEK


def test_cooldown_holds_a_feature_back() -> None:
    on = {4, 5, 7, 8}  # off for one week: the cooldown of 2 windows keeps the third quiet
    rows = stream(weeks=30, per_week=80, shift=lambda w: {"c": 2.0} if w in on else {})
    assert states(run(rows)) == [("c", "firing"), ("c", "resolved")]


def test_features_drifting_together_give_one_rollup() -> None:
    decisions = run(stream(weeks=20, per_week=80, shift=after(4, {"a": 1.0, "b": 1.0})))
    assert states(decisions) == [(ROLLUP, "firing")]
    assert decisions[0].features == ("a", "b")


def test_a_reset_accepts_the_new_normal() -> None:
    """After a reset the references are rebuilt from the shifted matches: no new alert, and
    the alert before the reset is not re-derived differently."""
    rows = stream(weeks=30, per_week=80, shift=after(4, {"b": 1.0}))
    reset = START + 10 * WEEK + timedelta(days=2)
    assert states(run(rows, resets=(reset,))) == states(run(rows)) == [("b", "firing")]
    monitor = DriftMonitor(CONFIG, FEATURES, (reset,))
    for row in rows:
        monitor.observe(*row)
    monitor.close()
    evaluated = [r.start for r in monitor.reports]
    assert START + 13 * WEEK not in evaluated  # the reference refills (four weeks)
    assert START + 14 * WEEK in evaluated
    assert all(not r.firing for r in monitor.reports if r.start >= START + 10 * WEEK)


def test_a_reset_into_the_streams_past_applies_from_the_first_open_window() -> None:
    rows = stream(weeks=12, per_week=80, shift=after(4, {"b": 1.0}))
    monitor = DriftMonitor(CONFIG, FEATURES)
    for row in rows[: 8 * 80 + 1]:  # the first match of week 8 has closed week 7
        monitor.observe(*row)
    assert monitor.next_reset(START) == START + 8 * WEEK
    assert monitor.reset(START + 20 * WEEK) == START + 20 * WEEK  # a later one is kept


def test_the_interleaving_of_the_sources_changes_nothing() -> None:
    """Two partitions, each in its own order, merged two ways (one far ahead of the other):
    the same windows close with the same matches, so the same decisions."""
    rows = stream(weeks=20, per_week=80, shift=after(6, {"a": 1.0, "c": 1.0}))
    parts = [rows[0::2], rows[1::2]]

    def feed(order: list[int]) -> list[DriftDecision]:
        monitor = DriftMonitor(replace(CONFIG, grace_days=3), FEATURES, sources=2)
        cursors = [iter(p) for p in parts]
        decisions = []
        for source in order:
            match_id, kickoff, values = next(cursors[source])
            decisions += monitor.observe(match_id, kickoff, values, source=source)
        assert monitor.late == 0
        return decisions + monitor.close()

    n = len(parts[0])
    alternating = [i % 2 for i in range(2 * n)]
    one_ahead = [0] * (n // 2) + [i % 2 for i in range(n)] + [1] * (n // 2)
    assert feed(alternating) == feed(one_ahead)
    assert states(feed(alternating)) == [(ROLLUP, "firing")]


def test_a_window_waits_for_the_slowest_source_and_lateness_is_per_source() -> None:
    config = replace(CONFIG, grace_days=2)
    monitor = DriftMonitor(config, FEATURES, sources=2)
    values = dict.fromkeys(FEATURES, 0.0)
    end = START + WEEK
    for i in range(50):
        monitor.observe(f"a{i}", START + timedelta(hours=i), values, source=0)
    monitor.observe("far", end + 3 * WEEK, values, source=0)
    assert monitor.next_reset() == START  # source 1 has said nothing: week 0 is open
    monitor.observe("b0", START + timedelta(hours=1), values, source=1)  # on time for source 1
    monitor.observe("late0", START + timedelta(hours=2), values, source=0)  # source 0 is past
    assert monitor.late == 1
    monitor.observe("b1", end + timedelta(days=2), values, source=1)  # the grace has passed
    assert monitor.next_reset() == end


def test_small_windows_are_not_evaluated() -> None:
    assert run(stream(weeks=20, per_week=20, shift=after(10, {"a": 3.0}))) == []


def test_late_matches_are_counted_not_used() -> None:
    monitor = DriftMonitor(CONFIG, FEATURES)
    for row in stream(weeks=10, per_week=80):
        monitor.observe(*row)
    assert monitor.observe("late", START, dict.fromkeys(FEATURES, 0.0)) == []
    assert monitor.late == 1


def test_windows_are_anchored_in_kickoff_time() -> None:
    assert window_index(START, 7) + 1 == window_index(START + timedelta(days=7), 7)


def test_the_budget_bounds_false_alarms_on_a_stationary_stream() -> None:
    """Fresh independent values every week: the firings over the stream stay within the
    budget's expectation (with room for chance: the bound is on an expectation)."""
    config = DriftConfig(
        window_days=7, min_window=40, reference_windows=8, min_reference=320, resamples=60,
        psi_floor=0.0, ks_floor=0.0, alarms_per_year=2.0,
    )  # fmt: skip
    weeks = 104
    decisions = run(stream(weeks=weeks, per_week=80, fresh=True, seed=7), config)
    firings = sum(1 for d in decisions if d.state == "firing")
    years = weeks * 7 / 365.25
    assert firings <= 3 * config.alarms_per_year * years


def test_a_smaller_budget_raises_the_levels() -> None:
    values = list(np.random.default_rng(3).normal(size=2000))
    config = DriftConfig(psi_floor=0, ks_floor=0)
    reference = FeatureReference.build("x", values, 10)
    loose = reference.level(100, config, 0.01)
    strict = FeatureReference.build("x", values, 10).level(100, config, 0.0001)
    assert strict[0] > loose[0]
    assert strict[1] > loose[1]


def test_the_budget_is_shared_by_every_test_of_a_year() -> None:
    config = DriftConfig(window_days=28, alarms_per_year=2.0)
    assert config.tail(10) == pytest.approx(2.0 / (10 * 365.25 / 28))
    assert config.tail(20) == pytest.approx(config.tail(10) / 2)


def test_upper_quantile_reads_a_gamma_tail() -> None:
    draws = gamma.rvs(3.0, scale=0.5, size=20_000, random_state=np.random.default_rng(5))
    assert upper_quantile(draws, 0.001) == pytest.approx(gamma.ppf(0.999, 3.0, scale=0.5), 0.05)
    assert upper_quantile(np.array([0.2, 0.2]), 0.001) == 0.2


def test_levels_are_calibrated_and_shrink_with_the_window() -> None:
    values = list(np.random.default_rng(3).normal(size=2000))
    config = DriftConfig(psi_floor=0, ks_floor=0)
    reference = FeatureReference.build("x", values, 10)
    small, large = reference.level(50, config, 0.001), reference.level(800, config, 0.001)
    assert large[0] < small[0]
    assert large[1] < small[1]
    assert reference.level(50, config, 0.001) == small  # seeded: the same level every time


def test_bad_parameters_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="alarms_per_year"):
        DriftConfig(alarms_per_year=0.0)
    with pytest.raises(ValueError, match="reference_windows"):
        DriftConfig(reference_windows=0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200), st.integers(2, 20))
def test_psi_and_ks_of_a_sample_against_itself_are_zero(values: list[float], bins: int) -> None:
    array = np.sort(np.array(values))
    edges = frozen_edges(array, bins)
    assert psi(shares(array, edges), shares(array, edges)) == 0.0
    assert ks(array, array) == 0.0
    assert shares(array, edges).sum() == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=2, max_size=100),
    st.lists(st.floats(-100, 100), min_size=1, max_size=100),
)
def test_statistics_are_non_negative_and_ks_bounded(ref: list[float], win: list[float]) -> None:
    array = np.sort(np.array(ref))
    edges = frozen_edges(array, 10)
    assert psi(shares(array, edges), shares(np.array(win), edges)) >= 0.0
    assert 0.0 <= ks(array, np.array(win)) <= 1.0


def test_held_out_draws_match_a_direct_computation() -> None:
    """The vectorised calibration equals PSI and KS of each stretch against the rest."""
    rng = np.random.default_rng(11)
    values = np.round(rng.normal(size=300), 1)  # ties, as in a discrete feature
    reference = FeatureReference.build("x", list(values), 10)
    starts = np.array([0, 17, 280])
    psi_draws, ks_draws = reference._held_out(starts, 40)
    for start, p, k in zip(starts, psi_draws, ks_draws, strict=True):
        inside = np.zeros(300, dtype=bool)
        inside[(start + np.arange(40)) % 300] = True
        rest, window = np.sort(values[~inside]), values[inside]
        expected = smoothed(shares(rest, reference.edges), len(rest))
        assert p == pytest.approx(psi(expected, smoothed(shares(window, reference.edges), 40)))
        assert k == pytest.approx(ks(rest, window))
