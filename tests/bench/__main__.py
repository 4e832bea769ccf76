"""``make bench``: ``python -m tests.bench [options]``; prints the ``BENCH`` line last."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from schemas.events import MatchFeatures
from streams.log import configure_logging
from streams.settings import Settings
from streams.topics import Topics
from tests.bench import inprocess, passthrough, phases, relay
from tests.bench.deployment import Deployment, Process, running
from tests.bench.kafka_io import Offsets, load
from tests.bench.measure import Latency, Throughput
from tests.bench.report import BenchRun, StreamRun, plot_sweep, reconciliation_details
from tests.bench.restart_cost import start_profiler
from tests.bench.workload import (
    DEFAULT_DATA,
    Matches,
    default_models,
    keyed,
    predictions_for,
)
from tests.deployment import base_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--events",
        type=int,
        default=60_000,
        help="feature events for the passthrough, relay and scorer throughput "
        "(~5 s each: long enough to average out the fetch cycle)",
    )
    parser.add_argument("--rate", type=int, default=1_000, help="offered load of the latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency run")
    parser.add_argument(
        "--results",
        type=int,
        default=10_000,
        help="matches reconciled (each one evaluation per model)",
    )
    parser.add_argument("--learn", type=int, default=5_000, help="in-process learn steps")
    parser.add_argument("--score", type=int, default=5_000, help="in-process scored events")
    parser.add_argument(
        "--sweep",
        default="",
        help="comma-separated offered loads for the latency sweep, e.g. "
        "250,500,1000,2000,4000 (empty: none)",
    )
    parser.add_argument("--sweep-seconds", type=float, default=10.0)
    parser.add_argument("--plot", type=Path, help="PNG of the sweep's latency percentiles")
    parser.add_argument("--json", type=Path, help="write every figure of the run here")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="longest wait for any one phase's output, in seconds",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the passthrough, relay, scorer and reconciler under pyinstrument "
        "and save their sessions in this folder",
    )
    parser.add_argument(
        "--only",
        choices=["reconciliation", "relay", "scorer"],
        help="run this phase alone and print its figures instead of the BENCH line, for "
        "before/after comparisons of one part: reconciliation (a RECONCILE line); relay or "
        "scorer (a STREAM line; both passthroughs run first, the ceilings of the same moment; "
        "the scorer's latency at --rate, and the --sweep if given)",
    )
    parser.add_argument(
        "--spy",
        type=Path,
        help="sample the relay or scorer with py-spy (collapsed stacks, all threads, 50 Hz) "
        "from its first output to its last of the throughput phase, or the reconciler from "
        "its primed state to its last evaluation, into DIR/NAME.txt",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's database, topics and logs (to inspect them)",
    )
    return parser.parse_args(argv)  # fmt: skip


def machine() -> dict[str, object]:
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": pages * page_size / 2**30,
        "python": platform.python_version(),
        "load_before": tuple(round(v, 2) for v in os.getloadavg()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(
    args: argparse.Namespace, base: Settings
) -> BenchRun | phases.Reconciliation | StreamRun:
    """Every phase (or the ``--only`` one) on one deployment; removed afterwards unless
    ``--keep``."""
    facts = machine()
    matches = Matches.load(args.data)
    deployment = Deployment(base)
    say(f"bench {deployment.tag}: logs in {deployment.workdir}")
    await deployment.create(["scorer", "reconciler"])
    try:
        if args.only == "reconciliation":
            say(f"reconciliation: {args.results} matches")
            return await _reconcile(args, deployment, matches, len(default_models()))
        if args.only in ("relay", "scorer"):
            return await _stream_phase(args, deployment, matches, facts)
        return await _phases(args, deployment, matches, facts)
    finally:
        if not args.keep:
            await deployment.remove()


async def _phases(
    args: argparse.Namespace, deployment: Deployment, matches: Matches, facts: dict[str, object]
) -> BenchRun:
    settings = deployment.settings("scorer")
    models = len(default_models())
    features = await _load_features(args, settings, matches)
    ceilings = await _ceilings(args, deployment, settings)
    relayed = await _relay(args, deployment, settings)
    scored, latencies = await _scorer(args, deployment, settings, matches, models)

    say(f"reconciliation: {args.results} matches")
    reconciliation = await _reconcile(args, deployment, matches, models)
    say("in-process: learning and scoring")
    raw = [value for _, value in keyed(features[: args.score])]
    scoring = inprocess.scoring_cost(raw)
    learned = list(matches.take(args.learn, "n"))
    learn_per_s = inprocess.learn_rate(learned)
    difference = inprocess.scoring_difference(raw, learned)
    return BenchRun(
        machine=facts,
        sizes={k: v for k, v in vars(args).items() if k not in ("plot", "json", "data")},
        passthrough=ceilings["aiokafka"],
        confluent_passthrough=ceilings["confluent"],
        relay=relayed,
        scorer=scored,
        models=models,
        latency=latencies[0],
        reconciliation=reconciliation,
        learn_per_s=learn_per_s,
        scoring=scoring,
        scoring_difference=difference,
        sweep=latencies[1:],
        load_after=tuple(round(v, 2) for v in os.getloadavg()),  # type: ignore[arg-type]
    )


async def _stream_phase(
    args: argparse.Namespace, deployment: Deployment, matches: Matches, facts: dict[str, object]
) -> StreamRun:
    """``--only relay|scorer``: the two ceilings, then the relay or the scorer (and latency)."""
    settings = deployment.settings("scorer")
    await _load_features(args, settings, matches)
    ceilings = await _ceilings(args, deployment, settings)
    if args.only == "relay":
        measured, latencies = await _relay(args, deployment, settings), []
    else:
        measured, latencies = await _scorer(
            args, deployment, settings, matches, len(default_models())
        )
    return StreamRun(
        phase=args.only,
        machine=facts,
        passthrough=ceilings["aiokafka"],
        confluent_passthrough=ceilings["confluent"],
        measured=measured,
        latency=latencies,
        load_after=tuple(round(v, 2) for v in os.getloadavg()),  # type: ignore[arg-type]
    )


async def _load_features(
    args: argparse.Namespace, settings: Settings, matches: Matches
) -> list[MatchFeatures]:
    """The throughput phases' feature events, on the features topic."""
    features = [f for f, _ in matches.take(args.events, "t")]
    await load(settings.kafka_bootstrap, Topics.from_settings(settings).features, keyed(features))
    return features


async def _ceilings(
    args: argparse.Namespace, deployment: Deployment, settings: Settings
) -> dict[str, Throughput]:
    """Both passthroughs over the features topic, by client."""
    topics = Topics.from_settings(settings)
    ceilings = {}
    for client in passthrough.CLIENTS:  # aiokafka first, as in every earlier run
        say(f"passthrough ({client}): {args.events} events")
        sink = phases.passthrough_topic(settings, client)
        await phases.create_topic(settings, sink)
        yardstick = Process(
            _argv(args, f"passthrough-{client}", "tests.bench.passthrough", client,
                  topics.features, sink, str(args.events)),
            settings, deployment.workdir / f"passthrough-{client}.log",
        )  # fmt: skip
        async with running(yardstick):
            ceilings[client] = await phases.copied(
                settings, yardstick, sink, args.events, args.timeout
            )
    return ceilings


async def _relay(
    args: argparse.Namespace, deployment: Deployment, settings: Settings
) -> Throughput:
    say(f"faust relay: {args.events} events")
    sink = relay.relay_topic(settings)
    await phases.create_topic(settings, sink)
    floor = Process(
        _argv(args, "relay", "tests.bench.worker", relay.AGENT),
        settings.replace(app_id=f"{settings.group_id}-relay"),  # its own consumer group
        deployment.workdir / "relay.log",
    )
    async with running(floor), _spied(args, floor, settings, sink, "relay"):
        return await phases.copied(settings, floor, sink, args.events, args.timeout)


async def _scorer(
    args: argparse.Namespace,
    deployment: Deployment,
    settings: Settings,
    matches: Matches,
    models: int,
) -> tuple[Throughput, list[Latency]]:
    """The scorer's throughput, then its latency at ``--rate`` and over the sweep."""
    say(f"scorer: {args.events} events x {models} models")
    scorer = Process(_argv(args, "scorer", "tests.bench.worker", "scorer"), settings,
                     deployment.workdir / "scorer.log")  # fmt: skip
    predictions = Topics.from_settings(settings).predictions
    async with running(scorer):
        async with _spied(args, scorer, settings, predictions, "scorer"):
            scored = await phases.scorer(settings, scorer, args.events, models, args.timeout)
        latencies = []
        for rate, seconds in [(args.rate, args.seconds)] + [
            (int(r), args.sweep_seconds) for r in args.sweep.split(",") if r
        ]:
            say(f"latency: {rate} eps for {seconds:.0f} s")
            offered = keyed([f for f, _ in matches.take(int(rate * seconds), f"l{rate}x")])
            latencies.append(
                await phases.latency_at(settings, scorer, offered, rate, drain_s=args.timeout)
            )
    return scored, latencies


@asynccontextmanager
async def _spied(
    args: argparse.Namespace, process: Process, settings: Settings, sink: str | None, name: str
) -> AsyncIterator[None]:
    """py-spy on ``process`` from its first message on ``sink`` (at once without one) to the
    end of the block."""
    if args.spy is None:
        yield
        return
    args.spy.mkdir(parents=True, exist_ok=True)
    if sink is not None:
        async with Offsets(settings.kafka_bootstrap, settings.partitions) as offsets:
            await offsets.wait_for(sink, 1, timeout=args.timeout)
    assert process.popen is not None
    spy = start_profiler(process.popen.pid, str(args.spy.resolve() / f"{name}.txt"))
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
        await asyncio.to_thread(spy.wait, 60)


async def _reconcile(
    args: argparse.Namespace, deployment: Deployment, matches: Matches, models: int
) -> phases.Reconciliation:
    """Prime a reconciler with features and predictions, then time the results."""
    settings = deployment.settings("reconciler")
    topics = Topics.from_settings(settings)
    chosen = list(matches.take(args.results, "r"))
    features = [f for f, _ in chosen]
    await load(settings.kafka_bootstrap, topics.features, keyed(features))
    predictions = predictions_for(features, default_models(), datetime.now(UTC))
    await load(settings.kafka_bootstrap, topics.predictions, predictions)
    reconciler = Process(_argv(args, "reconciler", "tests.bench.worker", "reconciler"),
                         settings, deployment.workdir / "reconciler.log")  # fmt: skip
    async with running(reconciler):
        await phases.wait_for_rows(settings, reconciler, "predictions", len(predictions),
                                   args.timeout)  # fmt: skip
        async with _spied(args, reconciler, settings, None, "reconciler"):
            return await phases.reconcile(
                settings,
                reconciler,
                keyed([r for _, r in chosen]),
                len(predictions),
                timeout=args.timeout,
            )


def _argv(args: argparse.Namespace, name: str, module: str, *rest: str) -> list[str]:
    """Interpreter arguments of a process under test, under the profiler if asked."""
    if args.profile is None:
        return ["-m", module, *rest]
    args.profile.mkdir(parents=True, exist_ok=True)
    session = args.profile.resolve() / f"{name}.pyisession"
    return ["-m", "pyinstrument", "-r", "pyisession", "-o", str(session), "-m", module, *rest]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = base_settings()
    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    result = asyncio.run(run(args, base))
    if isinstance(result, StreamRun):
        for line in result.details():
            print(line)
        print(result.line(), flush=True)
        return 0
    if isinstance(result, phases.Reconciliation):
        print(reconciliation_details(result))
        print(
            f"RECONCILE reconcile_eps={result.eps:.1f} ledger_bytes={result.ledger_bytes:.0f} "
            f"changelog_bytes_per_match={result.changelog_bytes_per_match:.0f} "
            f"cpu_us_per_evaluation={result.cpu_us_per_evaluation:.1f}",
            flush=True,
        )
        return 0
    if args.json:
        args.json.write_text(result.to_json())
    if args.plot and result.sweep:
        plot_sweep(
            result.sweep,
            args.plot,
            f"tipstream scorer, {result.models} models, {result.machine['cpus']} CPUs",
        )
    for line in result.details():
        print(line)
    print(result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
