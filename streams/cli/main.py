"""The ``tipstream`` command line: one entry point, each subcommand registered by its module.

A command that cannot reach PostgreSQL or Kafka ends with one line naming the service, its
address, the cause and the setting to change (exit code 2), not a traceback; ``--verbose``
prints the traceback too. Everything printed goes through :func:`streams.log.redact`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from streams.cli.failures import describe_failure
from streams.db import CONNECT_PATIENCE, SERVICE_PATIENCE_S
from streams.kafka import check_security
from streams.log import configure_logging, get_logger, redact
from streams.settings import ENV_VARS, Settings

KEYED_COMMANDS = frozenset({"worker", "train", "models"})
"""Commands that sign or restore model state: they refuse to start without a registry key."""
SECRET_SETTINGS = frozenset(
    {"registry_key", "registry_verify_keys", "kafka_sasl_password", "console_token"}
)

Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]

UNREACHABLE_EXIT = 2
"""Exit code of a command that could not reach PostgreSQL or Kafka (or was misconfigured)."""
COMMAND_PATIENCE_S = 2.0
"""How long a one-shot command retries a refused database connection: long enough for a
restart's blip, short enough that an operator hears at once that it is down. ``worker`` and
``db migrate`` wait :data:`streams.db.SERVICE_PATIENCE_S` (they start next to the database)."""


def _register_db(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = subparsers.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    migrate = db_commands.add_parser("migrate", help="apply the project's SQL migrations")
    migrate.set_defaults(func=_db_migrate, connect_patience=SERVICE_PATIENCE_S)


def _db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.db import connect, migrate

    async def run() -> list[str]:
        pool = await connect(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await migrate(conn)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


def _register_topics(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = subparsers.add_parser("topics", help="Kafka topics of this deployment")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topic_commands.add_parser("create", help="create missing topics")
    create.set_defaults(func=_topics_create)
    listing = topic_commands.add_parser("list", help="print topic names, keys and contents")
    listing.set_defaults(func=_topics_list)


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from streams.topics import ensure_topics

    created = asyncio.run(ensure_topics(settings))
    print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
    return 0


def _topics_list(args: argparse.Namespace, settings: Settings) -> int:
    from streams.topics import ALL_TOPICS, Topics

    topics = Topics.from_settings(settings)
    for spec in ALL_TOPICS:
        print(f"{topics.name(spec):40} key={spec.key:20} {spec.carries}")
    return 0


def _register_worker(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    worker = subparsers.add_parser("worker", help="run the stream-processing worker")
    worker.set_defaults(func=_worker, connect_patience=SERVICE_PATIENCE_S)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker.app import run_worker

    return run_worker(settings)


def _register_settings(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    show = subparsers.add_parser(
        "settings", help="print every setting and its environment variable"
    )
    show.set_defaults(func=_settings)


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    for name in ENV_VARS:
        field = name.removeprefix("TIPSTREAM_").lower()
        value = "<secret>" if field in SECRET_SETTINGS else redact(str(getattr(settings, field)))
        print(f"{name}={value}")
    return 0


def _registered() -> list[Register]:
    """Every module's subcommands; imported here so `tipstream --help` stays quick to load."""
    from models import evaluate
    from streams.cli import (
        alerts,
        dead_letters,
        drift,
        features,
        operator,
        predictions,
        replay,
        train,
    )
    from streams.console import app as console

    return [
        _register_worker,
        _register_db,
        _register_topics,
        _register_settings,
        operator.register,
        alerts.register,
        drift.register,
        dead_letters.register,
        predictions.register,
        features.register,
        replay.register,
        evaluate.register,
        train.register,
        console.register,
    ]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every module's subcommands."""
    parser = argparse.ArgumentParser(
        prog="tipstream",
        description="Streaming football predictions on Kafka: score, reconcile, learn, alert.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in _registered():
        register(subparsers)
    _add_verbose(parser, default=False)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v/--verbose`` on the parser and every subcommand, so it works before or after the
    command name (a subcommand's copy defaults to SUPPRESS: it never undoes the global one)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="on a failure, print the full traceback too",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_verbose(sub, default=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tipstream`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        check_security(settings)
    except ValueError as error:
        print(f"tipstream: {redact(str(error))}", file=sys.stderr)
        return UNREACHABLE_EXIT
    settings.check_isolation()
    if args.command in KEYED_COMMANDS:
        try:
            settings.registry_keys()
        except ValueError as error:
            print(f"tipstream {args.command}: {error}", file=sys.stderr)
            return 2
    patience = getattr(args, "connect_patience", COMMAND_PATIENCE_S)
    one_shot = patience < SERVICE_PATIENCE_S
    configure_logging(
        settings.log_format, settings.log_level, quiet_connect_errors=one_shot and not args.verbose
    )
    # Said where it matters, by the long-running worker; one-shot commands keep their output
    # to the one line an operator (or a script) reads.
    if args.command == "worker" and settings.uses_dev_key:
        get_logger(__name__).warning(
            "TIPSTREAM_DEV_MODE: model state is signed with the public development key; "
            "set TIPSTREAM_REGISTRY_KEY for anything but local development"
        )
    token = CONNECT_PATIENCE.set(patience)
    try:
        return guarded(lambda: int(args.func(args, settings)), settings, verbose=args.verbose)
    finally:
        CONNECT_PATIENCE.reset(token)


def guarded(action: Callable[[], int], settings: Settings, *, verbose: bool) -> int:
    """Run a command: an unreachable service becomes one line on stderr (exit code 2), any other
    error a traceback with passwords masked (exit code 1); ``verbose`` adds the traceback to
    the one line."""
    try:
        return action()
    except BrokenPipeError:
        # The reader went away (`tipstream settings | head`): nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # noqa: BLE001 - every failure is reported, masked, here
        line = describe_failure(error, settings)
        if line is None or verbose:
            text = "".join(traceback.format_exception(error))
            print(redact(text), file=sys.stderr, end="", flush=True)
        if line is None:
            return 1
        print(f"tipstream: {redact(line)}", file=sys.stderr, flush=True)
        return UNREACHABLE_EXIT


if __name__ == "__main__":
    sys.exit(main())
