"""Valid example events shared by the schema tests: one match, its result, a prediction and
its evaluation (each test module builds its own features around ``MATCH_ID``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from schemas.events import Evaluation, MatchResult, Prediction, Probabilities

KICKOFF = datetime(2024, 8, 16, 19, 0, tzinfo=UTC)
LATER = KICKOFF + timedelta(hours=2, minutes=5)
MATCH_ID = "E0-2024-08-16-MUN-FUL"

RESULT = MatchResult(
    match_id=MATCH_ID,
    league="E0",
    kickoff=KICKOFF,
    home_goals=1,
    away_goals=0,
    outcome="H",
    half_time_home_goals=0,
    half_time_away_goals=0,
)

PREDICTION = Prediction(
    prediction_id="pred-7f3c2a",
    match_id=MATCH_ID,
    league="E0",
    kickoff=KICKOFF,
    model_id="logreg",
    model_version=3,
    is_champion=True,
    probabilities=Probabilities(H=0.55, D=0.25, A=0.2),
    predicted="H",
    confidence=0.55,
    created_at=KICKOFF - timedelta(hours=1),
)

EVALUATION = Evaluation(
    evaluation_id="eval-91b0",
    prediction_id=PREDICTION.prediction_id,
    match_id=MATCH_ID,
    league="E0",
    kickoff=KICKOFF,
    model_id="logreg",
    model_version=3,
    is_champion=True,
    probabilities=PREDICTION.probabilities,
    predicted="H",
    outcome="H",
    home_goals=1,
    away_goals=0,
    hit=True,
    confidence=0.55,
    log_loss=-math.log(0.55),
    brier=0.45**2 + 0.25**2 + 0.2**2,
    rps=((0.55 - 1) ** 2 + (0.8 - 1) ** 2) / 2,
    evaluated_at=LATER,
)
