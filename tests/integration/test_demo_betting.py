"""The demo report's betting table, read from a real evaluation log in PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from models.betting import BetLog, table
from models.metrics import normalised_implied
from schemas.codec import encode
from schemas.events import MatchFeatures, Odds
from streams.cli.demo_report import collect, markdown
from tests.integration.conftest import BASE

pytestmark = pytest.mark.integration

MATCHES = [
    # match id, kickoff, opening, closing (None: no closing line), outcome
    ("x:m1", datetime(2020, 9, 12, 15, tzinfo=UTC), (2.2, 3.0, 4.0), (2.0, 3.2, 4.4), "H"),
    ("x:m2", datetime(2020, 9, 19, 15, tzinfo=UTC), (2.5, 3.2, 3.0), None, "A"),
]
MODEL = {"x:m1": (0.5, 0.3, 0.2), "x:m2": (0.3, 0.3, 0.4)}


async def _insert(conn: asyncpg.Connection, model_id: str, match_id: str, kickoff: datetime,
                  p: tuple[float, float, float], outcome: str) -> None:  # fmt: skip
    prediction_id = f"{model_id}:{match_id}"
    predicted = "HDA"[p.index(max(p))]
    await conn.execute(
        """INSERT INTO predictions (prediction_id, match_id, league, kickoff, model_id,
               model_version, is_champion, p_home, p_draw, p_away, predicted, confidence,
               created_at)
           VALUES ($1, $2, 'x', $3, $4, 1, false, $5, $6, $7, $8, $9, $3)""",
        prediction_id, match_id, kickoff, model_id, *p, predicted, max(p),
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO evaluations (evaluation_id, prediction_id, match_id, league, kickoff,
               model_id, model_version, is_champion, predicted, outcome, home_goals, away_goals,
               hit, confidence, log_loss, brier, rps, evaluated_at)
           VALUES ($1, $1, $2, 'x', $3, $4, 1, false, $5, $6, 1, 0, $7, $8, 1.0, 0.5, 0.2, $3)""",
        prediction_id, match_id, kickoff, model_id, predicted, outcome, predicted == outcome,
        max(p),
    )  # fmt: skip


async def test_betting_table_from_predictions_and_the_features_odds(
    db: asyncpg.Pool, fresh_database: str
) -> None:
    """m1 backs H at 2.2 (EV 0.1, won) and A at 3.0 (EV 0.2, won): ROI (1.2 + 2.0) / 2, CLV on
    the one bet with a closing line; the opening line never bets; its favourite H at 2.2 won,
    H at 2.5 lost: ROI 0.1. The Markdown shows the same rows."""
    async with db.acquire() as conn:
        for match_id, kickoff, opening, closing, outcome in MATCHES:
            features = MatchFeatures(
                match_id=match_id, league="x", season="2020-2021", kickoff=kickoff,
                home_team=f"{match_id}h", away_team=f"{match_id}a", odds_open=Odds(*opening),
                odds_close=None if closing is None else Odds(*closing),
            )  # fmt: skip
            await conn.execute(
                """INSERT INTO match_features (match_id, league, season, kickoff, home_team,
                       away_team, payload) VALUES ($1, 'x', '2020-2021', $2, $3, $4, $5::jsonb)""",
                match_id, kickoff, features.home_team, features.away_team,
                encode(features).decode(),
            )  # fmt: skip
            implied = normalised_implied(Odds(*opening)).probabilities
            market = (implied["H"], implied["D"], implied["A"])
            await _insert(conn, "m1", match_id, kickoff, MODEL[match_id], outcome)
            await _insert(conn, "market-open", match_id, kickoff, market, outcome)
    report = await collect(BASE.replace(database_url=fresh_database))
    figures = dict(table(BetLog.from_rows(report.bets)))
    assert list(figures) == ["m1", "market-open", "market-open-favourite"]
    assert figures["m1"].bets == 2
    assert figures["m1"].roi == pytest.approx((1.2 + 2.0) / 2)
    close_h = normalised_implied(Odds(2.0, 3.2, 4.4)).probabilities["H"]
    assert figures["m1"].clv == pytest.approx(2.2 * close_h - 1)
    assert figures["market-open"].bets == 0
    assert figures["market-open-favourite"].bets == 2
    assert figures["market-open-favourite"].roi == pytest.approx(0.1)
    text = markdown(report)
    assert "## Betting at the opening odds" in text
    assert "| m1 | 2 | 1.6000 | 1.2000 .. 2.0000 |" in text
