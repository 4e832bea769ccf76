"""The scorer's latency with and without a refit running: ``python -m tests.bench.refit_latency``.

One worker on a deployment of its own, its evaluation log filled with the stored features and
results of every match of ``data/football`` (27,700), the trainer on (decay-triggered runs
only, so nothing runs unless asked). A first run registers the batch models, so both phases
score the same models. Then features are offered at ``--rate`` for ``--seconds`` twice, timed
from send to their champion prediction on the topic (:func:`tests.bench.phases.latency_at`):
once idle, once beside a busy loop at the fit process's priority (the CPU a fit takes, without
a fit), once while a refit of ``--models`` runs (requested by a row in ``retrain_runs``, as a
decay alert would; measuring starts once the fit process has begun). If the refit phase is
level with the busy-loop phase, the fit costs the scorer only the CPU it takes, not a blocked
event loop. Prints one
``REFIT_LATENCY`` line, and whether the refit lasted the whole second window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import asyncpg

from agents import reconciler_store
from agents.reconciler_store import LogBatch
from agents.trainer import FIT_NICENESS
from models.timeline import timeline
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import read_rows
from streams.log import configure_logging
from streams.settings import Settings
from tests.bench.deployment import Deployment, Process, running
from tests.bench.measure import Latency
from tests.bench.phases import latency_at
from tests.bench.restart_cost import ready
from tests.bench.workload import Matches, keyed
from tests.deployment import base_settings

DATA = Path(__file__).resolve().parents[2] / "data" / "football"


async def store_everything(settings: Settings) -> int:
    """Every match's features and result in the evaluation log; the count of matches."""
    events = timeline(read_rows(sorted(DATA.glob("*.csv"))).rows)
    batch = LogBatch()
    for event in events:
        if isinstance(event.record, MatchFeatures):
            batch.features[event.key] = event.record
        elif isinstance(event.record, MatchResult):
            batch.results[event.key] = event.record
    conn = await asyncpg.connect(settings.database_url)
    try:
        await reconciler_store.write(conn, batch)
    finally:
        await conn.close()
    return len(batch.features.keys() & batch.results.keys())


async def request_run(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        run_id: int = await conn.fetchval(
            "INSERT INTO retrain_runs (trigger) VALUES ('decay') RETURNING run_id"
        )
        return run_id
    finally:
        await conn.close()


async def run_state(settings: Settings, run_id: int) -> asyncpg.Record:
    conn = await asyncpg.connect(settings.database_url)
    try:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT started_at, finished_at, outcome FROM retrain_runs WHERE run_id = $1", run_id
        )
        return row
    finally:
        await conn.close()


async def cv_figures(settings: Settings) -> list[str]:
    """One ``CV`` line per refitted model: its cross-validated figures from the registry."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT model_id, version, metrics::text AS metrics FROM model_versions "
            "WHERE model_id LIKE 'batch-%' ORDER BY model_id, version"
        )
    finally:
        await conn.close()
    lines = []
    for row in rows:
        metrics = json.loads(row["metrics"])
        lines.append(
            f"CV model={row['model_id']} version={row['version']} rows={metrics['rows']:.0f} "
            f"cv_log_loss={metrics['cv_log_loss']:.4f} "
            f"cv_market_log_loss={metrics.get('cv_market_log_loss', float('nan')):.4f}"
        )
    return lines


async def wait_run(settings: Settings, run_id: int, column: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while (await run_state(settings, run_id))[column] is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"refit run {run_id}: no {column} after {limit:.0f} s")
        await asyncio.sleep(0.2)


def line(name: str, figures: Latency) -> str:
    """The phase's figures, and the machine's 1-minute load average at its end (the harness
    shares the machine: a figure means little without it)."""
    return (
        f"{name}_p50={figures.p50_ms:.1f} {name}_p99={figures.p99_ms:.1f} "
        f"{name}_max={figures.max_ms:.1f} {name}_received={figures.received} "
        f"{name}_load={os.getloadavg()[0]:.1f}"
    )


async def main(args: argparse.Namespace) -> str:
    deployment = Deployment(base_settings())
    settings = deployment.settings("refit").replace(
        retrain_on_decay=True, retrain_models=args.models, log_level="info"
    )
    await deployment.create(["refit"])
    try:
        stored = await store_everything(settings)
        print(f"stored {stored} matches with features and a result", flush=True)
        worker = Process(
            ["-m", "streams.cli", "worker"], settings, deployment.workdir / "worker.log"
        )
        async with running(worker):
            while not ready(settings):
                if not worker.running:
                    raise SystemExit(f"worker exited:\n{worker.log_tail()}")
                await asyncio.sleep(0.2)
            first = await request_run(settings)
            await wait_run(settings, first, "finished_at", args.timeout)
            print(f"first refit: {(await run_state(settings, first))['outcome']}", flush=True)
            for row in await cv_figures(settings):
                print(row, flush=True)
            await asyncio.sleep(5)  # every scorer swaps the new versions in
            matches = Matches.load()
            count = args.rate * int(args.seconds)
            idle_msgs = keyed([f for f, _ in matches.take(count, "idle")])
            busy_msgs = keyed([f for f, _ in matches.take(count, "busy")])
            hog_msgs = keyed([f for f, _ in matches.take(count, "hog")])
            idle = await latency_at(settings, worker, idle_msgs, args.rate, drain_s=30)
            print(f"idle: {line('idle', idle)}", flush=True)
            # The same CPU competition without a fit: one busy loop at the fit process's nice.
            spin = f"import os; os.nice({FIT_NICENESS})\nwhile True: pass"
            hog = await asyncio.create_subprocess_exec(sys.executable, "-c", spin)
            try:
                spun = await latency_at(settings, worker, hog_msgs, args.rate, drain_s=30)
            finally:
                hog.kill()
                await hog.wait()
            print(f"busy loop: {line('spin', spun)}", flush=True)
            second = await request_run(settings)
            await wait_run(settings, second, "started_at", 60)
            await asyncio.sleep(args.settle)  # the fit process has spawned and read the rows
            started = time.monotonic()
            busy = await latency_at(settings, worker, busy_msgs, args.rate, drain_s=30)
            measured = time.monotonic() - started
            covered = (await run_state(settings, second))["finished_at"] is None
            await wait_run(settings, second, "finished_at", args.timeout)
    finally:
        await deployment.remove()
    return (
        f"REFIT_LATENCY rate={args.rate} seconds={args.seconds:g} matches={stored} "
        f"models={args.models} {line('idle', idle)} {line('spin', spun)} {line('refit', busy)} "
        f"refit_covered_window={int(covered)} window_s={measured:.1f}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.refit_latency", description=__doc__
    )
    parser.add_argument("--rate", type=int, default=200, help="offered features per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--models", default="batch-logreg,batch-forest,batch-boosting", help="what is refitted"
    )
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after the run starts")
    parser.add_argument("--timeout", type=float, default=900.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    configure_logging("console", "warning")
    print(asyncio.run(main(parse_args(sys.argv[1:]))))
