"""Does a refit block scoring? ``python -m tests.bench.refit_loop``: in one process, no broker.

An event loop scores one match every ``1/--rate`` s with the scorer's own function
(:func:`agents.scorer_rules.predict_many`, the seeded models), and times each from when it
was due to when its predictions exist: the loop's lateness plus the scoring. Four phases, each
run twice in mirrored order (:data:`ORDER`), their samples pooled:

* ``idle``: nothing else runs (``--seconds``);
* ``spin``: a busy loop runs in another process at the fit process's priority (the CPU a fit
  takes, without a fit; ``--seconds``);
* ``process``: the trainer's refit of every match of ``data/football`` runs in its process pool
  (:class:`agents.trainer.FitPool`, as the worker runs it), for as long as the refit takes;
* ``thread``: the same refit in a thread of this process (what ``run_in_executor`` with the
  default executor would do): the fit holds the GIL in parts, and the loop waits for it.

The fit takes a core in both refit phases; only the thread shares the GIL with the loop. A
``process`` phase level with ``spin`` costs the scorer only the core the fit takes. Prints
one ``REFIT_LOOP`` line (milliseconds; the 1-minute load average at the end of each phase).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from agents.scorer_rules import predict_many
from agents.trainer import FIT_NICENESS, FitPool
from agents.trainer_rules import FitRequest, RefitPlan, refit_all
from models.timeline import timeline
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import read_rows
from tests.bench.measure import Latency, latency
from tests.bench.workload import Matches, default_models

DATA = Path(__file__).resolve().parents[2] / "data" / "football"


def stored_json() -> tuple[str, int]:
    """Every match as :func:`agents.trainer_store.stored_matches` returns it, and the count."""
    events = timeline(read_rows(sorted(DATA.glob("*.csv"))).rows)
    features = {e.key: e.record for e in events if isinstance(e.record, MatchFeatures)}
    results = {e.key: e.record for e in events if isinstance(e.record, MatchResult)}
    rows = [
        {
            "match_id": key,
            "kickoff": f.kickoff.isoformat(),
            "issued_at": None if f.issued_at is None else f.issued_at.isoformat(),
            "features": dict(f.features),
            "outcome": results[key].outcome,
        }
        for key, f in features.items()
        if key in results
    ]
    rows.sort(key=lambda r: (r["kickoff"], r["match_id"]))
    return json.dumps(rows), len(rows)


async def probe(rate: int, until: Awaitable[object] | float) -> tuple[list[float], float]:
    """Score one match every ``1/rate`` s until ``until`` (a number of seconds, or an awaitable
    that finishes); each match's latency (seconds) and how long it ran."""
    models = default_models()
    matches = Matches.load().features
    task = asyncio.ensure_future(asyncio.sleep(until) if isinstance(until, float) else until)
    started = time.perf_counter()
    samples: list[float] = []
    while not task.done():
        due = started + len(samples) / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        predict_many([matches[len(samples) % len(matches)]], models, now=datetime.now(UTC))
        samples.append(time.perf_counter() - due)
    task.result()  # a failed refit fails the run
    return samples, time.perf_counter() - started


def line(name: str, figures: Latency, loads: list[float]) -> str:
    return (
        f"{name}_p50={figures.p50_ms:.2f} {name}_p99={figures.p99_ms:.2f} "
        f"{name}_max={figures.max_ms:.2f} {name}_n={figures.received} "
        f"{name}_s={figures.seconds:.0f} {name}_load={sum(loads) / len(loads):.1f}"
    )


ORDER = ("idle", "spin", "process", "thread", "thread", "process", "spin", "idle")
"""One round: each phase twice, in mirrored order, so a load that drifts during the run
weighs on every phase alike."""


async def phase(name: str, args: argparse.Namespace, plan: RefitPlan) -> tuple[list[float], float]:
    if name == "idle":
        return await probe(args.rate, float(args.seconds))
    if name == "spin":
        spin = f"import os; os.nice({FIT_NICENESS})\nwhile True: pass"
        hog = await asyncio.create_subprocess_exec(sys.executable, "-c", spin)
        try:
            return await probe(args.rate, float(args.seconds))
        finally:
            hog.kill()
            await hog.wait()
    if name == "process":
        pool = FitPool()
        try:
            run = asyncio.ensure_future(pool.run(plan))
            measured = await probe(args.rate, run)
        finally:
            pool.close()
        for model in run.result().models:
            metrics = model.result.metrics if model.result else {}
            print(
                f"CV model={model.request.model_id} rows={metrics.get('rows', 0):.0f} "
                f"cv_log_loss={metrics.get('cv_log_loss', float('nan')):.4f} "
                f"cv_market_log_loss={metrics.get('cv_market_log_loss', float('nan')):.4f}",
                flush=True,
            )
        return measured
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as threads, threadpool_limits(limits=1):
        return await probe(args.rate, loop.run_in_executor(threads, refit_all, plan))


async def main(args: argparse.Namespace) -> str:
    text, matches = stored_json()
    fits = tuple(FitRequest(m, m, args.folds) for m in args.models.split(","))
    plan = RefitPlan(text, fits, min_matches=500)
    print(f"{matches} matches; refitting {args.models}; phases {' '.join(ORDER)}", flush=True)
    samples: dict[str, list[float]] = {name: [] for name in ORDER}
    seconds: dict[str, float] = dict.fromkeys(ORDER, 0.0)
    loads: dict[str, list[float]] = {name: [] for name in ORDER}
    for name in ORDER:
        taken, elapsed = await phase(name, args, plan)
        samples[name] += taken
        seconds[name] += elapsed
        loads[name].append(os.getloadavg()[0])
        print(f"{name}: {len(taken)} matches in {elapsed:.1f} s", flush=True)
    figures = [
        line(
            name, latency(args.rate, seconds[name], len(samples[name]), samples[name]), loads[name]
        )
        for name in dict.fromkeys(ORDER)
    ]
    return f"REFIT_LOOP rate={args.rate} matches={matches} models={args.models} " + " ".join(
        figures
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.refit_loop", description=__doc__)
    parser.add_argument("--rate", type=int, default=100, help="matches scored per second")
    parser.add_argument(
        "--seconds", type=int, default=30, help="length of each idle and spin phase"
    )
    parser.add_argument("--models", default="batch-logreg")
    parser.add_argument("--folds", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(asyncio.run(main(parse_args(sys.argv[1:]))))
