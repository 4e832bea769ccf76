"""River's linear-model state as plain numbers: a restore that cannot run code.

:class:`models.online.RiverSoftmax` stores ``pickle.dumps((rng, scaler, regression))``. The
HMAC (``models.serialization``) means only a key holder can write such a state, but a pickle
*is* code: a leaked key, or a bug that signs foreign bytes, becomes code execution in every
worker. The state of a ``StandardScaler`` followed by a ``SoftmaxRegression`` with Adam is only
numbers (counts, means and variances per input; weights per class and input; Adam's moments
and step count per class; the seeded RNG's Mersenne Twister words), so this module writes it as
a typed msgspec record and rebuilds the River objects from it. The decoder accepts nothing but
those numbers (``forbid_unknown_fields``, strict types), so bytes that pass it cannot do more
than set weights.

:func:`export_softmax` refuses (``ValueError``) any configuration it would not restore exactly
(another optimizer, loss or scheduler, a windowed scaler): the caller keeps pickle for those.

>>> import random
>>> from river import linear_model, optim, preprocessing
>>> scaler = preprocessing.StandardScaler()
>>> regression = linear_model.SoftmaxRegression(optimizer=optim.Adam(0.01), l2=0.001)
>>> scaler.learn_one({"elo": 50.0})
>>> regression.learn_one(scaler.transform_one({"elo": 50.0}), "H")
>>> state = export_softmax(random.Random(1), scaler, regression)
>>> rng, scaler2, regression2 = import_softmax(decode_softmax(encode_softmax(state)))
>>> regression2.predict_proba_one({"elo": 1.0}) == regression.predict_proba_one({"elo": 1.0})
True
"""

from __future__ import annotations

import collections
import copy
import random
from typing import Any

import msgspec
from river import linear_model, optim, preprocessing

FORMAT = "river-softmax-numbers/1"


class AdamState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One class's Adam optimizer: its step count and first and second moments per input."""

    n_iterations: int
    m: dict[str, float] | None
    v: dict[str, float] | None


class SoftmaxState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a StandardScaler + SoftmaxRegression(Adam) pair and its RNG hold."""

    format: str
    rng_version: int
    rng_words: list[int]
    rng_gauss: float | None
    with_std: bool
    counts: dict[str, int]
    means: dict[str, float]
    variances: dict[str, float]
    lr: float
    beta_1: float
    beta_2: float
    eps: float
    l2: float
    weights: dict[str, dict[str, float]]
    optimizers: dict[str, AdamState]


def export_softmax(rng: random.Random, scaler: Any, regression: Any) -> SoftmaxState:
    """The numbers of a scaler, a softmax regression and an RNG; ``ValueError`` for any
    configuration :func:`import_softmax` would not rebuild exactly."""
    optimizer = regression.optimizer
    if type(scaler) is not preprocessing.StandardScaler or scaler.window_size is not None:
        raise ValueError("only an unwindowed preprocessing.StandardScaler exports as numbers")
    if type(regression) is not linear_model.SoftmaxRegression or type(optimizer) is not optim.Adam:
        raise ValueError("only linear_model.SoftmaxRegression with optim.Adam exports as numbers")
    if type(regression.loss) is not optim.losses.CrossEntropy or regression.loss.class_weight:
        raise ValueError("only the default cross-entropy loss exports as numbers")
    if type(optimizer.lr) is not optim.schedulers.Constant:
        raise ValueError("only a constant learning rate exports as numbers")
    version, words, gauss = rng.getstate()
    optimizers = {}
    for label, opt in regression.optimizers.items():
        if type(opt.lr) is not optim.schedulers.Constant or not isinstance(opt.m, dict | None):
            raise ValueError("only Adam with a constant rate on dict state exports as numbers")
        moments = (None, None) if opt.m is None else (dict(opt.m), dict(opt.v))
        optimizers[str(label)] = AdamState(opt.n_iterations, *moments)
    return SoftmaxState(
        format=FORMAT,
        rng_version=version,
        rng_words=list(words),
        rng_gauss=gauss,
        with_std=scaler.with_std,
        counts=dict(scaler.counts),
        means=dict(scaler.means),
        variances=dict(scaler.vars),
        lr=float(optimizer.lr.learning_rate),
        beta_1=optimizer.beta_1,
        beta_2=optimizer.beta_2,
        eps=optimizer.eps,
        l2=float(regression.l2),
        weights={str(label): dict(w) for label, w in regression.weights.items()},
        optimizers=optimizers,
    )


def import_softmax(state: SoftmaxState) -> tuple[random.Random, Any, Any]:
    """The RNG, scaler and regression a :class:`SoftmaxState` describes (same predictions,
    same next steps as the objects it was exported from)."""
    if state.format != FORMAT:
        raise ValueError(f"unknown River state format {state.format!r}")
    rng = random.Random()
    rng.setstate((state.rng_version, tuple(state.rng_words), state.rng_gauss))
    scaler: Any = preprocessing.StandardScaler(with_std=state.with_std)
    scaler.counts = collections.Counter(state.counts)
    scaler.means = collections.defaultdict(float, state.means)
    scaler.vars = collections.defaultdict(float, state.variances)
    adam = optim.Adam(state.lr, beta_1=state.beta_1, beta_2=state.beta_2, eps=state.eps)
    regression: Any = linear_model.SoftmaxRegression(optimizer=adam, l2=state.l2)
    for label, weights in state.weights.items():
        regression.weights[label] = collections.defaultdict(float, weights)
    for label, saved in state.optimizers.items():
        opt = copy.deepcopy(adam)
        opt.n_iterations = saved.n_iterations
        if saved.m is not None and saved.v is not None:
            opt.m = collections.defaultdict(float, saved.m)
            opt.v = collections.defaultdict(float, saved.v)
        regression.optimizers[label] = opt
    return rng, scaler, regression


def encode_softmax(state: SoftmaxState) -> bytes:
    """msgpack bytes of a :class:`SoftmaxState`."""
    return msgspec.msgpack.encode(state)


def decode_softmax(data: bytes) -> SoftmaxState:
    """A :class:`SoftmaxState` from msgpack; anything but its typed numbers is refused."""
    return msgspec.msgpack.decode(data, type=SoftmaxState)
