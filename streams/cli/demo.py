"""``make demo``: the main job, end to end on the real services.

Trains the batch model on the seasons before the replay window, starts workers, replays the
window of real matches through the topics with ``--sync`` (each match day is scored by models
that have learned every earlier result, as they would have in reality), waits until every
result is reconciled, then prints the ``SUMMARY`` line and writes a report folder (rolling log
loss per model against the market, alerts on the same time axis, a Markdown table). The demo
uses its own database and a fresh topic prefix, so it can run again from scratch, and leaves
the services running to explore.

A scripted incident shows the monitor at work: ``demo-incident`` (``models.incident``), a
challenger that is the champion's model with its inputs mirrored over a stretch of the window
(``--incident FROM:TO``; ``--no-incident`` leaves it out). Its decay alerts fire as it breaks and
its recoveries follow once it is healthy; the report says when.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from agents import registry
from models import catalog
from models.timeline import Filters
from schemas.football_csv import RowError, default_data_files, read_rows
from streams.cli.main import guarded
from streams.cli.replay import at_least, league_list, positive_number
from streams.db import connect, create_database, migrate_url
from streams.kafka import client_options
from streams.log import configure_logging, get_logger, redact
from streams.settings import Settings

log = get_logger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEMO_DATABASE = "tipstream_demo"
DEMO_DATABASE_NAME = re.compile(r"^tipstream_demo(_[a-z0-9_]+)?$")
"""The only database names the demo drops and recreates (``DROP DATABASE ... WITH (FORCE)``):
its own, so a typo can never drop the service's database or anyone else's."""
COMMIT_INTERVAL_S = 0.1
"""The demo workers' offset commit interval. ``replay --sync`` waits for committed offsets
about 180 times per season of the five leagues, three hops each: at the default 1 s that is
~9 minutes a season, at 0.1 s well under one."""
DEFAULT_INCIDENT = (date(2022, 10, 1), date(2022, 10, 22))
"""Three weeks early in the default window: every scope's baseline (300 evaluations of a
league) is complete by then, and a recovery needs a full window of healthy evaluations after
the incident, which the smallest league (Bundesliga, 306 matches a season) has by late 2023."""


@dataclass(frozen=True)
class Incident:
    """The scripted incident: ``demo-incident`` is broken while it has learned ``first`` to
    ``last - 1`` examples, the window's matches that kick off on ``start`` .. ``end - 1``."""

    start: date
    end: date
    first: int
    last: int

    def describe(self) -> str:
        return (
            f"{catalog.INCIDENT_MODEL_ID} (a challenger: {catalog.INCIDENT_WRAPS} with its inputs "
            f"mirrored) is broken for the matches of {self.start} .. {self.end} (exclusive), "
            f"its learned examples {self.first} .. {self.last - 1}"
        )


def demo_database_problem(name: str, base: Settings) -> str | None:
    """Why the demo must not drop and recreate database ``name``, or None when it may: only a
    demo database (``tipstream_demo`` or ``tipstream_demo_<suffix>``), never the one of
    ``TIPSTREAM_DATABASE_URL``."""
    if not DEMO_DATABASE_NAME.match(name):
        return (
            f"--database {name!r} is not a demo database: the demo drops and recreates it, so "
            f"it must be {DEMO_DATABASE} or {DEMO_DATABASE}_<suffix> "
            "(lower-case letters, digits, underscores)"
        )
    if name == base.database_url.rsplit("/", 1)[-1].split("?", 1)[0]:
        return (
            f"--database {name!r} is the database of TIPSTREAM_DATABASE_URL "
            f"({redact(base.database_url)}); the demo never drops it"
        )
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streams.cli.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=default_data_files(),
        help="CSV files (default: every file of $TIPSTREAM_DATA_DIR or data/football)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        default=date(2021, 7, 1),
        help="first kickoff of the replay window",
    )
    parser.add_argument(
        "--to",
        dest="end",
        type=date.fromisoformat,
        default=date(2024, 6, 30),
        help="last kickoff of the replay window",
    )
    parser.add_argument(
        "--leagues", type=league_list, default=frozenset(), help="comma-separated league ids"
    )
    parser.add_argument(
        "--incident",
        type=date_range,
        default=DEFAULT_INCIDENT,
        metavar="FROM:TO",
        help="kickoff dates (TO exclusive) over which demo-incident reads mirrored inputs "
        f"(default {DEFAULT_INCIDENT[0]}:{DEFAULT_INCIDENT[1]}); inside the replay window",
    )
    parser.add_argument(
        "--no-incident",
        dest="incident",
        action="store_const",
        const=None,
        help="no scripted incident: the demo's models only",
    )
    parser.add_argument("--workers", type=at_least(1), default=1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "demo")
    parser.add_argument(
        "--database",
        default=DEMO_DATABASE,
        help="name of the demo's database (dropped and created afresh)",
    )
    parser.add_argument(
        "--prefix",
        default="demo",
        help="topic prefix family; earlier runs' topics of it are deleted",
    )
    parser.add_argument(
        "--timeout",
        type=positive_number,
        default=900.0,
        help="longest wait for reconciliation, in seconds",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="on a failure, print the traceback too"
    )
    args = parser.parse_args(argv)
    if args.start > args.end:
        parser.error(f"--from {args.start} is after --to {args.end}")
    if args.incident is not None and not args.start <= args.incident[0] <= args.end:
        parser.error(
            f"--incident starts on {args.incident[0]}, outside the window --from {args.start} "
            f"--to {args.end}: give --incident FROM:TO inside the window, or --no-incident"
        )
    return args


def date_range(text: str) -> tuple[date, date]:
    """``FROM:TO`` as two dates, FROM before TO."""
    first, sep, last = text.partition(":")
    try:
        start, end = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError:
        sep = ""
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FROM:TO (ISO dates), got {text!r}")
    if start >= end:
        raise argparse.ArgumentTypeError(f"{start} is not before {end}")
    return start, end


def plan_incident(data: list[Path], window: Filters, dates: tuple[date, date]) -> Incident:
    """The incident's range in learned examples: the model learns the window's results in
    kickoff order, so the matches of the window before a date are the examples learned by
    then (the replay publishes the rows ``window`` keeps)."""
    try:
        rows = read_rows(data).rows
    except (OSError, RowError) as error:
        raise SystemExit(f"demo: cannot plan the incident: {error}") from error
    kickoffs = [row.kickoff.date() for row in rows if window.keep(row.league, row.kickoff)]
    first = sum(day < dates[0] for day in kickoffs)
    last = sum(day < dates[1] for day in kickoffs)
    if last - first == 0:
        raise SystemExit(
            f"demo: no match of the window kicks off in {dates[0]} .. {dates[1]}: give "
            "--incident FROM:TO around some, or --no-incident"
        )
    return Incident(dates[0], dates[1], first, last)


async def register_incident(settings: Settings, incident: Incident) -> None:
    """Register ``demo-incident`` as a challenger (the champion stays the seeded one), broken
    over the incident's examples; its state is signed like any model's."""
    model = catalog.incident(incident.first, incident.last)
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await registry.register(
                conn,
                model,
                status="challenger",
                keys=settings.registry_keys(),
                policy=settings.learning_policy,
            )
    finally:
        await pool.close()


def demo_settings(base: Settings, database: str, prefix: str) -> Settings:
    """The demo's own deployment: its database and a fresh topic prefix per run."""
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return base.with_database(database).replace(
        topic_prefix=f"{prefix}-{run}",
        app_id="",  # derived from the prefix: its own consumer group and changelogs
        commit_interval=COMMIT_INTERVAL_S,
        log_format="json",
        # Every version kept: the report reads which predictions the incident broke from the
        # learned count of the version that made each (the learner prunes by count otherwise).
        keep_versions=0,
    )


async def fresh_database(base: Settings, settings: Settings, name: str) -> None:
    """Drop and recreate the demo database, migrated: every run starts from nothing."""
    problem = demo_database_problem(name, base)
    if problem is not None:  # main checks first; this guards any other caller
        raise ValueError(problem)
    await create_database(base.database_url, name, replace=True)
    await migrate_url(settings.database_url)


async def delete_old_topics(settings: Settings, prefix: str) -> list[str]:
    """Topics of earlier runs of this demo: their database is gone, so they only take space."""
    pattern = re.compile(rf"^(tipstream-)?{re.escape(prefix)}-\d{{14}}[.-]")
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        old = [t for t in await admin.list_topics() if pattern.match(t)]
        if old:
            await admin.delete_topics(old)
        return old
    finally:
        await admin.close()


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return dict(os.environ) | settings.as_env() | extra


def tipstream(
    settings: Settings,
    *args: str,
    capture: bool = False,
    workers: Sequence[subprocess.Popen[bytes]] = (),
    logs: Path | None = None,
) -> str:
    """Run a tipstream command against the demo deployment; fail loudly, and at once when one
    of ``workers`` exits meanwhile (a replay with ``--sync`` would otherwise wait out its
    timeout for a worker that is gone)."""
    command = subprocess.Popen(  # noqa: S603 - our own console script
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO,
        # Readable logs (and the replay's progress bar) when the demo runs on a terminal.
        env=env_for(settings, TIPSTREAM_LOG_FORMAT="auto"),
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    while True:
        try:  # communicate() may be called again after a timeout, nothing read is lost
            output, _ = command.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            problem = dead_worker(workers, logs)
            if problem is not None:
                command.terminate()
                command.wait()
                raise SystemExit(f"demo: {problem}; tipstream {args[0]} stopped") from None
    if command.returncode != 0:
        raise SystemExit(f"tipstream {' '.join(args)} failed with exit code {command.returncode}")
    return output or ""


def dead_worker(workers: Sequence[subprocess.Popen[bytes]], logs: Path | None) -> str | None:
    """Why the demo cannot go on, when one of its workers has exited: which, its exit code and
    the last lines of its log; None while they all run."""
    for index, worker in enumerate(workers):
        code = worker.poll()
        if code is None:
            continue
        where = ""
        if logs is not None:
            path = logs / f"worker-{index}.log"
            tail = (
                path.read_text(errors="replace").strip().splitlines()[-3:] if path.exists() else []
            )
            where = f" (log {path}" + (": " + " | ".join(tail) if tail else "") + ")"
        return f"worker {index} exited with code {code}{where}"
    return None


async def wait_reconciled(
    settings: Settings,
    matches: int,
    timeout: float,
    workers: Sequence[subprocess.Popen[bytes]] = (),
    logs: Path | None = None,
) -> dict[str, int]:
    """Wait until every result is reconciled: evaluations = predictions = matches x models;
    stop at once when a worker exits meanwhile."""
    pool = await connect(settings.database_url, max_size=1)
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM results) AS results,
                              (SELECT count(DISTINCT (match_id, model_id)) FROM predictions)
                                  AS predictions,
                              (SELECT count(*) FROM evaluations WHERE superseded_by IS NULL)
                                  AS evaluations,
                              (SELECT count(*) FROM models WHERE status <> 'retired') AS models"""
                )
            last = dict(row)
            expected = matches * last["models"]
            if (
                last["results"] == matches
                and last["predictions"] == expected
                and last["evaluations"] == expected
            ):
                return last
            problem = dead_worker(workers, logs)
            if problem is not None:
                raise SystemExit(f"demo: {problem}; not reconciled: {last} for {matches} matches")
            await asyncio.sleep(1.0)
    finally:
        await pool.close()
    raise SystemExit(f"demo: not reconciled after {timeout:.0f} s: {last} for {matches} matches")


def start_workers(settings: Settings, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Worker subprocesses of the demo deployment, each with its own web port and log file."""
    logs.mkdir(parents=True, exist_ok=True)
    workers = []
    for index in range(count):
        with (logs / f"worker-{index}.log").open("wb") as out:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", "worker"],
                    cwd=REPO,
                    env=env_for(settings.replace(web_port=settings.web_port + index)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM: Faust commits the acked offsets and closes cleanly; SIGKILL after 40 s."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=40)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base = Settings.from_env()
    except ValueError as error:
        print(f"demo: {redact(str(error))}", file=sys.stderr)
        return 2
    problem = demo_database_problem(args.database, base)
    if problem is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    configure_logging("console" if sys.stderr.isatty() else "json", "info")
    return guarded(lambda: run(args, base), base, verbose=args.verbose)


def run(args: argparse.Namespace, base: Settings) -> int:
    """The demo itself, once its arguments and database name are accepted."""
    settings = demo_settings(base, args.database, args.prefix)
    started = time.monotonic()
    incident = (  # planned first: a window without matches in it stops before any change
        None
        if args.incident is None
        else plan_incident(args.data, Filters(args.leagues, args.start, args.end), args.incident)
    )
    asyncio.run(fresh_database(base, settings, args.database))
    asyncio.run(delete_old_topics(settings, args.prefix))
    data = [str(p) for p in args.data]
    window = ["--from", args.start.isoformat(), "--to", args.end.isoformat()]
    leagues = ["--leagues", ",".join(sorted(args.leagues))] if args.leagues else []
    print(f"demo: training the batch model on matches before {args.start}", flush=True)
    tipstream(settings, "train", "--data", *data, "--until", args.start.isoformat())
    if incident is not None:
        asyncio.run(register_incident(settings, incident))
        print(f"demo: scripted incident: {incident.describe()}", flush=True)
    tipstream(settings, "topics", "create")
    logs = args.out / "logs"
    workers = start_workers(settings, args.workers, logs)
    try:
        print(
            f"demo: {args.workers} worker(s) started (logs in {logs}); replaying "
            f"{args.start} .. {args.end} with --sync",
            flush=True,
        )
        replay_line = (
            tipstream(
                settings,
                "replay",
                "--data",
                *data,
                *window,
                *leagues,
                "--sync",
                capture=True,
                workers=workers,
                logs=logs,
            )
            .strip()
            .splitlines()[-1]
        )
        print(replay_line, flush=True)
        matches = matches_published(replay_line)
        asyncio.run(wait_reconciled(settings, matches, args.timeout, workers, logs))
    finally:
        # Stopped before the summary is read, so nothing changes the database under it.
        stop_workers(workers)
    from streams.cli.demo_report import summarise  # matplotlib: imported only when needed

    summary, folder = asyncio.run(summarise(settings, args.out, incident))
    elapsed = time.monotonic() - started
    print(f"demo: finished in {elapsed:.0f} s; report in {folder}")
    print(
        f"demo: Kafka and PostgreSQL keep running; explore with TIPSTREAM_TOPIC_PREFIX="
        f"{settings.topic_prefix} TIPSTREAM_DATABASE_URL={settings.masked_url()} "
        f".venv/bin/tipstream models list (or reconcile); stop them with "
        f"`make services-down`"
    )
    print(summary, flush=True)
    return 0


def matches_published(replay_line: str) -> int:
    """Matches on the replay's time line: a fresh replay publishes a features and a result
    event for each."""
    fields = dict(part.split("=", 1) for part in replay_line.split()[1:])
    return int(fields["published"]) // 2


if __name__ == "__main__":
    sys.exit(main())
