"""The paired test: decay relative to the market, standardised by the baseline, deduplicated."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.monitor import market_reference, sentence, to_alert
from agents.monitor_rules import (
    LINE_DETECTOR,
    LINE_METRIC,
    PAIRED_DETECTOR,
    PAIRED_METRIC,
    Decision,
    LineCusum,
    PairedCusum,
    ScopeMonitor,
    line_evidence,
    reference_log_loss,
)
from models.base import BASE_RATES
from models.catalog import REFERENCE_MODEL_IDS
from schemas.codec import decode, encode
from schemas.events import OUTCOMES, Alert, Outcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def monitor(window: int = 50) -> ScopeMonitor:
    return ScopeMonitor(window=window, threshold=0.05, detector_name="page-hinkley")


def paired(decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.detector == PAIRED_DETECTOR]


def run(m: ScopeMonitor, differences: list[float], start: int = 0) -> list[Decision]:
    """Feed a market loss of 1.0 and a model loss of 1.0 + difference per evaluation."""
    out: list[Decision] = []
    for i, d in enumerate(differences, start):
        out += m.observe(f"e{i}", 1.0 + d, True, 1.0, match_id=f"m{i}")
    return out


def noise(rng: random.Random, count: int, shift: float = 0.0, sd: float = 0.04) -> list[float]:
    return [shift + rng.gauss(0.0, sd) for _ in range(count)]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_model_as_good_as_ever_against_the_market_raises_no_paired_alert(seed: int) -> None:
    """Paired differences from the baseline's own distribution (2,000 of them) stay quiet."""
    rng = random.Random(seed)
    assert paired(run(monitor(), noise(rng, 2000))) == []


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.floats(3.0, 20.0))
def test_a_shift_of_several_deviations_fires_once_within_a_bounded_delay(
    seed: int, shift: float
) -> None:
    """A model that loses ``shift`` robust deviations per match to the market fires one decay,
    about the matches since the excursion began, within a few dozen evaluations, and no second
    one while the fault lasts."""
    rng = random.Random(seed)
    m = monitor()
    assert paired(run(m, noise(rng, 200))) == []
    assert m.paired is not None
    assert m.paired.scale is not None
    scale = m.paired.scale
    fired = paired(run(m, noise(rng, 400, shift=shift * scale), start=200))
    assert [d.kind for d in fired] == ["decay"]
    decay = fired[0]
    assert int(decay.last_evaluation_id.removeprefix("e")) - 200 < 40
    assert decay.metric == PAIRED_METRIC
    assert decay.state == "firing"
    assert decay.current > (decay.baseline or 0.0)
    assert decay.last_match_id == decay.last_evaluation_id.replace("e", "m")
    assert (
        decay.window == int(decay.last_evaluation_id[1:]) - int(decay.first_evaluation_id[1:]) + 1
    )


def test_recovery_follows_once_a_window_is_back_to_normal() -> None:
    """After the fault ends, one recovery once a full window of paired evaluations since the
    alert is back near the baseline; then the test is armed again and a new fault fires again."""
    rng = random.Random(3)
    m = monitor()
    run(m, noise(rng, 100))
    assert [d.kind for d in paired(run(m, noise(rng, 30, shift=0.5), start=100))] == ["decay"]
    back = paired(run(m, noise(rng, 200), start=130))
    assert [d.kind for d in back] == ["recovery"]
    assert back[0].state == "resolved"
    assert back[0].window == 50
    again = paired(run(m, noise(rng, 30, shift=0.5), start=330))
    assert [d.kind for d in again] == ["decay"]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    offset=st.floats(-0.5, 0.5),
    factor=st.floats(1.5, 4.0),
)
def test_the_test_depends_only_on_the_standardised_difference(
    seed: int, offset: float, factor: float
) -> None:
    """Moving every difference by a constant or stretching them all leaves the decisions as
    they were: the baseline's mean and MAD standardise the stream (while the scale is above
    its floor, MIN_SCALE: the noise is stretched threefold first, as a sample's MAD can fall
    just under the floor, e.g. seed 678)."""
    rng = random.Random(seed)
    drawn = noise(rng, 100) + noise(rng, 100, shift=rng.choice([0.0, 0.1, 0.3]))
    base = [3.0 * d for d in drawn]
    one, other = PairedCusum(baseline_size=50), PairedCusum(baseline_size=50)
    for i, d in enumerate(base):
        assert one.update(f"e{i}", None, d) == other.update(f"e{i}", None, offset + factor * d)


def test_without_the_reference_there_is_no_paired_test() -> None:
    """An evaluation without the market's loss feeds the window test and the drift detector
    only, as before the paired test existed."""
    m = monitor(window=20)
    decisions = []
    for i in range(200):
        decisions += m.observe(f"e{i}", 1.0 if i < 50 else 3.0, True)
    assert decisions
    assert paired(decisions) == []


def test_reference_log_loss_is_the_opening_lines() -> None:
    """The opening line's loss comes from the normalised opening probabilities in the inputs;
    without a usable line there is none."""
    inputs = {"open_p_H": 0.5, "open_p_D": 0.3, "open_p_A": 0.2, "elo_diff": 10.0}
    assert reference_log_loss(inputs, "D") == -math.log(0.3)
    assert reference_log_loss({"open_p_H": 0.5, "open_p_D": 0.5}, "H") is None
    assert reference_log_loss({**inputs, "open_p_A": 0.0}, "H") is None


def test_the_alert_says_what_an_operator_acts_on() -> None:
    """A paired decay alert carries the model version, scope, metric, baseline, current value,
    window, detector, first and last evaluation and match, and one sentence saying them."""
    rng = random.Random(5)
    m = monitor()
    run(m, noise(rng, 100))
    decay = paired(run(m, noise(rng, 30, shift=0.1), start=100))[0]
    assert decay.window > 1
    alert = to_alert("online-logreg", "league:spain-laliga", decay, NOW, model_version=7)
    assert (alert.model_id, alert.model_version, alert.scope) == (
        "online-logreg",
        7,
        "league:spain-laliga",
    )
    assert (alert.metric, alert.detector, alert.window) == (
        PAIRED_METRIC,
        PAIRED_DETECTOR,
        decay.window,
    )
    assert (alert.first_match_id, alert.last_match_id) == (
        decay.first_match_id,
        decay.last_match_id,
    )
    assert alert.baseline == decay.baseline
    assert alert.current == decay.current
    text = alert.message
    assert text.startswith("online-logreg v7 (spain-laliga) now loses to the opening line")
    assert f"matches {decay.first_match_id} to {decay.last_match_id}" in text
    assert text.count(". ") == 0
    assert text.endswith(".")
    assert decode(encode(alert), Alert) == alert


def test_alerts_without_the_new_fields_still_decode() -> None:
    """An alert written before version, first and last match existed decodes, with None."""
    old = (
        b'{"schema_version":1,"alert_id":"a1","kind":"decay","state":"firing",'
        b'"model_id":"m","source":"decay-monitor","scope":"all","detector":"window",'
        b'"message":"x","created_at":"2026-01-01T00:00:00Z"}'
    )
    alert = decode(old, Alert)
    assert (alert.model_version, alert.first_match_id, alert.last_match_id) == (None, None, None)


def test_every_kind_of_decision_reads_as_one_sentence() -> None:
    """Window decay, recovery and drift messages name the model, the scope and the matches."""
    for kind, state, metric, detector in (
        ("decay", "firing", "log_loss", "window"),
        ("recovery", "resolved", "accuracy", "window"),
        ("drift", "firing", "log_loss", "page-hinkley"),
        ("recovery", "resolved", PAIRED_METRIC, PAIRED_DETECTOR),
        ("decay", "firing", LINE_METRIC, LINE_DETECTOR),
        ("recovery", "resolved", LINE_METRIC, LINE_DETECTOR),
    ):
        decision = Decision(
            kind=kind,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            metric=metric,
            detector=detector,
            window=300,
            baseline=1.0,
            current=1.1,
            threshold=0.05,
            first_evaluation_id="e1",
            last_evaluation_id="e2",
            first_match_id="m1",
            last_match_id="m2" if kind != "drift" else "m1",
        )
        text = sentence("x", 3, "all", decision)
        assert text.startswith("x v3 (all leagues)")
        assert "m1" in text
        assert text.endswith(".")


def test_the_market_references_are_not_tested_against_the_market() -> None:
    """The paired test compares a model with the opening line: the references themselves get
    no reference loss (market-open against itself is 0 on every match, a zero spread), the
    other models the opening line's log loss on the match."""
    inputs = {"open_p_H": 0.5, "open_p_D": 0.3, "open_p_A": 0.2}
    for model_id in REFERENCE_MODEL_IDS:
        assert market_reference(model_id, inputs, "H") is None
    assert market_reference("online-logreg", inputs, "H") == pytest.approx(-math.log(0.5))


def test_a_model_that_drifts_away_from_the_market_is_rescaled_not_alerted() -> None:
    """A model that starts at the market (differences ~0.005) and, as it learns, differs more
    (~0.05, mean still 0): the scale follows the quiet differences, so the wider noise raises
    no decay (standardised by the first weeks' scale it fires, on every one of 10 seeds); a
    real fault after it still does, within a few evaluations."""
    rng = random.Random(7)
    m = PairedCusum(baseline_size=300)
    stream = noise(rng, 300, sd=0.005) + [
        rng.gauss(0.0, 0.005 + 0.045 * min(1.0, i / 1500)) for i in range(3000)
    ]
    changes = [m.update(f"e{i}", None, d) for i, d in enumerate(stream)]
    assert [c for c in changes if c is not None] == []
    assert m.scale is not None
    assert m.scale > 0.035
    fault = [m.update(f"f{i}", None, d) for i, d in enumerate(noise(rng, 20, shift=0.3))]
    assert "decay" in fault[:5]


Line = tuple[float, float, float]


def lines(rng: random.Random, count: int, spread: float = 1.0) -> list[Line]:
    """Opening lines like the shared data's: a home strength, a draw share of the rest."""
    out = []
    for _ in range(count):
        home = min(0.85, max(0.12, rng.gauss(0.45, 0.17 * spread)))
        draw = (1.0 - home) * rng.uniform(0.35, 0.5)
        out.append((home, draw, 1.0 - home - draw))
    return out


def draw(rng: random.Random, line: Line) -> Outcome:
    return rng.choices(OUTCOMES, weights=line)[0]


def line_run(
    m: ScopeMonitor, stream: list[tuple[Line, Outcome]], start: int = 0, model: float = 0.0
) -> list[Decision]:
    """Feed a model at the line (plus ``model`` log loss) scored on each recorded outcome."""
    out: list[Decision] = []
    for i, (line, outcome) in enumerate(stream, start):
        market = -math.log(line[OUTCOMES.index(outcome)])
        out += m.observe(f"e{i}", market + model, True, market, match_id=f"m{i}", outcome=outcome)
    return out


def of(detector: str, decisions: list[Decision]) -> list[Decision]:
    return [d for d in decisions if d.detector == detector]


def test_line_evidence_is_the_log_likelihood_ratio_of_base_rates_to_line() -> None:
    """log b(y) - log q(y), from the line's log loss on the recorded outcome."""
    line = {"H": 0.6, "D": 0.25, "A": 0.15}
    for outcome in OUTCOMES:
        evidence = line_evidence(-math.log(line[outcome]), outcome)
        assert evidence == pytest.approx(math.log(BASE_RATES[outcome] / line[outcome]))


@pytest.mark.parametrize("seed", range(5))
def test_results_that_follow_the_line_raise_no_line_alert(seed: int) -> None:
    """3,000 outcomes drawn from their own lines (a calibrated market): the line test stays
    quiet, also when the season turns harder (lines nearer even: the raw loss rises)."""
    rng = random.Random(seed)
    stream = [(q, draw(rng, q)) for q in lines(rng, 1500) + lines(rng, 1500, spread=0.5)]
    assert of(LINE_DETECTOR, line_run(monitor(window=300), stream)) == []


@pytest.mark.parametrize("seed", range(5))
def test_results_joined_to_the_wrong_matches_fire_one_line_alert(seed: int) -> None:
    """After 1,000 calibrated matches each result becomes another match's: one decay within a
    few hundred evaluations, none again while it lasts, one recovery once results follow the
    line again for a full window."""
    rng = random.Random(seed)
    m = monitor(window=300)
    before = [(q, draw(rng, q)) for q in lines(rng, 1000)]
    assert of(LINE_DETECTOR, line_run(m, before)) == []
    wrong = [
        (q, draw(rng, other)) for q, other in zip(lines(rng, 1500), lines(rng, 1500), strict=True)
    ]
    fired = of(LINE_DETECTOR, line_run(m, wrong, start=1000))
    assert [d.kind for d in fired] == ["decay"]
    assert int(fired[0].last_evaluation_id[1:]) - 1000 < 400
    assert fired[0].metric == LINE_METRIC
    assert fired[0].current > 0.0
    after = [(q, draw(rng, q)) for q in lines(rng, 1000)]
    assert [d.kind for d in of(LINE_DETECTOR, line_run(m, after, start=2500))] == ["recovery"]


def test_with_the_line_a_harder_season_raises_no_window_decay() -> None:
    """A calibrated market whose season turns harder raises the raw loss by more than the
    window test's 5%: without the line the window test fires, with it the line test and the
    paired test (the model is at the line) replace it and nothing of theirs fires."""
    rng = random.Random(3)
    stream = [(q, draw(rng, q)) for q in lines(rng, 1200, spread=1.4) + lines(rng, 1800, 0.3)]
    alone = monitor(window=300)
    for i, (line, outcome) in enumerate(stream):
        loss = -math.log(line[OUTCOMES.index(outcome)])
        window = of("window", alone.observe(f"e{i}", loss, outcome == "H"))
        if window:
            break
    assert window
    decisions = line_run(monitor(window=300), stream)
    assert of("window", decisions) + of(LINE_DETECTOR, decisions) + paired(decisions) == []


def test_without_the_outcome_there_is_no_line_test() -> None:
    """The market references get no reference loss, callers before the line test no outcome:
    neither runs the line test."""
    rng = random.Random(1)
    m = monitor(window=50)
    for i, q in enumerate(lines(rng, 800)):
        other = lines(rng, 1)[0]
        loss = -math.log(q[OUTCOMES.index(draw(rng, other))])
        assert of(LINE_DETECTOR, m.observe(f"e{i}", loss, True, loss)) == []
    assert m.line is not None
    assert m.line.statistic == 0.0


def test_the_line_test_needs_no_baseline() -> None:
    """Its first evaluation already counts: strong evidence fires at once."""
    m = LineCusum(window=10, threshold=8.0)
    assert m.update("e0", None, 5.0) is None
    assert m.update("e1", None, 5.0) == "decay"
    assert m.decision("decay").window == 2
