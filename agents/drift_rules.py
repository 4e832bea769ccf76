"""Feature drift rules (pure): per feature, PSI on bins frozen from a moving reference and the
two-sample Kolmogorov-Smirnov statistic, on tumbling windows of kickoff time.

Why kickoff time: a window holds the matches whose kickoff falls in it, whatever order they
arrive in, so a replay (or a restart that re-reads the same features) closes the same windows
with the same matches and gives the same decisions and alert ids. The features come from
several partitions; a window is evaluated once every partition's watermark (the latest issue
time it delivered) is ``grace_days`` past the window's end, and a match is late (counted, left
out) when its own partition's watermark was already that far past: a rule about its own
partition only, so the interleaving of the partitions changes nothing.

Why a moving reference: a reference frozen once (the first seasons) ages, and every later
season differs from it a little more (the ratings' spreads widen, the market's margin moves),
so ordinary seasons fire. Here each feature's reference is the matches of its last
``reference_windows`` closed windows in which it was *not* drifting (13 windows of 28 days: a
year, every phase of a season): the reference follows slow change, while a shift that lasts
keeps firing (its windows are kept out) until it ends or an operator resets the reference
(:meth:`DriftMonitor.reset`, "this is the new normal"). A feature is evaluated once its
reference holds ``min_reference`` matches, and twice the window's (after the start or a
reset).

Why this threshold (the false-alarm budget): on a stationary stream every (feature, window)
test is a chance of a false alarm, ``features * 365.25 / window_days`` of them a year. Each
test's level is the ``1 - alpha`` quantile of the statistic at the window's own size, with
``alpha = alarms_per_year / tests per year``, so by the union bound the expected false firings
per year are at most ``alarms_per_year`` (a feature must pass both its PSI and its KS level,
which only lowers it; hysteresis, cooldown and the roll-up only merge or delay alerts). The
quantile is read from a gamma distribution fitted by moments to ``resamples`` windows of that
size drawn (seeded) from the reference as stretches of consecutive matches: 200 draws cannot
show a 1-in-400 tail directly, and both statistics are positive and right-skewed (``n * PSI``
is close to chi-square), which mean + 3 standard deviations understates. An effect-size floor
(PSI and KS) keeps a large window from firing on a shift too small to matter.

A feature fires when both statistics are above their level and clears (hysteresis) when its
score, the smaller of the two ratios to their level, falls below ``clear_ratio``; after a clear
it cannot fire again for ``cooldown`` windows. When at least ``rollup_share`` of the features
(two or more) are firing together, one roll-up decision (listing them) replaces that window's
per-feature firings, and resolves once fewer than half that share are firing; features that
start or stop drifting in between still say so one by one.
"""

from __future__ import annotations

import uuid
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.stats import gamma

_NAMESPACE = uuid.UUID("5b0c7a8e-2f64-4c1e-9d3a-6f1e2b7c4d90")
EPOCH = datetime(2000, 1, 3, tzinfo=UTC)
"""Anchor of the kickoff windows (a Monday): window ``k`` is ``[EPOCH + k*w, EPOCH + (k+1)*w)``."""
ROLLUP = "rollup"
"""The feature name of a roll-up decision."""
DETECTOR = "psi-ks"
PSI_SMOOTHING = 1e-4
"""Added to every bin share before the log, so an empty bin reads as a large, finite PSI."""
PSEUDO_COUNT = 0.5
"""Added to every bin's count before its share is compared (:func:`smoothed`)."""
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """The monitor's parameters (docs/MONITORING.md, "Feature drift", says why these)."""

    window_days: int = 28
    grace_days: int = 7
    min_window: int = 60
    reference_windows: int = 13
    min_reference: int = 500
    bins: int = 10
    resamples: int = 200
    alarms_per_year: float = 1.0
    psi_floor: float = 0.1
    ks_floor: float = 0.1
    clear_ratio: float = 0.7
    cooldown: int = 2
    rollup_share: float = 0.25
    seed: int = 16

    def __post_init__(self) -> None:
        if self.grace_days < 0:
            raise ValueError("grace_days must be at least 0")
        if self.window_days < 1 or self.min_window < 2 or self.bins < 2 or self.resamples < 2:
            raise ValueError("window_days >= 1, min_window >= 2, bins >= 2, resamples >= 2")
        if self.reference_windows < 1 or self.min_reference < 2:
            raise ValueError("reference_windows >= 1 and min_reference >= 2")
        if self.alarms_per_year <= 0.0:
            raise ValueError("alarms_per_year must be positive")
        if not 0.0 < self.clear_ratio < 1.0 or not 0.0 < self.rollup_share <= 1.0:
            raise ValueError("clear_ratio must be in (0, 1) and rollup_share in (0, 1]")

    def tail(self, features: int) -> float:
        """The false-alarm probability of one (feature, window) test that keeps the expected
        false firings on a stationary stream to ``alarms_per_year``.

        >>> round(DriftConfig(alarms_per_year=1.0).tail(29), 5)
        0.00264
        """
        tests_per_year = features * DAYS_PER_YEAR / self.window_days
        return min(self.alarms_per_year / tests_per_year, 0.5)


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
    reference: int = 0
    """How many matches the feature's reference held (0 for a roll-up)."""

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


def smoothed(shares: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Bin shares of ``n`` values with :data:`PSI_SMOOTHING`'s big brother, half a match added
    to every bin (Jeffreys): without it one empty bin of a small window (10 decile bins, 40
    matches: 1.5% each) adds 0.69 to its PSI, a tail no calibration can fit.

    >>> smoothed(np.array([1.0, 0.0]), 4).tolist()
    [0.9, 0.1]
    """
    return (shares * n + PSEUDO_COUNT) / (n + PSEUDO_COUNT * len(shares))


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


def upper_quantile(draws: NDArray[np.float64], tail: float) -> float:
    """The ``1 - tail`` quantile of a gamma distribution with the draws' mean and variance (the
    draws' mean when they do not vary).

    >>> round(upper_quantile(np.array([1.0, 2.0, 3.0]), 0.5), 3)
    1.89
    """
    mean, var = float(draws.mean()), float(draws.var())
    if mean <= 0.0 or var <= 0.0:
        return mean
    return float(gamma.ppf(1.0 - tail, mean * mean / var, scale=var / mean))


@dataclass(slots=True)
class FeatureReference:
    """One feature's reference: its bins, their shares and its sorted values, and the levels
    calibrated so far per window size."""

    name: str
    values: NDArray[np.float64]
    chronological: NDArray[np.float64]
    """The same values in kickoff order: calibration windows are drawn as stretches of it."""
    edges: NDArray[np.float64]
    expected: NDArray[np.float64]
    levels: dict[int, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, name: str, values: Sequence[float] | NDArray[np.float64], bins: int
    ) -> FeatureReference:
        """``values`` in kickoff order."""
        chronological = np.asarray(values, dtype=np.float64)
        array = np.sort(chronological)
        edges = frozen_edges(array, bins)
        return cls(name, array, chronological, edges, shares(array, edges))

    def statistics(self, values: NDArray[np.float64]) -> tuple[float, float]:
        size, n = len(self.values), len(values)
        actual = smoothed(shares(values, self.edges), n)
        return psi(smoothed(self.expected, size), actual), ks(self.values, values)

    def level(self, n: int, config: DriftConfig, tail: float) -> tuple[float, float]:
        """(PSI, KS) levels at a window of ``n``: the ``1 - tail`` quantile of each statistic
        over seeded resamples of the reference (:func:`upper_quantile`), at least the
        effect-size floors.

        A resample is ``n`` consecutive reference matches in kickoff order from a random
        start (wrapping round), not ``n`` independent draws: the matches of one window share
        teams, rounds and the season's phase, and independent draws understate how far a
        window strays. It is compared with the rest of the reference (the reference's bins,
        its values without the stretch), as a live window is with a reference it is not part
        of: against the whole reference, which contains it, a stretch looks closer than any new
        window would (much closer when the reference is only a few windows long)."""
        cached = self.levels.get(n)
        if cached is None:
            size = len(self.chronological)
            if not n < size:
                raise ValueError(f"a window of {n} needs a reference of more than {n} matches")
            seed = [config.seed, zlib.crc32(self.name.encode()), n]
            starts = np.random.default_rng(seed).integers(0, size, size=config.resamples)
            psi_draws, ks_draws = self._held_out(starts, n)
            cached = self.levels[n] = (
                max(upper_quantile(psi_draws, tail), config.psi_floor),
                max(upper_quantile(ks_draws, tail), config.ks_floor),
            )
        return cached

    def _held_out(
        self, starts: NDArray[np.int64], n: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """PSI and KS of the ``n`` reference matches from each start against the others, on
        the reference's bins, all stretches at once. The others' counts are the reference's
        minus the stretch's; a stretch's values are reference values, so its ECDF need only be
        read at the reference's points, through each value's rank (exact, ties included)."""
        size, draws = len(self.chronological), len(starts)
        stretch = (starts[:, None] + np.arange(n)) % size
        row = np.arange(draws)[:, None]
        bins = len(self.edges) + 1
        codes = np.searchsorted(self.edges, self.chronological, side="left")[stretch]
        counts = np.bincount((codes + row * bins).ravel(), minlength=draws * bins)
        counts = counts.reshape(draws, bins)
        rest = (self.expected * size - counts + PSEUDO_COUNT) / (size - n + PSEUDO_COUNT * bins)
        window = (counts + PSEUDO_COUNT) / (n + PSEUDO_COUNT * bins) + PSI_SMOOTHING
        rest = rest + PSI_SMOOTHING
        psi_draws = np.sum((window - rest) * np.log(window / rest), axis=1)
        ranks = np.searchsorted(self.values, self.chronological, side="right")[stretch]
        below = np.bincount((ranks + row * (size + 1)).ravel(), minlength=draws * (size + 1))
        below = below.reshape(draws, size + 1).cumsum(axis=1)
        points = np.searchsorted(self.values, self.values, side="right")
        in_window = below[:, points]
        gaps = np.abs((points - in_window) / (size - n) - in_window / n)
        return psi_draws, gaps.max(axis=1)


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What one closed window measured, per evaluated feature: (PSI, KS, PSI level, KS level)."""

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
    windows: deque[NDArray[np.float64]] = field(default_factory=deque)
    """The values (kickoff order) of the last clean windows: the feature's reference."""

    def reference_size(self) -> int:
        return sum(len(w) for w in self.windows)


Row = tuple[datetime, Mapping[str, float]]
_NEVER = -(2**62)
"""The highest closed window's index before any closed."""


class DriftMonitor:
    """The feature drift monitor of one stream of match features (pure, deterministic).

    Feed it every issue of every match's features with :meth:`observe`, saying which of the
    ``sources`` input partitions it came from and its event time (when it was issued); a
    re-issue replaces the earlier one in its window. Each source's watermark is the latest
    event time it has delivered; a kickoff window closes once every source's watermark has
    passed its end by ``grace_days`` (no source can still send it a match), and is evaluated
    against each feature's moving reference, which it then joins unless the feature is
    drifting. A match is late (counted, left out) when its own source's watermark had passed
    its window's end by the grace before it arrived: a rule about the match's own partition
    only, so how the partitions interleave never changes which matches count or the decisions.
    :meth:`reset` restarts the references at a window.
    """

    def __init__(
        self,
        config: DriftConfig,
        features: Sequence[str],
        resets: Iterable[datetime] = (),
        *,
        sources: int = 1,
    ) -> None:
        if sources < 1:
            raise ValueError("sources must be at least 1")
        self.config = config
        self.features = tuple(features)
        self.sources = sources
        self.tail = config.tail(len(self.features))
        self._grace = timedelta(days=config.grace_days)
        self._open: dict[int, dict[str, Row]] = {}
        self._where: dict[str, int] = {}
        """The open window each pending match is in (a re-issue may move it)."""
        self._watermarks: dict[int, datetime] = {}
        self._closed = _NEVER
        """Highest window index closed so far."""
        self._states = {name: _FeatureState() for name in self.features}
        self._rollup = False
        self._resets: list[int] = []
        self.late = 0
        self.reports: list[WindowReport] = []
        for at in resets:
            self.reset(at)

    def reset(self, at: datetime | None = None) -> datetime:
        """Restart every feature's reference at the window holding kickoff ``at`` (None: the
        first window not closed yet); the start of that window, where it takes effect. From
        that window on, the references are built again from scratch, nothing fires until they
        hold enough matches, and every firing state is dropped ("the new normal").

        It is applied when that window closes, so the same history and resets (given by where
        they took effect) give the same decisions whenever they were issued; a closed window
        cannot be reset any more: the reset applies from the first open one."""
        index = window_index(self.next_reset(at), self.config.window_days)
        if index not in self._resets:
            self._resets.append(index)
            self._resets.sort()
        return window_bounds(index, self.config.window_days)[0]

    def next_reset(self, at: datetime | None = None) -> datetime:
        """Where :meth:`reset` would take effect now, without resetting anything."""
        # Nothing closed yet: the first window the stream has, or the epoch's.
        index = self._closed + 1 if self._closed > _NEVER else min(self._open, default=0)
        if at is not None:
            index = max(index, window_index(at, self.config.window_days))
        return window_bounds(index, self.config.window_days)[0]

    def observe(
        self,
        match_id: str,
        kickoff: datetime,
        values: Mapping[str, float],
        *,
        source: int = 0,
        event_time: datetime | None = None,
    ) -> list[DriftDecision]:
        """Add one match's features (``event_time``: when they were issued; None: at
        kickoff); the decisions of the windows this closes."""
        if not 0 <= source < self.sources:
            raise ValueError(f"source {source} is not one of the {self.sources} sources")
        config = self.config
        index = window_index(kickoff, config.window_days)
        end = window_bounds(index, config.window_days)[1]
        watermark = self._watermarks.get(source)
        if index <= self._closed or (watermark is not None and watermark >= end + self._grace):
            self.late += 1
        else:
            before = self._where.pop(match_id, None)
            if before is not None:
                self._open[before].pop(match_id, None)
            self._open.setdefault(index, {})[match_id] = (kickoff, values)
            self._where[match_id] = index
        moment = kickoff if event_time is None else event_time
        if watermark is None or moment > watermark:
            self._watermarks[source] = moment
        return self._close_passed()

    def _close_passed(self) -> list[DriftDecision]:
        if len(self._watermarks) < self.sources:
            return []
        low = min(self._watermarks.values())
        decisions: list[DriftDecision] = []
        for index in sorted(self._open):
            if window_bounds(index, self.config.window_days)[1] + self._grace > low:
                break
            decisions.extend(self._close_window(index))
        return decisions

    def close(self) -> list[DriftDecision]:
        """Evaluate every open window (at the end of a stream)."""
        return [d for index in sorted(self._open) for d in self._close_window(index)]

    def _close_window(self, index: int) -> list[DriftDecision]:
        pending = self._open.pop(index)
        for match_id in pending:
            self._where.pop(match_id, None)
        self._closed = max(self._closed, index)
        due = [r for r in self._resets if r <= index]
        if due:
            self._resets = [r for r in self._resets if r > index]
            self._states = {name: _FeatureState() for name in self.features}
            self._rollup = False
        if not pending:
            return []
        order = sorted(pending, key=lambda m: (pending[m][0], m))
        columns = {
            name: np.array([pending[m][1][name] for m in order], dtype=np.float64)
            for name in self.features
        }
        decisions = (
            self._evaluate(index, order, columns) if len(order) >= self.config.min_window else []
        )
        for name in self.features:
            state = self._states[name]
            if not state.firing:
                state.windows.append(columns[name])
                while len(state.windows) > self.config.reference_windows:
                    state.windows.popleft()
        return decisions

    def _evaluate(
        self, index: int, order: Sequence[str], columns: Mapping[str, NDArray[np.float64]]
    ) -> list[DriftDecision]:
        config = self.config
        start, end = window_bounds(index, config.window_days)
        first, last, n = order[0], order[-1], len(order)
        statistics: dict[str, tuple[float, float, float, float]] = {}
        changes: list[DriftDecision] = []
        for name in self.features:
            state = self._states[name]
            size = state.reference_size()
            if size < max(config.min_reference, 2 * n):
                continue
            reference = FeatureReference.build(name, np.concatenate(state.windows), config.bins)
            p, k = reference.statistics(columns[name])
            p_level, k_level = reference.level(n, config, self.tail)
            statistics[name] = (p, k, p_level, k_level)
            score = min(p / p_level, k / k_level)
            change: Literal["firing", "resolved"] | None = None
            if not state.firing and score >= 1.0 and index >= state.quiet_until:
                state.firing, change = True, "firing"
            elif state.firing and score < config.clear_ratio:
                state.firing, change = False, "resolved"
                state.quiet_until = index + 1 + config.cooldown
            if change is not None:
                changes.append(
                    DriftDecision(
                        name, change, start, end, n, p, k, p_level, k_level, first, last,
                        reference=size,
                    )
                )  # fmt: skip
        firing = tuple(name for name in self.features if self._states[name].firing)
        if statistics:
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
