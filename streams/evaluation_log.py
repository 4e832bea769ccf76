"""Writes of the evaluation log: features, results, predictions and evaluations, batched.

Every statement is an upsert on a deterministic id, and one batch is one transaction, so
re-delivered events leave the database exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.codec import encode
from schemas.events import Evaluation, MatchFeatures, MatchResult, Prediction


@dataclass
class LogBatch:
    """Rows of one batch of events, in the order they must be applied."""

    features: dict[str, MatchFeatures] = field(default_factory=dict)
    results: dict[str, MatchResult] = field(default_factory=dict)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    # evaluation id -> id of the evaluation that replaced it (None: it is current)
    superseded_by: dict[str, str | None] = field(default_factory=dict)

    def add_evaluation(self, evaluation: Evaluation) -> None:
        self.evaluations[evaluation.evaluation_id] = evaluation
        self.superseded_by[evaluation.evaluation_id] = None

    def supersede(self, old: str, new: str) -> None:
        self.superseded_by[old] = new

    def __bool__(self) -> bool:
        return bool(
            self.features
            or self.results
            or self.predictions
            or self.evaluations
            or self.superseded_by
        )


async def write(conn: Any, batch: LogBatch) -> None:
    """Apply one batch in one transaction."""
    async with conn.transaction():
        if batch.features:
            await conn.executemany(
                """INSERT INTO match_features (match_id, league, season, kickoff, home_team,
                                               away_team, payload)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
                   ON CONFLICT (match_id) DO UPDATE SET payload = EXCLUDED.payload
                   WHERE match_features.payload <> EXCLUDED.payload""",
                [
                    (
                        f.match_id,
                        f.league,
                        f.season,
                        f.kickoff,
                        f.home_team,
                        f.away_team,
                        encode(f).decode(),
                    )
                    for f in batch.features.values()
                ],
            )
        if batch.results:
            await conn.executemany(
                """INSERT INTO results (match_id, league, kickoff, home_goals, away_goals,
                                        outcome, payload)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
                   ON CONFLICT (match_id) DO UPDATE
                   SET home_goals = EXCLUDED.home_goals, away_goals = EXCLUDED.away_goals,
                       outcome = EXCLUDED.outcome, payload = EXCLUDED.payload,
                       revision = results.revision + 1
                   WHERE (results.home_goals, results.away_goals)
                         <> (EXCLUDED.home_goals, EXCLUDED.away_goals)""",
                [
                    (
                        r.match_id,
                        r.league,
                        r.kickoff,
                        r.home_goals,
                        r.away_goals,
                        r.outcome,
                        encode(r).decode(),
                    )
                    for r in batch.results.values()
                ],
            )
        if batch.predictions:
            await conn.executemany(
                """INSERT INTO predictions (prediction_id, match_id, league, kickoff, model_id,
                       model_version, is_champion, p_home, p_draw, p_away, predicted,
                       confidence, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                   ON CONFLICT (prediction_id) DO NOTHING""",
                [
                    (
                        p.prediction_id,
                        p.match_id,
                        p.league,
                        p.kickoff,
                        p.model_id,
                        p.model_version,
                        p.is_champion,
                        p.probabilities.H,
                        p.probabilities.D,
                        p.probabilities.A,
                        p.predicted,
                        p.confidence,
                        p.created_at,
                    )
                    for p in batch.predictions.values()
                ],
            )
        if batch.evaluations:
            await conn.executemany(
                """INSERT INTO evaluations (evaluation_id, prediction_id, match_id, league,
                       kickoff, model_id, model_version, is_champion, predicted, outcome,
                       home_goals, away_goals, hit, confidence, log_loss, brier, rps,
                       supersedes, superseded_by, evaluated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                           $16, $17, $18, $19, $20)
                   ON CONFLICT (evaluation_id) DO UPDATE
                   SET superseded_by = EXCLUDED.superseded_by""",
                [
                    (
                        e.evaluation_id,
                        e.prediction_id,
                        e.match_id,
                        e.league,
                        e.kickoff,
                        e.model_id,
                        e.model_version,
                        e.is_champion,
                        e.predicted,
                        e.outcome,
                        e.home_goals,
                        e.away_goals,
                        e.hit,
                        e.confidence,
                        e.log_loss,
                        e.brier,
                        e.rps,
                        e.supersedes,
                        batch.superseded_by.get(e.evaluation_id),
                        e.evaluated_at,
                    )
                    for e in batch.evaluations.values()
                ],
            )
        older = [
            (new, old) for old, new in batch.superseded_by.items() if old not in batch.evaluations
        ]
        if older:
            await conn.executemany(
                "UPDATE evaluations SET superseded_by = $1 WHERE evaluation_id = $2", older
            )
