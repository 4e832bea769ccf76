"""Reconciliation rules: pure functions joining predictions and results of one match.

The reconciler agent keeps one :class:`MatchLedger` per match id in a changelog-backed table and
calls these functions for every event, in whatever order the events arrive. All ids are
deterministic, so a re-delivered event reproduces the same evaluation instead of a new one.
"""

from __future__ import annotations

import hashlib
import heapq
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from models.features import model_input
from models.metrics import brier, log_loss, rps
from schemas.events import (
    Evaluation,
    MatchFeatures,
    MatchResult,
    ModelFeedItem,
    Prediction,
    ValidationIssue,
)

_NAMESPACE = uuid.UUID("7b0f5d2e-3c1a-4e8b-9a55-1f0c2d7e6a10")
_EVALUATION_PREFIX = hashlib.sha1(_NAMESPACE.bytes + b"evaluation|", usedforsecurity=False)


def prediction_id(match_id: str, model_id: str, model_version: int, revision: int = 0) -> str:
    """Deterministic id of a model version's prediction for a match from one revision of its
    features: replays never duplicate. Revision 0 (the first issue, and producers' features)
    keeps the id it had before features were re-issued."""
    suffix = f"|r{revision}" if revision else ""
    return str(uuid.uuid5(_NAMESPACE, f"prediction|{match_id}|{model_id}|{model_version}{suffix}"))


def evaluation_id(prediction_id: str, home_goals: int, away_goals: int) -> str:
    """Deterministic id of a prediction evaluated against one score.

    A corrected result (another score) gets another id, so it can supersede the first.
    ``str(uuid.uuid5(_NAMESPACE, f"evaluation|{prediction_id}|{home_goals}-{away_goals}"))``,
    computed without ``uuid.UUID`` (~2x faster; one per evaluation).
    """
    digest = _EVALUATION_PREFIX.copy()
    digest.update(f"{prediction_id}|{home_goals}-{away_goals}".encode())
    return uuid5_string(digest)


def uuid5_string(digest: Any) -> str:
    """The canonical string of the UUID 5 whose SHA-1 ``digest`` (namespace bytes, then name)
    is given: the first 16 bytes with the version and RFC 4122 variant bits set, as
    ``str(uuid.uuid5(namespace, name))`` has it."""
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class MatchLedger(msgspec.Struct, kw_only=True):
    """Everything the reconciler knows of one match, as kept in its table."""

    features: MatchFeatures | None = None
    predictions: dict[str, Prediction] = {}
    result: MatchResult | None = None
    # prediction id -> id of its current (not superseded) evaluation
    evaluated: dict[str, str] = {}
    # Evaluations made before the match's features arrived: fed to learners once they do.
    unfed: list[Evaluation] = []


class Supersession(msgspec.Struct, frozen=True):
    """An earlier evaluation replaced by a newer one after a corrected result."""

    old_evaluation_id: str
    new_evaluation_id: str


class Reconciled(msgspec.Struct, frozen=True):
    """What applying one event produced: new evaluations and the ones they supersede."""

    evaluations: list[Evaluation]
    superseded: list[Supersession]
    changed: bool
    # A counted prediction replaced after it was evaluated: publish, but do not feed again.
    revised: bool = False


NOTHING = Reconciled(evaluations=[], superseded=[], changed=False)


def evaluate(
    prediction: Prediction, result: MatchResult, *, now: datetime, supersedes: str | None = None
) -> Evaluation:
    """Score one prediction against its match's result with proper scoring rules."""
    probabilities = prediction.probabilities.as_dict()
    return Evaluation(
        evaluation_id=evaluation_id(prediction.prediction_id, result.home_goals, result.away_goals),
        prediction_id=prediction.prediction_id,
        match_id=prediction.match_id,
        league=prediction.league,
        kickoff=prediction.kickoff,
        model_id=prediction.model_id,
        model_version=prediction.model_version,
        is_champion=prediction.is_champion,
        probabilities=prediction.probabilities,
        predicted=prediction.predicted,
        outcome=result.outcome,
        home_goals=result.home_goals,
        away_goals=result.away_goals,
        hit=prediction.predicted == result.outcome,
        confidence=prediction.confidence,
        log_loss=log_loss(probabilities, result.outcome),
        brier=brier(probabilities, result.outcome),
        rps=rps(probabilities, result.outcome),
        supersedes=supersedes,
        evaluated_at=now,
    )


def apply_features(ledger: MatchLedger, features: MatchFeatures) -> bool:
    """Remember a match's latest features (the learner needs them); True when the ledger
    changed. An older revision than the one kept changes nothing."""
    if ledger.features == features or (
        ledger.features is not None and features.revision < ledger.features.revision
    ):
        return False
    ledger.features = features
    return True


def made_before_kickoff(prediction: Prediction) -> bool:
    """Made before its match's kickoff in event time: the features' issue time, the wall clock
    live and the history's own time in a backfill. A prediction from producers' own features
    has no event time and is taken as made before kickoff (a backfill's features come after
    the historical kickoff; whether its model knew the result is checked in the registry)."""
    return prediction.made_at is None or prediction.made_at < prediction.kickoff


def counted_prediction(ledger: MatchLedger, model_id: str) -> Prediction | None:
    """The prediction of ``model_id`` that counts for the match so far (at most one)."""
    return next((p for p in ledger.predictions.values() if p.model_id == model_id), None)


def would_count(ledger: MatchLedger, prediction: Prediction) -> bool:
    """Whether ``prediction`` becomes its model's prediction that counts: made before kickoff
    and from a later revision of the match's features than the model's current one. Of
    predictions from one revision the first counts: a later one (the match re-scored by a
    newer version, e.g. in a second replay) may have been made after the model learned this
    very result, so evaluating it would flatter the model."""
    if not made_before_kickoff(prediction):
        return False
    current = counted_prediction(ledger, prediction.model_id)
    return current is None or prediction.features_revision > current.features_revision


def counted_predictions(predictions: Iterable[Prediction]) -> dict[str, Prediction]:
    """The predictions that count among ``predictions`` taken in arrival order, by id (what
    :func:`apply_prediction` would keep; the evaluation log rebuilds a ledger with it)."""
    ledger = MatchLedger(predictions={})
    for prediction in predictions:
        if would_count(ledger, prediction):
            current = counted_prediction(ledger, prediction.model_id)
            if current is not None:
                del ledger.predictions[current.prediction_id]
            ledger.predictions[prediction.prediction_id] = prediction
    return ledger.predictions


def made_after_kickoff(prediction: Prediction) -> bool:
    """A prediction computed at or after its match's kickoff by the wall clock: a backfill's
    (every replayed prediction is computed long after the historical kickoff), or one that
    could know the result; the registry is asked whether its version had learned it."""
    return prediction.created_at >= prediction.kickoff


def distrust(
    prediction: Prediction,
    ledger: MatchLedger,
    *,
    registered: bool,
    knew_result: bool,
) -> ValidationIssue | None:
    """Why a prediction must not be evaluated, or None when it may be.

    The predictions topic is written by the scorers only (docs/RELIABILITY.md, "Security"), so
    these checks catch a buggy or misconfigured writer, and a forged prediction that does not
    know the service's ids and registry: its id must be the deterministic id of (match, model,
    version, features revision), its match facts those of the match's features, its model
    version one in the registry (``registered``), and the version must not have learned this
    match's result already (``knew_result``: in a backfill, where every prediction is made after the
    historical kickoff, that is what "made without knowledge of the result" means).
    """
    expected = prediction_id(
        prediction.match_id,
        prediction.model_id,
        prediction.model_version,
        prediction.features_revision,
    )
    if prediction.prediction_id != expected:
        return ValidationIssue(
            field="prediction_id",
            value=prediction.prediction_id,
            rule=f"not the id of this match, model and version (expected {expected})",
        )
    features = ledger.features
    if features is not None:
        for name in ("league", "kickoff"):
            if getattr(prediction, name) != getattr(features, name):
                return ValidationIssue(
                    field=name,
                    value=str(getattr(prediction, name)),
                    rule=f"differs from the match's features ({getattr(features, name)})",
                )
    if not registered:
        return ValidationIssue(
            field="model_version",
            value=f"{prediction.model_id}@{prediction.model_version}",
            rule="model version not in the registry",
        )
    if knew_result:
        return ValidationIssue(
            field="model_version",
            value=f"{prediction.model_id}@{prediction.model_version}",
            rule="made by a model version that had already learned this match's result",
        )
    return None


def apply_prediction(ledger: MatchLedger, prediction: Prediction, *, now: datetime) -> Reconciled:
    """Record a prediction if it counts (:func:`would_count`); evaluate it at once when the
    result is already known.

    A prediction from re-issued features replaces its model's earlier one; if that one was
    evaluated already, the new evaluation supersedes it (``revised``: its model learned the
    match from the first, so it is not fed again).
    """
    if not would_count(ledger, prediction):
        return NOTHING
    replaced = counted_prediction(ledger, prediction.model_id)
    old: str | None = None
    if replaced is not None:
        del ledger.predictions[replaced.prediction_id]
        old = ledger.evaluated.pop(replaced.prediction_id, None)
    ledger.predictions[prediction.prediction_id] = prediction
    if ledger.result is None:
        return Reconciled(evaluations=[], superseded=[], changed=True)
    evaluation = evaluate(prediction, ledger.result, now=now, supersedes=old)
    ledger.evaluated[prediction.prediction_id] = evaluation.evaluation_id
    superseded = [] if old is None else [Supersession(old, evaluation.evaluation_id)]
    return Reconciled(
        evaluations=[evaluation], superseded=superseded, changed=True, revised=old is not None
    )


def apply_result(ledger: MatchLedger, result: MatchResult, *, now: datetime) -> Reconciled:
    """Record a result and evaluate every waiting prediction.

    The same score again changes nothing. Another score is a correction: every prediction is
    re-evaluated and each new evaluation names the one it supersedes.
    """
    previous = ledger.result
    if previous is not None and (previous.home_goals, previous.away_goals) == (
        result.home_goals,
        result.away_goals,
    ):
        return NOTHING
    ledger.result = result
    evaluations: list[Evaluation] = []
    superseded: list[Supersession] = []
    for pid, prediction in ledger.predictions.items():
        old = ledger.evaluated.get(pid)
        evaluation = evaluate(prediction, result, now=now, supersedes=old)
        ledger.evaluated[pid] = evaluation.evaluation_id
        evaluations.append(evaluation)
        if old is not None:
            superseded.append(Supersession(old, evaluation.evaluation_id))
    return Reconciled(evaluations=evaluations, superseded=superseded, changed=True)


def feed(ledger: MatchLedger, evaluations: list[Evaluation]) -> list[ModelFeedItem]:
    """Learner and monitor inputs for new evaluations, holding them back until features exist.

    Topics are consumed independently, so a match's features can arrive after its prediction
    and result; its evaluations then wait in the ledger instead of being fed without inputs.
    """
    if ledger.features is None:
        ledger.unfed.extend(evaluations)
        return []
    ready, ledger.unfed = [*ledger.unfed, *evaluations], []
    inputs = model_input(ledger.features)
    return [ModelFeedItem(evaluation=evaluation, inputs=inputs) for evaluation in ready]


def is_reconciled(ledger: MatchLedger) -> bool:
    """A ledger with nothing left to wait for: features, result, every prediction evaluated
    and every evaluation fed. Only such a ledger may leave the table."""
    return (
        ledger.features is not None
        and ledger.result is not None
        and not ledger.unfed
        and all(pid in ledger.evaluated for pid in ledger.predictions)
    )


class Retention:
    """When reconciled ledgers leave the table, in event time.

    Each partition has a clock: the newest kickoff among the results it has carried (results
    come after the final whistle, so the clock never runs ahead of the real one, and a replay
    of old seasons moves it as live traffic would, not by the wall clock). A reconciled
    ledger is retired once its match kicked off ``days`` before that clock. The clock lives in
    memory; after a restart it starts again from the ledgers left in the table
    (:meth:`needs_scan`) and the results that arrive, so a restart retires later, never earlier.
    """

    def __init__(self, days: int) -> None:
        self.window = timedelta(days=days)
        self.clock: dict[int, datetime] = {}
        self._queue: dict[int, list[tuple[datetime, str]]] = {}
        self._queued: dict[int, set[str]] = {}
        self._scanned: set[int] = set()

    def observe(self, partition: int, kickoff: datetime) -> None:
        """A result of ``partition`` kicked off at ``kickoff``: the clock moves forward."""
        clock = self.clock.get(partition)
        if clock is None or kickoff > clock:
            self.clock[partition] = kickoff

    def expired(self, partition: int, kickoff: datetime) -> bool:
        """True when a match of ``partition`` that kicked off at ``kickoff`` is out of the
        window."""
        clock = self.clock.get(partition)
        return clock is not None and kickoff + self.window <= clock

    def track(self, partition: int, match_id: str, kickoff: datetime) -> None:
        """Remember a reconciled ledger kept in the table, to retire it when its time comes
        even if no event touches it again."""
        queued = self._queued.setdefault(partition, set())
        if match_id not in queued:
            queued.add(match_id)
            heapq.heappush(self._queue.setdefault(partition, []), (kickoff, match_id))

    def due(self, partition: int) -> list[str]:
        """Match ids of tracked ledgers of ``partition`` now out of the window (each once)."""
        queue, out = self._queue.get(partition, []), []
        while queue and self.expired(partition, queue[0][0]):
            _, match_id = heapq.heappop(queue)
            self._queued[partition].discard(match_id)
            out.append(match_id)
        return out

    def needs_scan(self, partition: int) -> bool:
        """True once per partition (again after :meth:`forget`): the caller then scans the
        table for the partition's ledgers (recovered from the changelog) and tracks them."""
        if partition in self._scanned:
            return False
        self._scanned.add(partition)
        return True

    def forget(self) -> None:
        """After a rebalance: the table may hold ledgers another worker wrote; scan again."""
        self._queue.clear()
        self._queued.clear()
        self._scanned.clear()
