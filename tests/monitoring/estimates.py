"""How well the estimates before results track the realised log loss
(``python -m tests.monitoring.estimates``).

The default model's prequential evaluations over the shared data (one
:func:`models.evaluate.run_prequential` run, as ``tipstream evaluate`` makes it) are cut into
consecutive windows of 300 evaluations. Per window: the mean expected log loss ``H(p)`` and the
mean cross-entropy against the normalised closing line ``CE(q, p)`` (:mod:`agents.estimates_rules`)
against the realised mean log loss of the same matches; and the mean expected edge against the
opening line against the realised one (the opening line's log loss minus the model's). The
closing-line figures are over the matches that have a closing line (windowed among those). It
prints, per estimate, the windows, the mean absolute error, the mean bias and the Pearson
correlation. Figures: docs/MONITORING.md, "Estimates before results".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import correlation, fmean

from tqdm import tqdm

from agents.estimates_rules import (
    ESTIMATE_WINDOW,
    cross_entropy,
    expected_log_loss,
    mean_absolute_error,
    window_means,
)
from models import catalog
from models.evaluate import Entrant, run_prequential
from models.features import build_events
from models.metrics import log_loss
from models.policy import parse as parse_policy
from schemas.events import OUTCOMES
from schemas.football_csv import default_data_files, read_rows


@dataclass(frozen=True, slots=True)
class Tracking:
    """One estimate against its realised counterpart, window by window."""

    name: str
    estimated: list[float]
    realised: list[float]

    def line(self) -> str:
        mae = mean_absolute_error(self.estimated, self.realised)
        bias = fmean(e - r for e, r in zip(self.estimated, self.realised, strict=True))
        corr = correlation(self.estimated, self.realised) if len(self.estimated) > 2 else math.nan
        return (
            f"| {self.name} | {len(self.estimated)} | {fmean(self.estimated):.4f} | "
            f"{fmean(self.realised):.4f} | {mae:.4f} | {bias:+.4f} | {corr:.3f} |"
        )


def tracking(window: int, progress: bool) -> tuple[int, int, list[Tracking]]:
    """(scored matches, with a closing line, the three trackings) of one prequential run."""
    rows = read_rows(default_data_files()).rows
    entrant = Entrant(
        catalog.create(catalog.DEFAULT_MODEL_ID), parse_policy(catalog.DEFAULT_POLICY)
    )
    with tqdm(total=len(rows), unit="match", desc="prequential", disable=not progress) as bar:
        report = run_prequential(build_events(rows), [entrant], on_progress=bar.update)
    entropy, realised = [], []
    closing_entropy, closing, closing_realised, edge, edge_realised = [], [], [], [], []
    for (p, outcome), q_row, odds, open_loss in zip(
        entrant.scored,
        report.close_probabilities,
        report.odds_open,
        report.market_open_losses,
        strict=True,
    ):
        loss = log_loss(p, outcome)
        entropy.append(expected_log_loss(p))
        realised.append(loss)
        if math.isnan(q_row[0]):
            continue
        q = dict(zip(OUTCOMES, q_row, strict=True))
        against_close = cross_entropy(q, p)
        closing_entropy.append(entropy[-1])
        closing.append(against_close)
        closing_realised.append(loss)
        edge.append(cross_entropy(q, _open_line(odds)) - against_close)
        edge_realised.append(open_loss - loss)

    def windows(values: Sequence[float]) -> list[float]:
        return window_means(values, window)

    return (
        len(realised),
        len(closing),
        [
            Tracking("expected log loss H(p), all matches", windows(entropy), windows(realised)),
            Tracking(
                "expected log loss H(p), matches with a closing line",
                windows(closing_entropy),
                windows(closing_realised),
            ),
            Tracking(
                "cross-entropy vs closing line CE(q, p)",
                windows(closing),
                windows(closing_realised),
            ),
            Tracking("expected edge vs opening line", windows(edge), windows(edge_realised)),
            # A naive forecast to compare with: the previous window's realised log loss.
            Tracking(
                "previous window's realised log loss (naive)",
                windows(realised)[:-1],
                windows(realised)[1:],
            ),
        ],
    )


def _open_line(odds: tuple[float, float, float]) -> dict[str, float]:
    """Normalised implied probabilities of the opening decimal odds (H, D, A)."""
    inverse = [1.0 / price for price in odds]
    total = sum(inverse)
    return dict(zip(OUTCOMES, (i / total for i in inverse), strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=ESTIMATE_WINDOW)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    scored, with_close, rows = tracking(args.window, progress=not args.no_progress)
    print(
        f"{catalog.DEFAULT_MODEL_ID} ({catalog.DEFAULT_POLICY}): {scored} scored matches, "
        f"{with_close} with a closing line; windows of {args.window} evaluations"
    )
    print(
        "| estimate | windows | mean estimate | mean realised | MAE | bias | correlation |\n"
        "|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print(row.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
