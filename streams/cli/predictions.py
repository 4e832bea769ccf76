"""``tipstream predictions show MATCH``: one match as the service holds it in PostgreSQL: its
features, every model's prediction, the result and the evaluations.

Every evaluation is shown, a superseded one too (a corrected result replaced it; its
``superseded_by`` says by which), so the history of a match is visible, not only its present.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from streams.cli.output import fields, table, to_json
from streams.db import session
from streams.settings import Settings

PREDICTION_COLUMNS = (
    "model_id",
    "model_version",
    "is_champion",
    "p_home",
    "p_draw",
    "p_away",
    "predicted",
    "confidence",
    "made_at",
    "created_at",
)
EVALUATION_COLUMNS = (
    "model_id",
    "model_version",
    "predicted",
    "outcome",
    "hit",
    "log_loss",
    "brier",
    "rps",
    "evaluated_at",
    "superseded_by",
)
HEADERS = {
    "model_id": "model",
    "model_version": "version",
    "is_champion": "champion",
    "created_at": "created (UTC)",
    "made_at": "made (event time)",
    "evaluated_at": "evaluated (UTC)",
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``predictions`` subcommand."""
    predictions = subparsers.add_parser("predictions", help="what the service holds on a match")
    commands = predictions.add_subparsers(dest="predictions_command", required=True)
    show = commands.add_parser(
        "show", help="a match's features, every model's prediction, result and evaluations"
    )
    show.add_argument("match_id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    predictions.set_defaults(func=_predictions)


async def match_record(conn: Any, match_id: str) -> dict[str, Any] | None:
    """Everything stored on one match, or None when nothing is (no features, prediction,
    result or evaluation has this id)."""
    features = await conn.fetchrow("SELECT * FROM match_features WHERE match_id = $1", match_id)
    result = await conn.fetchrow("SELECT * FROM results WHERE match_id = $1", match_id)
    predictions = await conn.fetch(
        "SELECT * FROM predictions WHERE match_id = $1 ORDER BY is_champion DESC, model_id, "
        "created_at",
        match_id,
    )
    evaluations = await conn.fetch(
        "SELECT * FROM evaluations WHERE match_id = $1 ORDER BY model_id, evaluated_at",
        match_id,
    )
    if features is None and result is None and not predictions and not evaluations:
        return None
    return {
        "match_id": match_id,
        "features": None if features is None else _with_payload(dict(features)),
        "predictions": [dict(p) for p in predictions],
        "result": None if result is None else _with_payload(dict(result)),
        "evaluations": [dict(e) for e in evaluations],
    }


def _with_payload(row: dict[str, Any]) -> dict[str, Any]:
    """asyncpg returns jsonb as text: the event as an object."""
    payload = row.get("payload")
    if isinstance(payload, str):
        row["payload"] = json.loads(payload)
    return row


def match_text(record: dict[str, Any]) -> str:
    """The match for a person: a heading per part, features and result as fields, predictions
    and evaluations as tables."""
    out = [f"match {record['match_id']}"]
    features = record["features"]
    out.append("\nfeatures")
    if features is None:
        out.append("  none stored (the features never arrived, or were dead-lettered)")
    else:
        event = features["payload"]
        summary = {
            "league": features["league"],
            "season": features["season"],
            "kickoff": features["kickoff"],
            "home": features["home_team"],
            "away": features["away_team"],
            "odds_open": _odds(event.get("odds_open")),
            "odds_close": _odds(event.get("odds_close")),
        } | {f"  {k}": v for k, v in sorted((event.get("features") or {}).items())}
        out.append(_indent(fields(summary)))
    out.append("\npredictions")
    out.append(
        _indent(table(record["predictions"], PREDICTION_COLUMNS, headers=HEADERS))
        if record["predictions"]
        else "  none"
    )
    result = record["result"]
    out.append("\nresult")
    if result is None:
        out.append("  none yet")
    else:
        out.append(
            _indent(
                fields(
                    {
                        "score": f"{result['home_goals']}-{result['away_goals']}",
                        "outcome": result["outcome"],
                        "revision": result["revision"],
                        "received_at": result["received_at"],
                    }
                )
            )
        )
    out.append("\nevaluations")
    out.append(
        _indent(table(record["evaluations"], EVALUATION_COLUMNS, headers=HEADERS))
        if record["evaluations"]
        else "  none"
    )
    return "\n".join(out)


def _odds(odds: Any) -> str:
    if not isinstance(odds, dict):
        return "-"
    return " / ".join(f"{odds.get(k)}" for k in ("home", "draw", "away"))


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _predictions(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> dict[str, Any] | None:
        async with session(settings.database_url) as conn:
            return await match_record(conn, args.match_id)

    record = asyncio.run(run())
    if record is None:
        print(f"tipstream predictions show: no match {args.match_id!r} stored", file=sys.stderr)
        return 1
    print(to_json(record) if args.json else match_text(record))
    return 0
