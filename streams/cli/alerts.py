"""``tipstream alerts list|show|tail|ack|resolve``: the alerts an operator works, from PostgreSQL.

PostgreSQL, not the alerts topic, is what these read, ``tail`` included: the table holds the
lifecycle (status, who acknowledged or resolved, the note), every column the monitor stores,
and each alert once (the topic is at-least-once: a redelivered batch publishes an alert again,
while the table keeps it once by its deterministic id). ``tail`` polls every ``--interval``
seconds for rows stored since the last poll, on the database's clock (``stored_at``), looking
:data:`TAIL_OVERLAP_S` back so a row whose transaction committed late is still shown, once.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agents import alert_store
from agents.alert_store import AlertFilter, AlertNotFound
from streams.cli.output import cell, fields, parse_since, table, to_json
from streams.db import session
from streams.settings import Settings

TAIL_OVERLAP_S = 60.0
"""How far back each ``tail`` poll looks before the newest row it has seen: a row is stamped
when inserted and visible when committed; the monitor's write is one statement (milliseconds),
so a minute covers any commit lag with room to spare, and the ids seen in that minute are
remembered so nothing prints twice."""
LIST_COLUMNS = ("id", "created_at", "status", "kind", "model_id", "scope", "metric", "message")
HEADERS = {"created_at": "created (UTC)", "model_id": "model"}
SHORT_ID = 8


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``alerts`` subcommands."""
    alerts = subparsers.add_parser("alerts", help="list, follow, acknowledge or resolve alerts")
    commands = alerts.add_subparsers(dest="alerts_command", required=True)
    listing = commands.add_parser("list", help="alerts, newest first")
    _filters(listing)
    listing.add_argument("--status", choices=alert_store.STATUSES)
    listing.add_argument("--since", help="created since: 30m, 2h, 7d, or an ISO date/datetime")
    listing.add_argument("--limit", type=positive, default=50, help="at most N (default 50)")
    show = commands.add_parser("show", help="every field of one alert")
    show.add_argument("alert_id", help="the id, or a unique prefix of it (as `list` shows)")
    tail = commands.add_parser("tail", help="print the latest alerts, then new ones as stored")
    _filters(tail)
    tail.add_argument("--last", type=_not_negative, default=10, help="first show N (default 10)")
    tail.add_argument("--interval", type=_seconds, default=1.0, help="poll every S s (default 1)")
    for name, verb in (("ack", "acknowledge"), ("resolve", "resolve")):
        action = commands.add_parser(name, help=f"{verb} an alert (idempotent)")
        action.add_argument("alert_id", help="the id, or a unique prefix of it")
        action.add_argument("--by", default=None, help="who (default: the login name)")
        action.add_argument("--note", default=None, help="a note kept with the alert")
    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", help="machine-readable output")
    alerts.set_defaults(func=_alerts)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="decay, recovery, drift, promotion, fault, ...")
    parser.add_argument("--model", dest="model_id", help="one model's alerts")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.05 and 3600 s, got {text}")
    return value


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return 0  # Ctrl-C ends `tail`: the way out, not a failure
    except AlertNotFound as error:
        print(f"tipstream alerts {args.alerts_command}: {error.args[0]}", file=sys.stderr)
        return 1
    except ValueError as error:  # a --since that is no time
        print(f"tipstream alerts {args.alerts_command}: {error}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.alerts_command
    async with session(settings.database_url) as conn:
        if command == "list":
            since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
            where = AlertFilter(args.status, args.kind, args.model_id, since)
            rows = await alert_store.list_alerts(conn, where, limit=args.limit)
            print(to_json(rows) if args.json else list_text(rows, terminal_width()))
            return 0
        if command == "show":
            row = await alert_store.find(conn, args.alert_id)
            print(to_json(row) if args.json else fields(row))
            return 0
        if command == "tail":
            await _tail(conn, args)
            return 0
        action: alert_store.Action = "acknowledge" if command == "ack" else "resolve"
        row, changed = await alert_store.change_status(
            conn,
            args.alert_id,
            action,
            by=args.by or _login(),
            note=args.note,
            now=datetime.now(UTC),
        )
    if args.json:
        print(to_json(row | {"changed": changed}))
    else:
        print(change_text(row, action, changed))
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "operator"


def terminal_width() -> int | None:
    """The terminal's width when printing to one (tables are cut to it), else None."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def list_row(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as a listing shows it: the id shortened (``show`` and ``ack`` take the
    prefix)."""
    return alert | {"id": str(alert["alert_id"])[:SHORT_ID]}


def list_text(alerts: list[dict[str, Any]], width: int | None) -> str:
    if not alerts:
        return "no alerts"
    return table([list_row(a) for a in alerts], LIST_COLUMNS, headers=HEADERS, width=width)


def change_text(alert: dict[str, Any], action: alert_store.Action, changed: bool) -> str:
    """What ``ack``/``resolve`` says: what changed, or why nothing did."""
    alert_id = alert["alert_id"]
    if changed:
        who = alert["acknowledged_by"] if action == "acknowledge" else alert["resolved_by"]
        return f"alert {alert_id}: {alert['status']} by {who}"
    if alert["status"] == "resolved":
        by = alert.get("resolved_by") or "-"
        source = alert.get("resolved_by_alert")
        detail = f" (recovery alert {source})" if source else ""
        return f"alert {alert_id}: already resolved by {by}{detail}; unchanged"
    return f"alert {alert_id}: already acknowledged by {alert['acknowledged_by']}; unchanged"


@dataclass
class TailCursor:
    """Which stored alerts ``tail`` has printed: the newest ``stored_at`` seen, and the ids seen
    within :data:`TAIL_OVERLAP_S` before it (a poll looks that far back)."""

    since: datetime
    overlap: timedelta = timedelta(seconds=TAIL_OVERLAP_S)
    seen: dict[str, datetime] = field(default_factory=dict)

    @property
    def poll_from(self) -> datetime:
        return self.since - self.overlap

    def take(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows not printed yet, in order; remembers them and forgets ids that fell out of
        the overlap."""
        fresh = [r for r in rows if r["alert_id"] not in self.seen]
        for row in fresh:
            self.seen[row["alert_id"]] = row["stored_at"]
            self.since = max(self.since, row["stored_at"])
        horizon = self.poll_from
        self.seen = {k: v for k, v in self.seen.items() if v >= horizon}
        return fresh


TAIL_WIDTHS = {
    "id": SHORT_ID,
    "created_at": 19,
    "status": 12,
    "kind": 10,
    "model_id": 20,
    "scope": 24,
    "metric": 10,
}
"""Column widths of ``tail`` (rows arrive one by one, so widths cannot be measured): the
listing's columns, wide enough for the ids, kinds and scopes the service writes."""


def tail_line(alert: dict[str, Any]) -> str:
    """One followed alert on one line, in the listing's columns, the sentence last."""
    row = list_row(alert)
    fixed = "  ".join(f"{cell(row.get(c)):{w}}" for c, w in TAIL_WIDTHS.items())
    return f"{fixed}  {cell(row['message'])}"


def tail_header() -> str:
    names = "  ".join(f"{HEADERS.get(c, c):{w}}" for c, w in TAIL_WIDTHS.items())
    return f"{names}  message"


async def _tail(conn: Any, args: argparse.Namespace) -> None:
    where = AlertFilter(kind=args.kind, model_id=args.model_id)
    latest = await alert_store.list_alerts(conn, where, limit=args.last) if args.last else []
    cursor = TailCursor(since=await conn.fetchval("SELECT now()"))
    cursor.take(latest)

    def emit(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            print(to_json(row, lines=True) if args.json else tail_line(row), flush=True)

    if not args.json:
        print(tail_header(), flush=True)
    emit(list(reversed(latest)))
    while True:
        emit(cursor.take(await alert_store.stored_since(conn, where, cursor.poll_from)))
        await asyncio.sleep(args.interval)
