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
- ``state_is_finite()``: false if any number in the state is NaN or infinite. A learn step that
  would make it so is refused: ``learn_one`` puts the state back as it was and raises
  :class:`NonFiniteState`. Before registering a version, the learner calls
  :func:`check_finite`, which raises :class:`NonFiniteState` for a model whose state is not.

>>> from models.market import MarketModel
>>> model = MarketModel.opening()
>>> model.predict_proba_one({"open_p_H": 0.5, "open_p_D": 0.3, "open_p_A": 0.2})
{'H': 0.5, 'D': 0.3, 'A': 0.2}
>>> MarketModel.restore(model.snapshot()).predict_proba_one({})
{'H': 0.451, 'D': 0.253, 'A': 0.296}
"""

from __future__ import annotations

import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
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
"""Outcome frequencies of the 27,700 matches in ``data/football``: the prior of a model
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

    def observe_one(self, x: Mapping[str, float]) -> None:
        """See an example's inputs without its outcome (one the learning policy skips)."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, for ``restore``."""
        ...

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """A model equal to the one that wrote ``data``."""
        ...

    def state_is_finite(self) -> bool:
        """False if any number of the state is NaN or infinite (never register such a version)."""
        ...


class NonFiniteState(ValueError):
    """A model's state holds (or a learn step would give it) NaN or infinity.

    A ``ValueError``, as a refused example is elsewhere: raised by ``learn_one`` after it has
    put the state back as it was, and by :func:`check_finite` for a version not to register.
    """


def all_finite(value: object) -> bool:
    """True if every float reachable from ``value`` is finite.

    Walks floats, numpy arrays and scalars, dicts (keys and values), lists, tuples, sets and the
    attributes of plain objects (River's and scikit-learn's state are such objects); ignores
    strings, bytes, classes, functions and modules. Each object is visited once.
    """
    stack, visited = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, np.ndarray):
            if item.dtype.kind in "fc" and not np.isfinite(item).all():
                return False
            if item.dtype.kind == "O":
                stack.extend(item.ravel().tolist())
        elif isinstance(item, np.generic):
            if item.dtype.kind in "fc" and not np.isfinite(item):
                return False
        elif isinstance(item, (int, str, bytes, type, ModuleType, FunctionType,
                               BuiltinFunctionType, MethodType)) or item is None:  # fmt: skip
            continue
        elif id(item) not in visited:
            visited.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)):
                stack.extend(item)
            else:
                stack.extend(getattr(item, "__dict__", {}).values())
                for cls in type(item).__mro__:
                    slots = cls.__dict__.get("__slots__", ())
                    slots = (slots,) if isinstance(slots, str) else slots
                    stack.extend(getattr(item, name) for name in slots if hasattr(item, name))
    return True


def check_finite(model: Model) -> None:
    """Raise :class:`NonFiniteState` if ``model``'s state is not finite: the learner's check
    before it registers (or checkpoints) a version, so a broken state is never stored."""
    if not model.state_is_finite():
        parts = model.non_finite_parts() if isinstance(model, BaseModel) else []
        where = f" (in {', '.join(parts)})" if parts else ""
        raise NonFiniteState(
            f"model {model.model_id} version {model.version}: state holds NaN or infinity{where}"
        )


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
    guarded: tuple[str, ...] = ()
    """Attributes a learn step changes: copied, and put back if a step fails or leaves them
    non-finite (so a refused step leaves the model exactly as it was)."""
    guard_every: int = 64
    """Learn steps between two copies of ``guarded``; the steps since the copy are learned again
    after putting it back. 1 for a model whose step also changes state outside ``guarded``
    (learning those steps again would learn them twice)."""

    def __init__(self, model_id: str, inputs: Sequence[str]) -> None:
        self.model_id = model_id
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.version = 0
        # learn_one's undo: a copy of the guarded state and the steps learned since.
        self._guard_copy: bytes | None = None
        self._guard_steps: list[tuple[Mapping[str, float], Outcome | None, float]] = []

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
        """Learn one example, all or nothing; a no-op where ``learns_online`` is false.

        If the step raises, or leaves the ``guarded`` state non-finite, the model is put back
        exactly as it was before the step and the error propagates: :class:`NonFiniteState`
        for a non-finite result or an arithmetic error (numpy overflow or invalid values are
        raised as such during the step, as is an overflow in River's ``math.exp``), the
        original error otherwise. Putting back costs little on the good path: the guarded
        state is copied once every ``guard_every`` steps (a pickle of River's state takes
        ~170 us, ~3 us a step spread over 64) and the steps since the copy are kept; a refused
        step restores the copy and learns the kept steps again (they are deterministic: any
        random state is guarded too).
        """
        check_example(y, weight)
        if not self.learns_online or weight == 0.0:
            return
        copy = self._guard()
        try:
            self._guarded_step(x, y, weight)
        except Exception:
            for name, value in zip(self.guarded, pickle.loads(copy), strict=True):  # noqa: S301
                setattr(self, name, value)
            for x_, y_, weight_ in self._guard_steps:
                if y_ is None:
                    self._observe(self.matrix([x_])[0])
                else:
                    self._guarded_step(x_, y_, weight_)
            raise
        self._guard_steps.append((dict(x), y, weight))

    def observe_one(self, x: Mapping[str, float]) -> None:
        """See a match's inputs without learning from its outcome: for an example the learning
        policy skips (weight 0), so the input ranges the model clips to describe every match
        it has seen, not only those it learned (``errors:0.7`` learns from ~1 match in 10, a
        biased sample: its ranges alone made it clip ordinary inputs, 0.9769 -> 1.0345 log
        loss). A no-op for models that do not learn online."""
        if not self.learns_online:
            return
        self._guard()
        self._observe(self.matrix([x])[0])
        self._guard_steps.append((dict(x), None, 0.0))

    def _guard(self) -> bytes:
        """The copy of the guarded state a refused step goes back to (taken anew every
        ``guard_every`` steps)."""
        if self._guard_copy is None or len(self._guard_steps) >= self.guard_every:
            # A pickle, not a deepcopy: 3.5x faster on River's state (173 against 616 us here;
            # the seed's 625 words dominate a deepcopy). Our own in-memory bytes, read to undo.
            self._guard_copy = pickle.dumps([getattr(self, name) for name in self.guarded])
            self._guard_steps = []
        return self._guard_copy

    def _observe(self, row: FloatArray) -> None:  # noqa: B027 - optional hook, most have none
        """Update the input statistics with ``row`` (no outcome); models without any: nothing."""

    def _guarded_step(self, x: Mapping[str, float], y: Outcome, weight: float) -> None:
        refused = f"model {self.model_id}: this example would make the state non-finite; refused"
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                self._learn(self.matrix([x])[0], y, weight)
        except ArithmeticError as error:  # numpy's FloatingPointError, River's math errors
            raise NonFiniteState(f"{refused} ({error})") from error
        if not self._learned_finite():
            raise NonFiniteState(refused)

    def _learn(self, row: FloatArray, y: Outcome, weight: float) -> None:
        """One learn step on ``row`` (inputs in ``inputs`` order, NaN = missing); ``y`` and
        ``weight`` (> 0) are checked. Only models that learn online implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not learn online")

    def _learned_finite(self) -> bool:
        """Whether what a learn step changes (``guarded``) is finite; a model may check it
        faster than the generic walk, never less."""
        return all_finite([getattr(self, name) for name in self.guarded])

    def non_finite_parts(self) -> list[str]:
        """Names of the attributes holding NaN or infinity (none for a healthy model)."""
        return [name for name, value in vars(self).items() if not all_finite(value)]

    def state_is_finite(self) -> bool:
        """True if no number of the state is NaN or infinite (one walk of the whole state:
        ~0.1 ms for the linear models, a few ms for a forest)."""
        return all_finite(vars(self))

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
