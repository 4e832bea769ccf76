"""Online models: learn one reconciled result at a time, predict the next match at once.

- :class:`RiverSoftmax`: River's multinomial logistic regression (Adam, L2) behind River's
  standard scaler, optionally started at a prior line such as the opening odds.
- :class:`SoftmaxRegression`: the same model hand-rolled in numpy.
- :class:`OrderedLogit`: a rating model: one strength index from a few rating inputs and two
  cut-points, so a draw is what lies between a home and an away win.
- :class:`AdaptiveForest`: River's adaptive random forest, for non-linear effects and drift.

Every learner imputes a missing or non-finite input with the running mean of that input over the
examples it has learned from (0 before the first), i.e. "no information" after standardising.
All are deterministic: same seed and same stream, same predictions.

No single input can poison a learner: every input (and the log of each prior probability) is
first winsorised by a :class:`Winsoriser` to the range its earlier values make plausible, for
learning (running moments, River's scaler, weights, trees) and for predicting alike. A learn step
that would still leave the state non-finite is refused (``models.base.BaseModel.learn_one``).
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from river import forest, linear_model, optim, preprocessing

from models.base import (
    BASE_RATES,
    OUTCOME_INDEX,
    PROBABILITY_FLOOR,
    BaseModel,
    FloatArray,
    NonFiniteState,
    check_example,
    floats,
)
from models.river_state import decode_softmax, encode_softmax, export_softmax, import_softmax
from schemas.events import OUTCOMES, Outcome

Z_CLIP = 6.0
"""Standardised inputs are clipped to +-6 sd: one corrupt feature cannot saturate a model."""
BASE_VECTOR = np.array(list(BASE_RATES.values()))
LOG_BASE_RATES = np.log(BASE_VECTOR)

CLIP_K = 6.0
"""Winsorising width in standard deviations (see :class:`Winsoriser` for the figures)."""
WARM_UP = 20
"""Values of an input judged by their median and MAD before its running moments take over."""
MIN_SEEN = 3
"""Fewest earlier values that can outvote one outlier (a median of 3)."""
SPREAD_FLOOR = 1e-3
"""Smallest spread, relative to ``1 + |centre|``: an input constant so far still has a range."""
MAD_TO_SD = 1.4826
"""Median absolute deviation to standard deviation for normal data."""


class Winsoriser:
    """Per-input clipping range learned from the values seen before: ``centre +- 6 sd``.

    Why: a learner's running moments and weights move with every value they are fed, so a
    single ``elo_diff = 1e300`` (or a 1500 after years of +-400) could blind a model for good.
    Each value is therefore clipped to ``[centre - 6 s, centre + 6 s]`` first, ``centre`` and
    ``s`` being the mean and standard deviation of the *clipped* values so far (winsorised
    moments, O(1) state). One value then moves the mean by at most ``6 s / n`` and the variance
    by a factor of at most ``1 + 36 / n``: 1.09x sd after a 380-match season, 1.0007x after
    25,000. On the 27,700 shared matches, 6 sd clips no rating, Elo or odds value at all,
    0.03 % of the expected-goals values and the 0.08 % of opening margins that are data errors
    (margins down to -0.61); rest days (a spike at the 30-day cap) are never clipped, where a
    quantile fence (Tukey's 3 IQR) would clip 8 % of them.

    Warm-up: moments of a few values are not robust, so the first ``WARM_UP`` (20) values of an
    input are judged by their median +- 6 MAD-sd instead (a median outvotes one outlier from 3
    values on), and become the starting moments, clipped that way. With fewer than 3 earlier
    values nothing can tell an outlier apart: the value counts as missing (the model imputes
    it), unless the input has a default range (log-probabilities: ``[log 1e-4, 0]``). The spread
    never drops below ``1e-3 (1 + |centre|)``, so an input constant so far (rest 30 at the start
    of a season) keeps a range and widens it as other values arrive. Non-finite values count as
    missing and are not learned.
    """

    def __init__(self, size: int, low: Sequence[float] = (), high: Sequence[float] = ()) -> None:
        # Default ranges: NaN (none) in the arguments, a mask here (the state stays finite).
        defaults = (
            np.array([low, high], dtype=np.float64) if len(low) else np.full((2, size), np.nan)
        )
        self.has_default = np.isfinite(defaults).all(axis=0)
        self.default_low, self.default_high = np.where(self.has_default, defaults, 0.0)
        self.count = np.zeros(size)
        self.mean = np.zeros(size)
        self.m2 = np.zeros(size)
        self.warm: list[list[float]] = [[] for _ in range(size)]
        self._bounds()

    def _bounds(self) -> None:
        # Cached: predictions far outnumber updates; ``known`` is false while no range is.
        centre = self.mean.copy()
        spread = np.sqrt(self.m2 / np.maximum(self.count, 1.0))
        for j in np.flatnonzero(self.count < WARM_UP).tolist():
            values = self.warm[j]
            centre[j], spread[j] = _median_spread(values) if len(values) >= MIN_SEEN else (
                math.nan, math.nan)  # fmt: skip
        with np.errstate(over="ignore", invalid="ignore"):
            width = CLIP_K * np.maximum(spread, SPREAD_FLOOR * (1.0 + np.abs(centre)))
            low, high = centre - width, centre + width
        learned = np.isfinite(low) & np.isfinite(high)
        self.known = learned | self.has_default
        self.low = np.where(learned, low, self.default_low)
        self.high = np.where(learned, high, self.default_high)

    def clip(self, matrix: FloatArray) -> FloatArray:
        """Each value clipped to its input's range; NaN if missing, non-finite or unjudgeable."""
        usable = np.isfinite(matrix) & self.known
        inside = np.clip(np.where(usable, matrix, 0.0), self.low, self.high)
        return np.asarray(np.where(usable, inside, math.nan), dtype=np.float64)

    def update(self, row: FloatArray) -> None:
        """Learn one example's values (raw: clipped here with the ranges from before it)."""
        clipped = self.clip(row[None, :])[0]
        seen = np.isfinite(row)
        steady = seen & (self.count >= WARM_UP) & np.isfinite(clipped)
        # Welford on the clipped values of the inputs past warm-up.
        self.count += steady
        delta = np.where(steady, clipped - self.mean, 0.0)
        self.mean += delta / np.maximum(self.count, 1.0)
        self.m2 += delta * np.where(steady, clipped - self.mean, 0.0)
        for j in np.flatnonzero(seen & (self.count < WARM_UP)).tolist():
            self.warm[j].append(float(row[j]))
            self.count[j] += 1
            if self.count[j] == WARM_UP:
                self._settle(j)
        self._bounds()

    def _settle(self, j: int) -> None:
        """End of warm-up: the buffered values, clipped by their median and MAD, become the
        starting moments."""
        values = floats(self.warm[j])
        centre, spread = _median_spread(self.warm[j])
        width = CLIP_K * max(spread, SPREAD_FLOOR * (1.0 + abs(centre)))
        settled = np.clip(values, centre - width, centre + width)
        self.mean[j] = settled.mean()
        self.m2[j] = float(((settled - self.mean[j]) ** 2).sum())
        self.warm[j] = []

    def finite(self) -> bool:
        """Whether the learned state is finite (NaN/infinite values are never learned, so this
        fails only on a corrupted state)."""
        learned = np.concatenate([self.count, self.mean, self.m2, *map(floats, self.warm)])
        return bool(np.isfinite(learned).all())

    def seed(self, count: FloatArray, mean: FloatArray, variance: FloatArray) -> None:
        """Start from running moments a model learned before it had a winsoriser (snapshots
        written before this class existed), where they are finite and past warm-up."""
        usable = (count >= WARM_UP) & np.isfinite(mean) & np.isfinite(variance) & (variance >= 0)
        self.count = np.where(usable, count, 0.0)
        self.mean = np.where(usable, mean, 0.0)
        self.m2 = np.where(usable, variance * count, 0.0)
        self._bounds()

    def state(self) -> dict[str, Any]:
        """Msgpack-able state (the default ranges come from the model's construction)."""
        return {"count": self.count.tolist(), "mean": self.mean.tolist(),
                "m2": self.m2.tolist(), "warm": [list(v) for v in self.warm]}  # fmt: skip

    def load(self, state: Mapping[str, Any]) -> None:
        """Take the learned part of ``state``."""
        self.count, self.mean, self.m2 = (
            floats(state["count"]), floats(state["mean"]), floats(state["m2"])
        )  # fmt: skip
        self.warm = [[float(v) for v in values] for values in state["warm"]]
        self._bounds()


def _median_spread(values: Sequence[float]) -> tuple[float, float]:
    """Median and MAD scaled to a standard deviation."""
    array = floats(values)
    centre = float(np.median(array))
    with np.errstate(over="ignore", invalid="ignore"):
        return centre, MAD_TO_SD * float(np.median(np.abs(array - centre)))


LOG_FLOOR = math.log(PROBABILITY_FLOOR)
"""Default range of a log-probability before its values are known: ``[log 1e-4, 0]``."""


def _line_clipper(standardised: int, prior: int) -> Winsoriser:
    """A winsoriser over ``standardised`` raw inputs, then ``prior`` log-probabilities."""
    nan = math.nan
    return Winsoriser(standardised + prior, (*[nan] * standardised, *[LOG_FLOOR] * prior),
                      (*[nan] * standardised, *[0.0] * prior))  # fmt: skip


class RunningMoments:
    """Per-input running mean and variance (Welford), skipping missing values input by input."""

    def __init__(self, size: int) -> None:
        self.count = np.zeros(size)
        self.mean = np.zeros(size)
        self.m2 = np.zeros(size)
        self._rescale()

    def _rescale(self) -> None:
        # Cached because predictions far outnumber updates; sd 1 until two values are seen.
        variance = np.where(self.count > 1, self.m2 / np.maximum(self.count, 1.0), 1.0)
        self.inverse_sd = 1.0 / np.sqrt(np.maximum(variance, 1e-12))

    def update(self, row: FloatArray) -> None:
        """Add one example's inputs (NaN = missing, not counted)."""
        seen = np.isfinite(row)
        self.count += seen
        delta = np.where(seen, row - self.mean, 0.0)
        self.mean += delta / np.maximum(self.count, 1.0)
        self.m2 += delta * np.where(seen, row - self.mean, 0.0)
        self._rescale()

    def fill(self, matrix: FloatArray) -> FloatArray:
        """Missing values replaced by the running mean."""
        return np.where(np.isfinite(matrix), matrix, self.mean)

    def standardise(self, matrix: FloatArray) -> FloatArray:
        """``(x - mean) / sd``, clipped; 0 (the mean) for a missing value."""
        z = (matrix - self.mean) * self.inverse_sd
        return np.clip(np.where(np.isfinite(z), z, 0.0), -Z_CLIP, Z_CLIP)

    def state(self) -> dict[str, Any]:
        """Msgpack-able state."""
        return {"count": self.count.tolist(), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """The moments ``state`` describes."""
        moments = cls(len(state["mean"]))
        moments.count, moments.mean, moments.m2 = (
            floats(state["count"]), floats(state["mean"]), floats(state["m2"])
        )  # fmt: skip
        moments._rescale()
        return moments


class Adam:
    """Adam (Kingma & Ba): per-parameter steps that suit inputs of very different signal."""

    def __init__(self, shape: tuple[int, ...], lr: float, beta1: float = 0.9,
                 beta2: float = 0.999) -> None:  # fmt: skip
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.steps = 0
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)

    def step(self, params: FloatArray, gradient: FloatArray) -> None:
        """Move ``params`` in place against ``gradient``."""
        self.steps += 1
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * gradient * gradient
        m_hat = self.m / (1.0 - self.beta1**self.steps)
        v_hat = self.v / (1.0 - self.beta2**self.steps)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)

    def state(self) -> dict[str, Any]:
        """Msgpack-able state."""
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "steps": self.steps,
                "m": self.m.tolist(), "v": self.v.tolist()}  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """The optimiser ``state`` describes."""
        m = floats(state["m"])
        adam = cls(m.shape, state["lr"], state["beta1"], state["beta2"])
        adam.steps, adam.m, adam.v = state["steps"], m, floats(state["v"])
        return adam


def _softmax(scores: FloatArray) -> FloatArray:
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float64)


class SoftmaxRegression(BaseModel):
    """Multinomial logistic regression, learned online with Adam and L2.

    ``scores = W z + P log(prior) + b``: ``z`` the standardised ``inputs``; ``prior`` (optional)
    a line of three probabilities in H, D, A order, e.g. the opening odds' implied ones, whose
    logs enter unstandardised through a 3x3 matrix ``P`` that starts as the identity (and is
    pulled back to it by the L2 term). With a prior the model starts *at* that line and learns
    only corrections: the favourite-longshot bias and what the ratings add. Without a prior it
    starts at the base rates (``b`` = log base rates, zero weights). A missing prior line counts
    as the base rates. A smaller ``lr`` suits more inputs (each weight adds step noise).

    :class:`RiverSoftmax` is the same model built from River (the default, ``online-logreg``);
    both score the same to four decimals (docs/MODELS.md). This one keeps a compact msgpack
    state, exact sample weights and clipped inputs (``online-logreg-numpy`` and the others).
    """

    kind = "softmax"
    learns_online = True
    guarded = ("clip", "moments", "weights", "optimizer")

    def __init__(self, model_id: str, inputs: Sequence[str], *, prior: Sequence[str] = (),
                 lr: float = 0.001, l2: float = 1e-3) -> None:  # fmt: skip
        if len(prior) not in (0, len(OUTCOMES)):
            raise ValueError(f"a prior is one line of H, D, A probabilities, got {prior}")
        super().__init__(model_id, (*inputs, *prior))
        self.l2 = l2
        self.standardised = len(self.inputs) - len(prior)
        self.clip = _line_clipper(self.standardised, len(prior))
        self.moments = RunningMoments(self.standardised)
        # Columns: standardised inputs, log prior (H, D, A), bias.
        self.weights = np.zeros((len(OUTCOMES), len(self.inputs) + 1))
        if prior:
            self.weights[:, self.standardised : -1] = np.eye(len(OUTCOMES))
        else:
            self.weights[:, -1] = LOG_BASE_RATES
        self.anchor = self.weights[:, :-1].copy()  # what L2 pulls the weights towards
        self.optimizer = Adam(self.weights.shape, lr)

    def robust(self, matrix: FloatArray) -> FloatArray:
        """Rows as the model reads them: the inputs, then the prior's logs, winsorised."""
        return self.clip.clip(_winsor_input(matrix, self.standardised))

    def _design(self, robust: FloatArray) -> FloatArray:
        """Each winsorised row as [z, log prior, 1]."""
        k = self.standardised
        z = self.moments.standardise(robust[:, :k])
        return np.hstack([z, _whole_line(robust[:, k:]), np.ones((len(robust), 1))])

    def _proba(self, matrix: FloatArray) -> FloatArray:
        return _softmax(self._design(self.robust(matrix)) @ self.weights.T)

    def _observe(self, row: FloatArray) -> None:
        self.clip.update(_winsor_input(row[None, :], self.standardised)[0])

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        """One weighted gradient step of the log loss on the winsorised row."""
        robust = self.robust(row[None, :])
        self.clip.update(_winsor_input(row[None, :], self.standardised)[0])
        self.moments.update(robust[0, : self.standardised])
        design = self._design(robust)[0]
        error = _softmax(self.weights @ design)
        error[OUTCOME_INDEX[y]] -= 1.0
        gradient = weight * np.outer(error, design)
        gradient[:, :-1] += self.l2 * (self.weights[:, :-1] - self.anchor)
        self.optimizer.step(self.weights, gradient)

    def _state(self) -> dict[str, Any]:
        return {"l2": self.l2, "prior": len(self.inputs) - self.standardised,
                "clip": self.clip.state(), "moments": self.moments.state(),
                "weights": self.weights.tolist(), "optimizer": self.optimizer.state()}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        split = len(inputs) - state.get("prior", 0)
        model = cls(model_id, inputs[:split], prior=inputs[split:], l2=state["l2"])
        model.moments = RunningMoments.from_state(state["moments"])
        model.weights = floats(state["weights"])
        model.optimizer = Adam.from_state(state["optimizer"])
        _load_clip(model.clip, state, model.moments)
        return model


BIAS = "__bias__"
"""River's softmax regression has no intercept: a constant input stands in for one."""


class RiverSoftmax(BaseModel):
    """:class:`SoftmaxRegression`'s model built from River: ``preprocessing.StandardScaler``,
    then ``linear_model.SoftmaxRegression`` with ``optim.Adam`` and L2.

    Kept beside the numpy one so the comparison stays explicit (docs/MODELS.md). Differences
    River imposes: no intercept (a constant input ``__bias__`` stands in), L2 pulls every weight
    to zero (the prior's too, instead of to the identity), no clipping of standardised values
    (inputs are winsorised before the scaler, as in every learner), and no sample weight (a
    weight is applied by learning with that probability, seeded, as :class:`AdaptiveForest`
    does). The weights start where the numpy model's do: at the prior's
    line, or at the base rates without one. A missing input is its running mean (0 scaled).
    """

    kind = "river-softmax"
    learns_online = True
    guarded = ("rng", "clip", "scaler", "regression")

    def __init__(self, model_id: str, inputs: Sequence[str], *, prior: Sequence[str] = (),
                 lr: float = 0.001, l2: float = 1e-3, seed: int = 0) -> None:  # fmt: skip
        if len(prior) not in (0, len(OUTCOMES)):
            raise ValueError(f"a prior is one line of H, D, A probabilities, got {prior}")
        super().__init__(model_id, (*inputs, *prior))
        self.standardised = len(inputs)
        self.clip = _line_clipper(self.standardised, len(prior))
        self.rng = random.Random(seed)
        # Any: River's methods are untyped, and strict mypy refuses untyped calls otherwise.
        self.scaler: Any = preprocessing.StandardScaler()
        self.regression: Any = linear_model.SoftmaxRegression(optimizer=optim.Adam(lr), l2=l2)
        for i, outcome in enumerate(OUTCOMES):
            start = {f"log_{prior[i]}": 1.0} if prior else {BIAS: float(LOG_BASE_RATES[i])}
            self.regression.weights[outcome].update(start)

    def robust(self, matrix: FloatArray) -> FloatArray:
        """Rows as the model reads them: the inputs, then the prior's logs, winsorised."""
        return self.clip.clip(_winsor_input(matrix, self.standardised))

    def _features(self, robust: FloatArray) -> dict[str, float]:
        """One winsorised row as River's regression learns it: scaled inputs, log prior, bias."""
        k = self.standardised
        means = self.scaler.means
        values = zip(self.inputs[:k], robust[:k].tolist(), strict=True)
        filled = {name: (v if math.isfinite(v) else means.get(name, 0.0)) for name, v in values}
        features: dict[str, float] = self.scaler.transform_one(filled)
        log_prior = _whole_line(robust[None, k:])[0].tolist()
        priors = zip(self.inputs[k:], log_prior, strict=True)
        features.update((f"log_{name}", value) for name, value in priors)
        features[BIAS] = 1.0
        return features

    def _proba(self, matrix: FloatArray) -> FloatArray:
        # River's own arithmetic on River's state, as one matrix product: the scorer predicts
        # a batch per call, and River's predict_proba_one costs ~50 us a row (500 rows: 25 ms).
        # Reading with .get also leaves River's defaultdicts untouched by a prediction.
        k, names = self.standardised, self.inputs[: self.standardised]
        robust = self.robust(matrix)
        means = np.array([self.scaler.means.get(name, 0.0) for name in names])
        sd = np.sqrt(np.array([self.scaler.vars.get(name, 0.0) for name in names]))
        filled = np.where(np.isfinite(robust[:, :k]), robust[:, :k], means)
        z = np.divide(filled - means, sd, out=np.zeros_like(filled), where=sd > 0.0)
        design = np.hstack([z, _whole_line(robust[:, k:]), np.ones((len(matrix), 1))])
        columns = [*names, *(f"log_{name}" for name in self.inputs[k:]), BIAS]
        weights = np.array(
            [[self.regression.weights[o].get(c, 0.0) for c in columns] for o in OUTCOMES]
        )
        return _softmax(design @ weights.T)

    def _observe(self, row: FloatArray) -> None:
        self.clip.update(_winsor_input(row[None, :], self.standardised)[0])

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        """Learn ``floor(weight)`` times, plus once more with probability ``weight % 1``."""
        repeats = _lessons(self.rng, y, weight)
        if not repeats:
            return
        k = self.standardised
        robust = self.robust(row[None, :])[0]
        self.clip.update(_winsor_input(row[None, :], k)[0])
        values = zip(self.inputs[:k], robust[:k].tolist(), strict=True)
        self.scaler.learn_one({name: v for name, v in values if math.isfinite(v)})
        features = self._features(robust)
        for _ in range(repeats):
            self.regression.learn_one(features, y)

    def _learned_finite(self) -> bool:
        # What River's step changes, read directly: 4x faster than walking River's objects.
        scaler, regression = self.scaler, self.regression
        dicts = [scaler.means, scaler.vars, *regression.weights.values()]
        for optimizer in regression.optimizers.values():
            dicts += [optimizer.m or {}, optimizer.v or {}]
        numbers = [value for mapping in dicts for value in mapping.values()]
        return bool(np.isfinite(np.array(numbers, dtype=np.float64)).all()) and self.clip.finite()

    def _state(self) -> dict[str, Any]:
        # Plain typed numbers (models.river_state), not a pickle: restoring them runs no code.
        numbers = encode_softmax(export_softmax(self.rng, self.scaler, self.regression))
        return {"prior": len(self.inputs) - self.standardised, "clip": self.clip.state(),
                "numbers": numbers}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        if "numbers" in state:
            rng, scaler, regression = import_softmax(decode_softmax(state["numbers"]))
        else:
            # A state written before the numbers format: a pickle, and only signed state reaches
            # a restore (models.serialization), so it is one this service wrote.
            rng, scaler, regression = pickle.loads(state["pickle"])  # noqa: S301
        split = len(inputs) - state["prior"]
        model = cls(model_id, inputs[:split], prior=inputs[split:])
        model.rng, model.scaler, model.regression = rng, scaler, regression
        names = model.inputs[:split]
        moments = RunningMoments(len(names))
        moments.count = floats([scaler.counts.get(name, 0) for name in names])
        moments.mean = floats([scaler.means.get(name, 0.0) for name in names])
        moments.m2 = floats([scaler.vars.get(name, 0.0) for name in names]) * moments.count
        _load_clip(model.clip, state, moments)
        return model


def _load_clip(clip: Winsoriser, state: Mapping[str, Any], moments: RunningMoments) -> None:
    """The winsoriser's state; for a snapshot written before it existed, seeded from the
    model's own running moments (the prior's logs, which have none, start their warm-up)."""
    if "clip" in state:
        clip.load(state["clip"])
        return
    size = len(clip.count)
    pad = np.zeros(size - len(moments.count))
    variance = moments.m2 / np.maximum(moments.count, 1.0)
    clip.seed(*(np.concatenate([part, pad]) for part in (moments.count, moments.mean, variance)))


def _winsor_input(matrix: FloatArray, standardised: int) -> FloatArray:
    """What the winsoriser judges: the first ``standardised`` inputs as they are, then the logs
    of the prior line (a log is where the line's tail lives: 0.04 and 1e-300 differ there)."""
    return np.hstack([matrix[:, :standardised], _line_logs(matrix[:, standardised:])])


def _line_logs(line: FloatArray) -> FloatArray:
    """Logs of a line of H, D, A probabilities per row; NaN where the line is unusable."""
    if not line.shape[1]:
        return line
    usable = (np.isfinite(line) & (line > 0.0)).all(axis=1, keepdims=True)
    logs = np.log(np.where(usable, line, 1.0))
    return np.asarray(np.where(usable, logs, math.nan), dtype=np.float64)


def _whole_line(logs: FloatArray) -> FloatArray:
    """Winsorised logs of a prior line; the base rates' where any of the three is missing."""
    if not logs.shape[1]:
        return logs
    usable = np.isfinite(logs).all(axis=1, keepdims=True)
    return np.asarray(np.where(usable, logs, LOG_BASE_RATES), dtype=np.float64)


def _lessons(rng: random.Random, y: Outcome, weight: float) -> int:
    """For learners without sample weights: ``floor(weight)`` lessons, plus one more with
    probability ``weight % 1`` (seeded), so the expected number of lessons is the weight.
    Weight 0 is no lesson and draws nothing, so it leaves the seeded sequence as it was."""
    check_example(y, weight)
    if weight == 0.0:
        return 0
    return int(weight) + (rng.random() < weight % 1.0)


def _sigmoid(u: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * u)), dtype=np.float64)


class OrderedLogit(BaseModel):
    """Ordered logistic regression over A < D < H on one strength index ``s = w . z``.

    ``P(A) = F(c1 - s)``, ``P(A or D) = F(c2 - s)`` with ``c2 = c1 + exp(g)``, ``F`` the
    logistic function. Draws come out most likely between evenly matched teams, which a softmax
    must learn from data; three or four parameters learn fast, so it is the model to trust early
    and the baseline the bigger ones must beat. Starts at the base rates.
    """

    kind = "ordered-logit"
    learns_online = True
    guarded = ("clip", "moments", "params", "optimizer")

    def __init__(self, model_id: str, inputs: Sequence[str], *, lr: float = 0.002,
                 l2: float = 0.0) -> None:  # fmt: skip
        super().__init__(model_id, inputs)
        self.l2 = l2
        self.clip = Winsoriser(len(self.inputs))
        self.moments = RunningMoments(len(self.inputs))
        away, draw, _ = (BASE_RATES[o] for o in ("A", "D", "H"))
        c1 = math.log(away / (1.0 - away))
        c2 = math.log((away + draw) / (1.0 - away - draw))
        # Parameters: the input weights, then c1, then g = log(c2 - c1).
        self.params = np.concatenate([np.zeros(len(self.inputs)), [c1, math.log(c2 - c1)]])
        self.optimizer = Adam(self.params.shape, lr)

    def _cumulative(self, z: FloatArray) -> tuple[FloatArray, FloatArray]:
        w, c1, gap = self.params[:-2], self.params[-2], math.exp(self.params[-1])
        strength = z @ w
        return _sigmoid(c1 - strength), _sigmoid(c1 + gap - strength)

    def _proba(self, matrix: FloatArray) -> FloatArray:
        f1, f2 = self._cumulative(self.moments.standardise(self.clip.clip(matrix)))
        return np.stack([1.0 - f2, f2 - f1, f1], axis=-1)

    def _observe(self, row: FloatArray) -> None:
        self.clip.update(row)

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        """One weighted gradient step of the log loss on the winsorised row."""
        robust = self.clip.clip(row[None, :])[0]
        self.clip.update(row)
        self.moments.update(robust)
        z = self.moments.standardise(robust)
        f1, f2 = (float(f) for f in self._cumulative(z))
        # d(-log p)/du1 and d(-log p)/du2 with u1 = c1 - s, u2 = c2 - s.
        if y == "A":
            d1, d2 = -(1.0 - f1), 0.0
        elif y == "H":
            d1, d2 = 0.0, f2
        else:
            p_draw = max(f2 - f1, 1e-12)
            d1, d2 = f1 * (1.0 - f1) / p_draw, -f2 * (1.0 - f2) / p_draw
        gap = math.exp(self.params[-1])
        gradient = np.concatenate([-(d1 + d2) * z, [d1 + d2, d2 * gap]]) * weight
        gradient[:-2] += self.l2 * self.params[:-2]
        self.optimizer.step(self.params, gradient)

    def _state(self) -> dict[str, Any]:
        return {"l2": self.l2, "clip": self.clip.state(), "moments": self.moments.state(),
                "params": self.params.tolist(), "optimizer": self.optimizer.state()}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs, l2=state["l2"])
        model.moments = RunningMoments.from_state(state["moments"])
        model.params = floats(state["params"])
        model.optimizer = Adam.from_state(state["optimizer"])
        _load_clip(model.clip, state, model.moments)
        return model


class AdaptiveForest(BaseModel):
    """River's ``forest.ARFClassifier``: Hoeffding trees with drift detectors, bagged online.

    Shallow trees: on 8 inputs over the 27,700 matches, River's defaults (unbounded depth,
    a split attempt every 50 matches) scored 0.9880 with a state of 16 MB after 7,000 matches;
    10 trees of depth <= 3 that try a split every 100 matches score 0.9803 with 0.1 MB after
    all of them, and learn ~5x faster.
    River's forest takes no sample weight, so a weight in (0, 1) is applied by learning with that
    probability (seeded), and an integer part by learning that many times.
    A refused step puts back the winsoriser, moments and seed, not the trees (copying their
    0.6 MB every step would cost ~9 ms, 10x the step): the trees learn last, and only finite,
    winsorised values, so their sums and counts stay finite; ``state_is_finite`` walks them.
    """

    kind = "arf"
    learns_online = True
    guarded = ("rng", "clip", "moments")
    # The trees learn outside ``guarded`` (copying them costs ~9 ms): copy the rest every step,
    # so a refused step is undone without learning earlier steps again.
    guard_every = 1

    def __init__(self, model_id: str, inputs: Sequence[str], *, seed: int = 0) -> None:
        super().__init__(model_id, inputs)
        self.clip = Winsoriser(len(self.inputs))
        self.moments = RunningMoments(len(self.inputs))
        self.rng = random.Random(seed)
        self.forest = forest.ARFClassifier(n_models=10, max_depth=3, grace_period=100, seed=seed)

    def _vote(self, row: FloatArray) -> list[float]:
        votes = self.forest.predict_proba_one(dict(zip(self.inputs, row.tolist(), strict=True)))
        return [float(votes.get(outcome, 0.0)) for outcome in OUTCOMES]

    def _proba(self, matrix: FloatArray) -> FloatArray:
        votes = np.array([self._vote(row) for row in self.moments.fill(self.clip.clip(matrix))])
        totals = votes.sum(axis=1, keepdims=True)
        # An untrained forest votes nothing: the base rates then, as every learner starts.
        return np.where(totals > 0, votes / np.where(totals > 0, totals, 1.0), BASE_VECTOR)

    def _observe(self, row: FloatArray) -> None:
        self.clip.update(row)

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        """Learn ``floor(weight)`` times, plus once more with probability ``weight % 1``."""
        repeats = _lessons(self.rng, y, weight)
        if not repeats:
            return
        robust = self.clip.clip(row[None, :])[0]
        unjudged = (np.isfinite(row) & ~self.clip.known).any()
        self.clip.update(row)
        self.moments.update(robust)
        if unjudged:
            # The first two values of an input: imputing 0 (no mean yet) would show the trees
            # an Elo of 0 among 1500s; they skip these 2 of 27,700 examples instead.
            return
        filled = self.moments.fill(robust)
        if not np.isfinite(filled).all():
            raise NonFiniteState(f"model {self.model_id}: non-finite inputs for the trees")
        features = dict(zip(self.inputs, filled.tolist(), strict=True))
        for _ in range(repeats):
            self.forest.learn_one(features, y)

    def _state(self) -> dict[str, Any]:
        return {"clip": self.clip.state(), "moments": self.moments.state(),
                "pickle": pickle.dumps((self.rng, self.forest))}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs)
        model.moments = RunningMoments.from_state(state["moments"])
        # Only signed state reaches a restore (models.serialization), so this is our own pickle.
        model.rng, model.forest = pickle.loads(state["pickle"])  # noqa: S301
        _load_clip(model.clip, state, model.moments)
        return model
