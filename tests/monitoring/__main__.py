"""Detection delays and false alarms of the decay monitor (``python -m tests.monitoring``).

The default model's prequential evaluations over the shared data (tests.monitoring.stream) are
fed to :class:`agents.monitor_rules.ScopeMonitor` as the service configures it (window 300,
threshold 5%, Page-Hinkley), twice: without the opening line's log loss (the window test and
the drift detector alone: the monitor before the paired test) and with it and the recorded
outcome (the paired test and the line test, which then replace the window test's decay rule).
Each fault starts at 30 moments drawn with a fixed seed after the baselines are set; the delay
is the number of faulty evaluations up to and including the first firing alert (decay or
drift), a miss when none fires within ``--horizon``. False alarms are the firing alerts on the
untouched stream, per scope (all leagues, and each league alone).

The data is split in time: seasons before 2017-18 (``tune``, where the paired test's allowance
and threshold were chosen with ``--sweep``, the line test's threshold with ``--sweep-line``)
and from 2017-18 on (``test``, untouched by the choice). Each part starts a fresh monitor, as a
deployment would. Figures: docs/MONITORING.md.
"""

from __future__ import annotations

import argparse
import copy
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from statistics import fmean, median

from tqdm import tqdm

from agents.monitor_rules import (
    LINE_THRESHOLD,
    PAIRED_ALLOWANCE,
    PAIRED_THRESHOLD,
    Decision,
    LineCusum,
    PairedCusum,
    ScopeMonitor,
    line_evidence,
)
from tests.monitoring.faults import FAULTS, WRONG_RESULTS, Observation, clean, faulty
from tests.monitoring.stream import Scored, prequential_stream

WINDOW = 300
THRESHOLD = 0.05
DETECTOR = "page-hinkley"
SPLIT = datetime(2017, 7, 1, tzinfo=UTC)
"""Start of the held-out part: the 2017-18 season (summer break before it)."""
MOMENTS = 30
SEED = 16
HORIZON = 2000
"""Faulty evaluations a run waits for an alert before it counts a miss: ~4 months of 5 leagues."""


def make_monitor(
    paired: bool, allowance: float, threshold: float, line: float = LINE_THRESHOLD
) -> ScopeMonitor:
    """The service's monitor; ``paired`` says whether it is given the reference log loss and
    the outcome (the paired test and the line test, whose threshold is ``line``)."""
    return ScopeMonitor(
        window=WINDOW,
        threshold=THRESHOLD,
        detector_name=DETECTOR,
        paired=PairedCusum(baseline_size=WINDOW, allowance=allowance, threshold=threshold),
        line=LineCusum(window=WINDOW, threshold=line),
    )


def feed(
    monitor: ScopeMonitor, rows: Iterable[tuple[int, Observation]], paired: bool
) -> Iterable[tuple[int, list[Decision]]]:
    """Each evaluation's index and the firing decisions it triggers."""
    for i, row in rows:
        reference = row.reference_log_loss if paired else None
        outcome = row.outcome if paired else None
        decisions = monitor.observe(
            f"e{i}", row.log_loss, row.hit, reference, match_id=f"m{i}", outcome=outcome
        )
        yield i, [d for d in decisions if d.state == "firing"]


def false_alarms(
    stream: Sequence[Scored],
    observed: Sequence[Observation],
    paired: bool,
    k: float,
    h: float,
    line: float = LINE_THRESHOLD,
) -> dict[str, list[Decision]]:
    """Firing alerts on the untouched stream, per scope."""
    scopes = {"all": list(range(len(stream)))}
    for i, s in enumerate(stream):
        scopes.setdefault(s.league, []).append(i)
    alarms = {}
    for scope, rows in scopes.items():
        monitor = make_monitor(paired, k, h, line)
        alarms[scope] = [
            d for _, ds in feed(monitor, ((i, observed[i]) for i in rows), paired) for d in ds
        ]
    return alarms


def delays(
    observed: Sequence[Observation],
    broken: Sequence[Observation],
    starts: Sequence[int],
    paired: bool,
    k: float,
    h: float,
    horizon: int,
    line: float = LINE_THRESHOLD,
) -> list[tuple[int | None, str | None]]:
    """For each start: the delay to the first firing alert (None: a miss) and its detector."""
    monitor = make_monitor(paired, k, h, line)
    position = 0
    found: list[tuple[int | None, str | None]] = []
    for start in starts:  # sorted: the clean monitor moves forward to each start once
        for _ in feed(monitor, ((i, observed[i]) for i in range(position, start)), paired):
            pass
        position = start
        run = copy.deepcopy(monitor)
        end = min(len(broken), start + horizon)
        hit: tuple[int | None, str | None] = (None, None)
        for i, decisions in feed(run, ((i, broken[i]) for i in range(start, end)), paired):
            if decisions:
                hit = (i - start + 1, decisions[0].detector)
                break
        found.append(hit)
    return found


def p90(values: Sequence[int]) -> int:
    """The 90th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def summary(found: Sequence[tuple[int | None, str | None]]) -> str:
    """``median | p90 | misses`` of the delays (misses are excluded from the percentiles)."""
    got = [d for d, _ in found if d is not None]
    misses = len(found) - len(got)
    if not got:
        return f"- | - | {misses}/{len(found)}"
    return f"{median(got):g} | {p90(got)} | {misses}/{len(found)}"


def mean_evidence(observed: Sequence[Observation]) -> float:
    """Mean :func:`agents.monitor_rules.line_evidence` of a stream (the line test's drift)."""
    return fmean(line_evidence(o.reference_log_loss, o.outcome) for o in observed)


def measure(
    name: str, stream: Sequence[Scored], k: float, h: float, horizon: int, quiet: bool
) -> None:
    """Print the delay table and the false alarms of one part of the data."""
    observed = clean(stream)
    rng = random.Random(SEED)
    low, high = 2 * WINDOW, len(stream) - horizon
    print(f"\n## {name}: {len(stream)} evaluations, {stream[0].kickoff:%Y-%m-%d} to "
          f"{stream[-1].kickoff:%Y-%m-%d}; paired CUSUM k={k:g} h={h:g}\n")  # fmt: skip
    wrong = faulty(stream, WRONG_RESULTS)
    print(f"Mean line evidence per match: {mean_evidence(observed):+.4f} untouched, "
          f"{mean_evidence(wrong):+.4f} with wrong results\n")  # fmt: skip
    print("| fault | window test: median | p90 | missed | + tests against the line: median | p90 "
          "| missed | first detector (against the line) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for fault, text in tqdm(FAULTS.items(), desc=name, disable=quiet, leave=False):
        starts = sorted(rng.randrange(low, high) for _ in range(MOMENTS))
        broken = faulty(stream, fault)
        old = delays(observed, broken, starts, False, k, h, horizon)
        new = delays(observed, broken, starts, True, k, h, horizon)
        detectors = sorted({d for _, d in new if d is not None})
        print(f"| {text} | {summary(old)} | {summary(new)} | {', '.join(detectors)} |")
    print("\n| scope | evaluations | false alarms: window test | + tests against the line |")
    print("|---|---|---|---|")
    old_alarms = false_alarms(stream, observed, False, k, h)
    new_alarms = false_alarms(stream, observed, True, k, h)
    for scope in sorted(old_alarms, key=lambda s: (s != "all", s)):
        count = sum(1 for s in stream if scope in ("all", s.league))
        kinds = ", ".join(f"{d.detector}/{d.metric}" for d in new_alarms[scope])
        print(f"| {scope} | {count} | {len(old_alarms[scope])} | {len(new_alarms[scope])}"
              f"{f' ({kinds})' if kinds else ''} |")  # fmt: skip


def sweep(stream: Sequence[Scored], horizon: int, quiet: bool) -> None:
    """Paired-test delays and false alarms over a grid of (k, h), on one part."""
    observed = clean(stream)
    rng = random.Random(SEED)
    starts = {
        fault: sorted(rng.randrange(2 * WINDOW, len(stream) - horizon) for _ in range(MOMENTS))
        for fault in FAULTS
    }
    broken = {fault: faulty(stream, fault) for fault in FAULTS}
    grid = [(k, h) for k in (0.5, 1.0, 1.5) for h in (10.0, 15.0, 20.0, 25.0, 30.0)]
    for k, h in tqdm(grid, desc="sweep", disable=quiet):
        alarms = false_alarms(stream, observed, True, k, h)
        cells = []
        for fault in FAULTS:
            found = delays(observed, broken[fault], starts[fault], True, k, h, horizon)
            cells.append(f"{fault}={summary(found)}")
        total = sum(len(a) for a in alarms.values())
        print(f"SWEEP k={k:g} h={h:g} false_alarms={total} " + " ".join(cells).replace(" | ", "/"))


def sweep_line(stream: Sequence[Scored], horizon: int, quiet: bool) -> None:
    """Line-test threshold against false alarms and the wrong-results delay, on one part (the
    paired test at its chosen k and h)."""
    observed = clean(stream)
    rng = random.Random(SEED)
    # The same moments as :func:`measure` draws for this fault (one draw per fault, in order).
    starts = {
        fault: sorted(rng.randrange(2 * WINDOW, len(stream) - horizon) for _ in range(MOMENTS))
        for fault in FAULTS
    }[WRONG_RESULTS]
    broken = faulty(stream, WRONG_RESULTS)
    k, h = PAIRED_ALLOWANCE, PAIRED_THRESHOLD
    for line in tqdm((5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0), desc="sweep", disable=quiet):
        alarms = false_alarms(stream, observed, True, k, h, line)
        found = delays(observed, broken, starts, True, k, h, horizon, line)
        total = sum(len(a) for a in alarms.values())
        print(f"SWEEP line h={line:g} false_alarms={total} {WRONG_RESULTS}={summary(found)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement; with ``--sweep``, the grid on the tuning part instead."""
    parser = argparse.ArgumentParser(prog="python -m tests.monitoring", description=__doc__)
    parser.add_argument("--sweep", action="store_true", help="grid of (k, h) on the tune part")
    parser.add_argument(
        "--sweep-line", action="store_true", help="grid of the line test's h on the tune part"
    )
    parser.add_argument("--allowance", type=float, default=PAIRED_ALLOWANCE, help="CUSUM k")
    parser.add_argument("--threshold", type=float, default=PAIRED_THRESHOLD, help="CUSUM h")
    parser.add_argument("--horizon", type=int, default=HORIZON)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    stream = prequential_stream(progress=not args.quiet)
    tune = [s for s in stream if s.kickoff < SPLIT]
    test = [s for s in stream if s.kickoff >= SPLIT]
    if args.sweep:
        sweep(tune, args.horizon, args.quiet)
        return 0
    if args.sweep_line:
        sweep_line(tune, args.horizon, args.quiet)
        return 0
    for name, part in (("tune", tune), ("test", test)):
        measure(name, part, args.allowance, args.threshold, args.horizon, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
