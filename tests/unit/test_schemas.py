"""The event contract: checked-in JSON Schemas, rejection reasons, and encode/decode round trips."""

from __future__ import annotations

import base64
import inspect
import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas import export
from schemas.codec import MAX_EVENT_BYTES, InvalidEvent, decode, encode, to_builtins
from schemas.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Alert,
    DeadLetter,
    Evaluation,
    Fixture,
    LeagueInput,
    LearnItem,
    MatchFeatures,
    MatchResult,
    ModelFeedItem,
    ModelSnapshot,
    Odds,
    Prediction,
    Record,
    Tick,
    ValidationIssue,
)
from tests.unit.examples import EVALUATION, KICKOFF, LATER, PREDICTION, RESULT

FEATURES = MatchFeatures(
    match_id="E0-2024-08-16-MUN-FUL",
    league="E0",
    season="2024-2025",
    kickoff=KICKOFF,
    home_team="Man United",
    away_team="Fulham",
    odds_open=Odds(home=1.6, draw=4.2, away=5.5),
    odds_close=Odds(home=1.57, draw=4.33, away=5.75),
    features={"elo_home": 1712.5, "elo_away": 1604.0, "rest_days_home": 6.0},
)
FIXTURE = Fixture(
    match_id=FEATURES.match_id,
    league="E0",
    season="2024-2025",
    kickoff=KICKOFF,
    home_team="Man United",
    away_team="Fulham",
    odds_open=Odds(home=1.6, draw=4.2, away=5.5),
    odds_close=Odds(home=1.57, draw=4.33, away=5.75),
)
# A backfill's result for one model to learn (the reconciler's learn feed).
LEARN_ITEM = LearnItem(
    item_id="3f1c9a52-0b7e-5d2a-8c41-6e9f0a1b2c3d",
    model_id="online-logreg",
    match_id=RESULT.match_id,
    league=RESULT.league,
    kickoff=RESULT.kickoff,
    final_whistle=RESULT.kickoff + timedelta(minutes=115),
    home_goals=RESULT.home_goals,
    away_goals=RESULT.away_goals,
    outcome=RESULT.outcome,
    inputs={"elo_diff": 108.5},
    backfill="ab12cd34",
)
# A version stored by an as-of-correct backfill: what it took in event time, and its watermark.
BACKFILL_SNAPSHOT = ModelSnapshot(
    model_id="online-logreg",
    version=12,
    parent_version=11,
    kind="online-logreg",
    status="challenger",
    learned=40,
    state_sha256="cd" * 32,
    created_at=LATER,
    learned_from=datetime(2012, 8, 18, 16, 55, tzinfo=UTC),
    learned_until=datetime(2012, 8, 19, 17, 55, tzinfo=timezone(timedelta(hours=1))),
    complete_through=datetime(2012, 8, 25, 12, 45, tzinfo=UTC),
)
EXAMPLES: dict[str, list[Record]] = {
    "fixture": [FIXTURE, msgspec.structs.replace(FIXTURE, odds_close=None)],
    "league_input": [
        LeagueInput(fixture=FIXTURE),
        LeagueInput(result=RESULT),
        LeagueInput(fixture=FIXTURE, event_time=LATER, source="fixtures:1", backfill="ab12cd34"),
    ],
    "tick": [
        Tick(event_time=LATER, backfill="ab12cd34"),
        Tick(event_time=LATER, backfill="ab12cd34", source="league-inputs:3"),
    ],
    "match_features": [
        FEATURES,
        msgspec.structs.replace(FEATURES, backfill="ab12cd34"),
        # Optional parts absent, and a kickoff in another time zone (same instant on decode).
        MatchFeatures(
            match_id="SP1-2023-10-01-RMA-GIR",
            league="SP1",
            season="2023-2024",
            kickoff=datetime(2023, 10, 1, 21, 0, tzinfo=timezone(timedelta(hours=2))),
            home_team="Real Madrid",
            away_team="Girona",
            odds_open=Odds(home=1.3, draw=6.0, away=10.0),
        ),
    ],
    "match_result": [
        RESULT,
        MatchResult(
            match_id="SP1-2023-10-01-RMA-GIR",
            league="SP1",
            kickoff=datetime(2023, 10, 1, 19, 0, tzinfo=UTC),
            home_goals=2,
            away_goals=2,
            outcome="D",
        ),
    ],
    "prediction": [PREDICTION],
    "evaluation": [
        EVALUATION,
        # A corrected result re-evaluated the prediction.
        msgspec.structs.replace(EVALUATION, evaluation_id="eval-91b1", supersedes="eval-91b0"),
    ],
    "model_feed_item": [ModelFeedItem(evaluation=EVALUATION, inputs={"elo_diff": 108.5})],
    "learn_item": [LEARN_ITEM],
    "model_snapshot": [
        ModelSnapshot(
            model_id="logreg",
            version=4,
            parent_version=3,
            kind="river.linear_model.LogisticRegression",
            status="champion",
            learned=200,
            last_evaluation_id="eval-91b0",
            state_sha256="ab" * 32,
            created_at=LATER,
        ),
        BACKFILL_SNAPSHOT,
    ],
    "alert": [
        Alert(
            alert_id="alert-decay-logreg-E0-1",
            kind="decay",
            state="firing",
            model_id="logreg",
            source="decay-monitor",
            scope="model=logreg league=E0",
            metric="log_loss",
            detector="rolling-window",
            window=200,
            baseline=0.98,
            current=1.05,
            threshold=0.05,
            first_evaluation_id="eval-0001",
            last_evaluation_id="eval-91b0",
            message="log loss 1.05 is 7% above the baseline 0.98 over the last 200 matches",
            created_at=LATER,
        ),
        Alert(
            alert_id="alert-fault-1",
            kind="fault",
            state="resolved",
            source="scorer",
            scope="pipeline",
            detector="dead-letter-rate",
            message="",
            created_at=LATER,
        ),
    ],
    "dead_letter": [
        DeadLetter(
            source_topic="tipstream.match-features",
            partition=2,
            offset=41,
            key_b64=base64.b64encode(b"E0-2024-08-16-MUN-FUL").decode(),
            payload_b64=base64.b64encode(b'{"home_team": 3}').decode(),
            error=ValidationIssue(field="$.home_team", value="3", rule="Expected `str`"),
            agent="scorer",
            failed_at=LATER,
        ),
        DeadLetter(
            source_topic="tipstream.match-results",
            partition=-1,
            offset=-1,
            key_b64=None,
            payload_b64="",
            error=ValidationIssue(field="$", value=None, rule="payload is empty"),
            agent="reconciler",
            failed_at=LATER,
        ),
    ],
}

DROP = object()
"""Marks a field to delete in :func:`variant`."""


def variant(record: Record, changes: dict[str, Any]) -> bytes:
    """JSON bytes of ``record`` with dotted paths set to new values (or dropped)."""
    document = to_builtins(record)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    # allow_nan: json.dumps writes NaN/Infinity tokens, exactly what a sloppy producer sends.
    return json.dumps(document, allow_nan=True).encode()


FEATURES_JSON = encode(FEATURES)
FAR_AHEAD = (datetime.now(UTC) + timedelta(days=2 * 365 + 30)).isoformat()

# (record type, payload, field path, a fragment of the rule). One case per row group rather than
# one argument per line: the table is read as a table.
# fmt: off
MALFORMED = [
    # wrong types
    pytest.param(
        MatchFeatures, variant(FEATURES, {"home_team": 3}),
        "$.home_team", "Expected `str`, got `int`", id="wrong-type-str",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.home": "1.6"}),
        "$.odds_open.home", "Expected `float`, got `str`", id="wrong-type-nested",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"home_goals": True}),
        "$.home_goals", "Expected `int`, got `bool`", id="wrong-type-bool-for-int",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"kickoff": 1723834800}),
        "$.kickoff", "Expected `datetime`, got `int`", id="wrong-type-epoch-kickoff",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"features.elo_home": "high"}),
        "$.features[...]", "Expected `float`, got `str`", id="wrong-type-feature-value",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"outcome": "X"}),
        "$.outcome", "Invalid enum value 'X'", id="unknown-outcome",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"match_id": "E0 2024"}),
        "$.match_id", "Expected `str` matching regex", id="identifier-with-space",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"home_team": ""}),
        "$.home_team", "Expected `str` of length >= 1", id="empty-team-name",
    ),
    pytest.param(
        MatchResult, b"[1, 0]", "$", "Expected `object`, got `array`", id="array-not-object",
    ),
    pytest.param(
        MatchResult, b"null", "$", "Expected `object`, got `null`", id="null-not-object",
    ),
    # missing and unknown fields
    pytest.param(
        MatchFeatures, variant(FEATURES, {"league": DROP}),
        "$.league", "Object missing required field `league`", id="missing-field",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.away": DROP}),
        "$.odds_open.away", "Object missing required field `away`", id="missing-nested-field",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"colour": "red"}),
        "$.colour", "Object contains unknown field `colour`", id="unknown-field",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.over": 1.9}),
        "$.odds_open.over", "Object contains unknown field `over`", id="unknown-nested-field",
    ),
    # NaN / Infinity (not JSON, though Python's json and many producers write them)
    pytest.param(
        MatchFeatures, variant(FEATURES, {"features.elo_home": math.nan}),
        "$.features.elo_home", "NaN and Infinity are not JSON", id="nan",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.home": math.inf}),
        "$.odds_open.home", "NaN and Infinity are not JSON", id="infinity",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"features.elo_away": -math.inf}),
        "$.features.elo_away", "NaN and Infinity are not JSON", id="minus-infinity",
    ),
    pytest.param(
        MatchFeatures, FEATURES_JSON.replace(b"1712.5", b"1e400"),
        "$.features[...]", "Number out of range", id="overflow-to-infinity",
    ),
    # odds: decimal odds are > 1 (1.0 pays nothing back)
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.home": 0}),
        "$.odds_open.home", "Expected `float` > 1.0", id="odds-zero",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.draw": -3.4}),
        "$.odds_open.draw", "Expected `float` > 1.0", id="odds-negative",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_close.away": 1.0}),
        "$.odds_close.away", "Expected `float` > 1.0", id="odds-exactly-one",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"odds_open.away": 0.8}),
        "$.odds_open.away", "Expected `float` > 1.0", id="odds-below-one",
    ),
    # scores
    pytest.param(
        MatchResult, variant(RESULT, {"away_goals": -1}),
        "$.away_goals", "Expected `int` >= 0", id="negative-goals",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"half_time_home_goals": -2}),
        "$.half_time_home_goals", "Expected `int` >= 0", id="negative-half-time-goals",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"outcome": "A"}),
        "$.outcome", "contradicts the score 1-0 (expected 'H')", id="outcome-contradicts-score",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"home_goals": 2, "away_goals": 2}),
        "$.outcome", "contradicts the score 2-2 (expected 'D')", id="draw-marked-home-win",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"half_time_home_goals": 2}),
        "$.half_time_home_goals", "2 exceeds full-time goals 1", id="half-time-above-full-time",
    ),
    # kickoff
    pytest.param(
        MatchResult, variant(RESULT, {"kickoff": "1869-12-31T15:00:00Z"}),
        "$.kickoff", "is before 1870", id="kickoff-before-1870",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"kickoff": FAR_AHEAD}),
        "$.kickoff", "is more than 730 days ahead", id="kickoff-over-two-years-ahead",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"kickoff": "2024-08-16T19:00:00"}),
        "$.kickoff", "Expected `datetime` with a timezone component", id="naive-kickoff",
    ),
    pytest.param(
        Prediction, variant(PREDICTION, {"created_at": "2024-08-16 18:00:00"}),
        "$.created_at", "Expected `datetime` with a timezone component", id="naive-created-at",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"kickoff": "2024-13-01T19:00:00Z"}),
        "$.kickoff", "Invalid RFC3339 encoded datetime", id="impossible-date",
    ),
    # teams
    pytest.param(
        MatchFeatures, variant(FEATURES, {"away_team": "Man United"}),
        "$.away_team", "must differ from `home_team`", id="same-home-and-away-team",
    ),
    # a fixture obeys the rules of the features' shared fields
    pytest.param(
        Fixture, variant(FIXTURE, {"away_team": "man  UNITED"}),
        "$.away_team", "must differ from `home_team`", id="fixture-same-teams",
    ),
    pytest.param(
        Fixture, variant(FIXTURE, {"season": "2024-2026"}),
        "$.season", "must be two consecutive years", id="fixture-season-out-of-order",
    ),
    pytest.param(
        Fixture, variant(FIXTURE, {"home_team": "Man\u200bUnited"}),
        "$.home_team", "U+200B", id="fixture-invisible-name",
    ),
    pytest.param(
        Fixture, variant(FIXTURE, {"features": {"elo_diff": 1.0}}),
        "$.features", "unknown field `features`", id="fixture-carries-no-features",
    ),
    pytest.param(
        LeagueInput, variant(LeagueInput(fixture=FIXTURE), {"result": to_builtins(RESULT)}),
        "$", "exactly one of `fixture` and `result`", id="league-input-both",
    ),
    # probabilities
    pytest.param(
        Prediction, variant(PREDICTION, {"probabilities.A": 0.3}),
        "$.probabilities", "must sum to 1 (got 1.100000000)", id="probabilities-sum-above-one",
    ),
    pytest.param(
        Evaluation, variant(EVALUATION, {"probabilities.H": 0.05}),
        "$.probabilities", "must sum to 1 (got 0.500000000)", id="probabilities-sum-below-one",
    ),
    pytest.param(
        Prediction, variant(PREDICTION, {"probabilities.H": 1.2, "probabilities.D": -0.2}),
        "$.probabilities.H", "Expected `float` <= 1.0", id="probability-above-one",
    ),
    # versions
    pytest.param(
        MatchFeatures, variant(FEATURES, {"schema_version": 2}),
        "$.schema_version", "unsupported schema_version 2; supported: 1", id="schema-version-2",
    ),
    pytest.param(
        MatchFeatures, variant(FEATURES, {"schema_version": 2, "new_in_v2": True}),
        "$.schema_version", "unsupported schema_version 2; supported: 1",
        id="schema-version-2-with-new-field",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"schema_version": 0}),
        "$.schema_version", "unsupported schema_version 0; supported: 1", id="schema-version-0",
    ),
    pytest.param(
        MatchResult, variant(RESULT, {"schema_version": "1"}),
        "$.schema_version", "Expected `int`, got `str`", id="schema-version-as-string",
    ),
    pytest.param(
        ModelFeedItem,
        variant(EXAMPLES["model_feed_item"][0], {"evaluation.schema_version": 2}),
        "$.evaluation.schema_version", "unsupported schema_version 2; supported: 1",
        id="nested-schema-version-2",
    ),
    # a backfill's learn item
    pytest.param(
        LearnItem, variant(LEARN_ITEM, {"final_whistle": LEARN_ITEM.kickoff.isoformat()}),
        "$.final_whistle", "is not after `kickoff`", id="learn-item-whistle-at-kickoff",
    ),
    pytest.param(
        LearnItem, variant(LEARN_ITEM, {"outcome": "A"}),
        "$.outcome", "contradicts the score 1-0", id="learn-item-outcome-contradicts-score",
    ),
    # a backfill version's coverage in event time
    pytest.param(
        ModelSnapshot, variant(BACKFILL_SNAPSHOT, {"learned_until": None}),
        "$.learned_until", "must be given with `learned_from`", id="coverage-whistle-alone",
    ),
    pytest.param(
        ModelSnapshot, variant(BACKFILL_SNAPSHOT, {"learned_from": "2012-08-20T00:00:00Z"}),
        "$.learned_from", "is after `learned_until`", id="coverage-whistles-out-of-order",
    ),
    pytest.param(
        ModelSnapshot, variant(BACKFILL_SNAPSHOT, {"complete_through": "2012-08-19T00:00:00Z"}),
        "$.complete_through", "is before `learned_until`", id="coverage-watermark-behind",
    ),
    pytest.param(
        ModelSnapshot, variant(BACKFILL_SNAPSHOT, {"complete_through": "2012-08-25T12:45:00"}),
        "$.complete_through", "Expected `datetime` with a timezone component",
        id="coverage-naive-watermark",
    ),
    # not JSON at all
    pytest.param(MatchResult, b"hello", "$", "not valid JSON", id="not-json"),
    pytest.param(
        MatchResult, random.Random(20240816).randbytes(512), "$", "not valid JSON",
        id="random-bytes",
    ),
    pytest.param(
        MatchResult, b'{"match_id": "\xff\xfe"}', "$", "not valid JSON", id="invalid-utf8",
    ),
    pytest.param(
        MatchFeatures, FEATURES_JSON[: len(FEATURES_JSON) // 2], "$", "not valid JSON",
        id="truncated-json",
    ),
    pytest.param(
        MatchFeatures, FEATURES_JSON[:-1], "$", "not valid JSON", id="missing-closing-brace",
    ),
    pytest.param(
        MatchFeatures, FEATURES_JSON + b" " * (MAX_EVENT_BYTES - len(FEATURES_JSON) + 1),
        "$", f"payload exceeds {MAX_EVENT_BYTES} bytes", id="oversize-payload",
    ),
    pytest.param(
        MatchResult, b'{"match_id": "a", "match_id": "b"}',
        "$.match_id", "duplicate key in object", id="duplicate-key",
    ),
    pytest.param(
        MatchFeatures, FEATURES_JSON.replace(b'"draw":4.2', b'"draw":4.2,"draw":4.0'),
        "$.odds_open.draw", "duplicate key in object", id="duplicate-nested-key",
    ),
    pytest.param(MatchResult, b"", "$", "payload is empty", id="empty-bytes"),
    pytest.param(MatchResult, None, "$", "payload is empty", id="tombstone-none"),
]
# fmt: on


def test_checked_in_json_schemas_match_the_code() -> None:
    """The files under schemas/json/ are exactly what schemas/events.py exports: none changed,
    missing or stale."""
    problems = export.drifted()
    assert not problems, (
        "JSON Schema files drifted from schemas/events.py: "
        + ", ".join(problems)
        + "; run `python -m schemas.export` and commit the result"
    )


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_file_is_a_self_describing_draft_2020_12_document(name: str) -> None:
    """Each schema names its draft, has a unique $id and a title, carries the class docstring
    and the schema_version, and rejects unknown fields like the decoder does."""
    record_type = EVENT_TYPES[name]
    document = export.schema_of(name, record_type)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"].endswith(f"/v{SCHEMA_VERSION}/{name}.schema.json")
    assert document["title"] == record_type.__name__
    assert document["description"].startswith(inspect.cleandoc(record_type.__doc__ or ""))
    assert f"schema_version {SCHEMA_VERSION}" in document["description"]
    assert document["type"] == "object"
    assert document["additionalProperties"] is False
    assert document["properties"]["schema_version"]["default"] == SCHEMA_VERSION
    # Every reference resolves inside the document.
    for ref in _refs(document):
        assert ref == "#" or ref.removeprefix("#/$defs/") in document.get("$defs", {}), ref


def test_schema_files_are_deterministic() -> None:
    """Exporting twice gives identical bytes: sorted keys, 2-space indent, trailing newline."""
    first, second = export.render_all(), export.render_all()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_export_check_names_drifted_files_and_export_repairs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` exits 1 naming changed, missing and stale files; a plain export fixes all."""
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "alert.schema.json").write_text("{}\n")
    (tmp_path / "prediction.schema.json").unlink()
    (tmp_path / "retired_event.schema.json").write_text("{}\n")
    capsys.readouterr()

    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "alert.schema.json (differs)" in err
    assert "prediction.schema.json (missing)" in err
    assert "retired_event.schema.json (no such event type)" in err
    assert "python -m schemas.export" in err

    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "retired_event.schema.json").exists()


@pytest.mark.parametrize(("record_type", "raw", "field", "rule"), MALFORMED)
def test_malformed_event_is_rejected_with_field_and_rule(
    record_type: type[Record], raw: bytes | None, field: str, rule: str
) -> None:
    """A malformed event raises InvalidEvent whose issue names the offending field (JSON path)
    and the rule it breaks, so the dead letter tells the producer what to fix."""
    with pytest.raises(InvalidEvent) as caught:
        decode(raw, record_type)
    issue = caught.value.issue
    assert (issue.field, rule in issue.rule) == (field, True), issue
    assert str(caught.value).startswith(f"{field}: ")
    # The issue itself travels in a dead letter, so it must encode.
    assert decode(encode(_dead_letter(issue)), DeadLetter).error == issue


def test_payload_of_exactly_the_size_limit_is_accepted() -> None:
    """The size limit is inclusive: MAX_EVENT_BYTES bytes decode, one more is rejected."""
    padded = FEATURES_JSON + b" " * (MAX_EVENT_BYTES - len(FEATURES_JSON))
    assert len(padded) == MAX_EVENT_BYTES
    assert decode(padded, MatchFeatures) == FEATURES


def test_missing_schema_version_reads_as_current_version() -> None:
    """An event without schema_version is read as the current version (the schema's default)."""
    record = decode(variant(RESULT, {"schema_version": DROP}), MatchResult)
    assert record == RESULT
    assert record.schema_version == SCHEMA_VERSION


def test_every_event_type_has_valid_examples() -> None:
    """The round-trip examples cover every event type of EVENT_TYPES, with the right class."""
    assert set(EXAMPLES) == set(EVENT_TYPES)
    for name, records in EXAMPLES.items():
        assert records
        assert all(type(record) is EVENT_TYPES[name] for record in records)


ROUND_TRIPS = [
    pytest.param(name, record, id=f"{name}-{index}")
    for name, records in EXAMPLES.items()
    for index, record in enumerate(records)
]


@pytest.mark.parametrize(("name", "record"), ROUND_TRIPS)
def test_valid_event_round_trips(name: str, record: Record) -> None:
    """encode -> decode gives back an equal record, and so does the plain-JSON path
    (to_builtins -> json.dumps) a producer without msgspec would take."""
    record_type = EVENT_TYPES[name]
    assert decode(encode(record), record_type) == record
    plain = json.dumps(to_builtins(record), allow_nan=False).encode()
    assert decode(plain, record_type) == record
    assert encode(decode(plain, record_type)) == encode(record)


def _dead_letter(issue: ValidationIssue) -> DeadLetter:
    return DeadLetter(
        source_topic="tipstream.match-features",
        partition=0,
        offset=0,
        key_b64=None,
        payload_b64="",
        error=issue,
        agent="scorer",
        failed_at=LATER,
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


@pytest.mark.parametrize(
    ("features", "named"),
    [
        ({"elo_home": 1500.0, "elo_away": math.nan}, "features.elo_away"),
        ({"elo_home": math.inf, "elo_away": -math.inf}, "features.elo_home"),
        ({"elo_home": 1.0, "form": 0.5, "rest": -math.inf}, "features.rest"),
    ],
)
def test_non_finite_feature_is_named_when_built_in_python(
    features: dict[str, float], named: str
) -> None:
    """The finite check of ``__post_init__`` (one sum first) still names the first bad field."""
    with pytest.raises(ValueError, match=f"^`{named}` must be a finite number"):
        msgspec.structs.replace(FEATURES, features=features)


def test_huge_finite_features_are_refused_by_their_bounds() -> None:
    """A finite value far beyond any real feature is refused, naming the feature and its bounds
    (once only non-finite values were: 1e308 is finite and would blind the scalers)."""
    with pytest.raises(ValueError, match=r"`features.a` 1e\+308 is outside \[-1e\+06, 1e\+06\]"):
        msgspec.structs.replace(FEATURES, features={"a": 1e308, "b": 1e308, "c": -1e308})
