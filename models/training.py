"""The training set of a batch model: every match before a date, with leak-free features.

Features come from the same time line as the replay (:func:`models.timeline.timeline`), so what
a batch model trains on is what the stream shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from models.features import model_input
from models.timeline import Filters, timeline
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import FootballRow


def training_set(
    rows: Sequence[FootballRow], until: date
) -> tuple[list[dict[str, float]], list[str]]:
    """Model inputs and outcomes of every match before ``until``, built leak-free."""
    events = timeline(rows, Filters(end=until))
    inputs: dict[str, dict[str, float]] = {}
    outcomes: dict[str, str] = {}
    for event in events:
        record = event.record
        if isinstance(record, MatchFeatures) and record.kickoff.date() < until:
            inputs[event.key] = model_input(record)
        elif isinstance(record, MatchResult) and record.kickoff.date() < until:
            outcomes[event.key] = record.outcome
    keys = [k for k in inputs if k in outcomes]
    return [inputs[k] for k in keys], [outcomes[k] for k in keys]
