"""Online models: learn one reconciled result at a time, predict the next match at once.

- :class:`SoftmaxRegression`: multinomial logistic regression on standardised inputs, Adam and
  L2, hand-rolled in numpy (see the class for why not River's).
- :class:`OrderedLogit`: a rating model: one strength index from a few rating inputs and two
  cut-points, so a draw is what lies between a home and an away win.
- :class:`AdaptiveForest`: River's adaptive random forest, for non-linear effects and drift.

Every learner imputes a missing or non-finite input with the running mean of that input over the
examples it has learned from (0 before the first), i.e. "no information" after standardising.
All are deterministic: same seed and same stream, same predictions.
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from river import forest

from models.base import (
    BASE_RATES,
    OUTCOME_INDEX,
    BaseModel,
    FloatArray,
    check_example,
    floats,
)
from schemas.events import OUTCOMES, Outcome

Z_CLIP = 6.0
"""Standardised inputs are clipped to +-6 sd: one corrupt feature cannot saturate a model."""
BASE_VECTOR = np.array(list(BASE_RATES.values()))
LOG_BASE_RATES = np.log(BASE_VECTOR)


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

    Hand-rolled rather than River's ``StandardScaler | SoftmaxRegression``, which takes plain
    SGD steps from a uniform start: on all 27 features over the 27,700 matches its best
    prequential log loss was 0.9977 (lr 0.001; 1.029 at 0.01) against 0.9784 here. numpy also
    makes ``predict_proba_many`` one matrix product. Starts at the base rates (zero weights,
    bias = log base rates); a smaller ``lr`` suits more inputs (each weight adds step noise).
    """

    kind = "softmax"
    learns_online = True

    def __init__(self, model_id: str, inputs: Sequence[str], *, lr: float = 0.001,
                 l2: float = 1e-3) -> None:  # fmt: skip
        super().__init__(model_id, inputs)
        self.l2 = l2
        self.moments = RunningMoments(len(self.inputs))
        self.weights = np.zeros((len(OUTCOMES), len(self.inputs) + 1))
        self.weights[:, -1] = LOG_BASE_RATES
        self.optimizer = Adam(self.weights.shape, lr)

    def _scores(self, z: FloatArray) -> FloatArray:
        return np.asarray(z @ self.weights[:, :-1].T + self.weights[:, -1], dtype=np.float64)

    def _proba(self, matrix: FloatArray) -> FloatArray:
        return _softmax(self._scores(self.moments.standardise(matrix)))

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        """One weighted gradient step of the log loss (weight 0: nothing changes)."""
        check_example(y, weight)
        if weight == 0.0:
            return
        row = self.matrix([x])[0]
        self.moments.update(row)
        z = self.moments.standardise(row)
        error = _softmax(self._scores(z))
        error[OUTCOME_INDEX[y]] -= 1.0
        gradient = weight * np.outer(error, np.append(z, 1.0))
        gradient[:, :-1] += self.l2 * self.weights[:, :-1]
        self.optimizer.step(self.weights, gradient)

    def _state(self) -> dict[str, Any]:
        return {"l2": self.l2, "moments": self.moments.state(),
                "weights": self.weights.tolist(), "optimizer": self.optimizer.state()}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs, l2=state["l2"])
        model.moments = RunningMoments.from_state(state["moments"])
        model.weights = floats(state["weights"])
        model.optimizer = Adam.from_state(state["optimizer"])
        return model


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

    def __init__(self, model_id: str, inputs: Sequence[str], *, lr: float = 0.002,
                 l2: float = 0.0) -> None:  # fmt: skip
        super().__init__(model_id, inputs)
        self.l2 = l2
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
        f1, f2 = self._cumulative(self.moments.standardise(matrix))
        return np.stack([1.0 - f2, f2 - f1, f1], axis=-1)

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        """One weighted gradient step of the log loss (weight 0: nothing changes)."""
        check_example(y, weight)
        if weight == 0.0:
            return
        row = self.matrix([x])[0]
        self.moments.update(row)
        z = self.moments.standardise(row)
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
        return {"l2": self.l2, "moments": self.moments.state(),
                "params": self.params.tolist(), "optimizer": self.optimizer.state()}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs, l2=state["l2"])
        model.moments = RunningMoments.from_state(state["moments"])
        model.params = floats(state["params"])
        model.optimizer = Adam.from_state(state["optimizer"])
        return model


class AdaptiveForest(BaseModel):
    """River's ``forest.ARFClassifier``: Hoeffding trees with drift detectors, bagged online.

    Shallow trees: on 8 inputs over the 27,700 matches, River's defaults (unbounded depth,
    a split attempt every 50 matches) scored 0.9880 with a state of 16 MB after 7,000 matches;
    10 trees of depth <= 3 that try a split every 100 matches score 0.9803 with 0.1 MB after
    all of them, and learn ~5x faster.
    River's forest takes no sample weight, so a weight in (0, 1) is applied by learning with that
    probability (seeded), and an integer part by learning that many times.
    """

    kind = "arf"
    learns_online = True

    def __init__(self, model_id: str, inputs: Sequence[str], *, seed: int = 0) -> None:
        super().__init__(model_id, inputs)
        self.moments = RunningMoments(len(self.inputs))
        self.rng = random.Random(seed)
        self.forest = forest.ARFClassifier(n_models=10, max_depth=3, grace_period=100, seed=seed)

    def _vote(self, row: FloatArray) -> list[float]:
        votes = self.forest.predict_proba_one(dict(zip(self.inputs, row.tolist(), strict=True)))
        return [float(votes.get(outcome, 0.0)) for outcome in OUTCOMES]

    def _proba(self, matrix: FloatArray) -> FloatArray:
        votes = np.array([self._vote(row) for row in self.moments.fill(matrix)])
        totals = votes.sum(axis=1, keepdims=True)
        # An untrained forest votes nothing: the base rates then, as every learner starts.
        return np.where(totals > 0, votes / np.where(totals > 0, totals, 1.0), BASE_VECTOR)

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        """Learn ``floor(weight)`` times, plus once more with probability ``weight % 1``."""
        check_example(y, weight)
        if weight == 0.0:
            return
        repeats = int(weight) + (self.rng.random() < weight % 1.0)
        if not repeats:
            return
        row = self.matrix([x])[0]
        self.moments.update(row)
        features = dict(zip(self.inputs, self.moments.fill(row).tolist(), strict=True))
        for _ in range(repeats):
            self.forest.learn_one(features, y)

    def _state(self) -> dict[str, Any]:
        return {"moments": self.moments.state(),
                "pickle": pickle.dumps((self.rng, self.forest))}  # fmt: skip

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        model = cls(model_id, inputs)
        model.moments = RunningMoments.from_state(state["moments"])
        # Only signed state reaches a restore (models.serialization), so this is our own pickle.
        model.rng, model.forest = pickle.loads(state["pickle"])  # noqa: S301
        return model
