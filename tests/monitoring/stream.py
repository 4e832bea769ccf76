"""The default model's prequential stream over the shared data, with the opening line beside it.

Both come from one :func:`models.evaluate.run_prequential` run in which the market's opening line
is a second entrant, so each scored match has the model's and the market's probabilities for all
three outcomes (a fault that changes the result needs both).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tqdm import tqdm

from models import catalog
from models.evaluate import Entrant, run_prequential
from models.features import build_events
from models.policy import parse as parse_policy
from schemas.events import OUTCOMES, Outcome
from schemas.football_csv import default_data_files, read_rows


@dataclass(frozen=True, slots=True)
class Scored:
    """One scored match: the model's and the opening line's probabilities and the outcome."""

    kickoff: datetime
    league: str
    model: tuple[float, float, float]
    market: tuple[float, float, float]
    outcome: Outcome


def prequential_stream(progress: bool = True) -> list[Scored]:
    """Every match after each league's burn-in season, in scoring (kickoff) order."""
    rows = read_rows(default_data_files()).rows
    entrants = [
        Entrant(catalog.create(catalog.DEFAULT_MODEL_ID), parse_policy(catalog.DEFAULT_POLICY)),
        Entrant(catalog.create("market-open"), parse_policy(catalog.DEFAULT_POLICY)),
    ]
    with tqdm(total=len(rows), unit="match", desc="prequential", disable=not progress) as bar:
        report = run_prequential(build_events(rows), entrants, on_progress=bar.update)
    model, market = (entrant.scored for entrant in entrants)
    return [
        Scored(
            kickoff=kickoff,
            league=league,
            model=tuple(p[o] for o in OUTCOMES),  # type: ignore[arg-type]
            market=tuple(q[o] for o in OUTCOMES),  # type: ignore[arg-type]
            outcome=outcome,
        )
        for kickoff, league, (p, outcome), (q, _) in zip(
            report.kickoffs, report.leagues, model, market, strict=True
        )
    ]
