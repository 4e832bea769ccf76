"""What a faulty run lost, duplicated or made up, per event id, against a fault-free run.

The names are those of Jepsen's Kafka workload where they fit: **lost** (an acknowledged input
whose effect is missing), **duplicate** (an effect present more than once) and **unexpected**
(an effect no input of the fault-free run produced, or with other content). Pure functions over
what the runs left in PostgreSQL and on the topics; :mod:`tests.chaos.scenarios` gathers them.

Evaluations are compared per (match id, model id): that pair is the logical identity of an
evaluation. The evaluation id itself includes the model version that made the prediction, and
an online model's version at scoring time depends on timing, even between two fault-free runs;
for models that never change version (the market references) the ids are compared exactly.

>>> row = EvaluationRow("e1", "m1", "market-open", "H", 1, 0)
>>> verdict = Verdict()
>>> check_evaluations(RunData([row]), RunData([row, row]), verdict)
>>> verdict.lost, verdict.duplicated, verdict.unexpected
(0, 1, 0)
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from models.base import Model
from models.policy import LearningPolicy
from schemas.events import DeadLetter, ModelFeedItem

REFERENCE_PREFIX = "market-"
"""Models whose version never changes, so their evaluation ids are the same in every run."""


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """The parts of an evaluation-log row that a fault must not change."""

    evaluation_id: str
    match_id: str
    model_id: str
    outcome: str
    home_goals: int
    away_goals: int

    @property
    def key(self) -> tuple[str, str]:
        return self.match_id, self.model_id


@dataclass
class RunData:
    """What a run left behind."""

    evaluations: list[EvaluationRow]
    features: set[str] = field(default_factory=set)
    results: set[str] = field(default_factory=set)
    learned: dict[str, int] = field(default_factory=dict)
    predictions: Counter[tuple[str, str]] = field(default_factory=Counter)


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
    """Evaluation rows missing (lost), extra (duplicated) or foreign (unexpected)."""
    expected = _by_key(baseline.evaluations)
    seen = _by_key(observed.evaluations)
    for key, rows in expected.items():
        got = seen.get(key, [])
        verdict.lost += max(0, len(rows) - len(got))
        verdict.duplicated += max(0, len(got) - len(rows))
        if got and not _same(rows[0], got):
            verdict.unexpected += 1
            if verdict.unexpected <= 2:  # an example says more than a count
                verdict.problem(f"unexpected: {got[0]} where {rows[0]} was")
    for key, rows in seen.items():
        if key not in expected:
            verdict.unexpected += len(rows)
    for name, want, have in (
        ("features", baseline.features, observed.features),
        ("results", baseline.results, observed.results),
    ):
        if want - have:
            verdict.problem(f"lost: {len(want - have)} {name} rows")
        if have - want:
            verdict.problem(f"unexpected: {len(have - want)} {name} rows")


def _by_key(rows: Iterable[EvaluationRow]) -> dict[tuple[str, str], list[EvaluationRow]]:
    grouped: dict[tuple[str, str], list[EvaluationRow]] = defaultdict(list)
    for row in rows:
        grouped[row.key].append(row)
    return grouped


def _same(want: EvaluationRow, got: Sequence[EvaluationRow]) -> bool:
    first = got[0]
    if (first.outcome, first.home_goals, first.away_goals) != (
        want.outcome,
        want.home_goals,
        want.away_goals,
    ):
        return False
    return (
        not want.model_id.startswith(REFERENCE_PREFIX) or first.evaluation_id == want.evaluation_id
    )


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
