"""Estimates before results (pure): how well a model should do on matches not yet played.

Per scored match, from the model's probabilities ``p`` and the match's market lines:

* **expected log loss** ``H(p) = -sum p log p``: the log loss the model expects of itself. It
  is what the realised log loss averages to *if the model is calibrated*; an overconfident model
  expects less than it gets.
* **closing cross-entropy** ``CE(q, p) = -sum q log p`` with ``q`` the normalised implied
  probabilities of the closing odds (:func:`models.metrics.normalised_implied`): the expected
  log loss if the closing line is the truth, which does not assume the model is calibrated.
  Known only where the closing odds are.
* **expected edge against the market** ``CE(q, o) - CE(q, p)``, ``o`` the opening line: how
  much less log loss the model expects to suffer than the opening line, again taking the
  closing line as the truth. Since ``CE(q, x) = H(q) + KL(q || x)`` the closing line's own
  entropy cancels: the edge is ``KL(q || o) - KL(q || p)``, positive when the model is closer
  to the closing line than the opening line was, i.e. when it moved the way the market moved
  later. The opening line is the baseline the decay monitor's paired test uses too.

:class:`RollingEstimates` keeps the last ``window`` matches per model (by count; a match
re-scored from a newer features revision replaces its earlier estimate) and
:class:`EdgeAlarm` fires once when a full window's mean edge turns negative and re-arms when it
is back at zero or above.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from models.metrics import LOG_LOSS_CLIP, ProbabilityMap, normalised_implied
from schemas.events import OUTCOMES, Odds

ESTIMATE_WINDOW = 300
"""Matches per rolling window, the decay monitor's window (``decay_window``)."""

EDGE_FLOOR = 0.002
"""An edge must be below ``-EDGE_FLOOR`` (log loss per match) to alarm. A model level with the
opening line, such as the champion that starts from it, wanders around 0 by about 1e-4 over a
window: without a floor `make demo` raised 15 alarms on edges of -0.0001 and -0.0000. The
floor is about one standard error of a window's realised paired difference (0.04 / sqrt 300)."""

EDGE_METRIC = "expected_edge_vs_market"
DETECTOR = "estimate-window"

_NAMESPACE = uuid.UUID("6f1b0f3e-4c55-4d0a-9a57-3b1f2d6a9e21")


def _clipped_log(q: float) -> float:
    """``log q``, ``q`` clipped as :func:`models.metrics.log_loss` clips it."""
    return math.log(LOG_LOSS_CLIP if q < LOG_LOSS_CLIP else min(q, 1.0))


def _plogq(p: float, q: float) -> float:
    """``p log q``, ``q`` clipped as a log loss clips it, 0 when p is 0."""
    if p <= 0.0:
        return 0.0
    return p * _clipped_log(q)


def expected_log_loss(p: ProbabilityMap) -> float:
    """``-sum p log p``: the mean log loss the model would get if its probabilities were right."""
    # Unrolled over H, D, A: the scorer calls this for every prediction.
    home, draw, away = p["H"], p["D"], p["A"]
    return -(_plogq(home, home) + _plogq(draw, draw) + _plogq(away, away))


def cross_entropy(q: ProbabilityMap, p: ProbabilityMap) -> float:
    """``-sum q log p``: the mean log loss of ``p`` when outcomes happen with probabilities
    ``q`` (``p`` clipped like a log loss, so a zero where ``q`` is not costs ~34.5, not inf)."""
    return -(_plogq(q["H"], p["H"]) + _plogq(q["D"], p["D"]) + _plogq(q["A"], p["A"]))


def line(odds: Odds | None) -> dict[str, float] | None:
    """The normalised implied probabilities of a line; None when there is no usable line."""
    if odds is None:
        return None
    try:
        implied = normalised_implied(odds).probabilities
    except ValueError:
        return None
    return {o: implied[o] for o in OUTCOMES}


@dataclass(frozen=True, slots=True)
class MatchEstimate:
    """The estimates of one model on one match; the market ones None without a closing line."""

    expected_log_loss: float
    closing_cross_entropy: float | None
    expected_edge: float | None


@dataclass(frozen=True, slots=True)
class MarketLines:
    """What a match's estimates need of its market, the same for every model: the closing line
    and the opening line's cross-entropy against it (None without a usable line)."""

    close: dict[str, float] | None
    opening_against_close: float | None


def market_lines(odds_open: Odds | None, odds_close: Odds | None) -> MarketLines:
    """The match's :class:`MarketLines`, computed once for all its models' predictions."""
    close, opening = line(odds_close), line(odds_open)
    if close is None or opening is None:
        return MarketLines(close, None)
    return MarketLines(close, cross_entropy(close, opening))


def estimate(p: ProbabilityMap, odds_open: Odds | None, odds_close: Odds | None) -> MatchEstimate:
    """The three estimates of one prediction (module docstring)."""
    return estimate_against(p, market_lines(odds_open, odds_close))


def _minus_weighted(q: ProbabilityMap, logs: tuple[float, float, float]) -> float:
    """``-sum q log p`` from the three ``log p``, term for term as :func:`cross_entropy`."""
    home, draw, away = q["H"], q["D"], q["A"]
    return -(
        (home * logs[0] if home > 0.0 else 0.0)
        + (draw * logs[1] if draw > 0.0 else 0.0)
        + (away * logs[2] if away > 0.0 else 0.0)
    )


def estimate_against(p: ProbabilityMap, market: MarketLines) -> MatchEstimate:
    """:func:`estimate` with the match's market lines already computed.

    The same sums as :func:`expected_log_loss` and :func:`cross_entropy`, term for term (so
    the same floats), with each ``log p`` taken once for both: the scorer runs this for every
    prediction."""
    logs = (_clipped_log(p["H"]), _clipped_log(p["D"]), _clipped_log(p["A"]))
    own = _minus_weighted(p, logs)
    if market.close is None:
        return MatchEstimate(own, None, None)
    against_close = _minus_weighted(market.close, logs)
    base = market.opening_against_close
    edge = None if base is None else base - against_close
    return MatchEstimate(own, against_close, edge)


@dataclass(frozen=True, slots=True)
class EstimateSummary:
    """Means of a model's rolling window; ``closing`` counts the matches with a closing line
    (the cross-entropy and the edge are over those only; the edge also needs an opening line,
    which every :class:`schemas.events.MatchFeatures` has)."""

    matches: int
    expected_log_loss: float | None
    closing: int
    closing_cross_entropy: float | None
    expected_edge: float | None
    first_match_id: str | None
    last_match_id: str | None

    def as_json(self) -> dict[str, float | int | str | None]:
        """The summary as the status endpoint shows it."""
        return {
            "matches": self.matches,
            "expected_log_loss": self.expected_log_loss,
            "closing_matches": self.closing,
            "closing_cross_entropy": self.closing_cross_entropy,
            "expected_edge_vs_market": self.expected_edge,
            "first_match_id": self.first_match_id,
            "last_match_id": self.last_match_id,
        }


class RollingEstimates:
    """The last ``window`` match estimates of one model, keyed by match id.

    The scorer asks for the summary after every batch and model; an idle scorer's batches are
    single events, so the window keeps running sums and counts (:meth:`summary` is O(1), not
    a pass over 300 matches: ~100 us per model and event before). The sums are recomputed
    exactly (``math.fsum``) every ``window`` changes, so additions and removals never drift
    them by more than a few ulps of a window's worth of terms.
    """

    def __init__(self, window: int = ESTIMATE_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self._matches: OrderedDict[str, MatchEstimate] = OrderedDict()
        self._loss = 0.0
        self._closing = 0
        self._closing_sum = 0.0
        self._edges = 0
        self._edge_sum = 0.0
        self._changes = 0

    def _count(self, value: MatchEstimate, sign: int) -> None:
        self._loss += sign * value.expected_log_loss
        if value.closing_cross_entropy is not None:
            self._closing += sign
            self._closing_sum += sign * value.closing_cross_entropy
        if value.expected_edge is not None:
            self._edges += sign
            self._edge_sum += sign * value.expected_edge

    def _resum(self) -> None:
        values = self._matches.values()
        self._loss = math.fsum(v.expected_log_loss for v in values)
        closing = [v.closing_cross_entropy for v in values if v.closing_cross_entropy is not None]
        edges = [v.expected_edge for v in values if v.expected_edge is not None]
        self._closing, self._closing_sum = len(closing), math.fsum(closing)
        self._edges, self._edge_sum = len(edges), math.fsum(edges)
        self._changes = 0

    def add(self, match_id: str, value: MatchEstimate) -> None:
        """Add (or replace: a newer revision) a match's estimate; drop the oldest beyond the
        window."""
        replaced = self._matches.pop(match_id, None)
        if replaced is not None:
            self._count(replaced, -1)
        self._matches[match_id] = value
        self._count(value, 1)
        while len(self._matches) > self.window:
            self._count(self._matches.popitem(last=False)[1], -1)
        self._changes += 1
        if self._changes >= self.window:
            self._resum()

    def summary(self) -> EstimateSummary:
        matches = len(self._matches)
        return EstimateSummary(
            matches=matches,
            expected_log_loss=self._loss / matches if matches else None,
            closing=self._closing,
            closing_cross_entropy=self._closing_sum / self._closing if self._closing else None,
            expected_edge=self._edge_sum / self._edges if self._edges else None,
            first_match_id=next(iter(self._matches)) if matches else None,
            last_match_id=next(reversed(self._matches)) if matches else None,
        )


@dataclass(frozen=True, slots=True)
class EdgeTransition:
    """The alarm changed state: ``firing`` (edge turned negative) or ``resolved``."""

    state: Literal["firing", "resolved"]
    summary: EstimateSummary


class EdgeAlarm:
    """Fires once when a full window's mean expected edge is below zero (by more than
    :data:`EDGE_FLOOR`); resolves (and re-arms) when a full window's edge is back at zero or
    above. A window that is not full (fewer than
    ``window`` matches with a closing line) says nothing."""

    def __init__(self, window: int = ESTIMATE_WINDOW) -> None:
        self.window = window
        self.firing = False

    def update(self, summary: EstimateSummary) -> EdgeTransition | None:
        if summary.closing < self.window or summary.expected_edge is None:
            return None
        edge = summary.expected_edge
        negative = edge < -EDGE_FLOOR if not self.firing else edge < 0.0
        if negative == self.firing:
            return None
        self.firing = negative
        return EdgeTransition("firing" if negative else "resolved", summary)


def alert_id(model_id: str, transition: EdgeTransition) -> str:
    """Deterministic: the same window crossing (same last match) yields the same alert."""
    key = f"{model_id}|estimate|{transition.state}|{transition.summary.last_match_id}"
    return str(uuid.uuid5(_NAMESPACE, key))


def sentence(model_id: str, model_version: int | None, transition: EdgeTransition) -> str:
    """One sentence for the operator: the edge, over which matches, before any result."""
    who = model_id if model_version is None else f"{model_id} v{model_version}"
    s = transition.summary
    edge = s.expected_edge if s.expected_edge is not None else math.nan
    span = f"matches {s.first_match_id} to {s.last_match_id}"
    if transition.state == "firing":
        return (
            f"{who} is expected to lose to the opening line before any result: its expected "
            f"edge is {edge:+.4f} log loss per match over the last {s.closing} scored matches "
            f"({span}), the opening line's cross-entropy against the closing line minus its own."
        )
    return (
        f"{who} is again expected to beat the opening line: expected edge {edge:+.4f} per "
        f"match over the last {s.closing} scored matches ({span})."
    )


class ModelEstimates:
    """Rolling estimates and the edge alarm of every model a process scores with; the models in
    ``silent`` (the market references: ``market-open`` is the baseline itself, ``market-close``
    the truth the edge is measured against) have estimates but never alarm."""

    def __init__(self, window: int = ESTIMATE_WINDOW, silent: Iterable[str] = ()) -> None:
        self.window = window
        self.silent = frozenset(silent)
        self.rolling: dict[str, RollingEstimates] = {}
        self.alarms: dict[str, EdgeAlarm] = {}

    def observe(
        self, observations: Iterable[tuple[str, str, ProbabilityMap, Odds | None, Odds | None]]
    ) -> list[tuple[str, EdgeTransition]]:
        """Add (model id, match id, probabilities, opening odds, closing odds) observations;
        the alarm transitions they cause, per model, in order."""
        touched: dict[str, None] = {}
        # One match's lines serve all its models' predictions (odds are hashable structs).
        markets: dict[tuple[Odds | None, Odds | None], MarketLines] = {}
        for model_id, match_id, p, odds_open, odds_close in observations:
            rolling = self.rolling.get(model_id)
            if rolling is None:
                rolling = self.rolling[model_id] = RollingEstimates(self.window)
            market = markets.get((odds_open, odds_close))
            if market is None:
                market = markets[odds_open, odds_close] = market_lines(odds_open, odds_close)
            rolling.add(match_id, estimate_against(p, market))
            touched[model_id] = None
        transitions = []
        for model_id in touched:
            if model_id in self.silent:
                continue
            alarm = self.alarms.setdefault(model_id, EdgeAlarm(self.window))
            transition = alarm.update(self.rolling[model_id].summary())
            if transition is not None:
                transitions.append((model_id, transition))
        return transitions

    def retain(self, model_ids: Iterable[str]) -> None:
        """Forget the models no longer scored (retired), so they leave /status/ and /metrics/.
        A model's window runs on across its versions: a new version moves it gradually."""
        keep = set(model_ids)
        for model_id in [m for m in self.rolling if m not in keep]:
            del self.rolling[model_id]
            self.alarms.pop(model_id, None)

    def summaries(self) -> dict[str, EstimateSummary]:
        return {model_id: r.summary() for model_id, r in sorted(self.rolling.items())}


def window_means(values: Sequence[float], size: int) -> list[float]:
    """Means of consecutive non-overlapping windows of ``size`` values (a short tail dropped)."""
    return [math.fsum(values[i : i + size]) / size for i in range(0, len(values) - size + 1, size)]


def mean_absolute_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean of ``|a_i - b_i|`` over two equally long, non-empty sequences."""
    if len(a) != len(b) or not a:
        raise ValueError("need two non-empty sequences of the same length")
    return math.fsum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def summaries_json(summaries: Mapping[str, EstimateSummary]) -> dict[str, object]:
    """Per model, the status endpoint's view of its window."""
    return {model_id: s.as_json() for model_id, s in summaries.items()}
