"""Event records of every tipstream topic, strict and versioned.

Each record is a ``msgspec.Struct``: decoding is typed and strict (unknown fields, wrong types and
out-of-range numbers are rejected), and the JSON Schema files under ``schemas/json/`` are exported
from these very classes, so producers validate against exactly what the service enforces.
Rules that a type cannot express (a kickoff in a sane range, probabilities that sum to one, an
outcome consistent with the score) live in ``__post_init__`` and raise ``ValueError`` with the
field and the rule, which ``schemas.codec`` turns into a ``ValidationIssue``.

Every rule is written for a hostile or careless producer: identifiers match as a whole (no
trailing newline), names carry no invisible or control characters, numbers that reach a model
are bounded per feature (:data:`FEATURE_BOUNDS`), and a prediction or an evaluation must agree
with itself. Each rule is in the exported JSON Schema where JSON Schema can say it, and in the
description of the field or the record where it cannot.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Literal, Protocol

import msgspec

SCHEMA_VERSION = 1
"""Version written by this code; readers accept exactly the versions in ``SUPPORTED_VERSIONS``."""
SUPPORTED_VERSIONS = frozenset({1})

Outcome = Literal["H", "D", "A"]
OUTCOMES: tuple[Outcome, Outcome, Outcome] = ("H", "D", "A")

# Football started in the 19th century; a kickoff more than two years ahead is a producer bug.
EARLIEST_KICKOFF = datetime(1870, 1, 1, tzinfo=UTC)
LATEST_KICKOFF_AHEAD_DAYS = 730

INT4_MAX = 2**31 - 1
"""Largest PostgreSQL ``integer``: model versions and window sizes are stored as int4."""
INT8_MAX = 2**63 - 1
"""Largest PostgreSQL ``bigint``."""

MAX_FEATURES = 64
"""Most named features in one event: the builder writes 27; more is a producer bug or abuse."""
MAX_INPUTS = MAX_FEATURES + 3
"""Most model inputs: the features plus the three closing-odds probabilities of reference models."""
FEATURE_LIMIT = 1e6
"""Bound on the magnitude of a feature without an entry in :data:`FEATURE_BOUNDS`."""
CONSISTENCY_TOLERANCE = 1e-9
"""How far ``confidence`` may be from the top probability (float rounding, nothing more)."""

FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    # Elo: 1500 is the league average; the five leagues' 27,700 matches stay within 1285..1840
    # (a difference within +-481). A rating 1,500 points away from the mean is not football.
    "elo_home": (0.0, 4000.0),
    "elo_away": (0.0, 4000.0),
    "elo_diff": (-2000.0, 2000.0),
    "elo_p_home": (0.0, 1.0),
    # pi-ratings (log10 goal-difference scale, c=3): seen -1.0..1.7; +-6 already expects a
    # 99-goal difference, the most the score fields allow.
    "pi_home": (-6.0, 6.0),
    "pi_away": (-6.0, 6.0),
    "pi_exp_gd": (-99.0, 99.0),  # seen -2.4..3.1 goals
    "goals_exp_home": (0.0, 99.0),  # seen 0.49..5.3 goals
    "goals_exp_away": (0.0, 99.0),  # seen 0.37..3.9 goals
    # Form over the last matches: points per game 0..3; goals per game, at most a score's 99.
    **{
        f"form_{side}_{stat}": (0.0, 3.0 if stat == "ppg" else 99.0)
        for side in ("home", "away", "home_at_home", "away_at_away")
        for stat in ("ppg", "gf", "ga")
    },
    # Days since the previous match, capped at 30 by the builder; a year is still plausible.
    "rest_home": (0.0, 366.0),
    "rest_away": (0.0, 366.0),
    # Normalised implied probabilities of the odds; the margin of odds in (1, 1000] is in
    # (-1, 2) (seen -0.61..0.15: some average openings are below a fair book).
    "open_p_H": (0.0, 1.0),
    "open_p_D": (0.0, 1.0),
    "open_p_A": (0.0, 1.0),
    "open_margin": (-1.0, 2.0),
    "close_p_H": (0.0, 1.0),
    "close_p_D": (0.0, 1.0),
    "close_p_A": (0.0, 1.0),
}
"""Accepted range (inclusive) of each known feature or model input; any other key must be
within +-:data:`FEATURE_LIMIT`. Generous on purpose: the models also clip to what they have
seen, this only refuses values no honest producer writes."""

# Invisible, control and line-breaking characters: NUL, C1 controls, bidirectional overrides and
# isolates, zero-width spaces and joiners, BOM, soft hyphen, surrogates, private use.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _whole(body: str) -> str:
    """A pattern that matches the whole string alike in Python and in JSON Schema (ECMA-262).

    msgspec checks ``pattern`` with ``re.search``, where ``$`` also matches before a final
    newline (``"E0\\n"`` would pass); in ECMA regex ``$`` is the end of the input. ``$(?!\\n)``
    is the end of the input in both. Bodies use ASCII classes only: Python's ``\\d`` takes any
    Unicode digit, ECMA's does not.
    """
    return f"^(?:{body})$(?!\\n)"


IDENTIFIER_PATTERN = _whole("[A-Za-z0-9_.:-]+")
FEATURE_KEY_PATTERN = _whole("[A-Za-z][A-Za-z0-9_]{0,63}")
SEASON_PATTERN = _whole("[0-9]{4}-[0-9]{4}")
SHA256_PATTERN = _whole("[0-9a-f]{64}")
_SEASON_YEARS = re.compile("([0-9]{4})-([0-9]{4})")

Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=120,
        description=(
            "A team's name: not blank, and without control, format (invisible: zero-width, "
            "bidirectional, BOM), surrogate, private-use or line/paragraph separator characters "
            "(Unicode categories Cc, Cf, Cs, Co, Zl, Zp)."
        ),
    ),
]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=IDENTIFIER_PATTERN)]
Season = Annotated[
    str,
    msgspec.Meta(
        pattern=SEASON_PATTERN,
        description="Two consecutive years, the second one more than the first: 2009-2010.",
    ),
]
# Decimal odds: 1.0 would be a certain outcome with no payout; 1000 is far beyond any 1X2 market.
DecimalOdds = Annotated[float, msgspec.Meta(gt=1.0, le=1000.0)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Goals = Annotated[int, msgspec.Meta(ge=0, le=99)]
Version = Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
SchemaVersion = Annotated[int, msgspec.Meta(ge=1, le=1)]
BACKFILL_ID_MAX = 64
BackfillId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=BACKFILL_ID_MAX, pattern=IDENTIFIER_PATTERN)
]
SourceName = Annotated[str, msgspec.Meta(max_length=64)]
# The key pattern is checked in ``__post_init__`` for keys outside FEATURE_BOUNDS only (the known
# ones match it, tested): msgspec would call ``re.search`` for each of the 27 keys, ~30 us an event.
FeatureKey = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=64, extra_json_schema={"pattern": FEATURE_KEY_PATTERN}),
]
_FEATURE_KEY = re.compile(FEATURE_KEY_PATTERN)
_DEFAULT_BOUNDS = (-FEATURE_LIMIT, FEATURE_LIMIT)
FeatureValue = Annotated[float, msgspec.Meta(ge=-FEATURE_LIMIT, le=FEATURE_LIMIT)]
_FEATURE_SCHEMA = {
    "properties": {
        name: {"type": "number", "minimum": low, "maximum": high}
        for name, (low, high) in FEATURE_BOUNDS.items()
    },
}


def _feature_map(max_length: int, what: str) -> msgspec.Meta:
    return msgspec.Meta(
        max_length=max_length,
        description=(
            f"{what}: at most {max_length}, keyed by a letter then letters, digits or `_`. "
            f"Known features have the ranges listed under `properties`; any other is within "
            f"+-{FEATURE_LIMIT:g}."
        ),
        extra_json_schema=_FEATURE_SCHEMA,
    )


Features = Annotated[dict[FeatureKey, FeatureValue], _feature_map(MAX_FEATURES, "Named features")]
Inputs = Annotated[dict[FeatureKey, FeatureValue], _feature_map(MAX_INPUTS, "Model inputs")]


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


# A few hundred team names and a few seasons repeat over every event: the checks are cached.
@lru_cache(maxsize=4096)
def name_problem(name: str) -> str | None:
    """Why ``name`` is not a usable team name, or None: blank, or an invisible character.

    Shared with the CSV reader, so a row and its event obey one rule.
    """
    if not name.strip():
        return "must not be blank"
    if not name.isprintable():  # fast: printable text has none of the forbidden categories
        for char in name:
            category = unicodedata.category(char)
            if category in _FORBIDDEN_CATEGORIES:
                return f"must not contain U+{ord(char):04X} (Unicode category {category})"
    return None


@lru_cache(maxsize=4096)
def normalised_name(name: str) -> str:
    """``name`` as compared for sameness: NFKC, case-folded, whitespace runs as one space."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def _check_name(field: str, name: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"`{field}` {problem} (got {name!r})")


def _check_features(field: str, values: dict[str, float]) -> None:
    """Each key from the safe pattern, each value within its feature's bounds (which also
    refuses NaN and infinities)."""
    for name, value in values.items():
        bounds = FEATURE_BOUNDS.get(name)
        if bounds is None:
            if _FEATURE_KEY.search(name) is None:  # search, as msgspec checks a pattern
                raise ValueError(
                    f"`{field}` key {name!r} must be a letter then up to 63 letters, digits or _"
                )
            bounds = _DEFAULT_BOUNDS
        low, high = bounds
        if not low <= value <= high:
            _check_finite(f"{field}.{name}", value)
            raise ValueError(f"`{field}.{name}` {value!r} is outside [{low:g}, {high:g}]")


@lru_cache(maxsize=256)
def _season_in_order(season: str) -> bool:
    years = _SEASON_YEARS.fullmatch(season)
    return years is not None and int(years.group(2)) == int(years.group(1)) + 1


def _check_season(season: str) -> None:
    if not _season_in_order(season):
        raise ValueError(f"`season` {season!r} must be two consecutive years, as 2009-2010")


def _check_consistent(probabilities: Probabilities, predicted: Outcome, confidence: float) -> None:
    """``predicted`` is a most probable outcome and ``confidence`` its probability."""
    top = max(probabilities.H, probabilities.D, probabilities.A)
    chosen = getattr(probabilities, predicted)
    if chosen < top - CONSISTENCY_TOLERANCE:
        raise ValueError(
            f"`predicted` {predicted!r} (p={chosen!r}) is not the most probable outcome (p={top!r})"
        )
    if abs(confidence - top) > CONSISTENCY_TOLERANCE:
        raise ValueError(f"`confidence` {confidence!r} is not the top probability {top!r}")


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


class _MatchFacts(Protocol):
    """What a fixture and a match's features share (the facts known before kickoff)."""

    @property
    def kickoff(self) -> datetime: ...
    @property
    def season(self) -> str: ...
    @property
    def home_team(self) -> str: ...
    @property
    def away_team(self) -> str: ...


def _check_match(match: _MatchFacts) -> None:
    """The rules of a match's pre-kickoff facts, shared by :class:`Fixture` and
    :class:`MatchFeatures`: a sane kickoff, a season of two consecutive years, usable team
    names that differ once normalised."""
    _check_kickoff(match.kickoff)
    _check_season(match.season)
    _check_name("home_team", match.home_team)
    _check_name("away_team", match.away_team)
    if normalised_name(match.home_team) == normalised_name(match.away_team):
        raise ValueError(
            f"`away_team` {match.away_team!r} must differ from `home_team` "
            f"{match.home_team!r} (compared case-folded, NFKC, whitespace collapsed)"
        )


class Fixture(Record, frozen=True, kw_only=True):
    """A match announced before kickoff by a producer (topic: fixtures): only facts known
    before it starts. The service computes the match's features from it (the features agent).
    A record of this topic with the Kafka header ``tipstream-record: tick`` (JSON
    ``"record": "tick"``) is a :class:`Tick`, not a fixture: consumers other than tipstream's
    own must skip it.

    Same rules as the shared fields of :class:`MatchFeatures`: the season is two consecutive
    years; home and away teams differ once case-folded, NFKC normalised and with whitespace
    collapsed.
    """

    match_id: Identifier
    league: Identifier
    season: Season
    kickoff: AwareDatetime
    home_team: Name
    away_team: Name
    odds_open: Odds
    # Known only at kickoff: carried to the market reference, never a feature.
    odds_close: Odds | None = None

    def __post_init__(self) -> None:
        _check_match(self)


class MatchFeatures(Record, frozen=True, kw_only=True):
    """Pre-match features of one match, published before kickoff (topic: features).
    A record of this topic with the Kafka header ``tipstream-record: tick`` (JSON
    ``"record": "tick"``) is a :class:`Tick`, not features: consumers must skip it.

    The season is two consecutive years; home and away teams differ once case-folded, NFKC
    normalised and with whitespace collapsed; every feature is within its bounds.
    """

    match_id: Identifier
    league: Identifier
    season: Season
    kickoff: AwareDatetime
    home_team: Name
    away_team: Name
    odds_open: Odds
    # Known only at kickoff: carried for evaluation against the market, never a default input.
    odds_close: Odds | None = None
    # Named numeric features built from earlier matches only (ratings, form, rest days, ...).
    features: Features = {}
    # Set by the service's features agent: the event time it issued these features at (the
    # wall clock live, the history's own time in a backfill) and how many times it issued this
    # match's features before (a result before kickoff re-issues them). Producers' own
    # features leave both unset.
    issued_at: AwareDatetime | None = None
    revision: Version = 0
    # The replay id of a backfill (``tipstream replay --backfill``): these features were held
    # until every input had passed the kickoff and are issued once (docs/BACKFILL.md).
    backfill: BackfillId | None = None

    def __post_init__(self) -> None:
        _check_match(self)
        _check_features("features", self.features)


class MatchResult(Record, frozen=True, kw_only=True):
    """Final score of one match, published after the final whistle (topic: results).
    A record of this topic with the Kafka header ``tipstream-record: tick`` (JSON
    ``"record": "tick"``) is a :class:`Tick`, not a result: consumers other than tipstream's
    own must skip it.

    The outcome agrees with the score; half-time goals are given for both sides or neither, and
    neither exceeds its full-time goals.
    """

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
        if (self.half_time_home_goals is None) != (self.half_time_away_goals is None):
            raise ValueError(
                "`half_time_home_goals` and `half_time_away_goals` must be both given or both "
                f"absent (got {self.half_time_home_goals!r} and {self.half_time_away_goals!r})"
            )
        for side, half, full in (
            ("home", self.half_time_home_goals, self.home_goals),
            ("away", self.half_time_away_goals, self.away_goals),
        ):
            if half is not None and half > full:
                raise ValueError(f"`half_time_{side}_goals` {half} exceeds full-time goals {full}")


class Prediction(Record, frozen=True, kw_only=True):
    """One model's prediction for one match (topic: predictions).

    ``predicted`` is a most probable outcome (any of tied ones) and ``confidence`` the top
    probability (within 1e-9); ``model_version`` fits a PostgreSQL integer.
    """

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
    # The features' ``issued_at`` and ``revision``: when, in event time, the prediction was
    # made and from which issue of the features. Of a model's predictions for a match the
    # last one made before kickoff is the one evaluated.
    made_at: AwareDatetime | None = None
    features_revision: Version = 0

    def __post_init__(self) -> None:
        _check_consistent(self.probabilities, self.predicted, self.confidence)


class Evaluation(Record, frozen=True, kw_only=True):
    """A prediction reconciled with its result (topic: evaluations).

    As consistent as its prediction; ``outcome`` agrees with the score and ``hit`` says whether
    ``predicted`` is that outcome.
    """

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

    def __post_init__(self) -> None:
        _check_consistent(self.probabilities, self.predicted, self.confidence)
        expected = outcome_of(self.home_goals, self.away_goals)
        if self.outcome != expected:
            raise ValueError(
                f"`outcome` {self.outcome!r} contradicts the score "
                f"{self.home_goals}-{self.away_goals} (expected {expected!r})"
            )
        if self.hit != (self.predicted == self.outcome):
            raise ValueError(
                f"`hit` {self.hit} contradicts predicted {self.predicted!r} and outcome "
                f"{self.outcome!r}"
            )


class ModelSnapshot(Record, frozen=True, kw_only=True):
    """A model's new version, for hot-swapping scorers (topic: model snapshots, compacted).

    ``parent_version`` is less than ``version``. A version stored by an as-of-correct backfill
    announces its coverage in event time (docs/BACKFILL.md): ``learned_from`` and
    ``learned_until``, the first and latest final whistle it took since the previous version
    (both given, the first not after the latest, or both absent: it took none), and
    ``complete_through``, the learner's watermark when it stored the version, not before
    ``learned_until``. Live versions carry none of the three.
    """

    model_id: Identifier
    version: Version
    parent_version: Version | None = None
    kind: Identifier
    status: Literal["champion", "challenger", "reference", "retired"]
    learned: Annotated[int, msgspec.Meta(ge=0, le=INT8_MAX)] = 0
    # Last evaluation the snapshot has learned from: a replay never teaches it twice.
    last_evaluation_id: Identifier | None = None
    state_sha256: Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]
    created_at: AwareDatetime
    # Coverage in event time (agents.backfill_rules.Coverage): only backfill versions set it.
    learned_from: AwareDatetime | None = None
    learned_until: AwareDatetime | None = None
    complete_through: AwareDatetime | None = None

    def __post_init__(self) -> None:
        if self.parent_version is not None and self.parent_version >= self.version:
            raise ValueError(
                f"`parent_version` {self.parent_version} must be less than version {self.version}"
            )
        for field, moment in (
            ("learned_from", self.learned_from),
            ("learned_until", self.learned_until),
            ("complete_through", self.complete_through),
        ):
            # Decoding refuses a naive time already; this is for snapshots built in Python.
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"`{field}` {moment.isoformat()} must have a time zone")
        check_coverage(self.learned_from, self.learned_until, self.complete_through)


def check_coverage(
    learned_from: datetime | None, learned_until: datetime | None, complete_through: datetime | None
) -> None:
    """Raise ``ValueError`` naming the field unless the three form a coverage: the whistles both
    given (the first not after the latest) or both absent, and the watermark, when given, not
    before the latest whistle (the learner takes a result only once its watermark has passed
    it). A watermark with no whistles is a version that took nothing, such as v0; whistles with
    no watermark, one the learner stored without announcing how far it was complete.

    Shared by :class:`ModelSnapshot` and ``agents.backfill_rules.Coverage``, so a coverage read
    back from the registry obeys the rule a snapshot on the topic does.
    """
    if (learned_from is None) != (learned_until is None):
        given, absent = (
            ("learned_from", "learned_until")
            if learned_until is None
            else ("learned_until", "learned_from")
        )
        raise ValueError(
            f"`{absent}` must be given with `{given}` (both or neither: a version that took no "
            "result has neither)"
        )
    if learned_from is not None and learned_until is not None and learned_from > learned_until:
        raise ValueError(
            f"`learned_from` {learned_from.isoformat()} is after `learned_until` "
            f"{learned_until.isoformat()}"
        )
    if (
        complete_through is not None
        and learned_until is not None
        and complete_through < learned_until
    ):
        raise ValueError(
            f"`complete_through` {complete_through.isoformat()} is before `learned_until` "
            f"{learned_until.isoformat()}: a version takes only results its watermark has passed"
        )


class ModelFeedItem(Record, frozen=True, kw_only=True):
    """Internal: an evaluation with the model inputs of its match, keyed by model id, so the
    learner and the decay monitor of each model see all of its evaluations in one partition."""

    evaluation: Evaluation
    inputs: Inputs

    def __post_init__(self) -> None:
        _check_features("inputs", self.inputs)


class LearnItem(Record, frozen=True, kw_only=True):
    """Internal: one result of an as-of-correct backfill for one model to learn, with its
    match's model inputs (topic: learn feed, keyed by model id).

    The reconciler sends it as soon as the match's features and result are both known, without
    waiting for a prediction: in a backfill the scorer waits for the learner's versions, so
    the learner must not wait for the scorer (docs/BACKFILL.md, section 2). ``item_id`` is
    deterministic in (model, match, score), so a batch sent again is learned once.
    """

    item_id: Identifier
    model_id: Identifier
    match_id: Identifier
    league: Identifier
    kickoff: AwareDatetime
    # When the result became known in event time (``models.features.RESULT_DELAY`` after
    # kickoff): the learner's time line takes items in (final whistle, match id) order.
    final_whistle: AwareDatetime
    home_goals: Goals
    away_goals: Goals
    outcome: Outcome
    inputs: Inputs
    # The replay id of the backfill (``MatchFeatures.backfill``).
    backfill: BackfillId

    def __post_init__(self) -> None:
        _check_kickoff(self.kickoff)
        _check_features("inputs", self.inputs)
        expected = outcome_of(self.home_goals, self.away_goals)
        if self.outcome != expected:
            raise ValueError(
                f"`outcome` {self.outcome!r} contradicts the score "
                f"{self.home_goals}-{self.away_goals} (expected {expected!r})"
            )
        if self.final_whistle <= self.kickoff:
            raise ValueError(
                f"`final_whistle` {self.final_whistle.isoformat()} is not after `kickoff` "
                f"{self.kickoff.isoformat()}"
            )


class LeagueInput(Record, frozen=True, kw_only=True):
    """Internal: a fixture or a result re-keyed by league (topic: league inputs), so one
    features agent owns each league and sees its facts in the order the router saw them.
    Exactly one of the two is set."""

    fixture: Fixture | None = None
    result: MatchResult | None = None
    # When the fact happened in event time: the producer's ``tipstream-event-time`` header
    # (a backfill's history), else the moment the router took it (live).
    event_time: AwareDatetime | None = None
    # The router's input partition the fact came from (``fixtures:3``): the features agent
    # settles a league only as far as its slowest source has come.
    source: SourceName | None = None
    # A replay's history before its window (``tipstream replay --from``), written here by the
    # replay itself: it builds the league's state, and no features are issued for it.
    warm_up: bool = False
    # The replay id of a backfill fact (its ``tipstream-backfill`` header): the features agent
    # holds such a fixture until every source has passed its kickoff.
    backfill: BackfillId | None = None

    def __post_init__(self) -> None:
        if (self.fixture is None) == (self.result is None):
            raise ValueError("exactly one of `fixture` and `result` must be given")

    @property
    def league(self) -> str:
        """The league whose state the fact belongs to."""
        fact = self.fixture if self.fixture is not None else self.result
        assert fact is not None
        return fact.league

    @property
    def match_id(self) -> str:
        fact = self.fixture if self.fixture is not None else self.result
        assert fact is not None
        return fact.match_id


class Tick(Record, frozen=True, kw_only=True):
    """A watermark of an as-of-correct backfill (``tipstream replay --backfill``), on
    ``fixtures``, ``match-results``, ``league-inputs`` and ``match-features``: nothing with an
    event time before ``event_time`` is still to come on this partition from ``source``.

    Not a fact: every tick is sent with the Kafka header ``tipstream-record: tick`` to every
    partition of its topic. tipstream's agents forward or skip ticks (counted, never
    dead-lettered); any other consumer of these topics must skip records carrying that header
    or ``"record": "tick"``.
    """

    record: Literal["tick"] = "tick"
    event_time: AwareDatetime
    # The replay id the tick belongs to.
    backfill: BackfillId
    # The partition the mark is about, set by the agent that forwards the tick (``fixtures:3``
    # at the league router, ``league-inputs:1`` at the features agent); None from the replay.
    source: SourceName | None = None


AlertKind = Literal["decay", "drift", "recovery", "promotion", "fault", "estimate"]
"""``estimate``: a model's expected edge against the market, before results, turned negative
(``agents.estimates_rules``)."""


class Alert(Record, frozen=True, kw_only=True):
    """An operator-facing event: decay, drift, recovery, promotion candidate, fault or estimate.

    A monitor alert says what an operator needs to act: the model and its version, the scope,
    the metric, its baseline and current value, the window (evaluations the value is over) and
    the detector, the first and last evaluation and match of that window, and in ``message`` one
    plain sentence.
    """

    alert_id: Identifier
    kind: AlertKind
    state: Literal["firing", "resolved"]
    model_id: Identifier | None = None
    source: Identifier
    scope: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    metric: Identifier | None = None
    detector: Identifier
    window: Annotated[int, msgspec.Meta(ge=0, le=INT4_MAX)] = 0
    baseline: float | None = None
    current: float | None = None
    threshold: float | None = None
    first_evaluation_id: Identifier | None = None
    last_evaluation_id: Identifier | None = None
    message: Annotated[str, msgspec.Meta(max_length=2000)]
    created_at: AwareDatetime
    # Added within schema version 1, optional so alerts written before still decode: the model
    # version of the last evaluation the alert is about, and the matches of its first and last.
    model_version: Version | None = None
    first_match_id: Identifier | None = None
    last_match_id: Identifier | None = None


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
    "fixture": Fixture,
    "match_features": MatchFeatures,
    "match_result": MatchResult,
    "prediction": Prediction,
    "evaluation": Evaluation,
    "model_feed_item": ModelFeedItem,
    "learn_item": LearnItem,
    "league_input": LeagueInput,
    "tick": Tick,
    "model_snapshot": ModelSnapshot,
    "alert": Alert,
    "dead_letter": DeadLetter,
}
"""Every event of the brief, by the name of its JSON Schema file."""
