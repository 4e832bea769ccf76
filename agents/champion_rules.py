"""Champion/challenger's pure rules: the gate's sample from the evaluation log, which proposal
wins, and the promotion alert.

The statistics are :mod:`agents.gate_rules`; this module turns the stored rows (one per match a
challenger and the champion both have a current evaluation of) into the gate's paired matches,
and the gate's reports into the agent's actions.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.gate_rules import PROPOSE, GateReport, PairedMatch
from agents.monitor_rules import reference_log_loss
from models.market import OPEN_INPUTS
from schemas.events import Alert, Outcome

AGENT = "champion-challenger"
_NAMESPACE = uuid.UUID("5a4b6c1e-7f0d-4c8e-b2a9-6d3e1f0a7c55")

HELD = "held"
PROPOSED = "proposed"
PROMOTED = "promoted"


@dataclass(frozen=True, slots=True)
class Sample:
    """The matches a challenger is judged on against the champion: those evaluated by the
    challenger's versions from ``version`` on (its latest fit), all of them, in kickoff order."""

    challenger: str
    champion: str
    version: int
    matches: tuple[PairedMatch, ...]


def opening_line_loss(open_h: float | None, open_d: float | None, open_a: float | None,
                      outcome: Outcome) -> float:  # fmt: skip
    """The opening line's log loss (its normalised implied probabilities, as ``market-open``
    scores it and the decay monitor reads it: ``monitor_rules.reference_log_loss``); NaN when
    the match has no usable line.

    >>> round(opening_line_loss(0.5, 0.3, 0.2, "H"), 4)
    0.6931
    >>> opening_line_loss(None, 0.3, 0.2, "H")
    nan
    """
    line = zip(OPEN_INPUTS, (open_h, open_d, open_a), strict=True)
    loss = reference_log_loss({name: p for name, p in line if p is not None}, outcome)
    return math.nan if loss is None else loss


def samples(
    rows: Iterable[Mapping[str, Any]], challengers: Sequence[tuple[str, int]], champion: str
) -> list[Sample]:
    """One sample per challenger (id, first version of its latest fit), of the store's rows
    (``champion_store.gate_rows``: ordered by challenger, then kickoff); a challenger without
    rows gets an empty sample."""
    grouped: dict[str, list[PairedMatch]] = {}
    for row in rows:
        outcome: Outcome = row["outcome"]
        grouped.setdefault(str(row["challenger"]), []).append(
            PairedMatch(
                match_id=str(row["match_id"]),
                league=str(row["league"]),
                challenger_loss=float(row["challenger_loss"]),
                champion_loss=float(row["champion_loss"]),
                market_loss=opening_line_loss(
                    row["open_p_h"], row["open_p_d"], row["open_p_a"], outcome
                ),
                challenger_probabilities={
                    "H": float(row["p_home"]),
                    "D": float(row["p_draw"]),
                    "A": float(row["p_away"]),
                },
                outcome=outcome,
            )
        )
    return [
        Sample(challenger, champion, version, tuple(grouped.get(challenger, ())))
        for challenger, version in challengers
    ]


def best_proposal(reports: Sequence[GateReport]) -> GateReport | None:
    """The proposal with the largest mean gain over the champion (the one auto-promotion
    promotes when several pass), or None."""
    proposals = [r for r in reports if r.decision == PROPOSE]
    return max(proposals, key=lambda r: (r.mean_difference, r.challenger), default=None)


def alert_id(challenger: str, champion: str, version: int) -> str:
    """One promotion alert per (challenger, champion, challenger version): a gate that stays
    open alerts once, a new fit of the challenger that passes again alerts again."""
    return str(uuid.uuid5(_NAMESPACE, f"{challenger}|{champion}|v{version}"))


def promotion_alert(report: GateReport, *, version: int, promoted: bool, now: datetime) -> Alert:
    """The alert of a challenger the gate proposes, with the figures that decided it."""
    action = (
        "promoted automatically" if promoted else "awaiting approval (tipstream models promote)"
    )
    return Alert(
        alert_id=alert_id(report.challenger, report.champion, version),
        kind="promotion",
        state="firing",
        model_id=report.challenger,
        model_version=version,
        source=AGENT,
        scope=f"vs:{report.champion}",
        metric="log_loss_gain",
        detector="diebold-mariano",
        window=report.matches,
        baseline=0.0,
        current=report.mean_difference,
        message=(
            f"{report.challenger} v{version} beats champion {report.champion}: "
            f"{report.mean_difference:+.4f} log loss per match over {report.matches} shared "
            f"matches (CI {report.ci_low:+.4f}..{report.ci_high:+.4f}, DM "
            f"{report.dm_statistic:.2f}, one-sided p {report.p_value:.4f}); {action}"
        ),
        created_at=now,
    )
