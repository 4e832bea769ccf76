"""River's softmax state as plain numbers: restores exactly, and decodes nothing but numbers."""

from __future__ import annotations

import copy
import pickle
import random

import msgspec
import pytest
from river import linear_model, optim, preprocessing

from models import catalog
from models.online import RiverSoftmax
from models.river_state import decode_softmax, encode_softmax, export_softmax, import_softmax
from schemas.events import Outcome


def examples(count: int, seed: int) -> list[tuple[dict[str, float], Outcome]]:
    rng = random.Random(seed)
    outcomes: tuple[Outcome, ...] = ("H", "D", "A")
    rows = []
    for _ in range(count):
        x = {
            "elo_diff": rng.gauss(0.0, 120.0),
            "pi_exp_gd": rng.gauss(0.0, 0.6),
            "open_p_H": 0.45,
            "open_p_D": 0.27,
            "open_p_A": 0.28,
        }
        rows.append((x, rng.choice(outcomes)))
    return rows


def test_the_default_model_restored_from_numbers_predicts_and_learns_identically() -> None:
    """online-logreg (River) after 200 examples, exported as numbers and rebuilt, predicts
    exactly as the original, and both stay identical over 200 more weighted examples (the RNG
    that applies fractional weights is part of the state)."""
    model = catalog.create("online-logreg")
    assert isinstance(model, RiverSoftmax)
    for x, y in examples(200, seed=1):
        model.learn_one(x, y)
    data = encode_softmax(export_softmax(model.rng, model.scaler, model.regression))
    twin = catalog.create("online-logreg")
    assert isinstance(twin, RiverSoftmax)
    twin.rng, twin.scaler, twin.regression = import_softmax(decode_softmax(data))
    # The input clipping state is plain numbers already (RiverSoftmax._state): carried over.
    twin.clip = copy.deepcopy(model.clip)
    probe = [x for x, _ in examples(50, seed=2)]
    assert (twin.predict_proba_many(probe) == model.predict_proba_many(probe)).all()
    for x, y in examples(200, seed=3):
        model.learn_one(x, y, weight=0.6)
        twin.learn_one(x, y, weight=0.6)
    assert (twin.predict_proba_many(probe) == model.predict_proba_many(probe)).all()
    assert len(data) < len(model.snapshot())  # smaller than the pickle, too


def test_anything_but_the_typed_numbers_is_refused_by_the_decoder() -> None:
    """A pickle, an extra field or a string where a number belongs does not decode."""
    model = catalog.create("online-logreg")
    assert isinstance(model, RiverSoftmax)
    state = msgspec.to_builtins(export_softmax(model.rng, model.scaler, model.regression))
    for bad in (
        state | {"extra": 1},
        state | {"l2": "__import__('os')"},
        state | {"weights": {"H": {"elo_diff": [1, 2]}}},
    ):
        with pytest.raises(msgspec.ValidationError):
            decode_softmax(msgspec.msgpack.encode(bad))
    with pytest.raises(msgspec.DecodeError):
        decode_softmax(model.snapshot()[:20])


def test_configurations_it_cannot_rebuild_exactly_are_refused() -> None:
    """Another optimizer or a windowed scaler is not exported (the caller keeps pickle)."""
    rng = random.Random(0)
    sgd = linear_model.SoftmaxRegression(optimizer=optim.SGD(0.1))
    with pytest.raises(ValueError, match="Adam"):
        export_softmax(rng, preprocessing.StandardScaler(), sgd)
    adam = linear_model.SoftmaxRegression(optimizer=optim.Adam(0.1))
    with pytest.raises(ValueError, match="StandardScaler"):
        export_softmax(rng, preprocessing.StandardScaler(window_size=10), adam)


def test_the_default_model_stores_numbers_and_still_reads_its_old_pickles() -> None:
    """A RiverSoftmax snapshot holds typed numbers, no pickle; a state written in the older
    pickle format still restores to the same predictions."""
    model = catalog.create("online-logreg")
    assert isinstance(model, RiverSoftmax)
    for x, y in examples(120, seed=4):
        model.learn_one(x, y)
    state = model._state()
    assert "pickle" not in state
    assert isinstance(state["numbers"], bytes)
    old = {k: v for k, v in state.items() if k != "numbers"}
    old["pickle"] = pickle.dumps((model.rng, model.scaler, model.regression))
    restored = RiverSoftmax._from_state(model.model_id, model.inputs, old)
    probe = [x for x, _ in examples(20, seed=5)]
    assert (restored.predict_proba_many(probe) == model.predict_proba_many(probe)).all()
