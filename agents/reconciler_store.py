"""The evaluation log's tables, owned by the reconciler: match_features, results, predictions
and evaluations. Writes come in batches, each one transaction of upserts on deterministic ids,
so re-delivered events leave the database exactly as it was; the reads other agents and the
replay tool make of these tables are here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.reconciler_rules import MatchLedger, counted_predictions
from schemas.codec import decode, encode
from schemas.events import Evaluation, MatchFeatures, MatchResult, Prediction, Probabilities


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
                       confidence, created_at, made_at, features_revision)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
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
                        p.made_at,
                        p.features_revision,
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


async def evaluation_history(conn: Any, model_id: str, before: datetime) -> list[Any]:
    """A model's current evaluations before ``before``, in the order they were made (the decay
    monitor's warm-up), with the match's opening-line probabilities (``open_p_H/D/A`` of its
    stored features; NULL without them) for the monitor's paired test."""
    rows: list[Any] = await conn.fetch(
        """SELECT e.evaluation_id, e.match_id, e.league, e.outcome, e.log_loss, e.hit,
                  (f.payload->'features'->>'open_p_H')::float8 AS open_p_h,
                  (f.payload->'features'->>'open_p_D')::float8 AS open_p_d,
                  (f.payload->'features'->>'open_p_A')::float8 AS open_p_a
           FROM evaluations e LEFT JOIN match_features f ON f.match_id = e.match_id
           WHERE e.model_id = $1 AND e.superseded_by IS NULL AND e.evaluated_at < $2
           ORDER BY e.evaluated_at, e.kickoff, e.evaluation_id""",
        model_id,
        before,
    )
    return rows


async def bet_rows(conn: Any) -> list[Any]:
    """Per current evaluation, in kickoff order: model, match, kickoff, outcome, its
    prediction and the match's opening and closing odds (what ``models.betting.table`` reads:
    the demo's report and the console's betting panel)."""
    return list(
        await conn.fetch(
            """SELECT e.model_id, e.match_id, e.kickoff, e.outcome,
                      p.p_home, p.p_draw, p.p_away,
                      (f.payload->'odds_open'->>'home')::float8 AS open_home,
                      (f.payload->'odds_open'->>'draw')::float8 AS open_draw,
                      (f.payload->'odds_open'->>'away')::float8 AS open_away,
                      (f.payload->'odds_close'->>'home')::float8 AS close_home,
                      (f.payload->'odds_close'->>'draw')::float8 AS close_draw,
                      (f.payload->'odds_close'->>'away')::float8 AS close_away
               FROM evaluations e
               JOIN predictions p ON p.prediction_id = e.prediction_id
               JOIN match_features f ON f.match_id = e.match_id
               WHERE e.superseded_by IS NULL ORDER BY e.kickoff, e.match_id"""
        )
    )


async def evaluation_log_mark(conn: Any) -> tuple[int, datetime | None]:
    """How many evaluations there are and when the newest was written: unchanged, nothing
    derived from the evaluation log needs computing again (a corrected result writes a new
    evaluation, so it moves both)."""
    row = await conn.fetchrow("SELECT count(*) AS n, max(evaluated_at) AS at FROM evaluations")
    return int(row["n"]), row["at"]


async def stored_inputs(conn: Any) -> list[tuple[str, str, str]]:
    """Every stored features and result event as (kind, match id, JSON payload), for a replay
    from the database (``tipstream replay --from-db``)."""
    features = await conn.fetch(
        "SELECT match_id, payload::text FROM match_features ORDER BY match_id"
    )
    results = await conn.fetch("SELECT match_id, payload::text FROM results ORDER BY match_id")
    return [("features", r[0], r[1]) for r in features] + [("result", r[0], r[1]) for r in results]


async def registered_versions(conn: Any, pairs: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of the (model id, version) pairs are stored in the registry."""
    rows = await conn.fetch(
        """SELECT model_id, version FROM model_versions
           WHERE (model_id, version) IN (SELECT * FROM unnest($1::text[], $2::int[]))""",
        [model_id for model_id, _ in pairs],
        [version for _, version in pairs],
    )
    return {(row["model_id"], row["version"]) for row in rows}


async def knew_results(
    conn: Any, predictions: Sequence[tuple[str, str, int]]
) -> set[tuple[str, str, int]]:
    """Which (model id, match id, version) predictions were made by a version that had
    learned that match's result (learned on top of an earlier version)."""
    rows = await conn.fetch(
        """SELECT DISTINCT p.model_id, p.match_id, p.version
           FROM unnest($1::text[], $2::text[], $3::int[]) AS p(model_id, match_id, version)
           JOIN learned_evaluations l
             ON l.model_id = p.model_id AND l.match_id = p.match_id
            AND l.learned_after_version < p.version""",
        [model_id for model_id, _, _ in predictions],
        [match_id for _, match_id, _ in predictions],
        [version for _, _, version in predictions],
    )
    return {(row["model_id"], row["match_id"], row["version"]) for row in rows}


async def stored_ledgers(conn: Any, match_ids: Sequence[str]) -> dict[str, MatchLedger]:
    """The ledgers of those matches the evaluation log knows, rebuilt from it: features,
    result, the predictions that counted and each one's current evaluation.

    A ledger retired from the table (or lost with it) is rebuilt this way when an event of
    its match arrives again, so a correction is applied as it would have been, a repeated
    event changes nothing, and a model's second prediction is still not evaluated.
    """
    ids = list(match_ids)
    ledgers: dict[str, MatchLedger] = {}

    def ledger(match_id: str) -> MatchLedger:
        found = ledgers.get(match_id)
        if found is None:
            found = ledgers[match_id] = MatchLedger(predictions={}, evaluated={}, unfed=[])
        return found

    for row in await conn.fetch(
        """SELECT match_id, payload::text AS payload FROM match_features
           WHERE match_id = ANY($1::text[])""",
        ids,
    ):
        ledger(row["match_id"]).features = decode(row["payload"].encode(), MatchFeatures)
    for row in await conn.fetch(
        "SELECT match_id, payload::text AS payload FROM results WHERE match_id = ANY($1::text[])",
        ids,
    ):
        ledger(row["match_id"]).result = decode(row["payload"].encode(), MatchResult)
    stored: dict[str, list[Prediction]] = {}
    for row in await conn.fetch(
        """SELECT prediction_id, match_id, league, kickoff, model_id, model_version,
                  is_champion, p_home, p_draw, p_away, predicted, confidence, created_at,
                  made_at, features_revision
           FROM predictions WHERE match_id = ANY($1::text[])
           ORDER BY created_at, features_revision, prediction_id""",
        ids,
    ):
        stored.setdefault(row["match_id"], []).append(
            Prediction(
                prediction_id=row["prediction_id"],
                match_id=row["match_id"],
                league=row["league"],
                kickoff=row["kickoff"],
                model_id=row["model_id"],
                model_version=row["model_version"],
                is_champion=row["is_champion"],
                probabilities=Probabilities(H=row["p_home"], D=row["p_draw"], A=row["p_away"]),
                predicted=row["predicted"],
                confidence=row["confidence"],
                created_at=row["created_at"],
                made_at=row["made_at"],
                features_revision=row["features_revision"],
            )
        )
    for match_id, predictions in stored.items():
        ledger(match_id).predictions = counted_predictions(predictions)
    for row in await conn.fetch(
        """SELECT match_id, prediction_id, evaluation_id FROM evaluations
           WHERE match_id = ANY($1::text[]) AND superseded_by IS NULL""",
        ids,
    ):
        if row["prediction_id"] in ledger(row["match_id"]).predictions:
            ledger(row["match_id"]).evaluated[row["prediction_id"]] = row["evaluation_id"]
    return ledgers
