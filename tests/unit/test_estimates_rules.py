"""Estimates before results: entropy, cross-entropy, edge, rolling windows and the edge alarm."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.estimates_rules import (
    EDGE_FLOOR,
    EdgeAlarm,
    MatchEstimate,
    ModelEstimates,
    RollingEstimates,
    alert_id,
    cross_entropy,
    estimate,
    expected_log_loss,
    line,
    mean_absolute_error,
    sentence,
    window_means,
)
from models.metrics import log_loss
from schemas.events import OUTCOMES, Odds

weights = st.tuples(*(st.floats(0.01, 1.0) for _ in OUTCOMES))
prices = st.floats(1.05, 30.0)
odds = st.builds(Odds, home=prices, draw=prices, away=prices)


def as_probabilities(w: tuple[float, float, float]) -> dict[str, float]:
    total = sum(w)
    return {o: x / total for o, x in zip(OUTCOMES, w, strict=True)}


@given(weights)
def test_expected_log_loss_is_the_mean_log_loss_under_the_models_own_probabilities(
    w: tuple[float, float, float],
) -> None:
    p = as_probabilities(w)
    mean = sum(p[o] * log_loss(p, o) for o in OUTCOMES)  # type: ignore[arg-type]
    assert expected_log_loss(p) == pytest.approx(mean)
    assert 0.0 <= expected_log_loss(p) <= math.log(3) + 1e-12


@given(weights, weights)
def test_cross_entropy_is_at_least_the_entropy_gibbs(
    wq: tuple[float, float, float], wp: tuple[float, float, float]
) -> None:
    q, p = as_probabilities(wq), as_probabilities(wp)
    assert cross_entropy(q, p) >= expected_log_loss(q) - 1e-12
    assert cross_entropy(q, q) == pytest.approx(expected_log_loss(q))


def test_a_certain_miss_costs_the_clipped_log_loss_not_infinity() -> None:
    q = {"H": 1.0, "D": 0.0, "A": 0.0}
    p = {"H": 0.0, "D": 0.5, "A": 0.5}
    assert cross_entropy(q, p) == pytest.approx(log_loss(p, "H"))
    assert math.isfinite(cross_entropy(q, p))


@given(weights, odds, odds)
def test_edge_is_the_kl_difference_to_the_closing_line(
    w: tuple[float, float, float], opening: Odds, closing: Odds
) -> None:
    p = as_probabilities(w)
    e = estimate(p, opening, closing)
    q, o = line(closing), line(opening)
    assert q is not None
    assert o is not None
    kl = lambda x: cross_entropy(q, x) - expected_log_loss(q)  # noqa: E731
    assert e.expected_edge == pytest.approx(kl(o) - kl(p), abs=1e-9)
    assert e.closing_cross_entropy == pytest.approx(cross_entropy(q, p))


@given(odds, odds)
def test_the_closing_line_itself_has_the_largest_edge(opening: Odds, closing: Odds) -> None:
    q = line(closing)
    assert q is not None
    best = estimate(q, opening, closing).expected_edge
    assert best is not None
    assert best >= -1e-12
    assert estimate(line(opening) or {}, opening, closing).expected_edge == pytest.approx(0.0)


def test_without_a_closing_line_only_the_expected_log_loss_is_known() -> None:
    p = {"H": 0.5, "D": 0.3, "A": 0.2}
    e = estimate(p, Odds(home=2.0, draw=3.4, away=4.0), None)
    assert e.closing_cross_entropy is None
    assert e.expected_edge is None
    assert e.expected_log_loss == pytest.approx(expected_log_loss(p))


def test_the_window_keeps_the_last_matches_and_a_revision_replaces_its_match() -> None:
    rolling = RollingEstimates(window=3)
    for i in range(5):
        rolling.add(f"m{i}", MatchEstimate(float(i), None, None))
    rolling.add("m3", MatchEstimate(10.0, 1.0, -1.0))
    summary = rolling.summary()
    assert summary.matches == 3
    assert (summary.first_match_id, summary.last_match_id) == ("m2", "m3")
    assert summary.expected_log_loss == pytest.approx((2 + 4 + 10) / 3)
    assert (summary.closing, summary.closing_cross_entropy, summary.expected_edge) == (1, 1, -1)


@given(weights, odds, odds | st.none())
def test_one_pass_estimate_is_the_two_sums_bit_for_bit(
    w: tuple[float, float, float], opening: Odds, closing: Odds | None
) -> None:
    """``estimate_against`` takes each log once for both sums: the floats are the same as
    :func:`expected_log_loss` and :func:`cross_entropy` give, not merely close."""
    p = as_probabilities(w)
    e = estimate(p, opening, closing)
    assert e.expected_log_loss == expected_log_loss(p)
    q, o = line(closing), line(opening)
    if q is None:
        assert (e.closing_cross_entropy, e.expected_edge) == (None, None)
        return
    assert e.closing_cross_entropy == cross_entropy(q, p)
    assert o is not None
    assert e.expected_edge == cross_entropy(q, o) - cross_entropy(q, p)


window_changes = st.lists(
    st.tuples(
        st.integers(0, 12),  # match id: repeats are revisions
        st.floats(0.0, 3.0),
        st.none() | st.floats(0.0, 3.0),
        st.none() | st.floats(-0.5, 0.5),
    ),
    max_size=80,
)


@given(st.integers(1, 7), window_changes)
def test_the_windows_running_sums_are_the_means_of_what_it_holds(
    window: int, changes: list[tuple[int, float, float | None, float | None]]
) -> None:
    """After any additions, revisions and evictions, the O(1) summary is the plain means of
    the last ``window`` matches (replaying the same rule on a list)."""
    rolling = RollingEstimates(window=window)
    held: dict[str, MatchEstimate] = {}
    for match, loss, closing, edge in changes:
        value = MatchEstimate(loss, closing, edge if closing is not None else None)
        rolling.add(f"m{match}", value)
        held.pop(f"m{match}", None)
        held[f"m{match}"] = value
        while len(held) > window:
            del held[next(iter(held))]
        summary = rolling.summary()
        values = list(held.values())
        closed = [v.closing_cross_entropy for v in values if v.closing_cross_entropy is not None]
        edges = [v.expected_edge for v in values if v.expected_edge is not None]
        assert summary.matches == len(values)
        assert summary.closing == len(closed)
        assert summary.expected_log_loss == pytest.approx(
            math.fsum(v.expected_log_loss for v in values) / len(values), abs=1e-12
        )
        assert summary.closing_cross_entropy == (
            pytest.approx(math.fsum(closed) / len(closed), abs=1e-12) if closed else None
        )
        assert summary.expected_edge == (
            pytest.approx(math.fsum(edges) / len(edges), abs=1e-12) if edges else None
        )
        assert (summary.first_match_id, summary.last_match_id) == (
            next(iter(held)),
            next(reversed(held)),
        )


def test_an_empty_window_has_no_means() -> None:
    summary = RollingEstimates(window=3).summary()
    assert summary.matches == 0
    assert summary.expected_log_loss is None


def test_the_alarm_fires_once_on_a_full_negative_window_and_recovers() -> None:
    estimates = ModelEstimates(window=3)
    opening, closing = Odds(home=2.0, draw=3.4, away=4.0), Odds(home=1.8, draw=3.6, away=4.8)
    q, o = line(closing), line(opening)
    assert q is not None
    assert o is not None
    far = {"H": 0.2, "D": 0.3, "A": 0.5}  # worse than the opening line against q

    def feed(p: dict[str, float], start: int, count: int) -> list[str]:
        found = estimates.observe(
            ("m", f"x{i}", p, opening, closing) for i in range(start, start + count)
        )
        return [t.state for _, t in found]

    assert feed(far, 0, 2) == []  # not a full window yet
    assert feed(far, 2, 1) == ["firing"]
    assert feed(far, 3, 5) == []  # deduplicated while it stays negative
    assert feed(q, 8, 3) == ["resolved"]
    assert feed(far, 11, 3) == ["firing"]


def test_a_window_without_closing_lines_never_alarms() -> None:
    estimates = ModelEstimates(window=2)
    found = estimates.observe(
        ("m", f"x{i}", {"H": 0.9, "D": 0.05, "A": 0.05}, Odds(home=2, draw=3, away=4), None)
        for i in range(10)
    )
    assert found == []
    assert estimates.summaries()["m"].expected_edge is None


def test_alert_ids_are_deterministic_and_the_sentence_names_the_matches() -> None:
    alarm = EdgeAlarm(window=1)
    rolling = RollingEstimates(window=1)
    rolling.add("x9", MatchEstimate(1.0, 1.1, -0.02))
    transition = alarm.update(rolling.summary())
    assert transition is not None
    assert alert_id("m", transition) == alert_id("m", transition) != alert_id("n", transition)
    text = sentence("m", 3, transition)
    assert "m v3" in text
    assert "x9" in text
    assert "-0.0200" in text


def test_window_means_and_mae() -> None:
    assert window_means([1, 2, 3, 4, 5], 2) == [1.5, 3.5]
    assert mean_absolute_error([1.0, 2.0], [2.0, 0.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="non-empty"):
        mean_absolute_error([], [])
    with pytest.raises(ValueError, match="at least 1"):
        RollingEstimates(window=0)


def test_rounding_noise_and_silent_models_never_alarm() -> None:
    """The opening line against itself has an edge of 0 up to rounding: no alarm; a silent
    model (a market reference) keeps its estimates but never alarms."""
    opening, closing = Odds(home=2.0, draw=3.4, away=4.0), Odds(home=1.8, draw=3.6, away=4.8)
    o = line(opening)
    assert o is not None
    estimates = ModelEstimates(window=2, silent={"quiet"})
    far = {"H": 0.2, "D": 0.3, "A": 0.5}
    found = estimates.observe(
        [(m, f"x{i}", p, opening, closing) for i in range(4) for m, p in (("o", o), ("quiet", far))]
    )
    assert found == []
    quiet = estimates.summaries()["quiet"].expected_edge
    assert quiet is not None
    assert quiet < 0


def test_a_retired_model_is_forgotten() -> None:
    estimates = ModelEstimates(window=2)
    estimates.observe(
        (m, "x1", {"H": 0.5, "D": 0.3, "A": 0.2}, None, None) for m in ("kept", "retired")
    )
    estimates.retain(["kept"])
    assert list(estimates.summaries()) == ["kept"]


def test_an_edge_within_the_floor_does_not_alarm() -> None:
    """A model level with the line (edge -0.0001, as the demo's champion) says nothing; one that
    is expected to lose more than the floor alarms, and resolves only back at zero or above."""
    alarm = EdgeAlarm(window=1)
    rolling = RollingEstimates(window=1)
    rolling.add("a", MatchEstimate(1.0, 1.0, -0.0001))
    assert alarm.update(rolling.summary()) is None
    rolling.add("b", MatchEstimate(1.0, 1.0, -(EDGE_FLOOR + 0.001)))
    fired = alarm.update(rolling.summary())
    assert fired is not None
    assert fired.state == "firing"
    rolling.add("c", MatchEstimate(1.0, 1.0, -0.0001))
    assert alarm.update(rolling.summary()) is None
    rolling.add("d", MatchEstimate(1.0, 1.0, 0.0))
    resolved = alarm.update(rolling.summary())
    assert resolved is not None
    assert resolved.state == "resolved"
