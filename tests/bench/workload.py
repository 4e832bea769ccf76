"""The benchmark's events: real matches from ``data/football``, re-keyed to any count needed.

Features are built by the replay's own time line (ratings, form, odds: ~950 bytes of JSON, the
same bytes producers send). A run needs more events than one league has matches (5,782 in the
Premier League file), so matches are reused under fresh ids (``<match id>.<tag><n>``); every
event is unique, so the scorer and the reconciler do all their work for each one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec

from agents.registry import RegisteredModel
from agents.scorer_rules import predict_many
from models import catalog
from models.timeline import timeline
from schemas.codec import encode
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import RowError, league_file, read_rows

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = league_file("england-premier-league")

Keyed = tuple[bytes, bytes]
"""A Kafka message as the benchmark sends it: key and value bytes."""


@dataclass(frozen=True)
class Matches:
    """Features and results of real matches, in kickoff order."""

    features: list[MatchFeatures]
    results: list[MatchResult]

    @classmethod
    def load(cls, path: Path = DEFAULT_DATA) -> Matches:
        try:
            rows = read_rows([path]).rows
        except RowError as error:
            raise SystemExit(f"bench: {error}") from None
        events = timeline(rows)
        by_id = {e.record.match_id: e.record for e in events if e.kind == "result"}
        features = [e.record for e in events if e.kind == "features"]
        assert all(isinstance(f, MatchFeatures) for f in features)
        return cls(
            features=features,  # type: ignore[arg-type]
            results=[by_id[f.match_id] for f in features],  # type: ignore[misc]
        )

    def take(self, count: int, tag: str) -> Iterator[tuple[MatchFeatures, MatchResult]]:
        """``count`` matches under fresh ids ending in ``.<tag><n>``."""
        for n in range(count):
            index = n % len(self.features)
            match_id = f"{self.features[index].match_id}.{tag}{n}"
            yield (
                msgspec.structs.replace(self.features[index], match_id=match_id),
                msgspec.structs.replace(self.results[index], match_id=match_id),
            )


def keyed(records: Sequence[MatchFeatures | MatchResult]) -> list[Keyed]:
    """Messages keyed by match id, as producers publish them."""
    return [(r.match_id.encode(), encode(r)) for r in records]


def default_models() -> list[RegisteredModel]:
    """What a worker seeds into an empty registry: champion, challenger, market references."""
    plan = [
        ("online-logreg", "champion"),
        ("online-rating", "challenger"),
        ("market-open", "reference"),
        ("market-close", "reference"),
    ]
    models = []
    for model_id, status in plan:
        model = catalog.create(model_id)
        models.append(
            RegisteredModel(
                model_id=model_id,
                kind=model.kind,
                status=status,
                policy=None,
                version=0,
                model=model,
            )
        )
    return models


def predictions_for(
    features: Sequence[MatchFeatures], models: Sequence[RegisteredModel], now: datetime
) -> list[Keyed]:
    """The scorer's messages for ``features``, made in-process (primes the reconciler)."""
    return [(p.match_id.encode(), encode(p)) for p in predict_many(features, models, now=now)]
