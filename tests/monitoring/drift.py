"""What the feature drift monitor says over the shared data (``python -m tests.monitoring.drift``).

The offline builder's features (:func:`models.features.build_events`, the features agent's own
functions) of every match 2009-2024 in kickoff order are fed to
:class:`agents.drift_rules.DriftMonitor` with the worker's default configuration
(``DriftConfig()``: 28-day kickoff windows, each feature's reference its last 13 clean
windows, one expected false alarm a year), from 2010-07-01 on (2009-10 is every rating's
burn-in). It prints, per season, the home-win rate and the opening line's home
probability beside the windows evaluated, the highest score of ``open_p_H`` in them, the
firing decisions (roll-ups with their features) and, one by one, every decision. Figures:
docs/MONITORING.md, "Feature drift".
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from statistics import fmean

import numpy as np
from tqdm import tqdm

from agents.drift_rules import ROLLUP, DriftConfig, DriftDecision, DriftMonitor
from models.features import FEATURE_NAMES, build_events
from schemas.football_csv import FootballRow, default_data_files, read_rows

CONFIG = DriftConfig()
BURN_IN_END = datetime(2010, 7, 1, tzinfo=UTC)


def season_of(moment: datetime) -> str:
    """The season a window starting at ``moment`` belongs to (seasons start in July)."""
    year = moment.year if moment.month >= 7 else moment.year - 1
    return f"{year}-{year + 1}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--stationary",
        type=int,
        metavar="YEARS",
        help="instead: a stationary stream of YEARS years (the shared data's features shuffled: "
        "every window drawn from one distribution) and the false firings it raises",
    )
    args = parser.parse_args()
    if args.stationary:
        stationary(args.stationary, progress=not args.no_progress)
        return
    rows = read_rows(default_data_files()).rows
    monitor = DriftMonitor(CONFIG, FEATURE_NAMES)
    decisions: list[DriftDecision] = []
    home_wins: dict[str, list[float]] = defaultdict(list)
    market_home: dict[str, list[float]] = defaultdict(list)
    with tqdm(total=len(rows), unit="match", desc="drift", disable=args.no_progress) as bar:
        for features, result in build_events(rows):
            home_wins[features.season].append(float(result.outcome == "H"))
            market_home[features.season].append(features.features["open_p_H"])
            bar.update()
            if features.kickoff < BURN_IN_END:
                continue
            decisions.extend(
                monitor.observe(features.match_id, features.kickoff, features.features)
            )
    decisions.extend(monitor.close())
    windows = Counter(season_of(r.start) for r in monitor.reports)
    fired: dict[str, list[str]] = defaultdict(list)
    for d in decisions:
        if d.state == "firing":
            what = f"roll-up {d.window_start:%Y-%m-%d} [{', '.join(d.features)}]"
            fired[season_of(d.window_start)].append(what if d.feature == ROLLUP else d.feature)
    print(
        "| season | matches | home wins | market home | windows | open_p_H highest score "
        "(KS, level) | firings |"
    )
    print("|---|---|---|---|---|---|---|")
    for season in sorted(home_wins):
        names = "; ".join(fired[season]) or "-"
        print(
            f"| {season} | {len(home_wins[season])} | {fmean(home_wins[season]):.3f} | "
            f"{fmean(market_home[season]):.3f} | {windows[season]} | "
            f"{highest(monitor, season, 'open_p_H')} | {names} |"
        )
    tests = sum(len(r.statistics) for r in monitor.reports)
    firings = sum(1 for d in decisions if d.state == "firing")
    print(
        f"\nwindows evaluated: {len(monitor.reports)}; feature tests: {tests} "
        f"(tail {monitor.tail:.5f} each); firing decisions: {firings}; late: {monitor.late}"
    )
    for d in decisions:
        what = f"{d.feature} [{', '.join(d.features)}]" if d.feature == ROLLUP else d.feature
        print(
            f"  {d.window_start:%Y-%m-%d} {d.state:8} {what}: n={d.window} ref={d.reference} "
            f"PSI {d.psi:.3f} (level {d.psi_level:.3f}) KS {d.ks:.3f} (level {d.ks_level:.3f})"
        )


def stationary(years: int, *, progress: bool) -> None:
    """The false-alarm budget's check: the shared data's feature vectors (2010-07 on) shuffled
    (seeded) and given kickoffs at the shared data's pace (~1,800 matches a year, uniform), so
    every window is drawn from one distribution; every firing is a false alarm."""
    rows = read_rows(default_data_files()).rows
    pool = [f.features for f, _ in build_events(rows) if f.kickoff >= BURN_IN_END]
    rng = np.random.default_rng(16)
    per_year = len(pool) / ((pool_end(rows) - BURN_IN_END).days / 365.25)
    step = timedelta(days=365.25) / per_year
    monitor = DriftMonitor(CONFIG, FEATURE_NAMES)
    firings = 0
    total = int(years * per_year)
    for i in tqdm(range(total), unit="match", desc="stationary", disable=not progress):
        values = pool[int(rng.integers(len(pool)))]
        for d in monitor.observe(f"m{i}", BURN_IN_END + i * step, values):
            firings += d.state == "firing"
    firings += sum(d.state == "firing" for d in monitor.close())
    tests = sum(len(r.statistics) for r in monitor.reports)
    print(
        f"{years} years, {total} matches, {len(monitor.reports)} windows, {tests} feature tests "
        f"(tail {monitor.tail:.5f} each: {tests * monitor.tail:.1f} expected at most): "
        f"{firings} false firings, {firings / years:.2f} a year against a budget of "
        f"{CONFIG.alarms_per_year:g}"
    )


def pool_end(rows: list[FootballRow]) -> datetime:
    return max(row.kickoff for row in rows)


def highest(monitor: DriftMonitor, season: str, feature: str) -> str:
    """The feature's highest score (the smaller of PSI / level and KS / level: 1 fires) over
    the season's windows, with that window's KS and KS level."""
    scored = [
        (min(p / p_level, k / k_level), k, k_level)
        for r in monitor.reports
        if season_of(r.start) == season and feature in r.statistics
        for p, k, p_level, k_level in [r.statistics[feature]]
    ]
    if not scored:
        return "-"
    score, k, k_level = max(scored)
    return f"{score:.2f} ({k:.3f}, {k_level:.3f})"


if __name__ == "__main__":
    main()
