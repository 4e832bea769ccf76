"""Decay detection rules (pure): rolling count windows against a baseline, plus a River drift
detector on the per-prediction loss. One :class:`ScopeMonitor` watches one model in one scope
(all leagues, or one league); it returns alert decisions, never the same state twice in a row.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from river import drift as _drift

_NAMESPACE = uuid.UUID("0c6f3a57-52d4-4f43-8a8e-3a7e0f5c9b21")

Metric = Literal["log_loss", "accuracy"]
METRICS: tuple[Metric, ...] = ("log_loss", "accuracy")

MIN_Z = 3.0
"""A decay must also be significant: the window's mean must differ from the baseline by at
least this many standard errors. Without it a 5% threshold on a 200-match accuracy window (one
standard error is ~7% relative) fires on noise; with it an ordinary season stays quiet while a
real break (scrambled results: log loss +30%, ~10 standard errors) still fires within a window."""


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
    _ids: deque[str] = field(default_factory=deque)
    _log_loss: deque[float] = field(default_factory=deque)
    _hits: deque[float] = field(default_factory=deque)
    _sums: dict[str, float] = field(default_factory=lambda: {"log_loss": 0.0, "accuracy": 0.0})
    _squares: float = 0.0
    _detector: Any = None

    def __post_init__(self) -> None:
        self._detector = make_detector(self.detector_name)

    def current(self, metric: Metric) -> float:
        return self._sums[metric] / max(1, len(self._ids))

    def variance(self, metric: Metric) -> float:
        """Per-evaluation variance of the metric over the window."""
        mean = self.current(metric)
        if metric == "accuracy":
            return mean * (1.0 - mean)
        return max(0.0, self._squares / max(1, len(self._ids)) - mean * mean)

    def observe(self, evaluation_id: str, log_loss: float, hit: bool) -> list[Decision]:
        """Add one evaluation; return the alerts it triggers (usually none)."""
        if evaluation_id in self.seen:
            return []
        self.seen.add(evaluation_id)
        self._push(evaluation_id, log_loss, 1.0 if hit else 0.0)
        decisions = self._drift(evaluation_id, log_loss)
        if len(self._ids) < self.window:
            return decisions
        for metric in METRICS:
            current = self.current(metric)
            if metric not in self.baseline:
                # The first full window after deployment is the baseline when none is registered.
                self.baseline[metric] = current
                self.baseline_variance[metric] = self.variance(metric)
                continue
            decisions.extend(self._threshold(metric, current))
        return decisions

    def _push(self, evaluation_id: str, log_loss: float, hit: float) -> None:
        self._ids.append(evaluation_id)
        self._log_loss.append(log_loss)
        self._hits.append(hit)
        self._sums["log_loss"] += log_loss
        self._sums["accuracy"] += hit
        self._squares += log_loss * log_loss
        if len(self._ids) > self.window:
            self.seen.discard(self._ids.popleft())
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

    def _drift(self, evaluation_id: str, log_loss: float) -> list[Decision]:
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
