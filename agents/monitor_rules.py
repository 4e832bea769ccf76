"""Decay detection rules (pure): rolling count windows against a baseline, a River drift
detector on the per-prediction loss, and a CUSUM on the loss relative to the market. One
:class:`ScopeMonitor` watches one model in one scope (all leagues, or one league); it returns
alert decisions, never the same state twice in a row.

Why the market: the log loss of one match has a standard deviation of ~0.47 (the outcome is
random), but its difference to the opening line's log loss on the same match has ~0.04, since
both are scored on the same outcome (measured over the shared data: docs/MONITORING.md). A
test on that paired difference sees a model break within a few evaluations where the window
test on the raw loss needs a few hundred; the window test stays, for faults that hit the market
too, on producers without the opening line.

Results joined to the wrong matches hit the market as hard as the model, so the paired test
cannot see them; a third test, on the opening line alone, can: a CUSUM of the log-likelihood
ratio of the recorded outcomes under the base rates against under the line
(:class:`LineCusum`). It needs no baseline (the line's calibration is its own), so a harder
season, which the market prices, does not move it.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import fmean, median
from typing import Any, Literal

from river import drift as _drift

from models.base import BASE_RATES
from models.market import OPEN_INPUTS
from models.metrics import log_loss as _log_loss
from schemas.events import OUTCOMES, Outcome

_NAMESPACE = uuid.UUID("0c6f3a57-52d4-4f43-8a8e-3a7e0f5c9b21")

Metric = Literal["log_loss", "accuracy"]
METRICS: tuple[Metric, ...] = ("log_loss", "accuracy")

MIN_Z = 3.0
"""A decay must also be significant: the window's mean must differ from the baseline by at
least this many standard errors. Without it a 5% threshold on a 200-match accuracy window (one
standard error is ~7% relative) fires on noise; with it an ordinary season stays quiet while a
real break (scrambled results: log loss +30%, ~10 standard errors) still fires within a window."""


Change = Literal["decay", "recovery"]

PAIRED_METRIC = "log_loss_vs_market"
"""The paired test's metric: the model's log loss minus the opening line's, per match."""
PAIRED_DETECTOR = "paired-cusum"
PAIRED_ALLOWANCE = 1.5
"""CUSUM allowance ``k``, in robust standard deviations of the baseline's paired difference: a
smaller sustained shift (~0.06 log loss per match on the shared data) is left to the window test.
Chosen with ``PAIRED_THRESHOLD`` on the seasons before 2017-18 only (``python -m tests.monitoring
--sweep``, docs/MONITORING.md): of the pairs with no false alarm in any scope there, the one with
the shortest worst median delay over the four model faults."""
PAIRED_THRESHOLD = 10.0
"""CUSUM decision threshold ``h`` (same units): the model faults of the measurement move the
standardised difference by 1.7 to 11 per evaluation on average, so they cross it in a few."""
MAD_TO_SD = 1.4826
"""Median absolute deviation to standard deviation for a normal distribution."""
MIN_SCALE = 0.03
"""Floor of the robust scale (log-loss units), three quarters of the spread of a learned
model's difference to the opening line on the shared data (0.040). A model that starts *at*
the market (the default, ``online-logreg``) has a baseline MAD near 0; with a floor of 1e-3 its
first small corrections read as dozens of deviations, and the demo's champion fired 19 decays
on an ordinary stream. The model faults the test is for move the mean by 0.05 or more a
match."""


LINE_METRIC = "results_vs_line"
"""The line test's metric: per match, the log-likelihood ratio of the recorded outcome under the
base rates against under the opening line."""
LINE_DETECTOR = "line-cusum"
LINE_THRESHOLD = 8.0
"""Decision threshold of the line test, in nats of evidence that the results no longer follow the
line (a Page CUSUM on the exact log-likelihood ratio has an average run length to a false alarm
of at least ``e**h``, ~3,000 evaluations here). Chosen on the seasons before 2017-18 only
(``python -m tests.monitoring --sweep-line``, docs/MONITORING.md): the smallest ``h`` with no
false alarm in any scope there, plus one nat of margin (7 had none, 6 had two)."""


@dataclass(frozen=True)
class Decision:
    """An alert to emit: decay firing, recovery (resolved), or detected drift."""

    kind: Literal["decay", "recovery", "drift"]
    state: Literal["firing", "resolved"]
    metric: str
    detector: str
    window: int
    baseline: float | None
    current: float
    threshold: float
    first_evaluation_id: str
    last_evaluation_id: str
    first_match_id: str | None = None
    last_match_id: str | None = None


def reference_log_loss(inputs: dict[str, float], outcome: Outcome) -> float | None:
    """The opening line's log loss on a match, from the normalised implied probabilities of its
    model inputs (``open_p_H/D/A``, :data:`models.market.OPEN_INPUTS`), as ``market-open``
    scores it; None when the inputs lack a usable line (a producer's own features)."""
    line = [inputs.get(name) for name in OPEN_INPUTS]
    if any(p is None or not p > 0.0 for p in line):
        return None
    probabilities = dict(zip(OUTCOMES, (float(p) for p in line if p is not None), strict=True))
    return _log_loss(probabilities, outcome)


def relative_decay(metric: Metric, baseline: float, current: float) -> float:
    """How much worse ``current`` is than ``baseline``, relative to it (> 0 means worse).

    Log loss gets worse by rising, accuracy by falling.
    """
    if baseline == 0:
        return 0.0
    if metric == "log_loss":
        return (current - baseline) / baseline
    return (baseline - current) / baseline


def make_detector(name: str) -> Any:
    """A River drift detector on the loss stream, by its settings name."""
    drift: Any = _drift  # River's constructors are untyped
    if name == "adwin":
        return drift.ADWIN(delta=0.002)
    if name == "page-hinkley":
        # Loss per match is ~1.0 with sd ~0.4; alert on a sustained rise of ~0.1.
        return drift.PageHinkley(min_instances=100, delta=0.05, threshold=25.0, mode="up")
    raise ValueError(f"unknown drift detector {name!r}; expected adwin or page-hinkley")


RESCALE_EVERY = 50
"""Quiet paired differences between two updates of the paired test's scale."""


def robust_scale(values: Iterable[float]) -> float:
    """1.4826 x the median absolute deviation (a standard deviation where the values are
    normal, unmoved by a few outliers), at least :data:`MIN_SCALE`."""
    sample = list(values)
    middle = median(sample)
    return max(MIN_SCALE, MAD_TO_SD * median(abs(v - middle) for v in sample))


@dataclass
class PairedCusum:
    """One-sided CUSUM on the standardised paired difference (model minus market log loss).

    The first ``baseline_size`` differences give the centre (their mean: the CUSUM tests a
    shift of the mean) and the scale (their MAD, robust to the few matches where one side was
    very wrong). It fires when the cumulative excess over the allowance passes the threshold,
    and resolves once the mean standardised difference of the last ``baseline_size`` paired
    evaluations since it fired is back under half the allowance. The scale follows the model:
    every :data:`RESCALE_EVERY` quiet differences (the statistic at 0, nothing firing) it is
    the larger of the baseline's and the last ``baseline_size`` quiet differences' robust
    scale, since a model that starts at the market (the default) differs from it more as it
    learns, and standardising its later noise by its first weeks' would read as a decay. A
    fault is seen within a few evaluations, long before it could widen the scale, and an
    excursion's differences never enter it. A window, not a reverse CUSUM, for recovery
    because a broken model's difference is heavy-tailed (an overconfident one is mostly better
    than the market and now and then far worse), and a reverse CUSUM would resolve in a lull.
    """

    baseline_size: int
    allowance: float = PAIRED_ALLOWANCE
    threshold: float = PAIRED_THRESHOLD
    centre: float | None = None
    scale: float | None = None
    statistic: float = 0.0
    firing: bool = False
    _baseline: list[float] = field(default_factory=list)
    _run: list[tuple[str, str | None, float]] = field(default_factory=list)
    _since: deque[tuple[str, str | None, float, float]] = field(default_factory=deque)
    _since_z: float = 0.0
    baseline_scale: float | None = None
    _quiet: deque[float] = field(default_factory=deque)
    _quiet_added: int = 0

    def update(self, evaluation_id: str, match_id: str | None, difference: float) -> Change | None:
        """Add one paired difference; ``"decay"`` or ``"recovery"`` when the state changes."""
        if self.centre is None or self.scale is None:
            self._learn_baseline(difference)
            return None
        z = (difference - self.centre) / self.scale
        if self.firing:
            return self._towards_recovery(evaluation_id, match_id, difference, z)
        if self.statistic == 0.0:
            self._observe_quiet(difference)
        self.statistic = max(0.0, self.statistic + z - self.allowance)
        if self.statistic == 0.0:
            self._run = []
            return None
        self._run.append((evaluation_id, match_id, difference))
        if self.statistic > self.threshold:
            self.firing = True
            self._since, self._since_z = deque(), 0.0
            return "decay"
        return None

    def _learn_baseline(self, difference: float) -> None:
        self._baseline.append(difference)
        if len(self._baseline) >= self.baseline_size:
            self.centre = fmean(self._baseline)
            self.scale = self.baseline_scale = robust_scale(self._baseline)
            self._baseline = []

    def _observe_quiet(self, difference: float) -> None:
        self._quiet.append(difference)
        if len(self._quiet) > self.baseline_size:
            self._quiet.popleft()
        self._quiet_added += 1
        if self._quiet_added % RESCALE_EVERY == 0 and len(self._quiet) == self.baseline_size:
            assert self.baseline_scale is not None
            self.scale = max(self.baseline_scale, robust_scale(self._quiet))

    def _towards_recovery(
        self, evaluation_id: str, match_id: str | None, difference: float, z: float
    ) -> Change | None:
        self._since.append((evaluation_id, match_id, difference, z))
        self._since_z += z
        if len(self._since) > self.baseline_size:
            self._since_z -= self._since.popleft()[3]
        full = len(self._since) == self.baseline_size
        if full and self._since_z / self.baseline_size < self.allowance / 2:
            self.firing = False
            self.statistic = 0.0
            self._run = []
            return "recovery"
        return None

    def decision(self, kind: Literal["decay", "recovery"]) -> Decision:
        """The decision of a state change just returned by :meth:`update`: a decay is about the
        evaluations of the CUSUM's excursion, a recovery about the last window since firing."""
        rows = list(self._run) if kind == "decay" else [row[:3] for row in self._since]
        return Decision(
            kind=kind,
            state="firing" if kind == "decay" else "resolved",
            metric=PAIRED_METRIC,
            detector=PAIRED_DETECTOR,
            window=len(rows),
            baseline=self.centre,
            current=fmean(d for _, _, d in rows),
            threshold=self.threshold,
            first_evaluation_id=rows[0][0],
            last_evaluation_id=rows[-1][0],
            first_match_id=rows[0][1],
            last_match_id=rows[-1][1],
        )


def line_evidence(reference_log_loss: float, outcome: Outcome) -> float:
    """``log b(y) - log q(y)``: how much better the base rates ``b`` explain the recorded outcome
    ``y`` than the opening line ``q`` did (``reference_log_loss`` is ``-log q(y)``).

    Its mean is ``-KL(q || b)`` (~-0.09 on the shared data) while results follow the line and
    turns positive (~+0.08) when they are another match's, whatever the season.

    >>> round(line_evidence(-math.log(0.5), "H"), 4)
    -0.1031
    """
    return math.log(BASE_RATES[outcome]) + reference_log_loss


@dataclass
class LineCusum:
    """Page's CUSUM on :func:`line_evidence`: are the recorded results still those the opening
    line priced? Fires when the cumulative evidence passes the threshold; resolves once the mean
    evidence of the last ``window`` evaluations since it fired is back below 0 (the line explains
    them better than the base rates). No baseline and no scale: the likelihood ratio is exact, so
    the test is the same in every season and scope, and a season the market finds harder (its
    entropy rises) does not move it as long as the market stays calibrated."""

    window: int
    threshold: float = LINE_THRESHOLD
    statistic: float = 0.0
    firing: bool = False
    _run: list[tuple[str, str | None, float]] = field(default_factory=list)
    _since: deque[tuple[str, str | None, float]] = field(default_factory=deque)
    _since_sum: float = 0.0

    def update(self, evaluation_id: str, match_id: str | None, evidence: float) -> Change | None:
        """Add one match's evidence; ``"decay"`` or ``"recovery"`` when the state changes."""
        if self.firing:
            self._since.append((evaluation_id, match_id, evidence))
            self._since_sum += evidence
            if len(self._since) > self.window:
                self._since_sum -= self._since.popleft()[2]
            if len(self._since) == self.window and self._since_sum < 0.0:
                self.firing, self.statistic, self._run = False, 0.0, []
                return "recovery"
            return None
        self.statistic = max(0.0, self.statistic + evidence)
        if self.statistic == 0.0:
            self._run = []
            return None
        self._run.append((evaluation_id, match_id, evidence))
        if self.statistic > self.threshold:
            self.firing = True
            self._since, self._since_sum = deque(), 0.0
            return "decay"
        return None

    def decision(self, kind: Literal["decay", "recovery"]) -> Decision:
        """A decay is about the evaluations of the excursion, a recovery about the last window;
        ``current`` is their mean evidence per match, the baseline 0 (no evidence either way)."""
        rows = list(self._run) if kind == "decay" else list(self._since)
        return Decision(
            kind=kind,
            state="firing" if kind == "decay" else "resolved",
            metric=LINE_METRIC,
            detector=LINE_DETECTOR,
            window=len(rows),
            baseline=0.0,
            current=fmean(e for _, _, e in rows),
            threshold=self.threshold,
            first_evaluation_id=rows[0][0],
            last_evaluation_id=rows[-1][0],
            first_match_id=rows[0][1],
            last_match_id=rows[-1][1],
        )


@dataclass
class ScopeMonitor:
    """Rolling windows of one model in one scope, with the alert state machine."""

    window: int
    threshold: float
    detector_name: str
    baseline: dict[str, float] = field(default_factory=dict)
    baseline_variance: dict[str, float] = field(default_factory=dict)
    firing: dict[str, bool] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    paired: PairedCusum | None = None
    line: LineCusum | None = None
    _ids: deque[str] = field(default_factory=deque)
    _matches: deque[str | None] = field(default_factory=deque)
    _log_loss: deque[float] = field(default_factory=deque)
    _hits: deque[float] = field(default_factory=deque)
    _sums: dict[str, float] = field(default_factory=lambda: {"log_loss": 0.0, "accuracy": 0.0})
    _squares: float = 0.0
    _detector: Any = None

    def __post_init__(self) -> None:
        self._detector = make_detector(self.detector_name)
        if self.paired is None:
            self.paired = PairedCusum(baseline_size=self.window)
        if self.line is None:
            self.line = LineCusum(window=self.window)

    def current(self, metric: Metric) -> float:
        return self._sums[metric] / max(1, len(self._ids))

    def variance(self, metric: Metric) -> float:
        """Per-evaluation variance of the metric over the window."""
        mean = self.current(metric)
        if metric == "accuracy":
            return mean * (1.0 - mean)
        return max(0.0, self._squares / max(1, len(self._ids)) - mean * mean)

    def observe(
        self,
        evaluation_id: str,
        log_loss: float,
        hit: bool,
        reference_log_loss: float | None = None,
        *,
        match_id: str | None = None,
        outcome: Outcome | None = None,
    ) -> list[Decision]:
        """Add one evaluation; return the alerts it triggers (usually none).

        ``reference_log_loss`` is the opening line's log loss on the same match
        (:func:`reference_log_loss`); without it the evaluation feeds the window test and the
        drift detector only. With it and the recorded ``outcome`` the line test runs too, and
        the two tests against the line replace the window test's decay rule: on the test seasons
        that rule's baseline (the first window) made it fire four times on an untouched stream
        (docs/MONITORING.md), and every fault it caught the two see sooner.
        """
        if evaluation_id in self.seen:
            return []
        self.seen.add(evaluation_id)
        self._push(evaluation_id, match_id, log_loss, 1.0 if hit else 0.0)
        decisions = self._drift(evaluation_id, match_id, log_loss)
        if reference_log_loss is not None and self.paired is not None:
            change = self.paired.update(evaluation_id, match_id, log_loss - reference_log_loss)
            if change is not None:
                decisions.append(self.paired.decision(change))
        against_line = False
        if reference_log_loss is not None and outcome is not None and self.line is not None:
            against_line = True
            change = self.line.update(
                evaluation_id, match_id, line_evidence(reference_log_loss, outcome)
            )
            if change is not None:
                decisions.append(self.line.decision(change))
        if len(self._ids) < self.window:
            return decisions
        for metric in METRICS:
            current = self.current(metric)
            if metric not in self.baseline:
                # The first full window after deployment is the baseline when none is registered.
                self.baseline[metric] = current
                self.baseline_variance[metric] = self.variance(metric)
                continue
            if against_line:
                continue
            decisions.extend(self._threshold(metric, current))
        return decisions

    def _push(self, evaluation_id: str, match_id: str | None, log_loss: float, hit: float) -> None:
        self._ids.append(evaluation_id)
        self._matches.append(match_id)
        self._log_loss.append(log_loss)
        self._hits.append(hit)
        self._sums["log_loss"] += log_loss
        self._sums["accuracy"] += hit
        self._squares += log_loss * log_loss
        if len(self._ids) > self.window:
            self.seen.discard(self._ids.popleft())
            self._matches.popleft()
            dropped = self._log_loss.popleft()
            self._sums["log_loss"] -= dropped
            self._squares -= dropped * dropped
            self._sums["accuracy"] -= self._hits.popleft()

    def _threshold(self, metric: Metric, current: float) -> list[Decision]:
        baseline = self.baseline[metric]
        decay = relative_decay(metric, baseline, current)
        was_firing = self.firing.get(metric, False)
        if not was_firing and decay > self.threshold and self._significant(metric, current):
            self.firing[metric] = True
            return [self._decision("decay", "firing", metric, "window", baseline, current)]
        if was_firing and decay < self.threshold / 2:
            self.firing[metric] = False
            return [self._decision("recovery", "resolved", metric, "window", baseline, current)]
        return []

    def _significant(self, metric: Metric, current: float) -> bool:
        """Whether the window differs from the baseline by at least ``MIN_Z`` standard errors."""
        n = self.window
        error = math.sqrt((self.variance(metric) + self.baseline_variance[metric]) / n)
        return abs(current - self.baseline[metric]) >= MIN_Z * error

    def _drift(self, evaluation_id: str, match_id: str | None, log_loss: float) -> list[Decision]:
        self._detector.update(log_loss)
        if not self._detector.drift_detected:
            return []
        return [
            Decision(
                kind="drift",
                state="firing",
                metric="log_loss",
                detector=self.detector_name,
                window=len(self._ids),
                baseline=self.baseline.get("log_loss"),
                current=self.current("log_loss"),
                threshold=self.threshold,
                first_evaluation_id=evaluation_id,
                last_evaluation_id=evaluation_id,
                first_match_id=match_id,
                last_match_id=match_id,
            )
        ]

    def _decision(
        self,
        kind: Literal["decay", "recovery"],
        state: Literal["firing", "resolved"],
        metric: Metric,
        detector: str,
        baseline: float,
        current: float,
    ) -> Decision:
        return Decision(
            kind=kind,
            state=state,
            metric=metric,
            detector=detector,
            window=self.window,
            baseline=baseline,
            current=current,
            threshold=self.threshold,
            first_evaluation_id=self._ids[0],
            last_evaluation_id=self._ids[-1],
            first_match_id=self._matches[0],
            last_match_id=self._matches[-1],
        )


def alert_id(model_id: str, scope: str, decision: Decision) -> str:
    """Deterministic: re-processing the same evaluations yields the same alert, not a second."""
    return str(
        uuid.uuid5(
            _NAMESPACE,
            f"{model_id}|{scope}|{decision.kind}|{decision.metric}|{decision.detector}|"
            f"{decision.last_evaluation_id}",
        )
    )
