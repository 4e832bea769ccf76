"""The champion/challenger agent's SQL: the gate's paired sample from the evaluation log, and the
gate's reports (``promotion_reports``, ``promotion_report_history``: migration 010).

A challenger is judged on its *latest fit* only: a batch model (a refit registered as a new
version) on the evaluations of its newest version, a model that learns online (its versions one
lineage, :data:`models.catalog.ONLINE_KINDS`) on every version since its last rollback in time
(a version whose parent is not the one before it) or since v0. A new fit starts with no matches,
so it is never promoted on the record of the version it replaced.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agents.gate_rules import GateReport
from models.catalog import ONLINE_KINDS

_BASE = """
    base AS (
        SELECT m.model_id,
               CASE WHEN m.kind = ANY($1::text[]) THEN
                   coalesce(max(v.version) FILTER (
                       WHERE v.parent_version IS NULL OR v.parent_version <> v.version - 1), 0)
               ELSE max(v.version) END AS base_version
        FROM models m JOIN model_versions v USING (model_id)
        WHERE m.status = 'challenger'
        GROUP BY m.model_id, m.kind
    )"""
"""Each challenger's first version of its latest fit ($1: the online kinds)."""

_GATE_ROWS = f"""
    WITH champion AS (SELECT model_id FROM models WHERE status = 'champion'), {_BASE},
    pairs AS (
        SELECT c.model_id AS challenger, h.model_id AS champion, b.base_version, c.match_id,
               c.league, c.kickoff, c.outcome, c.prediction_id,
               c.log_loss AS challenger_loss, h.log_loss AS champion_loss
        FROM base b
        JOIN evaluations c ON c.model_id = b.model_id AND c.model_version >= b.base_version
                          AND c.superseded_by IS NULL
        JOIN evaluations h ON h.match_id = c.match_id AND h.superseded_by IS NULL
        JOIN champion ON h.model_id = champion.model_id
    )
    SELECT s.challenger, s.champion, s.base_version, s.match_id, s.league, s.outcome,
           s.challenger_loss, s.champion_loss, p.p_home, p.p_draw, p.p_away,
           (f.payload->'features'->>'open_p_H')::float8 AS open_p_h,
           (f.payload->'features'->>'open_p_D')::float8 AS open_p_d,
           (f.payload->'features'->>'open_p_A')::float8 AS open_p_a
    FROM pairs s
    JOIN predictions p ON p.prediction_id = s.prediction_id
    LEFT JOIN match_features f ON f.match_id = s.match_id
    ORDER BY s.challenger, s.kickoff, s.match_id"""


async def gate_rows(conn: Any) -> list[dict[str, Any]]:
    """For each challenger, every match evaluated by its latest fit that the champion has a
    current evaluation of too (all of them, not the newest few: the gate's always-valid test
    needs a sample that only grows): both log losses, the challenger's probabilities, the
    outcome, the league and the opening line; ordered by challenger, then kickoff."""
    rows = await conn.fetch(_GATE_ROWS, list(ONLINE_KINDS))
    return [dict(row) for row in rows]


async def challengers(conn: Any) -> list[tuple[str, int]]:
    """Every challenger with the version its sample starts at (the rule of :func:`gate_rows`),
    so one without any shared match yet gets a report too."""
    rows = await conn.fetch(
        f"WITH {_BASE} SELECT model_id, base_version FROM base ORDER BY model_id",
        list(ONLINE_KINDS),
    )
    return [(str(row["model_id"]), int(row["base_version"])) for row in rows]


def _document(report: GateReport, version: int) -> str:
    return json.dumps(report.as_json() | {"challenger_version": version}, sort_keys=True)


async def save_reports(
    conn: Any, reports: list[tuple[GateReport, int, str]], *, now: datetime
) -> None:
    """Store each (report, challenger version, action): the latest per (challenger, champion)
    rewritten only when its figures or action changed; and per challenger version one history
    row per decision: the last hold, and the first proposal (the moment the gate opened,
    marked promoted if it was). A re-run of the same check stores nothing new."""
    if not reports:
        return
    values = [
        (
            r.challenger,
            r.champion,
            version,
            r.matches,
            r.decision,
            action,
            _document(r, version),
            now,
        )
        for r, version, action in reports
    ]
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO promotion_reports (challenger, champion, challenger_version, matches,
                   decision, action, report, checked_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
               ON CONFLICT (challenger, champion) DO UPDATE
               SET challenger_version = EXCLUDED.challenger_version,
                   matches = EXCLUDED.matches, decision = EXCLUDED.decision,
                   action = EXCLUDED.action, report = EXCLUDED.report,
                   checked_at = EXCLUDED.checked_at
               WHERE (promotion_reports.report, promotion_reports.action)
                     IS DISTINCT FROM (EXCLUDED.report, EXCLUDED.action)""",
            values,
        )
        await conn.executemany(
            """INSERT INTO promotion_report_history (challenger, champion, challenger_version,
                   matches, decision, action, report, checked_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
               ON CONFLICT (challenger, champion, challenger_version, decision) DO UPDATE
               SET action = EXCLUDED.action, report = EXCLUDED.report,
                   matches = EXCLUDED.matches, checked_at = EXCLUDED.checked_at
               WHERE (EXCLUDED.decision = 'hold'
                      AND promotion_report_history.report IS DISTINCT FROM EXCLUDED.report)
                  OR (promotion_report_history.action = 'proposed'
                      AND EXCLUDED.action = 'promoted')""",
            values,
        )


async def reports_of(conn: Any, model_id: str) -> dict[str, list[dict[str, Any]]]:
    """The gate's reports on ``model_id`` as a challenger: the latest against each champion
    (``latest``) and the first report of each decision per version (``history``, newest
    first)."""
    columns = """challenger, champion, challenger_version, matches, decision, action,
                 report, checked_at"""
    latest = await conn.fetch(
        f"""SELECT {columns} FROM promotion_reports WHERE challenger = $1
            ORDER BY checked_at DESC, champion""",
        model_id,
    )
    history = await conn.fetch(
        f"""SELECT {columns} FROM promotion_report_history WHERE challenger = $1
            ORDER BY checked_at DESC, champion, challenger_version DESC, decision""",
        model_id,
    )
    return {"latest": [_row(r) for r in latest], "history": [_row(r) for r in history]}


def _row(row: Any) -> dict[str, Any]:
    found = dict(row)
    if isinstance(found["report"], str):
        found["report"] = json.loads(found["report"])
    return found
