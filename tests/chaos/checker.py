"""What a faulty run lost, duplicated or made up, per event id, against a fault-free run.

The names are those of Jepsen's Kafka workload where they fit: **lost** (an acknowledged input
whose effect is missing), **duplicate** (an effect present more than once) and **unexpected**
(an effect no input of the fault-free run produced, or with other content). Pure functions over
what the runs left in PostgreSQL and on the topics; :mod:`tests.chaos.scenarios` gathers them.

Only what arrival order cannot change is compared. The features agent re-issues an open
fixture's features (next ``revision``) whenever a result reaches it after the fixture, and a
fault changes which facts reach it in which order: how often a match's features were issued,
and so the ids of the predictions and evaluations made from them, legitimately differ between
two runs. Invariant, and compared exactly:

- per (match id, model id), exactly one **current** evaluation (not superseded), with the same
  outcome and score; for the market references (their probabilities depend on the odds only)
  the same probabilities and log loss, to 1e-9;
- each counted prediction evaluated at most once (a second evaluation of one prediction id is
  a duplicate), each (match, model, features revision) counted at most once, and a counted
  prediction for every (match, model) pair of the reference;
- the stored features of every match, without their stamp (``issued_at``, ``revision``), to
  1e-9: whatever the order, the agent's features equal the offline builder's;
- how many results each online model learned.

>>> row = EvaluationRow("e1", "m1", "market-open", "H", 1, 0)
>>> verdict = Verdict()
>>> check_evaluations(RunData([row]), RunData([row, row]), verdict)
>>> verdict.lost, verdict.duplicated, verdict.unexpected
(0, 1, 0)
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.base import Model
from models.policy import LearningPolicy
from schemas.events import DeadLetter, ModelFeedItem

REFERENCE_PREFIX = "market-"
"""Models whose predictions depend on the odds only: their probabilities are the same in
every run."""
TOLERANCE = 1e-9
"""Absolute and relative tolerance of a float compared between two runs."""
STAMP = ("issued_at", "revision")
"""The parts of a features payload that say which issue it is, not what it is."""


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """The parts of an evaluation-log row that a fault must not change (``current``: not
    superseded by a later one)."""

    evaluation_id: str
    match_id: str
    model_id: str
    outcome: str
    home_goals: int
    away_goals: int
    prediction_id: str = ""
    current: bool = True
    log_loss: float = 0.0
    probabilities: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def key(self) -> tuple[str, str]:
        return self.match_id, self.model_id


@dataclass
class RunData:
    """What a run left behind. ``features``: each match's stored features payload without its
    stamp; ``predictions``: counted prediction rows per (match, model, features revision)."""

    evaluations: list[EvaluationRow]
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: set[str] = field(default_factory=set)
    learned: dict[str, int] = field(default_factory=dict)
    predictions: Counter[tuple[str, str, int]] = field(default_factory=Counter)


@dataclass
class Verdict:
    """One scenario's tallies; a problem is anything else that must not happen."""

    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    deadlettered: int = 0
    malformed_sent: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.problems
            and self.lost == 0
            and self.duplicated == 0
            and self.unexpected == 0
            and self.deadlettered == self.malformed_sent
        )

    def problem(self, text: str) -> None:
        self.problems.append(text)


def check_evaluations(baseline: RunData, observed: RunData, verdict: Verdict) -> None:
    """Current evaluations missing (lost), extra (duplicated) or foreign (unexpected) per
    (match, model); a prediction evaluated twice (duplicated); stored features and results."""
    expected = _by_key(e for e in baseline.evaluations if e.current)
    seen = _by_key(e for e in observed.evaluations if e.current)
    for key, rows in expected.items():
        got = seen.get(key, [])
        verdict.lost += max(0, len(rows) - len(got))
        verdict.duplicated += max(0, len(got) - len(rows))
        if got and not _same(rows[0], got[0]):
            verdict.unexpected += 1
            if verdict.unexpected <= 2:  # an example says more than a count
                verdict.problem(f"unexpected: {got[0]} where {rows[0]} was")
    for key, rows in seen.items():
        if key not in expected:
            verdict.unexpected += len(rows)
    per_prediction = Counter(e.prediction_id for e in observed.evaluations if e.prediction_id)
    verdict.duplicated += sum(n - 1 for n in per_prediction.values() if n > 1)
    check_features(baseline.features, observed.features, verdict)
    want, have = baseline.results, observed.results
    if want - have:
        verdict.problem(f"lost: {len(want - have)} results rows")
    if have - want:
        verdict.problem(f"unexpected: {len(have - want)} results rows")


def _by_key(rows: Iterable[EvaluationRow]) -> dict[tuple[str, str], list[EvaluationRow]]:
    grouped: dict[tuple[str, str], list[EvaluationRow]] = defaultdict(list)
    for row in rows:
        grouped[row.key].append(row)
    return grouped


def _same(want: EvaluationRow, got: EvaluationRow) -> bool:
    if (got.outcome, got.home_goals, got.away_goals) != (
        want.outcome,
        want.home_goals,
        want.away_goals,
    ):
        return False
    if not want.model_id.startswith(REFERENCE_PREFIX):
        return True
    return close(want.log_loss, got.log_loss) and all(
        close(a, b) for a, b in zip(want.probabilities, got.probabilities, strict=True)
    )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def unstamped(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A features payload without the stamp of its issue."""
    return {k: v for k, v in payload.items() if k not in STAMP}


def same_document(want: Any, got: Any) -> bool:
    """Equal JSON documents, numbers to :data:`TOLERANCE` (a float may round differently)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return close(float(want), float(got))
    if isinstance(want, dict) and isinstance(got, dict):
        return want.keys() == got.keys() and all(same_document(want[k], got[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(
            same_document(a, b) for a, b in zip(want, got, strict=True)
        )
    return bool(want == got)


def check_features(
    baseline: Mapping[str, Mapping[str, Any]],
    observed: Mapping[str, Mapping[str, Any]],
    verdict: Verdict,
) -> None:
    """Every match's stored features as in the reference, stamp aside."""
    missing = baseline.keys() - observed.keys()
    extra = observed.keys() - baseline.keys()
    if missing:
        verdict.problem(f"lost: {len(missing)} features rows")
    if extra:
        verdict.problem(f"unexpected: {len(extra)} features rows")
    differ = sorted(
        m
        for m in baseline.keys() & observed.keys()
        if not same_document(unstamped(baseline[m]), unstamped(observed[m]))
    )
    if differ:
        verdict.problem(f"unexpected: {len(differ)} features rows differ (e.g. {differ[0]})")


def check_predictions(baseline: RunData, observed: RunData, verdict: Verdict) -> None:
    """A counted prediction for every (match, model) of the reference and none elsewhere;
    at most one per (match, model, features revision)."""
    want = {(m, model) for m, model, _ in baseline.predictions}
    have = {(m, model) for m, model, _ in observed.predictions}
    if want - have:
        verdict.problem(f"lost: {len(want - have)} (match, model) pairs without a prediction")
    if have - want:
        verdict.problem(f"unexpected: {len(have - want)} (match, model) pairs predicted")
    twice = sum(n - 1 for n in observed.predictions.values() if n > 1)
    if twice:
        verdict.problem(f"duplicate: {twice} prediction rows of one features revision")


def check_learned(baseline: RunData, observed: RunData, verdict: Verdict) -> None:
    """Each online model learned from exactly as many results as in the fault-free run."""
    for model_id, learned in sorted(baseline.learned.items()):
        got = observed.learned.get(model_id, 0)
        if got > learned:
            verdict.problem(f"duplicate: {model_id} learned {got - learned} results twice")
        elif got < learned:
            verdict.problem(f"lost: {model_id} learned {learned - got} results fewer")


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event landed on the broker."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class SentEvent:
    """An input event as the broker acknowledged it."""

    position: Position
    key: bytes | None
    value: bytes | None
    malformed: str | None = None


def check_dead_letters(
    sent: Sequence[SentEvent], letters: Sequence[DeadLetter], verdict: Verdict
) -> None:
    """Each malformed event dead-lettered exactly once with its bytes, key and a reason; no
    valid event dead-lettered."""
    malformed = {e.position: e for e in sent if e.malformed is not None}
    verdict.malformed_sent += len(malformed)
    verdict.deadlettered += len(letters)
    found: dict[Position, list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        found[Position(letter.source_topic, letter.partition, letter.offset)].append(letter)
    lost = duplicate = unexpected = bad = 0
    for position, event in malformed.items():
        got = found.get(position, [])
        if not got:
            lost += 1
            continue
        duplicate += len(got) - 1
        if not _faithful(event, got[0]):
            bad += 1
    unexpected = sum(len(v) for p, v in found.items() if p not in malformed)
    for name, count in (
        ("lost", lost),
        ("duplicate", duplicate),
        ("unexpected", unexpected),
        ("unfaithful", bad),
    ):
        if count:
            verdict.problem(f"{name}: {count} dead letters")


def _faithful(event: SentEvent, letter: DeadLetter) -> bool:
    """The letter keeps the original bytes and key, and says which field broke which rule.

    A payload too large to fit a dead letter whole (beyond ``DEAD_LETTER_PAYLOAD_MAX``) keeps
    its head, and the error value names its full size and SHA-256.
    """
    key = base64.b64decode(letter.key_b64) if letter.key_b64 is not None else None
    original = event.value or b""
    kept = base64.b64decode(letter.payload_b64)
    whole = kept == original or (
        len(kept) < len(original)
        and original.startswith(kept)
        and f"of {len(original)} bytes" in (letter.error.value or "")
        and hashlib.sha256(original).hexdigest() in (letter.error.value or "")
    )
    return whole and key == event.key and bool(letter.error.field) and bool(letter.error.rule)


def feed_once(feed: Iterable[tuple[int, int, ModelFeedItem]], model_id: str) -> list[ModelFeedItem]:
    """A model's feed items in the order its learner reads them, each evaluation once."""
    seen: set[str] = set()
    items = []
    for _, _, item in sorted(feed, key=lambda entry: (entry[0], entry[1])):
        evaluation = item.evaluation
        if evaluation.model_id == model_id and evaluation.evaluation_id not in seen:
            seen.add(evaluation.evaluation_id)
            items.append(item)
    return items


def train_once(model: Model, items: Iterable[ModelFeedItem], policy: LearningPolicy) -> int:
    """Teach ``model`` every item once, under ``policy``; return how many it learned."""
    learned = 0
    for item in items:
        evaluation = item.evaluation
        weight = policy.weight(evaluation.probabilities.as_dict(), evaluation.outcome)
        if weight > 0:
            model.learn_one(item.inputs, evaluation.outcome, weight)
            learned += 1
    return learned


def prediction_mismatches(
    online: Model, reference: Model, inputs: Iterable[Mapping[str, float]]
) -> int:
    """Inputs on which two models' probabilities differ at all (exact float comparison)."""
    return sum(
        1
        for x in inputs
        if online.predict_proba_one(dict(x)) != reference.predict_proba_one(dict(x))
    )
