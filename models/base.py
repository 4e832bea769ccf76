"""The uniform model interface: River's verbs plus signed-state snapshots.

Every model (online learner, batch model, market reference) answers the same calls, so the
scorer, the learner and the registry never ask which kind they hold:

- ``predict_proba_one(x)``: probabilities over ``"H"``, ``"D"``, ``"A"`` that sum to one.
  Reads only ``inputs``; an extra key is ignored; a missing or non-finite one is *imputed*
  (each model documents with what: learners use the running mean of what they learned from,
  so a missing feature moves the prediction as little as possible). ``x`` is never mutated.
- ``learn_one(x, y, weight)``: one example; a documented no-op where ``learns_online`` is false.
- ``predict_proba_many(xs)``: an ``(n, 3)`` array in H, D, A order, vectorised where it pays.
- ``snapshot()`` / ``restore(data)``: the whole state as bytes, restored to a model that predicts
  identically. Bytes are msgpack written by this module; the registry signs them
  (``models.serialization``) and verifies before restoring.

>>> from models.market import MarketModel
>>> model = MarketModel.opening()
>>> model.predict_proba_one({"open_p_H": 0.5, "open_p_D": 0.3, "open_p_A": 0.2})
{'H': 0.5, 'D': 0.3, 'A': 0.2}
>>> MarketModel.restore(model.snapshot()).predict_proba_one({})
{'H': 0.451, 'D': 0.253, 'A': 0.296}
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.events import OUTCOMES, Outcome

FloatArray = npt.NDArray[np.float64]

PROBABILITY_FLOOR = 1e-4
"""Smallest probability a model reports: a confident miss costs at most ln(1e4) = 9.2 nats, and
no 1X2 market prices an outcome below 1/1000 anyway."""

BASE_RATES: dict[Outcome, float] = {"H": 0.451, "D": 0.253, "A": 0.296}
"""Outcome frequencies of the 27,700 matches in ``shared/data/football``: the prior of a model
that has not learned yet, and the answer of a reference that has no odds."""

OUTCOME_INDEX: dict[str, int] = {outcome: i for i, outcome in enumerate(OUTCOMES)}
SNAPSHOT_FORMAT = 1


@runtime_checkable
class Model(Protocol):
    """What the scorer, learner and registry need from any model."""

    model_id: str
    kind: str
    version: int
    learns_online: bool
    inputs: tuple[str, ...]

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """H/D/A probabilities summing to one; missing inputs imputed, extra ones ignored."""
        ...

    def predict_proba_many(self, xs: Sequence[Mapping[str, float]]) -> FloatArray:
        """``(len(xs), 3)`` probabilities in H, D, A order."""
        ...

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        """Learn one example (weight 0 skips it); a no-op for models that do not learn online."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, for ``restore``."""
        ...

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A model equal to the one that wrote ``data``."""
        ...


class Snapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Envelope of every model's state: enough to rebuild it without knowing the catalog."""

    kind: str
    format: int
    model_id: str
    version: int
    inputs: tuple[str, ...]
    state: dict[str, Any]


def distribution(row: Sequence[float] | FloatArray) -> dict[str, float]:
    """H/D/A scores as probabilities: clipped to the floor and renormalised; base rates if the
    scores are not usable (NaN, all zero)."""
    clipped = [min(max(float(v), PROBABILITY_FLOOR), 1.0) for v in row]
    if not all(math.isfinite(v) for v in row):
        clipped = list(BASE_RATES.values())
    total = sum(clipped)
    return {outcome: value / total for outcome, value in zip(OUTCOMES, clipped, strict=True)}


def distributions(rows: FloatArray) -> FloatArray:
    """Row-wise :func:`distribution` of an ``(n, 3)`` array."""
    usable = np.isfinite(rows).all(axis=1, keepdims=True)
    base = np.array(list(BASE_RATES.values()))
    clipped = np.clip(np.where(usable, rows, base), PROBABILITY_FLOOR, 1.0)
    return np.asarray(clipped / clipped.sum(axis=1, keepdims=True), dtype=np.float64)


def check_example(y: str, weight: float) -> None:
    """Reject a label or weight that would silently corrupt a model."""
    if y not in OUTCOME_INDEX:
        raise ValueError(f"outcome must be one of H, D, A, got {y!r}")
    if not (math.isfinite(weight) and weight >= 0.0):
        raise ValueError(f"weight must be finite and >= 0, got {weight!r}")


class BaseModel(ABC):
    """Shared plumbing: input vectors, the default ``predict_proba_many``, the snapshot envelope.

    Subclasses implement ``_proba`` on a matrix of inputs (NaN where an input is missing) and
    ``_state``/``_from_state``. Not a dataclass: the registry sets ``version`` in place.
    """

    kind: str = ""
    learns_online: bool = False

    def __init__(self, model_id: str, inputs: Sequence[str]) -> None:
        self.model_id = model_id
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.version = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, version={self.version})"

    def matrix(self, xs: Sequence[Mapping[str, float]]) -> FloatArray:
        """Inputs of each x as a row, in ``inputs`` order; NaN marks a missing value."""
        nan = math.nan
        return np.array([[x.get(name, nan) for name in self.inputs] for x in xs], dtype=np.float64)

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """H/D/A probabilities summing to one."""
        return distribution(self._proba(self.matrix([x]))[0])

    def predict_proba_many(self, xs: Sequence[Mapping[str, float]]) -> FloatArray:
        """``(n, 3)`` probabilities in H, D, A order, from one call on the whole matrix."""
        if not xs:
            return np.empty((0, 3), dtype=np.float64)
        return distributions(self._proba(self.matrix(xs)))

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        """No-op: this model does not learn online (``learns_online`` is false)."""
        check_example(y, weight)

    @abstractmethod
    def _proba(self, matrix: FloatArray) -> FloatArray:
        """Unnormalised H/D/A scores of each row; clipping and renormalising happen after."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Everything but id, inputs and version, as msgpack-able values."""

    @classmethod
    @abstractmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        """The model ``_state`` describes."""

    def snapshot(self) -> bytes:
        """The state in a versioned msgpack envelope.

        Same state, same bytes for the numpy models; pickled River or scikit-learn state may
        differ byte-wise between processes (set order), never in what it restores to.
        """
        envelope = Snapshot(
            kind=self.kind,
            format=SNAPSHOT_FORMAT,
            model_id=self.model_id,
            version=self.version,
            inputs=self.inputs,
            state=self._state(),
        )
        return msgspec.msgpack.encode(envelope)

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """The model that wrote ``data``; refuses another kind or format."""
        envelope = msgspec.msgpack.decode(data, type=Snapshot)
        if envelope.kind != cls.kind or envelope.format != SNAPSHOT_FORMAT:
            raise ValueError(
                f"snapshot of kind {envelope.kind!r} format {envelope.format} cannot be restored "
                f"as {cls.kind!r} format {SNAPSHOT_FORMAT}"
            )
        model = cls._from_state(envelope.model_id, envelope.inputs, envelope.state)
        model.version = envelope.version
        return model


def floats(values: Any) -> FloatArray:
    """A float64 array from a snapshot's nested lists."""
    return np.asarray(values, dtype=np.float64)
