"""The ``tipstream`` command line: one entry point, each subcommand registered by its module."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from streams.log import configure_logging
from streams.settings import ENV_VARS, Settings

Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]


def _register_db(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = subparsers.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    migrate = db_commands.add_parser("migrate", help="apply the project's SQL migrations")
    migrate.set_defaults(func=_db_migrate)


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
    worker.set_defaults(func=_worker)


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
        value = "<secret>" if field == "registry_key" else getattr(settings, field)
        print(f"{name}={value}")
    return 0


def _registered() -> list[Register]:
    """Every module's subcommands; imported here so `tipstream --help` stays quick to load."""
    from models import evaluate
    from streams.cli import features, operator, replay, train

    return [
        _register_worker,
        _register_db,
        _register_topics,
        _register_settings,
        operator.register,
        features.register,
        replay.register,
        evaluate.register,
        train.register,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tipstream`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"tipstream: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
