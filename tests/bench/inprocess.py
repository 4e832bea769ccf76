"""In-process figures (no Kafka): what one event costs the scorer, and a learn step.

``score_us`` is the scorer's own work per feature event, on the scorer's code path and in its
batches: decode and validate the bytes, predict with every active model, encode the
predictions, then add them to the rolling estimates before results (``estimates_us``, after the
batch is published: it delays the next batch, not this one's predictions). What remains of a
worker's time per event is Kafka and Faust.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agents import estimates_rules
from agents.loop import BATCH_SIZE
from agents.scorer import observe_estimates
from agents.scorer_rules import predict, predict_many
from models import catalog
from models.catalog import REFERENCE_MODEL_IDS
from models.features import model_input
from schemas.codec import decode, encode
from schemas.events import MatchFeatures, MatchResult
from tests.bench.workload import default_models


@dataclass(frozen=True)
class ScoringCost:
    """Microseconds per feature event, by step."""

    events: int
    decode_us: float
    predict_us: float
    encode_us: float
    estimates_us: float

    @property
    def total_us(self) -> float:
        return self.decode_us + self.predict_us + self.encode_us + self.estimates_us


def scoring_cost(raw_features: Sequence[bytes]) -> ScoringCost:
    """Time the scorer's steps over ``raw_features`` in batches of the agents' size."""
    models = default_models()
    estimates = estimates_rules.ModelEstimates(silent=REFERENCE_MODEL_IDS)  # as ActiveModels
    decode_s = predict_s = encode_s = estimates_s = 0.0
    for start in range(0, len(raw_features), BATCH_SIZE):
        batch = raw_features[start : start + BATCH_SIZE]
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        records = [decode(raw, MatchFeatures) for raw in batch]
        t1 = time.perf_counter()
        predictions = predict_many(records, models, now=now)
        t2 = time.perf_counter()
        for prediction in predictions:
            encode(prediction)
        t3 = time.perf_counter()
        observe_estimates(estimates, records, predictions)
        t4 = time.perf_counter()
        decode_s, predict_s, encode_s = decode_s + t1 - t0, predict_s + t2 - t1, encode_s + t3 - t2
        estimates_s += t4 - t3
    n = max(len(raw_features), 1)
    return ScoringCost(len(raw_features), decode_s / n * 1e6, predict_s / n * 1e6,
                       encode_s / n * 1e6, estimates_s / n * 1e6)  # fmt: skip


def scoring_difference(
    raw_features: Sequence[bytes], teach: Sequence[tuple[MatchFeatures, MatchResult]]
) -> float:
    """Largest probability difference between the batch path and ``predict``, event by event.

    Everything else (ids, order, champion flag, predicted outcome) must be equal. Probabilities
    may differ in the last bit: BLAS rounds a product of 500 rows and of one row differently.
    """
    models = default_models()
    for features, result in teach:  # weights away from zero, as a running worker's are
        for entry in models:
            entry.model.learn_one(model_input(features), result.outcome)
    now = datetime.now(UTC)
    records = [decode(raw, MatchFeatures) for raw in raw_features[:BATCH_SIZE]]
    batch = predict_many(records, models, now=now)
    one_by_one = [p for r in records for p in predict(r, models, now=now)]
    worst = 0.0
    for a, b in zip(batch, one_by_one, strict=True):
        if (a.prediction_id, a.model_id, a.is_champion, a.predicted) != (
            b.prediction_id,
            b.model_id,
            b.is_champion,
            b.predicted,
        ):
            raise AssertionError(f"batch scoring differs: {a} != {b}")
        for outcome in ("H", "D", "A"):
            worst = max(worst, abs(getattr(a.probabilities, outcome) -
                                   getattr(b.probabilities, outcome)))  # fmt: skip
    return worst


def learn_rate(matches: Sequence[tuple[MatchFeatures, MatchResult]]) -> float:
    """Learn steps per second of the default champion (every result, weight 1)."""
    model = catalog.create(catalog.DEFAULT_MODEL_ID)
    examples = [(model_input(f), r.outcome) for f, r in matches]
    started = time.perf_counter()
    for x, y in examples:
        model.learn_one(x, y)
    elapsed = time.perf_counter() - started
    return len(examples) / elapsed if elapsed > 0 else 0.0
