"""``make demo``: the main job, end to end on the real services.

Trains the batch model on the seasons before the replay window, starts workers, replays the
window of real matches through the topics, waits until every result is reconciled, then prints
the ``SUMMARY`` line and writes a report folder (rolling log loss per model against the market,
alerts on the same time axis, a Markdown table). The demo uses its own database and topic
prefix, so it can run again from scratch, and leaves the services running to explore.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from streams.db import connect, migrate
from streams.log import configure_logging, get_logger
from streams.settings import Settings

log = get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "football"
DEMO_DATABASE = "tipstream_demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--data", nargs="+", type=Path,
                        default=sorted(Path(os.environ.get("TIPSTREAM_DATA_DIR", DEFAULT_DATA))
                                       .glob("*.csv")))
    parser.add_argument("--from", dest="start", type=date.fromisoformat,
                        default=date(2021, 7, 1), help="first kickoff of the replay window")
    parser.add_argument("--to", dest="end", type=date.fromisoformat,
                        default=date(2024, 6, 30), help="last kickoff of the replay window")
    parser.add_argument("--leagues", default="")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "demo")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="longest wait for reconciliation, in seconds")
    return parser.parse_args(argv)


def demo_settings(base: Settings) -> Settings:
    """The demo's own deployment: its database and a fresh topic prefix per run."""
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return base.replace(
        database_url=base.database_url.rsplit("/", 1)[0] + "/" + DEMO_DATABASE,
        topic_prefix=f"demo-{run}",
        app_id=f"tipstream-demo-{run}",
        log_format="json",
    )


async def fresh_database(base: Settings, settings: Settings) -> None:
    admin = await asyncpg.connect(base.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    finally:
        await admin.close()
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    finally:
        await pool.close()


def env_for(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in settings.__dataclass_fields__:
        env[f"TIPSTREAM_{name.upper()}"] = str(getattr(settings, name))
    return env


def tipstream(settings: Settings, *args: str, capture: bool = False) -> str:
    """Run a tipstream command against the demo deployment; fail loudly."""
    done = subprocess.run(  # noqa: S603 - our own console script
        [sys.executable, "-m", "streams.cli", *args], cwd=REPO, env=env_for(settings),
        text=True, check=False, stdout=subprocess.PIPE if capture else None,
    )
    if done.returncode != 0:
        raise SystemExit(f"tipstream {' '.join(args)} failed with exit code {done.returncode}")
    return done.stdout or ""


async def wait_reconciled(settings: Settings, matches: int, timeout: float) -> dict[str, int]:
    """Wait until every result is reconciled: evaluations = predictions = matches x models."""
    pool = await connect(settings.database_url, max_size=1)
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM results) AS results,
                              (SELECT count(*) FROM predictions) AS predictions,
                              (SELECT count(*) FROM evaluations WHERE superseded_by IS NULL)
                                  AS evaluations,
                              (SELECT count(*) FROM models WHERE status <> 'retired') AS models""")
            last = dict(row)
            expected = matches * last["models"]
            if (last["results"] == matches and last["predictions"] == expected
                    and last["evaluations"] == expected):
                return last
            await asyncio.sleep(1.0)
    finally:
        await pool.close()
    raise SystemExit(f"demo: not reconciled after {timeout:.0f} s: {last} for {matches} matches")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Settings.from_env()
    configure_logging("console" if sys.stderr.isatty() else "json", "info")
    settings = demo_settings(base)
    started = time.monotonic()
    asyncio.run(fresh_database(base, settings))
    data = [str(p) for p in args.data]
    window = ["--from", args.start.isoformat(), "--to", args.end.isoformat()]
    leagues = ["--leagues", args.leagues] if args.leagues else []
    print(f"demo: training the batch model on matches before {args.start}", flush=True)
    tipstream(settings, "train", "--data", *data, "--until", args.start.isoformat())
    tipstream(settings, "topics", "create")
    workers = [subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"], cwd=REPO,
        env=env_for(settings.replace(web_port=settings.web_port + i)),
        stdout=(REPO / f".local/demo-worker-{i}.log").open("w"), stderr=subprocess.STDOUT,
    ) for i in range(args.workers)]
    try:
        print(f"demo: {args.workers} worker(s) started; replaying {args.start} .. {args.end}",
              flush=True)
        replay_out = tipstream(settings, "replay", "--data", *data, *window, *leagues,
                               capture=True)
        replay_line = replay_out.strip().splitlines()[-1]
        print(replay_line, flush=True)
        matches = matches_published(replay_line)
        counts = asyncio.run(wait_reconciled(settings, matches, args.timeout))
        from streams.demo_report import summarise

        summary, folder = asyncio.run(summarise(settings, args.out, matches, counts))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()
    elapsed = time.monotonic() - started
    print(f"demo: finished in {elapsed:.0f} s; report in {folder}")
    print(f"demo: the services keep running; explore with TIPSTREAM_TOPIC_PREFIX="
          f"{settings.topic_prefix} TIPSTREAM_DATABASE_URL={settings.database_url} "
          f".venv/bin/tipstream models list; stop them with `make services-down`")
    print(summary, flush=True)
    return 0


def matches_published(replay_line: str) -> int:
    """Matches on the replay's time line: each has one features and one result event."""
    fields = dict(part.split("=", 1) for part in replay_line.split()[1:])
    return int(fields["published"]) // 2


if __name__ == "__main__":
    sys.exit(main())
