"""What the feature drift monitor says over the shared data (``python -m tests.monitoring.drift``).

The offline builder's features (:func:`models.features.build_events`, the features agent's own
functions) of every match 2009-2024 in kickoff order are fed to
:class:`agents.drift_rules.DriftMonitor` as :data:`CONFIG` sets it: reference = the seasons
2010-11 and 2011-12 (2009-10 is every rating's burn-in), 28-day kickoff windows after it. It
prints, per season, the home-win rate and the opening line's home probability beside the
windows evaluated, the windows with a roll-up and the features that fired, and the firing
decisions one by one. Figures: docs/MONITORING.md, "Feature drift".
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from datetime import UTC, datetime
from statistics import fmean

import numpy as np
from tqdm import tqdm

from agents.drift_rules import ROLLUP, DriftConfig, DriftDecision, DriftMonitor
from models.features import FEATURE_NAMES, build_events
from schemas.football_csv import default_data_files, read_rows

CONFIG = DriftConfig(
    reference_start=datetime(2010, 7, 1, tzinfo=UTC),
    reference_end=datetime(2012, 7, 1, tzinfo=UTC),
)


def season_of(moment: datetime) -> str:
    """The season a window starting at ``moment`` belongs to (seasons start in July)."""
    year = moment.year if moment.month >= 7 else moment.year - 1
    return f"{year}-{year + 1}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    rows = read_rows(default_data_files()).rows
    monitor = DriftMonitor(CONFIG, FEATURE_NAMES)
    decisions: list[DriftDecision] = []
    home_wins: dict[str, list[float]] = defaultdict(list)
    market_home: dict[str, list[float]] = defaultdict(list)
    season_values: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tqdm(total=len(rows), unit="match", desc="drift", disable=args.no_progress) as bar:
        for features, result in build_events(rows):
            home_wins[features.season].append(float(result.outcome == "H"))
            market_home[features.season].append(features.features["open_p_H"])
            season_values[features.season].append(features.features)
            decisions.extend(
                monitor.observe(features.match_id, features.kickoff, features.features)
            )
            bar.update()
    decisions.extend(monitor.close())
    windows = Counter(season_of(r.start) for r in monitor.reports)
    rollups = Counter(
        season_of(r.start)
        for r in monitor.reports
        if len(r.firing) / len(FEATURE_NAMES) >= CONFIG.rollup_share
    )
    fired: dict[str, Counter[str]] = defaultdict(Counter)
    for d in decisions:
        if d.state == "firing":
            for name in d.features if d.feature == ROLLUP else (d.feature,):
                fired[season_of(d.window_start)][name] += 1
    print(
        "| season | matches | home wins | market home | open_p_H season PSI / KS (level) "
        "| windows | roll-up windows | fired |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for season in sorted(home_wins):
        names = ", ".join(f"{n} ({c})" if c > 1 else n for n, c in sorted(fired[season].items()))
        print(
            f"| {season} | {len(home_wins[season])} | {fmean(home_wins[season]):.3f} | "
            f"{fmean(market_home[season]):.3f} | {season_window(monitor, season_values[season])} "
            f"| {windows[season]} | {rollups[season]} | {names or '-'} |"
        )
    print(f"\nlate matches: {monitor.late}; decisions:")
    for d in decisions:
        what = f"{d.feature} [{', '.join(d.features)}]" if d.feature == ROLLUP else d.feature
        print(
            f"  {d.window_start:%Y-%m-%d} {d.state:8} {what}: n={d.window} "
            f"PSI {d.psi:.3f} (level {d.psi_level:.3f}) KS {d.ks:.3f} (level {d.ks_level:.3f})"
        )


def season_window(monitor: DriftMonitor, rows: list[dict[str, float]]) -> str:
    """The opening line's home probability over a whole season taken as one window."""
    assert monitor.references is not None
    reference = monitor.references["open_p_H"]
    p, k = reference.statistics(np.array([row["open_p_H"] for row in rows]))
    p_level, k_level = reference.level(len(rows), CONFIG)
    return f"{p:.3f} / {k:.3f} ({p_level:.2f} / {k_level:.2f})"


if __name__ == "__main__":
    main()
