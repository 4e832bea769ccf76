"""Operator commands: ``tipstream models list|show|promote|rollback|resign|prune`` and
``tipstream reconcile``. ``rollback MODEL --to-version V`` (or ``--before TIMESTAMP``) is a
rollback in time of a learning model; plain ``rollback`` restores the previous champion.

Promote and rollback change the registry and announce the change on the snapshot topic, so
running scorers swap champions without a restart. The registry is the truth: when the change is
committed but the announcement fails, the command says so (exit code 3) instead of a
traceback that reads as if nothing happened; scorers poll the registry and catch up anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from agents import champion_store, registry
from schemas.codec import encode
from streams.cli import reports
from streams.cli.failures import describe_failure
from streams.cli.output import to_json
from streams.db import connect
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics

T = TypeVar("T")

ANNOUNCE_TIMEOUT_S = 10.0
"""Longest wait for the broker to take the announcement (aiokafka's default is 40 s a request)."""
ANNOUNCE_FAILED_EXIT = 3
"""Exit code of a promote/rollback committed in the registry but not announced on Kafka."""
REGISTRY_POLL_S = 10.0
"""How often a scorer re-reads the registry (``agents.scorer.REGISTRY_POLL_S``, kept in step
by a unit test; importing the scorer here would load Faust for every command)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` and ``reconcile`` subcommands."""
    models = subparsers.add_parser("models", help="list, inspect, promote or roll back models")
    commands = models.add_subparsers(dest="models_command", required=True)
    commands.add_parser("list", help="every model with its status and latest version")
    show = commands.add_parser(
        "show", help="one model's versions and the promotion gate's reports on it"
    )
    show.add_argument("model_id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    promote = commands.add_parser("promote", help="make a model the champion")
    promote.add_argument("model_id")
    promote.add_argument("--reason", default="manual promotion")
    rollback = commands.add_parser(
        "rollback",
        help="restore the previous champion; with MODEL and --to-version or --before, restore "
        "an earlier state of a learning model as a new version its learner continues from",
    )
    rollback.add_argument("model_id", nargs="?", metavar="MODEL")
    when = rollback.add_mutually_exclusive_group()
    when.add_argument("--to-version", type=int, metavar="V", help="the version to restore")
    when.add_argument(
        "--before",
        type=_timestamp,
        metavar="TIMESTAMP",
        help="restore the newest version created before this ISO time (UTC unless it says)",
    )
    resign = commands.add_parser(
        "resign",
        help="re-sign every stored version and checkpoint with TIPSTREAM_REGISTRY_KEY "
        "(after verifying each with the accepted keys): the step of a key rotation",
    )
    resign.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="also re-sign rows already signed with the current key",
    )
    resign.add_argument(
        "--legacy-key-env",
        metavar="VAR",
        help="migrate first-format rows (before key ids), verified with the key in the "
        "environment variable VAR (never on the command line, where `ps` shows it)",
    )
    prune = commands.add_parser(
        "prune",
        help="delete stored model versions nothing needs (kept: the newest --keep of each "
        "model, champions' versions, learner checkpoints, and versions younger than "
        "--older-than-days)",
    )
    prune.add_argument(
        "--keep",
        type=int,
        default=registry.KEEP_AT_LEAST * 4,
        help=f"newest versions kept per model (default {registry.KEEP_AT_LEAST * 4}, "
        f"at least {registry.KEEP_AT_LEAST})",
    )
    prune.add_argument(
        "--older-than-days",
        type=float,
        default=None,
        help="prune only versions created longer ago (default: TIPSTREAM_LEDGER_RETENTION_DAYS)",
    )
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    models.set_defaults(func=_models)

    reconcile = subparsers.add_parser(
        "reconcile",
        help="report predictions waiting for results, orphan results, and "
        "disagreements between the topics and the database",
    )
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    reconcile.add_argument(
        "--skip-topics", action="store_true", help="report on the database only (no Kafka read)"
    )
    reconcile.set_defaults(func=_reconcile)


def _models(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_models_async(args, settings))
    except registry.RegistryError as error:
        print(f"tipstream: {error}")
        return 1


async def _with_conn(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await action(conn)
    finally:
        await pool.close()


async def _models_async(args: argparse.Namespace, settings: Settings) -> int:
    command = args.models_command
    if command == "resign":
        return await _resign(args, settings)
    if command == "prune":
        return await _prune(args, settings)
    if command == "rollback" and (args.model_id or args.to_version is not None or args.before):
        return await _rollback_in_time(args, settings)
    if command == "list":
        rows = await _with_conn(settings, registry.list_models)
        print(f"{'model':24} {'kind':16} {'status':11} {'version':>7} {'learned':>8}  created")
        for row in rows:
            print(
                f"{row['model_id']:24} {row['kind']:16} {row['status']:11} "
                f"{row['version']:>7} {row['learned']:>8}  {row['created_at']:%Y-%m-%d %H:%M:%S}"
            )
        return 0
    if command == "show":
        return await _show(args, settings)

    def change(conn: Any) -> Awaitable[list[str]]:
        if command == "promote":
            return change_champion(conn, settings, args.model_id, reason=args.reason)
        return change_champion(conn, settings, None)

    try:
        before_after = await _with_conn(settings, change)
    except NotAnnounced as failure:
        cause = describe_failure(failure.error, settings) or _brief(failure.error)
        print(
            f"champion: {' -> '.join(failure.changed)} (changed in the registry; announcement "
            f"on the snapshot topic failed: {cause}; running scorers pick it up within "
            f"{REGISTRY_POLL_S:.0f} s by polling)",
            flush=True,
        )
        return ANNOUNCE_FAILED_EXIT
    print(f"champion: {' -> '.join(before_after)}")
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def read(conn: Any) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        return (
            await registry.model_versions(conn, args.model_id),
            await champion_store.reports_of(conn, args.model_id),
        )

    versions, reports = await _with_conn(settings, read)
    for row in versions:
        metrics = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
        row["metrics"] = metrics
    if args.json:
        print(to_json({"model_id": args.model_id, "versions": versions, "gate": reports}))
        return 0
    for row in versions:
        print(
            f"{args.model_id} v{row['version']} (parent {row['parent_version']}) "
            f"kind={row['kind']} learned={row['learned']} sha256={row['state_sha256'][:12]} "
            f"created={row['created_at']:%Y-%m-%d %H:%M:%S} metrics={json.dumps(row['metrics'])}"
            + coverage_text(row)
        )
    for found in reports["latest"]:
        print("\n".join(gate_report_lines(found)))
    if reports["history"]:
        print(f"gate history of {args.model_id}:")
        for found in reports["history"]:
            print(
                f"  {found['checked_at']:%Y-%m-%d %H:%M:%S} vs {found['champion']} "
                f"v{found['challenger_version']}: {found['decision']} ({found['action']}) "
                f"over {found['matches']} matches"
            )
    return 0


def coverage_text(row: dict[str, Any]) -> str:
    """A backfill version's coverage in event time (docs/BACKFILL.md); nothing for others."""
    moments = [row["learned_from"], row["learned_until"], row["complete_through"]]
    if all(moment is None for moment in moments):
        return ""
    learned_from, learned_until, complete = (
        "-" if moment is None else f"{moment:%Y-%m-%dT%H:%M}" for moment in moments
    )
    return f" coverage={learned_from}..{learned_until} complete_through={complete}"


def gate_report_lines(found: dict[str, Any]) -> list[str]:
    """A stored gate report as an operator reads it: the decision, the paired test, the other
    checks, and why it holds (docs/OPERATIONS.md, "Reading a gate report")."""
    r = found["report"]

    def f(key: str, spec: str = "+.4f") -> str:
        value = r.get(key)
        return "-" if value is None else format(value, spec)

    lines = [
        f"gate {found['challenger']} v{found['challenger_version']} vs champion "
        f"{found['champion']}: {found['decision']} ({found['action']}) over "
        f"{found['matches']} shared matches, checked "
        f"{found['checked_at']:%Y-%m-%d %H:%M:%S}",
        f"  gain per match {f('mean_difference')} (confidence sequence "
        f"{f('ci_low')}..{f('ci_high')}) DM {f('dm_statistic', '.2f')} "
        f"always-valid p {f('p_value', '.4f')} "
        f"(Newey-West, {r.get('lags')} lags)",
        f"  vs opening line {f('market_excess')}  calibration error "
        f"{f('calibration_error', '.4f')}  worst league {r.get('worst_league') or '-'} "
        f"{f('worst_league_excess')}",
    ]
    lines += [f"  hold: {reason}" for reason in r.get("reasons", [])]
    return lines


async def change_champion(
    conn: Any, settings: Settings, promote: str | None, *, reason: str = "manual promotion"
) -> list[str]:
    """Promote model ``promote`` (None: roll back to the previous champion) and announce the
    change on the snapshot topic; the champions before and after. ``NotAnnounced`` when the
    change is committed but the announcement failed (also used by ``tipstream console``)."""
    before = await registry.champion_id(conn)
    if promote is not None:
        await registry.promote(conn, promote, reason=reason)
    else:
        await registry.rollback(conn)
    after = await registry.champion_id(conn)
    changed = [m for m in (before, after) if m is not None]
    # Committed: from here on a failure must not read as if nothing happened.
    try:
        await _announce(settings, [await registry.status_snapshot(conn, m) for m in changed])
    except Exception as error:  # reported by the caller with what did happen
        raise NotAnnounced(changed, error) from error
    return changed


def _timestamp(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC (the registry's times are)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from error
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _rollback_in_time(args: argparse.Namespace, settings: Settings) -> int:
    """Restore an earlier version of a learning model as its newest, and announce it."""
    if not args.model_id or (args.to_version is None and args.before is None):
        print(
            "tipstream models rollback: give MODEL with --to-version V or --before TIMESTAMP "
            "(or nothing, for the previous champion)"
        )
        return 2
    keys = settings.registry_keys()

    async def change(conn: Any) -> registry.RolledBack:
        done = await registry.rollback_to(
            conn, args.model_id, keys=keys, to_version=args.to_version, before=args.before
        )
        try:
            await _announce(settings, [await registry.status_snapshot(conn, args.model_id)])
        except Exception as error:  # committed: reported below with what did happen
            raise NotAnnounced([args.model_id], error, rolled_back=done) from error
        return done

    try:
        done = await _with_conn(settings, change)
    except NotAnnounced as failure:
        cause = describe_failure(failure.error, settings) or _brief(failure.error)
        line = _rolled_back_line(failure.rolled_back) if failure.rolled_back else args.model_id
        print(
            f"{line} (in the registry; announcement on the "
            f"snapshot topic failed: {cause}; running scorers pick it up within "
            f"{REGISTRY_POLL_S:.0f} s by polling)",
            flush=True,
        )
        return ANNOUNCE_FAILED_EXIT
    print(_rolled_back_line(done))
    return 0


def _rolled_back_line(done: registry.RolledBack) -> str:
    return (
        f"{done.model_id}: v{done.version} restores v{done.parent_version} "
        f"(learned {done.learned}, sha256 {done.state_sha256[:12]}); its learner continues from it"
    )


async def _prune(args: argparse.Namespace, settings: Settings) -> int:
    """Delete (or list, with --dry-run) the versions the retention policy lets go."""
    days = settings.ledger_retention_days if args.older_than_days is None else args.older_than_days
    if not (days >= 0 and math.isfinite(days)):
        print(f"tipstream models prune: --older-than-days must be >= 0, got {days}")
        return 2
    report = await _with_conn(
        settings,
        lambda c: registry.prune_versions(
            c, keep=args.keep, older_than=timedelta(days=days), dry_run=args.dry_run
        ),
    )
    verb = "would prune" if args.dry_run else "pruned"
    for model_id, version in report.pruned:
        print(f"{verb} {model_id} v{version}")
    print(f"{verb} {len(report.pruned)} versions; kept {report.kept}")
    return 0


async def _resign(args: argparse.Namespace, settings: Settings) -> int:
    """Re-sign stored state; exit 1 when some rows were refused (listed, left unchanged)."""
    legacy: bytes | None = None
    if args.legacy_key_env:
        legacy = os.environ.get(args.legacy_key_env, "").encode()
        if not legacy:
            print(f"tipstream models resign: {args.legacy_key_env} is not set or empty")
            return 2
    keys = settings.registry_keys()
    report = await _with_conn(
        settings,
        lambda c: registry.resign(c, keys, everything=args.everything, legacy_key=legacy),
    )
    print(
        f"re-signed with key {keys.key_id}: {report.resigned}; already current: "
        f"{report.current}; refused: {len(report.refused)}"
    )
    for refused in report.refused:
        print(
            f"  refused {refused.purpose} {refused.model_id} v{refused.version}: {refused.reason}"
        )
    return 1 if report.refused else 0


class NotAnnounced(Exception):
    """A registry change that is committed but was not announced on the snapshot topic."""

    def __init__(
        self,
        changed: list[str],
        error: BaseException,
        *,
        rolled_back: registry.RolledBack | None = None,
    ) -> None:
        super().__init__(f"changed {changed}, not announced: {error!r}")
        self.changed, self.error, self.rolled_back = changed, error, rolled_back


def _brief(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {ANNOUNCE_TIMEOUT_S:.0f} s"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


async def _announce(settings: Settings, snapshots: list[Any]) -> None:
    """Publish status snapshots so every running scorer reloads now (bounded: the registry
    already holds the change, so a broker that hangs must not hold the operator)."""
    topics = Topics.from_settings(settings)
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        request_timeout_ms=int(ANNOUNCE_TIMEOUT_S * 1000),
    )
    try:
        async with asyncio.timeout(ANNOUNCE_TIMEOUT_S):
            await producer.start()
            for snapshot in snapshots:
                await producer.send_and_wait(
                    topics.snapshots, encode(snapshot), key=snapshot.model_id.encode()
                )
    finally:
        await producer.stop()  # also after a failed start: no "unclosed producer" warning


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    report = asyncio.run(
        reports.reconciliation_report(
            settings, now=datetime.now(UTC), read_topics=not args.skip_topics
        )
    )
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else report.render())
    return 0
