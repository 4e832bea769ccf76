"""The reconciler's learn feed for as-of-correct backfills (docs/BACKFILL.md, section 3).

In a backfill the scorer is to wait for the learner's versions, so the learner must not wait
for the scorer's predictions: the reconciler sends each backfill result to every model as soon
as the match's features and result are both in its ledger, as a :class:`LearnItem` keyed by
model id. After each batch with ticks it forwards, per input partition and backfill, how far
in event time it has sent every learn item (:class:`LearnMarks`), to every partition of the
learn feed: the learner's time line takes a result only once every reconciler partition's mark
has passed its final whistle. Pure: the agent (``agents/reconciler.py``) does the I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from datetime import datetime

import msgspec

from agents.backfill_rules import Watermarks
from agents.reconciler_rules import MatchLedger
from models.features import RESULT_DELAY, model_input
from schemas.events import LearnItem

_NAMESPACE = uuid.UUID("0c6f3a8e-5d47-4b1e-8f2a-9e3b7d5c1a64")
SOURCE_PREFIX = "reconciler:"
"""Sources of the learn feed's ticks: ``reconciler:<p>``, one per reconciler input partition
(``match-features``, ``predictions`` and ``match-results`` are co-partitioned)."""


def learn_item_id(model_id: str, match_id: str, home_goals: int, away_goals: int) -> str:
    """Deterministic id of one model's learn item for one score of a match: a batch sent again
    (a crash before the ack) repeats its ids, and the learner learns each once."""
    name = f"learn|{model_id}|{match_id}|{home_goals}-{away_goals}"
    digest = hashlib.sha1(_NAMESPACE.bytes + name.encode(), usedforsecurity=False)
    return str(uuid.UUID(bytes=digest.digest()[:16], version=5))


def pairing(ledger: MatchLedger) -> tuple[int, int] | None:
    """The score a backfill ledger's learn items are for: features issued by a backfill and a
    result both known; None while either is missing, and for a live match."""
    features, result = ledger.features, ledger.result
    if features is None or features.backfill is None or result is None:
        return None
    return result.home_goals, result.away_goals


def learn_items(
    ledger: MatchLedger, model_ids: Iterable[str], *, before: tuple[int, int] | None
) -> list[LearnItem]:
    """The learn items a batch owes for one ledger: one per model once the ledger's
    :func:`pairing` exists and differs from ``before`` (the pairing the ledger had when the
    batch took it). A repeated event leaves the pairing as it was and sends nothing; a
    corrected score sends items with new ids."""
    features, result = ledger.features, ledger.result
    score = pairing(ledger)
    if score is None or score == before or features is None or result is None:
        return []
    backfill = features.backfill
    if backfill is None:
        return []
    inputs = model_input(features)
    return [
        LearnItem(
            item_id=learn_item_id(model_id, result.match_id, *score),
            model_id=model_id,
            match_id=result.match_id,
            league=result.league,
            kickoff=result.kickoff,
            final_whistle=result.kickoff + RESULT_DELAY,
            home_goals=result.home_goals,
            away_goals=result.away_goals,
            outcome=result.outcome,
            inputs=inputs,
            backfill=backfill,
        )
        for model_id in sorted(model_ids)
    ]


class LearnMarks(msgspec.Struct, kw_only=True):
    """How far one reconciler input partition has sent every learn item of each backfill.

    Two inputs per backfill: the replay's ticks on the partition's ``match-results`` (every
    result with a final whistle before the tick has arrived) and the features agent's on its
    ``match-features``, one per ``league-inputs`` partition (every fixture kicking off before
    the mark has been issued; their minimum, :class:`Watermarks`). A result whose final
    whistle W is before the results mark and whose kickoff W - ``RESULT_DELAY`` is before the
    features mark has both halves in its ledger, so its learn items are sent: the partition's
    mark is ``min(results, features + RESULT_DELAY)``, unknown until both have spoken. A
    fixture that was dead-lettered holds nothing back: its result simply waits, never learned
    in a backfill. Ticks of one partition arrive after the records they vouch for (each
    producer sends a tick after its records are acknowledged), so the mark never claims an item
    not yet taken. Stored in the ``ledgers`` table under the partition's marks key
    (:func:`agents.backfill_rules.marks_key`) before the ack, as the features agent stores its
    marks: a restart must not wait for every source to speak again.
    """

    results: dict[str, datetime] = {}
    features: dict[str, dict[str, datetime]] = {}

    def observe_results(self, backfill: str, at: datetime) -> bool:
        """A ``match-results`` tick at ``at``; whether it raised the mark's input."""
        held = self.results.get(backfill)
        if held is not None and at <= held:
            return False
        self.results[backfill] = at
        return True

    def observe_features(
        self, backfill: str, source: str, at: datetime, sources: frozenset[str]
    ) -> bool:
        """A ``match-features`` tick of ``source`` (``league-inputs:<p>``) at ``at``; whether
        it raised the mark's input (False for an older one and for a source the deployment
        does not have)."""
        if source not in sources:
            return False
        seen = self.features.setdefault(backfill, {})
        held = seen.get(source)
        if held is not None and at <= held:
            return False
        seen[source] = at
        return True

    def through(self, backfill: str, sources: frozenset[str]) -> datetime | None:
        """Every learn item of ``backfill`` with a final whistle before it has been sent."""
        results = self.results.get(backfill)
        if results is None:
            return None
        marks = Watermarks(sources)
        features = None
        for source, at in self.features.get(backfill, {}).items():
            if source in sources:
                features = marks.observe(source, at)
        if features is None:
            return None
        return min(results, features + RESULT_DELAY)


_DECODER = msgspec.json.Decoder(LearnMarks)
_ENCODER = msgspec.json.Encoder()


def encode_marks(marks: LearnMarks) -> bytes:
    return _ENCODER.encode(marks)


def decode_marks(raw: bytes | None) -> LearnMarks:
    return LearnMarks() if raw is None else _DECODER.decode(raw)


def features_sources(partitions: int) -> frozenset[str]:
    """The sources of the features agent's ticks (``league-inputs:<p>``)."""
    return frozenset(f"league-inputs:{p}" for p in range(partitions))
