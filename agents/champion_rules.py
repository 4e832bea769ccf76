"""Champion/challenger's pure rules: a paired score, the promotion rule, the promotion alert."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from schemas.events import Alert

AGENT = "champion-challenger"
_NAMESPACE = uuid.UUID("5a4b6c1e-7f0d-4c8e-b2a9-6d3e1f0a7c55")


@dataclass(frozen=True)
class PairedScore:
    """Mean log loss of a challenger and of the champion over the same matches."""

    challenger: str
    champion: str
    matches: int
    challenger_log_loss: float
    champion_log_loss: float

    @property
    def improvement(self) -> float:
        """Relative improvement of the challenger over the champion (> 0: challenger better)."""
        if self.champion_log_loss == 0:
            return 0.0
        return (self.champion_log_loss - self.challenger_log_loss) / self.champion_log_loss


def should_promote(score: PairedScore, *, margin: float, min_matches: int) -> bool:
    """Promote on enough shared matches and a clear enough relative improvement."""
    return score.matches >= min_matches and score.improvement >= margin


def promotion_alert(score: PairedScore, *, margin: float, promoted: bool, now: datetime) -> Alert:
    """One alert per (challenger, champion) pair: its id is derived from the pair."""
    action = (
        "promoted automatically" if promoted else "awaiting approval (tipstream models promote)"
    )
    return Alert(
        alert_id=str(uuid.uuid5(_NAMESPACE, f"{score.challenger}|{score.champion}")),
        kind="promotion",
        state="firing",
        model_id=score.challenger,
        source=AGENT,
        scope=f"vs:{score.champion}",
        metric="log_loss",
        detector="paired-comparison",
        window=score.matches,
        baseline=score.champion_log_loss,
        current=score.challenger_log_loss,
        threshold=margin,
        message=(
            f"{score.challenger} beats champion {score.champion} by "
            f"{score.improvement:.1%} log loss over {score.matches} shared matches; "
            f"{action}"
        ),
        created_at=now,
    )
