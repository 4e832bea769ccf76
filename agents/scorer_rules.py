"""Scoring rules: match features in, one prediction per active model out (pure).

:func:`predict_many` is the scorer's path: one ``predict_proba_many`` call per model over the
whole batch (one matrix product, not one per match: ~15x fewer numpy calls at 500 matches),
then the predictions in the order :func:`predict` gives them, match by match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from agents.reconciler_rules import _NAMESPACE, prediction_id, uuid5_string
from agents.registry import RegisteredModel
from models.features import model_input
from schemas.events import OUTCOMES, MatchFeatures, Outcome, Prediction, Probabilities


def normalised(probabilities: dict[str, float]) -> Probabilities:
    """Probabilities that sum to one exactly enough for the schema (models already clip)."""
    total = sum(probabilities[o] for o in OUTCOMES)
    home, draw = probabilities["H"] / total, probabilities["D"] / total
    return Probabilities(H=home, D=draw, A=max(0.0, 1.0 - home - draw))


def _normalised_row(home: float, draw: float, away: float) -> Probabilities:
    """:func:`normalised` of one row of ``predict_proba_many``, the same float operations."""
    total = 0 + home + draw + away  # as sum() adds: from 0, in H, D, A order
    home, draw = home / total, draw / total
    return Probabilities(H=home, D=draw, A=max(0.0, 1.0 - home - draw))


def _predicted(probabilities: Probabilities) -> Outcome:
    """The most likely outcome; ties go to the first of H, D, A (as ``max`` over OUTCOMES)."""
    home, draw, away = probabilities.H, probabilities.D, probabilities.A
    if home >= draw and home >= away:
        return "H"
    return "D" if draw >= away else "A"


def predict(
    features: MatchFeatures, models: Sequence[RegisteredModel], *, now: datetime
) -> list[Prediction]:
    """One prediction per model; the champion's is marked; ids are deterministic."""
    x = model_input(features)
    predictions = []
    for entry in models:
        probabilities = normalised(entry.model.predict_proba_one(x))
        pid = prediction_id(features.match_id, entry.model_id, entry.version, features.revision)
        predictions.append(_prediction(features, entry, probabilities, pid, now))
    return predictions


def predict_many(
    batch: Sequence[MatchFeatures], models: Sequence[RegisteredModel], *, now: datetime
) -> list[Prediction]:
    """``[p for f in batch for p in predict(f, models, now=now)]``, vectorised per model."""
    if not batch:
        return []
    xs = [model_input(features) for features in batch]
    # .tolist(): Python floats, so the per-row arithmetic below is predict()'s, operation for
    # operation (numpy scalars would be ~3x slower to index and compare).
    columns = [entry.model.predict_proba_many(xs).tolist() for entry in models]
    ids = [_PredictionIds(entry) for entry in models]
    predictions = []
    for row, features in enumerate(batch):
        match_id = features.match_id
        for entry, rows, make_id in zip(models, columns, ids, strict=True):
            probabilities = _normalised_row(*rows[row])
            pid = make_id(match_id, features.revision)
            predictions.append(_prediction(features, entry, probabilities, pid, now))
    return predictions


def _prediction(
    features: MatchFeatures,
    entry: RegisteredModel,
    probabilities: Probabilities,
    prediction_id: str,
    now: datetime,
) -> Prediction:
    """The prediction record of one model for one match."""
    predicted = _predicted(probabilities)
    return Prediction(
        prediction_id=prediction_id,
        match_id=features.match_id,
        league=features.league,
        kickoff=features.kickoff,
        model_id=entry.model_id,
        model_version=entry.version,
        is_champion=entry.status == "champion",
        probabilities=probabilities,
        predicted=predicted,
        confidence=getattr(probabilities, predicted),
        created_at=now,
        made_at=features.issued_at,
        features_revision=features.revision,
    )


class _PredictionIds:
    """:func:`agents.reconciler_rules.prediction_id` of one model version, ~4x faster.

    The same UUID 5 (SHA-1 of namespace and name; version and variant bits set as RFC 4122
    says), but the common prefix is hashed once per batch and ``uuid.UUID`` (an int round trip,
    ~60% of the cost) is skipped. ``prediction_id`` stays the definition: the bench checks
    ``predict_many`` against ``predict`` prediction for prediction.
    """

    def __init__(self, entry: RegisteredModel) -> None:
        self.prefix = hashlib.sha1(_NAMESPACE.bytes + b"prediction|", usedforsecurity=False)
        self.suffix = f"|{entry.model_id}|{entry.version}".encode()

    def __call__(self, match_id: str, revision: int = 0) -> str:
        digest = self.prefix.copy()
        digest.update(match_id.encode())
        digest.update(self.suffix)
        if revision:
            digest.update(f"|r{revision}".encode())
        return uuid5_string(digest)
