"""``tipstream evaluate``: offline prequential quality of the models against the market.

The service's own pieces run without Kafka: CSV rows -> :mod:`models.features` -> the catalog's
models and learning policies. Matches are taken in kickoff order; every model predicts all
matches of one kickoff time, and learns their results by its policy once their final whistle
has passed, so a model is never scored on a result it has seen, nor helped by one that was still
unknown at kickoff. Each league's first season is burn-in: the models learn from it, but it is
not scored (ratings start from nothing there). Batch models, which do not learn online, are
refitted on every known result at the start of each season (without cross-validation). The
market's opening and closing lines are scored on exactly the scored matches, and one line is
printed per model::

    QUALITY model=<id> policy=<policy> matches=<n> logloss=<f> rps=<f> brier=<f> accuracy=<f> \
market_open_logloss=<f> market_close_logloss=<f>

With no ``--models``, the service's default model and policy alone; ``--models all``: every
catalog model, the default last (about 3 minutes for the 27,700 shared matches on 2 idle cores
before the ensemble, which runs five members again, joined);
``--by-league`` prints a LEAGUE line per league and model before the QUALITY lines.

After them, the mean opening margin and one betting line per model at the opening odds
(``models.betting``: flat-stake value bets where ``p * odds - 1`` exceeds ``--bet-threshold``,
a bootstrap interval over match days, fractional Kelly growth, closing-line value; no bet on a
line whose inverse odds sum below one, counted as ``unbettable``), then the
market's references (``market-open``, ``market-close``, ``market-open-favourite``)::

    MARGIN matches=<n> open=<f> unbettable=<n>
    BETTING model=<id> bets=<n> roi=<f> roi_lo=<f> roi_hi=<f> kelly_growth=<f> clv=<f>
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import fmean
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from models import betting, catalog
from models.base import Model
from models.betting import BettingSummary
from models.features import build_events, model_input, prequential_steps
from models.metrics import MetricSummary, ProbabilityMap, calibration_bins, normalised_implied
from models.metrics import log_loss as match_log_loss
from models.policy import LearningPolicy
from models.policy import parse as parse_policy
from schemas.events import OUTCOMES, MatchFeatures, MatchResult, Outcome
from schemas.football_csv import (
    DATA_DIR_ENV,
    FootballRow,
    RowError,
    default_data_files,
    read_rows,
    slug,
)

DEFAULT_OUT = Path("reports/evaluate")
DEFAULT_MODELS = catalog.DEFAULT_MODEL_ID
"""With no ``--models``: the service's default model under its default policy, alone."""
EVERY_MODEL = "all"
"""``--models all``: every catalog model under the default policy, the service's default last."""
MIN_REFIT_ROWS = 100  # a batch model refitted on fewer results would be noise, not a model
SEASON_REFIT = "season-refit"  # the policy shown for batch models
ROLLING_WINDOW = 1000  # scored matches per point of the rolling curve: ~7 months of 5 leagues
NO_LEARNING = "none"  # the policy shown for models that do not learn online


@runtime_checkable
class Refittable(Protocol):
    """A batch model: it does not learn online but is refitted on all results so far."""

    def refit(self, rows: Sequence[Mapping[str, float]], outcomes: Sequence[Outcome]) -> object:
        """Train on these inputs and outcomes, in kickoff order (no cross-validation)."""
        ...


@dataclass(slots=True)
class Entrant:
    """One model under evaluation, its learning policy and what it scored."""

    model: Model
    policy: LearningPolicy
    summary: MetricSummary = field(default_factory=MetricSummary)
    scored: list[tuple[ProbabilityMap, Outcome]] = field(default_factory=list)

    @property
    def policy_name(self) -> str:
        """The policy in effect; ``season-refit`` for batch models, ``none`` for references."""
        if self.model.learns_online:
            return str(self.policy)
        return SEASON_REFIT if isinstance(self.model, Refittable) else NO_LEARNING

    @property
    def label(self) -> str:
        """``model (policy)``: one model may run under several policies."""
        return f"{self.model.model_id} ({self.policy_name})"


@dataclass(frozen=True, slots=True)
class BettingRules:
    """How the ``BETTING`` lines bet (``models.betting``)."""

    threshold: float = betting.DEFAULT_THRESHOLD
    kelly: float = betting.DEFAULT_KELLY
    resamples: int = betting.DEFAULT_RESAMPLES
    seed: int = betting.DEFAULT_SEED


@dataclass(slots=True)
class Report:
    """The outcome of one prequential run: per model, and the market on the same matches."""

    entrants: list[Entrant]
    market_open: MetricSummary = field(default_factory=MetricSummary)
    market_close: MetricSummary = field(default_factory=MetricSummary)
    kickoffs: list[datetime] = field(default_factory=list)
    market_open_losses: list[float] = field(default_factory=list)
    market_close_losses: list[float] = field(default_factory=list)
    leagues: list[str] = field(default_factory=list)
    """League of each scored match, in scoring order."""
    odds_open: list[tuple[float, float, float]] = field(default_factory=list)
    """Opening decimal odds (H, D, A) of each scored match: the prices the bets are made at."""
    close_probabilities: list[tuple[float, float, float]] = field(default_factory=list)
    """Normalised closing line of each scored match (NaN where it is missing): for the CLV."""
    outcomes: list[Outcome] = field(default_factory=list)

    def quality_lines(self) -> list[str]:
        """The ``QUALITY`` line of every model, in the order they were given."""
        return [
            f"QUALITY model={e.model.model_id} policy={e.policy_name} "
            f"matches={e.summary.count} logloss={e.summary.log_loss:.4f} "
            f"rps={e.summary.rps:.4f} brier={e.summary.brier:.4f} "
            f"accuracy={e.summary.accuracy:.4f} "
            f"market_open_logloss={self.market_open.log_loss:.4f} "
            f"market_close_logloss={self.market_close.log_loss:.4f}"
            for e in self.entrants
        ]

    def betting(self, rules: BettingRules | None = None) -> list[tuple[str, BettingSummary]]:
        """Betting figures per model at the opening odds, then the market's references.

        The references are the opening and closing lines as models (``market-open`` never
        bets: its expected value is minus the margin on every outcome; ``market-close`` bets
        with what is known only at kickoff, an upper bound) and ``market-open-favourite``, the
        opening line's favourite backed every match: what a forecast level with the line earns.
        A reference already among the entrants is not repeated.
        """
        rules = rules or BettingRules()
        odds = np.array(self.odds_open, dtype=np.float64).reshape(-1, 3)
        close = np.array(self.close_probabilities, dtype=np.float64).reshape(-1, 3)
        outcomes = np.array([OUTCOMES.index(o) for o in self.outcomes], dtype=np.int64)
        days = np.array([k.date().toordinal() for k in self.kickoffs], dtype=np.int64)
        opening = betting.implied(odds)
        closing = np.where(np.isfinite(close), close, opening)

        def summary(p: np.ndarray, picks: np.ndarray | None = None) -> BettingSummary:
            return betting.evaluate_bets(
                p, odds, close, outcomes, days, threshold=rules.threshold, kelly=rules.kelly,
                picks=picks, resamples=rules.resamples, seed=rules.seed,
            )  # fmt: skip

        rows = [
            (e.model.model_id, summary(np.array([[p[o] for o in OUTCOMES] for p, _ in e.scored])))
            for e in self.entrants
        ]
        ids = {model_id for model_id, _ in rows}
        references = [("market-open", opening), ("market-close", closing)]
        rows += [(i, summary(p)) for i, p in references if i not in ids]
        rows.append(("market-open-favourite", summary(opening, betting.favourite_picks(odds))))
        return rows

    def betting_lines(self, rules: BettingRules | None = None) -> list[str]:
        """The ``BETTING`` line of every model and reference (see :meth:`betting`)."""
        return [summary.line(model_id) for model_id, summary in self.betting(rules)]

    def margin_line(self) -> str:
        """Mean bookmaker's margin (sum of inverse odds minus one) of the scored matches."""
        odds = np.array(self.odds_open, dtype=np.float64).reshape(-1, 3)
        margin = (1.0 / odds).sum(axis=1) - 1.0
        unbettable = int((~betting.bettable(odds)).sum())
        mean = float(np.mean(margin))
        return f"MARGIN matches={len(odds)} open={mean:.4f} unbettable={unbettable}"

    def league_lines(self) -> list[str]:
        """Per league and model, its log loss and RPS against the market on the same matches."""
        lines = []
        for league in sorted(set(self.leagues)):
            rows = [i for i, name in enumerate(self.leagues) if name == league]
            market_open = fmean(self.market_open_losses[i] for i in rows)
            market_close = fmean(self.market_close_losses[i] for i in rows)
            for e in self.entrants:
                summary = MetricSummary()
                for i in rows:
                    summary.add(*e.scored[i])
                lines.append(
                    f"LEAGUE league={league} model={e.model.model_id} policy={e.policy_name} "
                    f"matches={summary.count} logloss={summary.log_loss:.4f} "
                    f"rps={summary.rps:.4f} market_open_logloss={market_open:.4f} "
                    f"market_close_logloss={market_close:.4f}"
                )
        return lines


@dataclass(slots=True)
class _Match:
    """One match on its way through the run: its events, then the inputs and predictions."""

    features: MatchFeatures
    result: MatchResult
    x: dict[str, float] = field(default_factory=dict)
    predictions: list[dict[str, float]] = field(default_factory=list)


def run_prequential(
    events: Iterable[tuple[MatchFeatures, MatchResult]],
    entrants: Sequence[Entrant],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """Learn the results known by each kickoff, then predict and score (after burn-in) it.

    ``events`` must be in kickoff order, as :func:`models.features.build_events` yields them. A
    result is learned once its final whistle has passed, as in the service, so a model never
    predicts a match knowing the result of a match that was still running. Batch models are
    refitted on every known result when a new season starts (before, they give base rates).

    Models that do not learn online change only at a refit, so their predictions are made in
    one ``predict_proba_many`` per season instead of one call per match (a scikit-learn forest
    costs ~10 ms a call: 4 minutes over 27,700 matches); they are the same numbers.
    """
    report = Report(list(entrants))
    first_season: dict[str, str] = {}
    history: list[tuple[dict[str, float], Outcome]] = []
    pending: list[_Match] = []  # predicted by the online models, not yet by the others
    scored: list[_Match] = []
    season = ""
    matches = (_Match(features, result) for features, result in events)
    for finished, starting in prequential_steps(matches, lambda match: match.features.kickoff):
        for match in sorted(finished, key=lambda match: match.features.match_id):
            history.append((match.x, match.result.outcome))
            for entrant, p in zip(entrants, match.predictions, strict=True):
                _learn(entrant, match.x, p, match.result.outcome)
        if starting and max(m.features.season for m in starting) > season:
            season = max(m.features.season for m in starting)
            _predict_static(entrants, pending)
            _refit(entrants, history)
        for match in starting:
            match.x = model_input(match.features)
            match.predictions = [
                e.model.predict_proba_one(match.x) if e.model.learns_online else {}
                for e in entrants
            ]
            pending.append(match)
            league_first = first_season.setdefault(match.features.league, match.features.season)
            if match.features.season != league_first:
                scored.append(match)
        if on_progress is not None:
            on_progress(len(starting))
    _predict_static(entrants, pending)
    for match in scored:
        _score(report, match.features, match.result.outcome, match.predictions)
    return report


def _predict_static(entrants: Sequence[Entrant], pending: list[_Match]) -> None:
    """Fill in the predictions of the models that do not learn online, then forget ``pending``."""
    if not pending:
        return
    xs = [match.x for match in pending]
    for i, entrant in enumerate(entrants):
        if entrant.model.learns_online:
            continue
        for match, row in zip(pending, entrant.model.predict_proba_many(xs), strict=True):
            match.predictions[i] = dict(zip(OUTCOMES, row.tolist(), strict=True))
    pending.clear()


def _refit(entrants: Sequence[Entrant], history: list[tuple[dict[str, float], Outcome]]) -> None:
    """Refit the batch models on all results so far: the offline retraining of each season."""
    if len(history) < MIN_REFIT_ROWS:
        return
    rows, outcomes = [x for x, _ in history], [y for _, y in history]
    for entrant in entrants:
        if isinstance(entrant.model, Refittable) and not entrant.model.learns_online:
            entrant.model.refit(rows, outcomes)


def _score(
    report: Report,
    features: MatchFeatures,
    outcome: Outcome,
    probabilities: Sequence[ProbabilityMap],
) -> None:
    for entrant, p in zip(report.entrants, probabilities, strict=True):
        entrant.summary.add(p, outcome)
        entrant.scored.append((p, outcome))
    # Without a closing line the opening one stands in, so both figures cover the same matches.
    close_odds = features.odds_close if features.odds_close is not None else features.odds_open
    market_open = normalised_implied(features.odds_open).probabilities
    market_close = normalised_implied(close_odds).probabilities
    report.market_open.add(market_open, outcome)
    report.market_close.add(market_close, outcome)
    report.kickoffs.append(features.kickoff)
    report.leagues.append(features.league)
    report.market_open_losses.append(match_log_loss(market_open, outcome))
    report.market_close_losses.append(match_log_loss(market_close, outcome))
    odds = features.odds_open
    report.odds_open.append((odds.home, odds.draw, odds.away))
    if features.odds_close is None:
        report.close_probabilities.append((math.nan, math.nan, math.nan))
    else:
        report.close_probabilities.append((market_close["H"], market_close["D"], market_close["A"]))
    report.outcomes.append(outcome)


def _learn(entrant: Entrant, x: dict[str, float], p: ProbabilityMap, outcome: Outcome) -> None:
    if not entrant.model.learns_online:
        return
    weight = entrant.policy.weight(p, outcome)
    if weight > 0.0:
        entrant.model.learn_one(x, outcome, weight)
    else:
        entrant.model.observe_one(x)


def parse_model_specs(text: str) -> list[tuple[str, LearningPolicy]]:
    """``id[:policy],...`` as (model id, policy); the policy defaults to the catalog's.

    The item ``all`` stands for every catalog model but the demo's (``catalog.DEMO_MODEL_IDS``),
    the service's default one last.
    """
    specs: list[tuple[str, LearningPolicy]] = []
    every = [
        i
        for i in catalog.MODEL_IDS
        if i != catalog.DEFAULT_MODEL_ID and i not in catalog.DEMO_MODEL_IDS
    ]
    items = text.split(",")
    if EVERY_MODEL in (item.strip() for item in items):
        index = [item.strip() for item in items].index(EVERY_MODEL)
        items[index : index + 1] = [*every, catalog.DEFAULT_MODEL_ID]
    for item in items:
        model_id, _, policy = item.strip().partition(":")
        if not model_id:
            raise ValueError(f"empty model id in {text!r}; expected `id[:policy],...`")
        spec = (model_id, parse_policy(policy or catalog.DEFAULT_POLICY))
        if spec in specs:
            raise ValueError(f"model {model_id} with policy {spec[1]} is listed twice")
        specs.append(spec)
    return specs


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="prequential model quality on CSV history, against the market (no Kafka)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", nargs="+", type=Path, metavar="CSV",
        help=f"match files (default: every CSV in ${DATA_DIR_ENV} or data/football)",
    )  # fmt: skip
    parser.add_argument(
        "--models", default=DEFAULT_MODELS, metavar="ID[:POLICY],...",
        help=f"models and learning policies, or `all` for every model (~6 min here; batch "
        f"models are refitted each season). Default: the service's {catalog.DEFAULT_MODEL_ID} "
        f"with policy {catalog.DEFAULT_POLICY}, the policy of any model given without one. "
        f"Known: {', '.join(catalog.MODEL_IDS)}",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"folder for the PNG plots (default: {DEFAULT_OUT})",
    )  # fmt: skip
    parser.add_argument("--leagues", metavar="ID,...", help="only these league ids")
    parser.add_argument(
        "--by-league", action="store_true",
        help="also print a LEAGUE line per league and model (same run: models learn across "
        "leagues), before the QUALITY lines",
    )  # fmt: skip
    parser.add_argument(
        "--bet-threshold", type=float, default=betting.DEFAULT_THRESHOLD, metavar="EV",
        help="value bet where p * opening odds - 1 exceeds this (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--kelly", type=float, default=betting.DEFAULT_KELLY, metavar="FRACTION",
        help="fraction of the Kelly stake for kelly_growth (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--bootstrap", type=int, default=betting.DEFAULT_RESAMPLES, metavar="N",
        help="bootstrap resamples of match days for the ROI interval (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=betting.DEFAULT_SEED,
        help="seed of the bootstrap (default: %(default)s)",
    )  # fmt: skip
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, settings: object = None) -> int:
    """Run the evaluation; 0 on success, 2 on bad input (a message on stderr says why)."""
    started = time.perf_counter()
    try:
        specs = parse_model_specs(args.models)
        rules = BettingRules(args.bet_threshold, args.kelly, args.bootstrap, args.seed)
        if not 0.0 <= rules.kelly <= 1.0 or rules.resamples < 1:
            raise ValueError("--kelly must be in [0, 1] and --bootstrap at least 1")
        entrants = [Entrant(catalog.create(model_id), policy) for model_id, policy in specs]
        paths = args.data or default_data_files()
        if not paths:
            raise ValueError(f"no CSV files found; pass --data or set {DATA_DIR_ENV}")
        rows = select_leagues(read_rows(paths).rows, args.leagues)
    except (OSError, RowError, ValueError, KeyError) as error:
        print(f"tipstream evaluate: {error}", file=sys.stderr)
        return 2
    with tqdm(total=len(rows), unit="match", disable=not sys.stderr.isatty()) as bar:
        report = run_prequential(build_events(rows), entrants, on_progress=bar.update)
    if not report.kickoffs:
        print("tipstream evaluate: no match after each league's burn-in season", file=sys.stderr)
        return 2
    written = write_plots(report, args.out)
    elapsed = time.perf_counter() - started
    scored = len(report.kickoffs)
    print(f"evaluated {len(rows)} matches ({scored} scored after burn-in) in {elapsed:.1f} s")
    print(f"plots: {', '.join(str(path) for path in written)}")
    if args.by_league:
        print("\n".join(report.league_lines()))
    print("\n".join(report.quality_lines()))
    print(report.margin_line())
    print("\n".join(report.betting_lines(rules)))
    return 0


def select_leagues(rows: list[FootballRow], leagues: str | None) -> list[FootballRow]:
    """The rows of the comma-separated league ids (all rows when None); unknown ids are errors."""
    if not leagues:
        return rows
    wanted = {league.strip() for league in leagues.split(",")}
    known = {row.league for row in rows}
    if wanted - known:
        unknown, available = ", ".join(sorted(wanted - known)), ", ".join(sorted(known))
        raise ValueError(f"unknown league {unknown}; the data has {available}")
    return [row for row in rows if row.league in wanted]


def write_plots(report: Report, out: Path) -> list[Path]:
    """A reliability diagram per model and the rolling log loss against the market, as PNG."""
    from matplotlib.figure import Figure  # slow to import: only when plots are written

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for entrant in report.entrants:
        figure = Figure(figsize=(6, 6))
        axes = figure.subplots()
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        for outcome, bins in calibration_bins(entrant.scored).items():
            means = [b.mean_predicted for b in bins]
            axes.plot(means, [b.observed_frequency for b in bins], marker="o", label=outcome)
        axes.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1))
        axes.set_title(f"reliability: {entrant.label}")
        axes.legend()
        written.append(out / f"reliability-{slug(entrant.label)}.png")
        figure.savefig(written[-1], dpi=100)
    figure = Figure(figsize=(10, 5))
    axes = figure.subplots()
    # Naive UTC as datetime64: matplotlib plots it natively (kickoffs are all UTC).
    utc = [kickoff.replace(tzinfo=None) for kickoff in report.kickoffs[ROLLING_WINDOW - 1 :]]
    dates = np.array(utc, dtype="datetime64[s]")
    for entrant in report.entrants:
        axes.plot(dates, _rolling_mean(_losses(entrant)), linewidth=1, label=entrant.label)
    for label, losses, style in (
        ("market open", report.market_open_losses, "--"),
        ("market close", report.market_close_losses, ":"),
    ):
        axes.plot(dates, _rolling_mean(losses), "k" + style, linewidth=1, label=label)
    axes.set(xlabel="kickoff", ylabel=f"log loss, mean of the last {ROLLING_WINDOW} matches")
    axes.legend(loc="upper left", fontsize="small")
    written.append(out / "rolling-logloss.png")
    figure.savefig(written[-1], dpi=100)
    return written


def _losses(entrant: Entrant) -> list[float]:
    return [match_log_loss(p, outcome) for p, outcome in entrant.scored]


def _rolling_mean(values: Sequence[float]) -> list[float]:
    """Means of each full window of :data:`ROLLING_WINDOW` consecutive values."""
    means, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= ROLLING_WINDOW:
            total -= values[i - ROLLING_WINDOW]
        if i >= ROLLING_WINDOW - 1:
            means.append(total / ROLLING_WINDOW)
    return means
