"""``tipstream drift reset|resets``: restart the feature drift monitor's references.

A reset says "what the drift alerts show is the new normal": the monitor (agents/drift.py)
takes it at the next batch and restarts every feature's reference at the first kickoff window
it has not closed yet (or the later window ``--at`` names), records where it took effect so a
restart or a replay applies it at the same place, and stays silent until the references hold enough
matches again. The open drift alerts are resolved with it (``resolved_by`` = who reset).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from datetime import UTC, datetime
from typing import Any

from agents import alert_store, drift_store
from agents.drift import AGENT
from streams.cli.output import table, to_json
from streams.db import session
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``drift`` subcommands."""
    drift = subparsers.add_parser("drift", help="the feature drift monitor's references")
    commands = drift.add_subparsers(dest="drift_command", required=True)
    reset = commands.add_parser(
        "reset", help="restart the references at the first open window (or --at's)"
    )
    reset.add_argument(
        "--at",
        type=_kickoff,
        default=None,
        help="kickoff time (ISO, UTC unless it says) the references restart from, if later "
        "than the first open window",
    )
    reset.add_argument("--by", default=None, help="who (default: the login name)")
    reset.add_argument("--note", default=None, help="why, kept with the reset and the alerts")
    commands.add_parser("resets", help="every reset, and where it took effect")
    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", help="machine-readable output")
    drift.set_defaults(func=_drift)


def _kickoff(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO date or datetime: {text!r}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _drift(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with session(settings.database_url) as conn:
        if args.drift_command == "reset":
            by = args.by or _login()
            async with conn.transaction():
                reset_id = await drift_store.request_reset(conn, args.at, by=by, note=args.note)
                resolved = await alert_store.resolve_open_drift(
                    conn, AGENT, by=by, note=args.note, now=datetime.now(UTC)
                )
            out: dict[str, Any] = {
                "reset_id": reset_id,
                "requested_at": args.at,
                "resolved_alerts": resolved,
            }
            print(
                to_json(out)
                if args.json
                else f"reset {reset_id} asked for (from "
                f"{args.at.isoformat() if args.at else 'the first open window'}); the monitor "
                f"takes it at its next batch; {resolved} open drift alert(s) resolved"
            )
            return 0
        rows = [
            {
                "reset_id": r.reset_id,
                "requested_at": r.requested_at,
                "effective_at": r.effective_at or "(not taken yet)",
            }
            for r in await drift_store.resets(conn)
        ]
        print(
            to_json(rows)
            if args.json
            else table(rows, ("reset_id", "requested_at", "effective_at"))
            if rows
            else "no resets"
        )
        return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "operator"
