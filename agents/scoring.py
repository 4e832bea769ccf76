"""Scoring rules: one match's features in, one prediction per active model out (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from agents.reconciliation import prediction_id
from models.features import model_input
from models.registry import RegisteredModel
from schemas.events import OUTCOMES, MatchFeatures, Prediction, Probabilities


def normalised(probabilities: dict[str, float]) -> Probabilities:
    """Probabilities that sum to one exactly enough for the schema (models already clip)."""
    total = sum(probabilities[o] for o in OUTCOMES)
    home, draw = probabilities["H"] / total, probabilities["D"] / total
    return Probabilities(H=home, D=draw, A=max(0.0, 1.0 - home - draw))


def predict(
    features: MatchFeatures, models: Sequence[RegisteredModel], *, now: datetime
) -> list[Prediction]:
    """One prediction per model; the champion's is marked; ids are deterministic."""
    x = model_input(features)
    predictions = []
    for entry in models:
        probabilities = normalised(entry.model.predict_proba_one(x))
        as_dict = probabilities.as_dict()
        predicted = max(OUTCOMES, key=lambda outcome: as_dict[outcome])
        predictions.append(
            Prediction(
                prediction_id=prediction_id(features.match_id, entry.model_id, entry.version),
                match_id=features.match_id,
                league=features.league,
                kickoff=features.kickoff,
                model_id=entry.model_id,
                model_version=entry.version,
                is_champion=entry.status == "champion",
                probabilities=probabilities,
                predicted=predicted,
                confidence=as_dict[predicted],
                created_at=now,
            )
        )
    return predictions
