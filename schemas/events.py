"""Event records of every tipstream topic, strict and versioned.

Each record is a ``msgspec.Struct``: decoding is typed and strict (unknown fields, wrong types and
out-of-range numbers are rejected), and the JSON Schema files under ``schemas/json/`` are exported
from these very classes, so producers validate against exactly what the service enforces.
Rules that a type cannot express (a kickoff in a sane range, probabilities that sum to one, an
outcome consistent with the score) live in ``__post_init__`` and raise ``ValueError`` with the
field and the rule, which ``schemas.codec`` turns into a ``ValidationIssue``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1
"""Version written by this code; readers accept exactly the versions in ``SUPPORTED_VERSIONS``."""
SUPPORTED_VERSIONS = frozenset({1})

Outcome = Literal["H", "D", "A"]
OUTCOMES: tuple[Outcome, Outcome, Outcome] = ("H", "D", "A")

# Football started in the 19th century; a kickoff more than two years ahead is a producer bug.
EARLIEST_KICKOFF = datetime(1870, 1, 1, tzinfo=UTC)
LATEST_KICKOFF_AHEAD_DAYS = 730

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
Identifier = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
# Decimal odds: 1.0 would be a certain outcome with no payout; 1000 is far beyond any 1X2 market.
DecimalOdds = Annotated[float, msgspec.Meta(gt=1.0, le=1000.0)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Goals = Annotated[int, msgspec.Meta(ge=0, le=99)]
Version = Annotated[int, msgspec.Meta(ge=0)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
SchemaVersion = Annotated[int, msgspec.Meta(ge=1, le=1)]


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of all events: strict, immutable, with a schema version."""

    schema_version: SchemaVersion = SCHEMA_VERSION


def _check_finite(field: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"`{field}` must be a finite number, got {value!r}")


def _check_kickoff(kickoff: datetime) -> None:
    if kickoff < EARLIEST_KICKOFF:
        raise ValueError(f"`kickoff` {kickoff.isoformat()} is before {EARLIEST_KICKOFF.year}")
    latest = datetime.now(UTC).timestamp() + LATEST_KICKOFF_AHEAD_DAYS * 86400
    if kickoff.timestamp() > latest:
        raise ValueError(
            f"`kickoff` {kickoff.isoformat()} is more than {LATEST_KICKOFF_AHEAD_DAYS} days ahead"
        )


def outcome_of(home_goals: int, away_goals: int) -> Outcome:
    """The 1X2 outcome of a final score."""
    if home_goals > away_goals:
        return "H"
    if home_goals < away_goals:
        return "A"
    return "D"


class Odds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Decimal 1X2 odds of one market snapshot (e.g. the opening or the closing line)."""

    home: DecimalOdds
    draw: DecimalOdds
    away: DecimalOdds


class Probabilities(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A probability for each outcome; they sum to one within 1e-6."""

    H: Probability
    D: Probability
    A: Probability

    def __post_init__(self) -> None:
        total = self.H + self.D + self.A
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"`probabilities` must sum to 1 (got {total:.9f})")

    def as_dict(self) -> dict[Outcome, float]:
        return {"H": self.H, "D": self.D, "A": self.A}


class MatchFeatures(Record, frozen=True, kw_only=True):
    """Pre-match features of one match, published before kickoff (topic: features)."""

    match_id: Identifier
    league: Identifier
    season: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{4}$")]
    kickoff: AwareDatetime
    home_team: Name
    away_team: Name
    odds_open: Odds
    # Known only at kickoff: carried for evaluation against the market, never a default input.
    odds_close: Odds | None = None
    # Named numeric features built from earlier matches only (ratings, form, rest days, ...).
    features: dict[Annotated[str, msgspec.Meta(min_length=1, max_length=64)], float] = {}

    def __post_init__(self) -> None:
        _check_kickoff(self.kickoff)
        if self.home_team == self.away_team:
            raise ValueError(f"`away_team` must differ from `home_team` ({self.home_team!r})")
        # One sum is finite exactly when no term is NaN or infinite, unless finite terms
        # overflow it: only then (rare) does the per-field loop run, to name the field.
        if not math.isfinite(sum(self.features.values())):
            for name, value in self.features.items():
                _check_finite(f"features.{name}", value)


class MatchResult(Record, frozen=True, kw_only=True):
    """Final score of one match, published after the final whistle (topic: results)."""

    match_id: Identifier
    league: Identifier
    kickoff: AwareDatetime
    home_goals: Goals
    away_goals: Goals
    outcome: Outcome
    half_time_home_goals: Goals | None = None
    half_time_away_goals: Goals | None = None

    def __post_init__(self) -> None:
        _check_kickoff(self.kickoff)
        expected = outcome_of(self.home_goals, self.away_goals)
        if self.outcome != expected:
            raise ValueError(
                f"`outcome` {self.outcome!r} contradicts the score "
                f"{self.home_goals}-{self.away_goals} (expected {expected!r})"
            )
        for side, half, full in (
            ("home", self.half_time_home_goals, self.home_goals),
            ("away", self.half_time_away_goals, self.away_goals),
        ):
            if half is not None and half > full:
                raise ValueError(f"`half_time_{side}_goals` {half} exceeds full-time goals {full}")


class Prediction(Record, frozen=True, kw_only=True):
    """One model's prediction for one match (topic: predictions)."""

    prediction_id: Identifier
    match_id: Identifier
    league: Identifier
    kickoff: AwareDatetime
    model_id: Identifier
    model_version: Version
    is_champion: bool
    probabilities: Probabilities
    predicted: Outcome
    confidence: Probability
    created_at: AwareDatetime


class Evaluation(Record, frozen=True, kw_only=True):
    """A prediction reconciled with its result (topic: evaluations)."""

    evaluation_id: Identifier
    prediction_id: Identifier
    match_id: Identifier
    league: Identifier
    kickoff: AwareDatetime
    model_id: Identifier
    model_version: Version
    is_champion: bool
    probabilities: Probabilities
    predicted: Outcome
    outcome: Outcome
    home_goals: Goals
    away_goals: Goals
    hit: bool
    confidence: Probability
    log_loss: Annotated[float, msgspec.Meta(ge=0.0)]
    brier: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)]
    rps: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    # Set when a corrected result re-evaluated the prediction: the evaluation this one replaces.
    supersedes: Identifier | None = None
    evaluated_at: AwareDatetime


class ModelSnapshot(Record, frozen=True, kw_only=True):
    """A model's new version, for hot-swapping scorers (topic: model snapshots, compacted)."""

    model_id: Identifier
    version: Version
    parent_version: Version | None = None
    kind: Identifier
    status: Literal["champion", "challenger", "reference", "retired"]
    learned: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Last evaluation the snapshot has learned from: a replay never teaches it twice.
    last_evaluation_id: Identifier | None = None
    state_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    created_at: AwareDatetime


class ModelFeedItem(Record, frozen=True, kw_only=True):
    """Internal: an evaluation with the model inputs of its match, keyed by model id, so the
    learner and the decay monitor of each model see all of its evaluations in one partition."""

    evaluation: Evaluation
    inputs: dict[str, float]


AlertKind = Literal["decay", "drift", "recovery", "promotion", "fault"]


class Alert(Record, frozen=True, kw_only=True):
    """An operator-facing event: decay, drift, recovery, promotion candidate or fault."""

    alert_id: Identifier
    kind: AlertKind
    state: Literal["firing", "resolved"]
    model_id: Identifier | None = None
    source: Identifier
    scope: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    metric: Identifier | None = None
    detector: Identifier
    window: Annotated[int, msgspec.Meta(ge=0)] = 0
    baseline: float | None = None
    current: float | None = None
    threshold: float | None = None
    first_evaluation_id: Identifier | None = None
    last_evaluation_id: Identifier | None = None
    message: Annotated[str, msgspec.Meta(max_length=2000)]
    created_at: AwareDatetime


class ValidationIssue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Why an event was rejected: the field (JSON path), the offending value and the rule."""

    field: str
    value: str | None
    rule: str


class DeadLetter(Record, frozen=True, kw_only=True):
    """A rejected event, with the original bytes kept (topic: dead letters)."""

    source_topic: str
    partition: Annotated[int, msgspec.Meta(ge=-1)]
    offset: Annotated[int, msgspec.Meta(ge=-1)]
    key_b64: str | None
    payload_b64: str
    error: ValidationIssue
    agent: Identifier
    failed_at: AwareDatetime


EVENT_TYPES: dict[str, type[Record]] = {
    "match_features": MatchFeatures,
    "match_result": MatchResult,
    "prediction": Prediction,
    "evaluation": Evaluation,
    "model_feed_item": ModelFeedItem,
    "model_snapshot": ModelSnapshot,
    "alert": Alert,
    "dead_letter": DeadLetter,
}
"""Every event of the brief, by the name of its JSON Schema file."""
