"""Feature drift rules (pure): per feature, PSI on bins frozen from a reference window and the
two-sample Kolmogorov-Smirnov statistic, on tumbling windows of kickoff time.

Why kickoff time: a window holds the matches whose kickoff falls in it, whatever order they
arrive in, so a replay (or a restart that re-reads the same features) closes the same windows
with the same matches and gives the same decisions and alert ids. A window is evaluated when
the first match of a later window arrives; a match whose window is already closed is counted
late and left out.

Why calibrated thresholds: PSI and KS of a window of ``n`` matches drawn from the reference
itself are not 0 but shrink like ``1/n`` (PSI) and ``1/sqrt(n)`` (KS), so a fixed threshold
fires on small windows and sleeps on large ones. Each feature's threshold at the window's own
size is the mean + ``sigmas`` standard deviations of the statistic over ``resamples`` windows of
that size drawn (seeded) from the reference as stretches of consecutive matches. An effect-size
floor (PSI and KS) keeps a large window from firing on a shift too small to matter. A feature
fires when both statistics are above their level and clears (hysteresis) when its score, the
smaller of the two ratios to their level, falls below ``clear_ratio``; after a clear it cannot
fire again for ``cooldown`` windows. When at least ``rollup_share`` of the features (two or
more) are firing together, one roll-up decision (listing them) replaces that window's
per-feature firings, and resolves once fewer than half that share are firing; features that
start or stop drifting in between still say so one by one.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray

_NAMESPACE = uuid.UUID("5b0c7a8e-2f64-4c1e-9d3a-6f1e2b7c4d90")
EPOCH = datetime(2000, 1, 3, tzinfo=UTC)
"""Anchor of the kickoff windows (a Monday): window ``k`` is ``[EPOCH + k*w, EPOCH + (k+1)*w)``."""
ROLLUP = "rollup"
"""The feature name of a roll-up decision."""
DETECTOR = "psi-ks"
PSI_SMOOTHING = 1e-4
"""Added to every bin share before the log, so an empty bin reads as a large, finite PSI."""


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """The monitor's parameters (docs/MONITORING.md, "Feature drift", says why these)."""

    reference_start: datetime
    reference_end: datetime
    window_days: int = 28
    min_window: int = 60
    bins: int = 10
    resamples: int = 200
    sigmas: float = 3.0
    psi_floor: float = 0.1
    ks_floor: float = 0.1
    clear_ratio: float = 0.7
    cooldown: int = 2
    rollup_share: float = 0.25
    seed: int = 16

    def __post_init__(self) -> None:
        if not self.reference_start < self.reference_end:
            raise ValueError("reference_start must be before reference_end")
        if self.window_days < 1 or self.min_window < 2 or self.bins < 2 or self.resamples < 2:
            raise ValueError("window_days >= 1, min_window >= 2, bins >= 2, resamples >= 2")
        if not 0.0 < self.clear_ratio < 1.0 or not 0.0 < self.rollup_share <= 1.0:
            raise ValueError("clear_ratio must be in (0, 1) and rollup_share in (0, 1]")


@dataclass(frozen=True, slots=True)
class DriftDecision:
    """A drift alert to emit: one feature (or the roll-up) starts or stops drifting."""

    feature: str
    state: Literal["firing", "resolved"]
    window_start: datetime
    window_end: datetime
    window: int
    psi: float
    ks: float
    psi_level: float
    ks_level: float
    first_match_id: str
    last_match_id: str
    features: tuple[str, ...] = ()
    """For a roll-up: the features firing together."""

    @property
    def alert_id(self) -> str:
        """Deterministic: the feature, its window by kickoff and the state."""
        key = f"drift|{self.feature}|{self.window_start.isoformat()}|{self.state}"
        return str(uuid.uuid5(_NAMESPACE, key))


def window_index(kickoff: datetime, window_days: int) -> int:
    """The tumbling kickoff window a match belongs to."""
    return (kickoff - EPOCH) // timedelta(days=window_days)


def window_bounds(index: int, window_days: int) -> tuple[datetime, datetime]:
    width = timedelta(days=window_days)
    return EPOCH + index * width, EPOCH + (index + 1) * width


def frozen_edges(reference: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
    """Interior bin edges at the reference's quantiles, duplicates merged (a discrete feature,
    such as form over 5 games, has fewer distinct values than bins).

    >>> frozen_edges(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
    [2.5]
    """
    edges = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(edges)


def shares(values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.float64]:
    """Share of ``values`` in each bin (right-closed interior edges)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> float:
    """Population stability index of two bin-share vectors.

    >>> psi(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    0.0
    """
    p = expected + PSI_SMOOTHING
    q = actual + PSI_SMOOTHING
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference_sorted: NDArray[np.float64], values: NDArray[np.float64]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs.

    >>> ks(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    1.0
    """
    window = np.sort(values)
    points = np.concatenate([reference_sorted, window])
    ref_cdf = np.searchsorted(reference_sorted, points, side="right") / len(reference_sorted)
    win_cdf = np.searchsorted(window, points, side="right") / len(window)
    return float(np.max(np.abs(ref_cdf - win_cdf)))


@dataclass(slots=True)
class FeatureReference:
    """One feature's frozen reference: its bins, their shares and its sorted values, and the
    thresholds calibrated so far per window size."""

    name: str
    values: NDArray[np.float64]
    chronological: NDArray[np.float64]
    """The same values in kickoff order: calibration windows are drawn as stretches of it."""
    edges: NDArray[np.float64]
    expected: NDArray[np.float64]
    levels: dict[int, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, values: Sequence[float], bins: int) -> FeatureReference:
        """``values`` in kickoff order."""
        chronological = np.asarray(values, dtype=np.float64)
        array = np.sort(chronological)
        edges = frozen_edges(array, bins)
        return cls(name, array, chronological, edges, shares(array, edges))

    def statistics(self, values: NDArray[np.float64]) -> tuple[float, float]:
        return psi(self.expected, shares(values, self.edges)), ks(self.values, values)

    def level(self, n: int, config: DriftConfig) -> tuple[float, float]:
        """(PSI, KS) levels at a window of ``n``: calibrated mean + sigmas * sd over seeded
        resamples of the reference, at least the effect-size floors. A resample is ``n``
        consecutive reference matches in kickoff order from a random start (wrapping round),
        not ``n`` independent draws: the matches of one window share teams, rounds and the
        season's phase, and independent draws understate how far a window strays."""
        cached = self.levels.get(n)
        if cached is None:
            seed = [config.seed, zlib.crc32(self.name.encode()), n]
            rng = np.random.default_rng(seed)
            size = len(self.chronological)
            starts = rng.integers(0, size, size=config.resamples)
            draws = np.array(
                [
                    self.statistics(self.chronological[(start + np.arange(n)) % size])
                    for start in starts
                ]
            )
            calibrated = draws.mean(axis=0) + config.sigmas * draws.std(axis=0)
            cached = self.levels[n] = (
                max(float(calibrated[0]), config.psi_floor),
                max(float(calibrated[1]), config.ks_floor),
            )
        return cached


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What one closed window measured, per feature: (PSI, KS, PSI level, KS level)."""

    index: int
    start: datetime
    end: datetime
    size: int
    statistics: Mapping[str, tuple[float, float, float, float]]
    firing: frozenset[str]


@dataclass(slots=True)
class _FeatureState:
    firing: bool = False
    quiet_until: int = -1
    """First window index at which a cleared feature may fire again."""


class DriftMonitor:
    """The feature drift monitor of one stream of match features (pure, deterministic).

    Feed it every issue of every match's features with :meth:`observe`; a re-issue (a later
    revision) replaces the earlier one in its window. It collects the reference window first,
    freezes it when the first match after ``reference_end`` arrives, then evaluates each
    kickoff window once it is closed.
    """

    def __init__(self, config: DriftConfig, features: Sequence[str]) -> None:
        self.config = config
        self.features = tuple(features)
        self._reference: dict[str, tuple[datetime, Mapping[str, float]]] = {}
        self.references: dict[str, FeatureReference] | None = None
        self._window: int | None = None
        self._pending: dict[str, tuple[datetime, Mapping[str, float]]] = {}
        self._states = {name: _FeatureState() for name in self.features}
        self._rollup = False
        self.late = 0
        self.reports: list[WindowReport] = []

    def observe(
        self, match_id: str, kickoff: datetime, values: Mapping[str, float]
    ) -> list[DriftDecision]:
        """Add one match's features; the decisions of the windows this closes."""
        config = self.config
        if kickoff < config.reference_start:
            return []
        if kickoff < config.reference_end:
            if self.references is not None:
                self.late += 1
            else:
                self._reference[match_id] = (kickoff, values)
            return []
        if self.references is None:
            self._freeze()
        index = window_index(kickoff, config.window_days)
        decisions: list[DriftDecision] = []
        if self._window is None:
            self._window = index
        elif index < self._window:
            self.late += 1
            return []
        elif index > self._window:
            decisions = self.close()
            self._window = index
        self._pending[match_id] = (kickoff, values)
        return decisions

    def close(self) -> list[DriftDecision]:
        """Evaluate the open window (at the end of a stream, or when a later one starts)."""
        if self._window is None or self.references is None:
            return []
        index, pending = self._window, self._pending
        self._pending = {}
        self._window = None
        if len(pending) < self.config.min_window:
            return []
        return self._evaluate(index, pending)

    def _freeze(self) -> None:
        order = sorted(self._reference, key=lambda m: (self._reference[m][0], m))
        rows = [self._reference[m][1] for m in order]
        if len(rows) < self.config.min_window:
            raise ValueError(
                f"the reference window has {len(rows)} matches; at least "
                f"{self.config.min_window} are needed"
            )
        self.references = {
            name: FeatureReference.build(name, [row[name] for row in rows], self.config.bins)
            for name in self.features
        }
        self._reference = {}

    def _evaluate(
        self, index: int, pending: Mapping[str, tuple[datetime, Mapping[str, float]]]
    ) -> list[DriftDecision]:
        config = self.config
        assert self.references is not None
        start, end = window_bounds(index, config.window_days)
        order = sorted(pending, key=lambda m: (pending[m][0], m))
        first, last, n = order[0], order[-1], len(order)
        statistics: dict[str, tuple[float, float, float, float]] = {}
        changes: list[DriftDecision] = []
        for name in self.features:
            reference = self.references[name]
            values = np.array([pending[m][1][name] for m in order], dtype=np.float64)
            p, k = reference.statistics(values)
            p_level, k_level = reference.level(n, config)
            statistics[name] = (p, k, p_level, k_level)
            score = min(p / p_level, k / k_level)
            state = self._states[name]
            change: Literal["firing", "resolved"] | None = None
            if not state.firing and score >= 1.0 and index >= state.quiet_until:
                state.firing, change = True, "firing"
            elif state.firing and score < config.clear_ratio:
                state.firing, change = False, "resolved"
                state.quiet_until = index + 1 + config.cooldown
            if change is not None:
                changes.append(
                    DriftDecision(name, change, start, end, n, p, k, p_level, k_level, first, last)
                )
        firing = tuple(name for name in self.features if self._states[name].firing)
        self.reports.append(WindowReport(index, start, end, n, statistics, frozenset(firing)))
        share = len(firing) / len(self.features)

        def rollup(state: Literal["firing", "resolved"]) -> DriftDecision:
            return DriftDecision(
                ROLLUP, state, start, end, n, share, share, config.rollup_share,
                config.rollup_share, first, last, firing,
            )  # fmt: skip

        if not self._rollup and len(firing) >= 2 and share >= config.rollup_share:
            self._rollup = True
            return [rollup("firing"), *(d for d in changes if d.state == "resolved")]
        if self._rollup and share < config.rollup_share / 2:
            self._rollup = False
            return [*changes, rollup("resolved")]
        return changes
