"""Faults injected into a scored stream, as the evaluations a broken pipeline would produce."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from models.base import BASE_RATES
from models.metrics import log_loss
from schemas.events import OUTCOMES, Outcome
from tests.monitoring.stream import Scored

Triple = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the monitor is fed for one evaluation."""

    log_loss: float
    hit: bool
    reference_log_loss: float
    outcome: Outcome
    """The recorded outcome (the wrong one under the wrong-results fault)."""


def _swap(p: Triple) -> Triple:
    return (p[2], p[1], p[0])


def _uniform(p: Triple) -> Triple:
    return (1 / 3, 1 / 3, 1 / 3)


def _base_rates(p: Triple) -> Triple:
    return (BASE_RATES["H"], BASE_RATES["D"], BASE_RATES["A"])


def _overconfident(p: Triple) -> Triple:
    squares = [x * x for x in p]
    total = sum(squares)
    return (squares[0] / total, squares[1] / total, squares[2] / total)


MODEL_FAULTS: dict[str, tuple[str, Callable[[Triple], Triple]]] = {
    "swap": ("home and away probabilities swapped (a feature or mapping bug)", _swap),
    "uniform": ("the model outputs 1/3, 1/3, 1/3", _uniform),
    "base-rates": ("the model is stuck at the base rates", _base_rates),
    "overconfident": (
        "the model turns overconfident (probabilities squared and renormalised)",
        _overconfident,
    ),
}
WRONG_RESULTS = "wrong-results"
FAULTS: dict[str, str] = {
    "swap": MODEL_FAULTS["swap"][0],
    WRONG_RESULTS: "results joined to the wrong matches (each match gets the next one's)",
    **{name: text for name, (text, _) in MODEL_FAULTS.items() if name != "swap"},
}
"""Every fault, in the order of the issue's table, with its description."""


def observe(model: Triple, market: Triple, outcome: Outcome) -> Observation:
    """Log loss, hit and the opening line's log loss, as the reconciler and the monitor compute
    them (the most probable outcome, the first of tied ones, is the prediction)."""
    p = dict(zip(OUTCOMES, model, strict=True))
    q = dict(zip(OUTCOMES, market, strict=True))
    predicted = max(OUTCOMES, key=lambda o: p[o])
    return Observation(log_loss(p, outcome), predicted == outcome, log_loss(q, outcome), outcome)


def clean(stream: Sequence[Scored]) -> list[Observation]:
    """The untouched stream."""
    return [observe(s.model, s.market, s.outcome) for s in stream]


def faulty(stream: Sequence[Scored], fault: str) -> list[Observation]:
    """The whole stream as it would be with ``fault`` (a run uses it from the fault's start)."""
    if fault == WRONG_RESULTS:
        return [
            observe(s.model, s.market, stream[(i + 1) % len(stream)].outcome)
            for i, s in enumerate(stream)
        ]
    change = MODEL_FAULTS[fault][1]
    return [observe(change(s.model), s.market, s.outcome) for s in stream]
