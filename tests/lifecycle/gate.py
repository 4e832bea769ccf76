"""Promotion gate on the shared data: its power and its false promotions.

    python -m tests.lifecycle.gate [--trials 100] [--horizon 4000] [--check-every 40]
                                   [--confidence 0.95] [--scenarios a,b]

One prequential run over ``data/football/`` (``models.evaluate.run_prequential``, each league's
first season burn-in) scores ``online-logreg`` (the service's default), ``online-rating`` (no
odds: clearly worse) and the closing line (``market-close``: what is known only at kickoff, a
truly better forecaster); the per-match probabilities are cached under
``reports/lifecycle/gate-stream.json``. Then, as the service does, the gate
(:func:`agents.gate_rules.evaluate_gate` with the service's defaults, over every match of the
trial so far: the challenger's sample since its latest fit) is run every ``--check-every``
matches (about one round of the five leagues) of a stretch that starts at a rotated point of the
stream, for up to ``--horizon`` matches; a trial ends at the first proposal.

Scenarios (challenger against champion):

- ``better``: ``online-logreg`` against a degraded copy of itself (probabilities shrunk a
  quarter towards uniform), and ``market-close`` against ``online-logreg``: matches until the
  gate proposes.
- ``equal``: on each match a coin decides which of ``online-logreg`` and its degraded copy is
  "challenger" (the differences are symmetric around zero: no true gain); proposals are false.
- ``worse``: the degraded copy against ``online-logreg``, and ``online-rating`` against
  ``online-logreg``; any proposal is a false promotion.

Every line printed is ``GATE scenario=... promoted=<k>/<trials> median_matches=... p90_matches=...``
(matches to the first proposal among the promoted trials).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from tqdm import tqdm

from agents.champion_rules import opening_line_loss
from agents.gate_rules import PROPOSE, GateSettings, PairedMatch, evaluate_gate
from models import catalog
from models.evaluate import Entrant, run_prequential
from models.features import build_events
from models.metrics import log_loss
from models.policy import parse as parse_policy
from schemas.events import OUTCOMES, Outcome
from schemas.football_csv import default_data_files, read_rows

CACHE = Path("reports/lifecycle/gate-stream.json")
MODELS = ("online-logreg", "online-rating", "market-close")
DEGRADE = 0.25
"""How far the degraded copy shrinks ``online-logreg`` towards uniform (1/3 each)."""

Probabilities = dict[str, float]


@dataclass(frozen=True, slots=True)
class Match:
    """One scored match: each model's probabilities, the opening line, league and outcome."""

    league: str
    outcome: Outcome
    models: dict[str, Probabilities]
    open_line: tuple[float, float, float]


def stream(progress: bool) -> list[Match]:
    """The scored matches in kickoff order (computed once, then read from the cache)."""
    if CACHE.exists():
        return [
            Match(m["league"], m["outcome"], m["models"], tuple(m["open_line"]))
            for m in json.loads(CACHE.read_text())
        ]
    rows = read_rows(default_data_files()).rows
    entrants = [
        Entrant(catalog.create(model_id), parse_policy(catalog.DEFAULT_POLICY))
        for model_id in MODELS
    ]
    with tqdm(total=len(rows), unit="match", desc="prequential", disable=not progress) as bar:
        report = run_prequential(build_events(rows), entrants, on_progress=bar.update)
    matches = []
    for i, outcome in enumerate(report.outcomes):
        odds = report.odds_open[i]
        inverse = [1.0 / o for o in odds]
        line = tuple(v / sum(inverse) for v in inverse)
        matches.append(
            Match(
                report.leagues[i],
                outcome,
                {e.model.model_id: {o: e.scored[i][0][o] for o in OUTCOMES} for e in entrants},
                (line[0], line[1], line[2]),
            )
        )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    rows_out = [
        {"league": m.league, "outcome": m.outcome, "models": m.models, "open_line": m.open_line}
        for m in matches
    ]
    CACHE.write_text(json.dumps(rows_out))
    return matches


def degraded(p: Probabilities, amount: float = DEGRADE) -> Probabilities:
    """``p`` shrunk towards uniform: the same ranking of outcomes, less sharp, so worse.

    >>> degraded({"H": 0.7, "D": 0.2, "A": 0.1}, 0.5)["H"]
    0.5166666666666666
    """
    return {o: (1.0 - amount) * p[o] + amount / 3.0 for o in OUTCOMES}


Pick = Callable[[Match, random.Random], tuple[Probabilities, Probabilities]]
"""(challenger's, champion's) probabilities of one match."""


def pair(match: Match, challenger: Probabilities, champion: Probabilities) -> PairedMatch:
    """The gate's view of one match."""
    return PairedMatch(
        match_id="",
        league=match.league,
        challenger_loss=log_loss(challenger, match.outcome),
        champion_loss=log_loss(champion, match.outcome),
        market_loss=opening_line_loss(*match.open_line, match.outcome),
        challenger_probabilities=challenger,
        outcome=match.outcome,
    )


SCENARIOS: dict[str, tuple[str, Pick]] = {
    "better:logreg-vs-degraded": (
        "better",
        lambda m, _: (m.models["online-logreg"], degraded(m.models["online-logreg"])),
    ),
    "better:close-vs-logreg": (
        "better",
        lambda m, _: (m.models["market-close"], m.models["online-logreg"]),
    ),
    "equal:coin-logreg-degraded": (
        "equal",
        lambda m, rng: (
            (m.models["online-logreg"], degraded(m.models["online-logreg"]))
            if rng.random() < 0.5
            else (degraded(m.models["online-logreg"]), m.models["online-logreg"])
        ),
    ),
    "worse:degraded-vs-logreg": (
        "worse",
        lambda m, _: (degraded(m.models["online-logreg"]), m.models["online-logreg"]),
    ),
    "worse:rating-vs-logreg": (
        "worse",
        lambda m, _: (m.models["online-rating"], m.models["online-logreg"]),
    ),
}


def first_proposal(
    matches: Sequence[Match],
    pick: Pick,
    *,
    start: int,
    horizon: int,
    check_every: int,
    gate: GateSettings,
    seed: int,
) -> int | None:
    """Matches seen when the gate first proposes on the stretch from ``start`` (wrapping
    round), checked every ``check_every`` matches over all of them; None if it never does
    within ``horizon``."""
    rng = random.Random(seed)
    seen: list[PairedMatch] = []
    for i in range(horizon):
        match = matches[(start + i) % len(matches)]
        seen.append(pair(match, *pick(match, rng)))
        n = i + 1
        if n % check_every or n < gate.min_matches:
            continue
        if evaluate_gate("c", "h", seen, gate).decision == PROPOSE:
            return n
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=4000)
    parser.add_argument("--check-every", type=int, default=40)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--confidence", type=float, default=GateSettings().confidence, help="the gate's"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    matches = stream(progress=not args.no_progress)
    gate = GateSettings(confidence=args.confidence)
    print(f"STREAM matches={len(matches)} trials={args.trials} horizon={args.horizon} "
          f"check_every={args.check_every} confidence={gate.confidence} "
          f"boundary_matches={gate.boundary_matches}",
          flush=True)  # fmt: skip
    for name in args.scenarios.split(","):
        kind, pick = SCENARIOS[name]
        found: list[int] = []
        for trial in tqdm(range(args.trials), desc=name, disable=args.no_progress):
            start = trial * len(matches) // args.trials
            n = first_proposal(
                matches, pick, start=start, horizon=args.horizon,
                check_every=args.check_every, gate=gate, seed=trial,
            )  # fmt: skip
            if n is not None:
                found.append(n)
        ordered = sorted(found)
        p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)] if found else None
        print(
            f"GATE scenario={name} kind={kind} promoted={len(found)}/{args.trials} "
            f"median_matches={median(found) if found else '-'} p90_matches={p90 or '-'} "
            f"max_matches={max(found) if found else '-'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
