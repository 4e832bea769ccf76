"""Pure rules of scheduled retraining (:mod:`agents.trainer`): the training set, the folds, the
fit, the name a refit is registered under, and when a schedule or a decay alert asks for one.

Cross-validation on a time series must never let a fold's model see a match played after the
matches it is scored on (shuffled k-fold does, and flatters the model). The folds here are
expanding windows by kickoff: the rows are sorted by (kickoff, match id), the last part is cut
into ``folds`` consecutive validation blocks, and each block's model trains on every match that
kicked off at least ``embargo`` before the block's first kickoff (so a training match's result,
known a couple of hours after its kickoff, is known before any validation match starts).

A match's features are the stored pre-match features (``match_features``), computed by the
features agent from results whose final whistle is before the kickoff; its result only gives the
label. Features issued at or after their own kickoff (a producer's late issue) could have seen
the result and are left out, counted with the reason.

No I/O here: :func:`fit_candidate` runs in the trainer's process pool, the rest in the worker.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from models import catalog
from models.base import OUTCOME_INDEX, distributions
from models.batch import BatchModel
from schemas.events import Outcome

REFIT_SUFFIX = "-refit"
"""A refit of the champion's batch model is registered as ``<base>-refit``: a challenger, never
a new version of the champion itself (the champion changes only through the promotion gate)."""
EMBARGO = timedelta(hours=3)
"""Gap between a fold's training matches and its first validation kickoff: a match's result is
known about two hours after its kickoff."""
OPENING_LINE = ("open_p_H", "open_p_D", "open_p_A")


@dataclass(frozen=True, slots=True)
class StoredMatch:
    """One stored match as the trainer reads it: pre-match features and the result's outcome."""

    match_id: str
    kickoff: datetime
    issued_at: datetime | None
    features: dict[str, float]
    outcome: Outcome


def parse_stored(text: str) -> list[StoredMatch]:
    """The JSON array :func:`agents.trainer_store.stored_matches` reads, as records.

    Parsed in the process pool: one string crosses from the worker, not 27,700 objects.

    >>> row = ('{"match_id": "m1", "kickoff": "2024-01-01T15:00:00+00:00", '
    ...        '"issued_at": null, "features": {"elo_diff": 12.0}, "outcome": "H"}')
    >>> parse_stored(f"[{row}]")[0].outcome
    'H'
    """
    out = []
    for row in json.loads(text or "[]"):
        issued = row.get("issued_at")
        out.append(
            StoredMatch(
                match_id=str(row["match_id"]),
                kickoff=datetime.fromisoformat(row["kickoff"]),
                issued_at=None if issued is None else datetime.fromisoformat(issued),
                features={str(k): float(v) for k, v in row["features"].items()},
                outcome=row["outcome"],
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Example:
    """One match of the training set: its pre-match inputs and its outcome."""

    match_id: str
    kickoff: datetime
    inputs: dict[str, float]
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """The examples in kickoff order, and the stored matches left out, counted by reason."""

    examples: tuple[Example, ...]
    excluded: Mapping[str, int] = field(default_factory=dict)


def training_set(matches: Iterable[StoredMatch]) -> TrainingSet:
    """Examples from stored matches, sorted by (kickoff, match id).

    The inputs are the stored pre-match features alone (what the scorer feeds a batch model:
    :func:`models.features.model_input` adds only the closing line, which no batch model
    reads); the outcome never enters them. Features issued at or after their kickoff are
    excluded (they could have been computed knowing the result).
    """
    examples: list[Example] = []
    excluded: Counter[str] = Counter()
    for match in matches:
        if match.outcome not in OUTCOME_INDEX:
            excluded["unknown outcome"] += 1
            continue
        if match.issued_at is not None and match.issued_at >= match.kickoff:
            excluded["features issued at or after kickoff"] += 1
            continue
        examples.append(Example(match.match_id, match.kickoff, dict(match.features), match.outcome))
    examples.sort(key=lambda e: (e.kickoff, e.match_id))
    return TrainingSet(tuple(examples), dict(excluded))


@dataclass(frozen=True, slots=True)
class Fold:
    """Rows ``[0, train_end)`` train, rows ``[validation_start, validation_end)`` validate."""

    train_end: int
    validation_start: int
    validation_end: int

    @property
    def train(self) -> range:
        return range(self.train_end)

    @property
    def validation(self) -> range:
        return range(self.validation_start, self.validation_end)


def expanding_folds(
    kickoffs: Sequence[datetime], folds: int, *, embargo: timedelta = EMBARGO, min_train: int = 1
) -> list[Fold]:
    """Expanding-window folds over rows sorted by kickoff (``ValueError`` if they are not).

    The rows are cut into ``folds + 1`` equal blocks; block ``k`` (``k >= 1``) validates a model
    trained on the rows that kicked off before its first kickoff less ``embargo``. A fold with
    fewer than ``min_train`` training rows is dropped.

    >>> from datetime import UTC
    >>> days = [datetime(2024, 1, d, 15, tzinfo=UTC) for d in range(1, 13)]
    >>> [(f.train_end, f.validation_start, f.validation_end) for f in expanding_folds(days, 3)]
    [(3, 3, 6), (6, 6, 9), (9, 9, 12)]
    """
    if folds < 1:
        raise ValueError(f"need at least one fold, got {folds}")
    if any(later < earlier for earlier, later in itertools.pairwise(kickoffs)):
        raise ValueError("rows must be sorted by kickoff")
    block = len(kickoffs) // (folds + 1)
    if block == 0:
        return []
    out = []
    for k in range(1, folds + 1):
        start = len(kickoffs) - (folds + 1 - k) * block
        end = start + block if k < folds else len(kickoffs)
        train_end = bisect.bisect_left(kickoffs, kickoffs[start] - embargo, hi=start)
        if train_end >= min_train:
            out.append(Fold(train_end, start, end))
    return out


def skip_reason(examples: int, *, min_matches: int, folds: int) -> str | None:
    """Why a training set is too small to refit on, or None."""
    if examples < min_matches:
        return (
            f"too few results: {examples} stored matches with features and a result, "
            f"need {min_matches} (TIPSTREAM_RETRAIN_MIN_MATCHES)"
        )
    if examples // (folds + 1) < 1:
        return f"too few results for {folds} folds: {examples}"
    return None


def candidate_id(base_id: str, statuses: Mapping[str, str]) -> tuple[str | None, str]:
    """The model id a refit of ``base_id`` is registered under, and why (or None and why not).

    A base that is a challenger (or not registered yet) gets a new version of itself; when it is
    the champion, the refit goes to ``<base>-refit`` as a challenger, so the champion is replaced
    only through the promotion gate. A retired base or refit id is left alone: an operator
    retired it.

    >>> candidate_id("batch-logreg", {})
    ('batch-logreg', 'new challenger')
    >>> candidate_id("batch-logreg", {"batch-logreg": "champion"})
    ('batch-logreg-refit', 'batch-logreg is the champion')
    """
    status = statuses.get(base_id)
    if status is None:
        return base_id, "new challenger"
    if status == "challenger":
        return base_id, "new version of the challenger"
    if status == "champion":
        refit = base_id + REFIT_SUFFIX
        if statuses.get(refit) == "retired":
            return None, f"{refit} is retired"
        return refit, f"{base_id} is the champion"
    return None, f"{base_id} is {status}"


def schedule_due(now: datetime, last_requested: datetime | None, interval_s: float) -> bool:
    """Whether the schedule asks for a run: on, and none requested within the interval."""
    if interval_s <= 0:
        return False
    return last_requested is None or (now - last_requested).total_seconds() >= interval_s


def decay_triggers(
    *,
    kind: str,
    state: str,
    model_id: str | None,
    champion: str | None,
    last_requested: datetime | None,
    created_at: datetime,
    cooldown_s: float,
) -> bool:
    """Whether an alert asks for a refit: a firing decay alert on the champion, and no decay
    refit asked for within the cooldown before it. One incident raises several decay alerts
    (the window test, the paired CUSUM, per-league scopes): the cooldown makes it one refit."""
    if kind != "decay" or state != "firing" or model_id is None or model_id != champion:
        return False
    if last_requested is None:
        return True
    return (created_at - last_requested).total_seconds() >= cooldown_s


@dataclass(frozen=True, slots=True)
class FitRequest:
    """One model to fit: its catalog base, the id it is registered under, the folds."""

    base_id: str
    model_id: str
    folds: int
    embargo_s: float = EMBARGO.total_seconds()


@dataclass(frozen=True, slots=True)
class FitResult:
    """A fitted model's kind and snapshot bytes, and its cross-validated figures."""

    kind: str
    state: bytes
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class RefitPlan:
    """Everything one run fits, as plain picklable data for the process pool."""

    stored: str  # the JSON array of stored matches
    fits: tuple[FitRequest, ...]
    min_matches: int


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What one model's fit did: a result, or why it was skipped, or the error it raised."""

    request: FitRequest
    result: FitResult | None = None
    skipped: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run's training set and each model's outcome."""

    examples: int
    excluded: Mapping[str, int]
    models: tuple[ModelOutcome, ...]


def refit_all(plan: RefitPlan) -> RunOutcome:
    """The process pool's entry: parse, build the training set, fit each model.

    A model's fit that raises is returned with its error (the others still fit); a training set
    too small skips them all with the reason.
    """
    data = training_set(parse_stored(plan.stored))
    outcomes = []
    for request in plan.fits:
        reason = skip_reason(len(data.examples), min_matches=plan.min_matches, folds=request.folds)
        if reason is not None:
            outcomes.append(ModelOutcome(request, skipped=reason))
            continue
        try:
            outcomes.append(ModelOutcome(request, result=fit_candidate(request, data.examples)))
        except Exception as error:  # noqa: BLE001 - reported per model, the run goes on
            outcomes.append(ModelOutcome(request, error=f"{type(error).__name__}: {error}"[:500]))
    return RunOutcome(len(data.examples), data.excluded, tuple(outcomes))


def fit_candidate(request: FitRequest, examples: Sequence[Example]) -> FitResult:
    """Cross-validate on expanding folds, then fit on every example.

    Metrics (all finite): ``rows``, ``cv_folds``, ``cv_log_loss`` and ``cv_brier`` (means over
    folds), ``cv_market_log_loss`` (the opening line on the same validation matches, where every
    one has it), ``cv_fold_<k>_log_loss``, ``trained_through`` (last kickoff, epoch seconds).
    """
    inputs = [e.inputs for e in examples]
    outcomes = [e.outcome for e in examples]
    folds = expanding_folds(
        [e.kickoff for e in examples], request.folds, embargo=timedelta(seconds=request.embargo_s)
    )
    if not folds:
        raise ValueError(f"no fold with training rows among {len(examples)} rows")
    losses, briers, market = [], [], []
    for fold in folds:
        model = _model(request)
        model.fit([inputs[i] for i in fold.train], [outcomes[i] for i in fold.train], folds=0)
        rows = [inputs[i] for i in fold.validation]
        labels = np.array([OUTCOME_INDEX[outcomes[i]] for i in fold.validation])
        probabilities = distributions(model.predict_proba_many(rows))
        losses.append(float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels]))))
        onehot = np.eye(3)[labels]
        briers.append(float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1))))
        line = _opening_line(rows)
        if line is not None:
            market.append(float(-np.mean(np.log(line[np.arange(len(labels)), labels]))))
    model = _model(request)
    model.fit(inputs, outcomes, folds=0)
    metrics = {
        "rows": float(len(examples)),
        "cv_folds": float(len(folds)),
        "cv_log_loss": float(np.mean(losses)),
        "cv_brier": float(np.mean(briers)),
        "trained_through": examples[-1].kickoff.timestamp(),
    }
    if len(market) == len(folds):
        metrics["cv_market_log_loss"] = float(np.mean(market))
    metrics.update({f"cv_fold_{k}_log_loss": loss for k, loss in enumerate(losses)})
    finite = {name: value for name, value in metrics.items() if math.isfinite(value)}
    return FitResult(model.kind, model.snapshot(), finite)


def _model(request: FitRequest) -> BatchModel:
    model = catalog.create(request.base_id)
    if not isinstance(model, BatchModel):
        raise ValueError(f"{request.base_id} is not a batch model")
    model.model_id = request.model_id
    return model


def _opening_line(rows: Sequence[Mapping[str, Any]]) -> np.ndarray[Any, Any] | None:
    """The opening line's probabilities of every row, or None if a row lacks them."""
    try:
        line = np.array([[float(row[name]) for name in OPENING_LINE] for row in rows])
    except KeyError:
        return None
    if not np.all(np.isfinite(line)):
        return None
    return np.asarray(distributions(line))
