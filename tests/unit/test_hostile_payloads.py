"""Hostile and broken producers (issue 13): every bad payload is one InvalidEvent, never a crash.

Each finding has a test that failed before the fix; the property tests throw arbitrary bytes
and mutated valid events at the decoder; a last set of payloads of the same classes, but not
those of the issue, shows the rules are general and not a list of known bad inputs.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import CLOSE_INPUTS, FEATURE_NAMES, build_events, model_input
from schemas import export
from schemas.codec import (
    MAX_DEPTH,
    InvalidEvent,
    decode,
    decode_or_issue,
    encode,
    to_builtins,
    undecodable,
)
from schemas.events import (
    EVENT_TYPES,
    FEATURE_BOUNDS,
    FEATURE_KEY_PATTERN,
    FEATURE_LIMIT,
    IDENTIFIER_PATTERN,
    INT4_MAX,
    MAX_FEATURES,
    SEASON_PATTERN,
    SHA256_PATTERN,
    DeadLetter,
    Evaluation,
    MatchFeatures,
    MatchResult,
    ModelFeedItem,
    ModelSnapshot,
    Odds,
    Prediction,
    Record,
    ValidationIssue,
)
from schemas.football_csv import default_data_files, read_rows
from tests.unit.examples import EVALUATION, KICKOFF, PREDICTION, RESULT

FEATURES = MatchFeatures(
    match_id="E0-2024-08-16-MUN-FUL",
    league="E0",
    season="2024-2025",
    kickoff=KICKOFF,
    home_team="Man United",
    away_team="Fulham",
    odds_open=Odds(home=1.6, draw=4.2, away=5.5),
    features={"elo_home": 1712.5, "elo_diff": 108.5, "rest_home": 6.0},
)
SNAPSHOT = ModelSnapshot(
    model_id="logreg",
    version=4,
    parent_version=3,
    kind="river.linear_model.LogisticRegression",
    status="champion",
    state_sha256="ab" * 32,
    created_at=KICKOFF,
)
VALID: list[Record] = [
    FEATURES,
    RESULT,
    PREDICTION,
    EVALUATION,
    SNAPSHOT,
    ModelFeedItem(evaluation=EVALUATION, inputs={"elo_diff": 108.5, "close_p_H": 0.5}),
]
RAW = encode(FEATURES)


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _with(record: Record, **changes: Any) -> bytes:
    """JSON bytes of ``record`` with top-level fields replaced (no validation on the way)."""
    return _json({**to_builtins(record), **changes})


def _refused(raw: bytes, record_type: type[Record] = MatchFeatures) -> ValidationIssue:
    with pytest.raises(InvalidEvent) as caught:
        decode(raw, record_type)
    return caught.value.issue


# -- 1. the codec: undecodable payloads ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "rule"),
    [
        pytest.param(b"\xef\xbb\xbf" + RAW, "$", "UTF-8 byte order mark", id="utf8-bom"),
        pytest.param(RAW.decode().encode("utf-16"), "$", "UTF-16-LE byte order", id="utf16"),
        pytest.param(RAW.decode().encode("utf-16-le"), "$", "NUL bytes", id="utf16-no-bom"),
        pytest.param(RAW.decode().encode("utf-32"), "$", "UTF-32-LE byte order", id="utf32"),
        pytest.param(
            RAW.replace(b"Fulham", b"Ful\\ud800ham"), "$.away_team", "lone surrogate U+D800",
            id="escaped-surrogate",
        ),
        pytest.param(
            RAW.replace(b"Fulham", b"Ful\xed\xa0\x80ham"), "$", "not UTF-8", id="raw-surrogate",
        ),
        pytest.param(b"[" * 5000 + b"]" * 5000, "$", "nested deeper than", id="deep-nesting"),
        pytest.param(
            RAW.replace(b'"rest_home":6.0', b'"rest_home":' + b"[" * 5000 + b"]" * 5000),
            "$", "nested deeper than", id="deep-nesting-inside",
        ),
        pytest.param(
            RAW.replace(b"1712.5", b"9" * 5000), "$.features.elo_home", "number longer than",
            id="5000-digit-int",
        ),
        pytest.param(
            RAW.replace(b'"schema_version":1', b'"schema_version":' + b"1" * 5000),
            "$.schema_version", "number longer than", id="5000-digit-version",
        ),
        pytest.param(RAW + b'{"x":1}', "$", "not valid JSON: Extra data", id="trailing-data"),
    ],
)  # fmt: skip
def test_undecodable_payload_is_an_invalid_event(raw: bytes, field: str, rule: str) -> None:
    """BOM, UTF-16/32, surrogates, deep nesting, huge integers and trailing data each become
    InvalidEvent naming the field and the rule (before: DecodeError, UnicodeDecodeError,
    RecursionError or ValueError escaped the codec and failed the whole batch)."""
    issue = _refused(raw)
    assert issue.field == field
    assert rule in issue.rule
    # The dead letter carrying the issue is itself a valid event (no lone surrogate, no NUL).
    letter = DeadLetter(
        source_topic="t", partition=0, offset=0, key_b64=None,
        payload_b64=base64.b64encode(raw).decode(), error=issue, agent="scorer",
        failed_at=KICKOFF,
    )  # fmt: skip
    assert decode(encode(letter), DeadLetter) == letter


def test_depth_limit_admits_every_event_and_refuses_one_level_more() -> None:
    """Nesting up to MAX_DEPTH parses (then fails only as a wrong type); one more is refused."""
    ok = _refused(b'{"features":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}")
    assert "nested" not in ok.rule
    too_deep = _refused(b'{"features":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    assert "nested deeper than" in too_deep.rule


def test_decode_or_issue_returns_the_issue_instead_of_raising() -> None:
    """decode_or_issue gives the record, or the issue: a consumer dead-letters without except."""
    assert decode_or_issue(RAW, MatchFeatures) == FEATURES
    issue = decode_or_issue(b"\xff\xfe" + RAW, MatchFeatures)
    assert isinstance(issue, ValidationIssue)
    assert "byte order mark" in issue.rule


def test_undecodable_issue_names_the_unexpected_exception() -> None:
    """undecodable() is the one issue for any other exception: rule "undecodable: <type>"."""
    issue = undecodable(b"\xff" * 1000, RecursionError("too deep"))
    assert issue.rule.startswith("undecodable: RecursionError")
    assert issue.value is not None
    assert len(issue.value) <= 203


def test_encoder_output_stays_on_the_fast_path() -> None:
    """Bytes the encoder wrote decode to the same record (the fast path is not slowed by a
    strict parse), and the same event written by another encoder is still accepted."""
    for record in VALID:
        assert decode(encode(record), type(record)) == record
        other = json.dumps(to_builtins(record), indent=1).encode()
        assert decode(other, type(record)) == record


# -- 2. semantic rules -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["match_id", "league"])
def test_identifier_with_trailing_newline_is_refused(field: str) -> None:
    """An id "E0\\n" is refused: Python's `$` matched before a final newline (before: accepted,
    while the exported JSON Schema refused it)."""
    issue = _refused(_with(FEATURES, **{field: "E0\n"}))
    assert issue.field == f"$.{field}"
    assert "matching regex" in issue.rule


IDS_TO_AGREE_ON = [
    "E0", "E0\n", "E0\r", "\nE0", "E0\n\n", "E-0.1:x_y", "", "E 0", "E0\u2028", "é0", "E0\x00",
    "١٢", "E0\\n", "a" * 200, "E0$", "^E0",
]  # fmt: skip
SEASONS_TO_AGREE_ON = ["2024-2025", "2024-2025\n", "٢٠٢٤-٢٠٢٥", "2024-20255", " 2024-2025"]
KEYS_TO_AGREE_ON = ["elo_diff", "open_p_H", "elo_diff\n", "1elo", "elo\x00diff", "_x", "a" * 64]
SHAS_TO_AGREE_ON = ["ab" * 32, "ab" * 32 + "\n", "AB" * 32, "ab" * 31]


def _python_accepts(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None  # what msgspec does with `pattern`


@cache
def _schema_patterns() -> dict[str, str]:
    """The patterns as exported in the JSON Schema files, by what they are for."""
    features = json.loads(export.render("match_features", MatchFeatures))
    snapshot = json.loads(export.render("model_snapshot", ModelSnapshot))
    return {
        "identifier": features["properties"]["match_id"]["pattern"],
        "season": features["properties"]["season"]["pattern"],
        "feature key": features["properties"]["features"]["propertyNames"]["pattern"],
        "sha256": snapshot["properties"]["state_sha256"]["pattern"],
    }


CASES = [
    ("identifier", IDENTIFIER_PATTERN, IDS_TO_AGREE_ON),
    ("season", SEASON_PATTERN, SEASONS_TO_AGREE_ON),
    ("feature key", FEATURE_KEY_PATTERN, KEYS_TO_AGREE_ON),
    ("sha256", SHA256_PATTERN, SHAS_TO_AGREE_ON),
]


@pytest.mark.parametrize(("name", "pattern", "values"), CASES, ids=[c[0] for c in CASES])
def test_python_and_json_schema_patterns_agree(name: str, pattern: str, values: list[str]) -> None:
    """The exported pattern is the decoder's, and an ECMA-262 engine (node, as JSON Schema
    validators use) accepts exactly the values Python's re.search accepts, "E0\\n" included."""
    assert _schema_patterns()[name] == pattern
    expected = [_python_accepts(pattern, value) for value in values]
    assert expected[0] is True
    if name == "identifier":
        assert expected[:2] == [True, False]  # "E0\n" is the finding
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: no ECMA-262 engine to compare with")
    script = (
        "const [p, vs] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(vs.map(v => new RegExp(p, 'u').test(v))));"
    )
    run = subprocess.run(
        [node, "-e", script],
        input=json.dumps([pattern, values]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(run.stdout) == expected


@pytest.mark.parametrize(
    "name",
    [
        "Ful\x00ham",
        "Ful\u202eham",
        "Ful\u200bham",
        "   ",
        "\t",
        "Ful\u2066ham\u2069",
        "Ful\ufeffham",
    ],
    ids=["nul", "rlo", "zero-width-space", "only-spaces", "tab", "isolate", "bom-inside"],
)
def test_team_name_with_invisible_characters_or_blank_is_refused(name: str) -> None:
    """Names with control or format characters (NUL, RLO, zero-width, isolates, BOM) or only
    whitespace are refused (before: accepted; PostgreSQL later refused the NUL)."""
    issue = _refused(_with(FEATURES, away_team=name))
    assert issue.field == "$.away_team"
    assert "blank" in issue.rule or "Unicode category" in issue.rule


@pytest.mark.parametrize(
    "away",
    [
        "man united",
        "MAN  UNITED",
        " Man United ",
        "\uff2d\uff41\uff4e \uff35\uff4e\uff49\uff54\uff45\uff44",
        "Man\u00a0United",
    ],
)
def test_home_and_away_the_same_after_normalisation_is_refused(away: str) -> None:
    """Home and away teams that differ only by case, whitespace or compatibility forms are the
    same team (before: only exactly equal names were refused)."""
    issue = _refused(_with(FEATURES, away_team=away))
    assert issue.field == "$.away_team"
    assert "must differ from `home_team`" in issue.rule


@pytest.mark.parametrize("season", ["2025-2023", "2024-2024", "2024-2026", "٢٠٢٤-٢٠٢٥"])
def test_season_out_of_order_is_refused(season: str) -> None:
    """A season is two consecutive years (as the data's 2009-2010); 2025-2023 was accepted."""
    issue = _refused(_with(FEATURES, season=season))
    assert issue.field == "$.season"


@pytest.mark.parametrize(
    "features",
    [
        {"elo\x00diff": 1.0},
        {"elo_diff\n": 1.0},
        {"1elo": 1.0},
        {"x" * 65: 1.0},
        {f"f{i}": 0.0 for i in range(MAX_FEATURES + 1)},
    ],
    ids=["nul-in-key", "newline-in-key", "digit-first", "key-too-long", "too-many"],
)
def test_unsafe_feature_keys_or_too_many_features_are_refused(features: dict[str, float]) -> None:
    """Feature keys are a letter then letters, digits or _ (at most 64 characters), and an event
    has at most 64 features (before: any key, any number of them)."""
    issue = _refused(_with(FEATURES, features=features))
    assert issue.field.startswith("$.features")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("elo_diff", 1e300),
        ("pi_exp_gd", 1e300),
        ("elo_diff", 2000.5),
        ("elo_p_home", 1.01),
        ("open_p_H", -0.01),
        ("rest_home", -1.0),
        ("anything_else", FEATURE_LIMIT * 2),
    ],
)
def test_feature_outside_its_bounds_is_refused(name: str, value: float) -> None:
    """Each known feature has a range (elo_diff within +-2000, probabilities in 0..1, ...) and
    any other within +-1e6 (before: 1e300 passed and blinded the online models' scalers)."""
    issue = _refused(_with(FEATURES, features={name: value}))
    assert issue.field.startswith("$.features")
    assert f"`features.{name}`" in issue.rule or "<=" in issue.rule or ">=" in issue.rule


def test_feature_bounds_cover_every_feature_and_are_documented_in_the_schema() -> None:
    """Every builder feature and reference input has bounds, matches the key pattern, and the
    bounds are in the JSON Schema (minimum/maximum) that producers validate against."""
    assert set(FEATURE_NAMES) | set(CLOSE_INPUTS) == set(FEATURE_BOUNDS)
    assert all(re.search(FEATURE_KEY_PATTERN, name) for name in FEATURE_BOUNDS)
    assert all(low < high for low, high in FEATURE_BOUNDS.values())
    schema = json.loads(export.render("match_features", MatchFeatures))["properties"]["features"]
    for name, (low, high) in FEATURE_BOUNDS.items():
        assert schema["properties"][name] == {"type": "number", "minimum": low, "maximum": high}
    assert schema["additionalProperties"]["maximum"] == FEATURE_LIMIT
    assert schema["maxProperties"] == MAX_FEATURES


@pytest.mark.parametrize(("home", "away"), [(1, None), (None, 0)])
def test_half_time_goals_of_one_side_only_are_refused(home: int | None, away: int | None) -> None:
    """Half-time goals come for both sides or neither (before: one side alone was accepted)."""
    issue = _refused(
        _with(RESULT, half_time_home_goals=home, half_time_away_goals=away), MatchResult
    )
    assert "both given or both absent" in issue.rule


def test_half_time_goals_above_full_time_are_refused() -> None:
    """Half-time goals never exceed the full-time goals of the same side."""
    issue = _refused(_with(RESULT, half_time_home_goals=2), MatchResult)
    assert "exceeds full-time goals" in issue.rule


def _probabilities(h: float, d: float, a: float) -> dict[str, float]:
    return {"H": h, "D": d, "A": a}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"predicted": "A"}, "$.predicted"),
        ({"confidence": 0.25}, "$.confidence"),
        ({"confidence": 0.55 + 1e-6}, "$.confidence"),
        ({"model_version": INT4_MAX + 1}, "$.model_version"),
    ],
)
def test_inconsistent_prediction_is_refused(changes: dict[str, Any], field: str) -> None:
    """`predicted` is a most probable outcome, `confidence` the top probability (1e-9) and
    `model_version` fits int4 (before: all three were accepted as sent)."""
    issue = _refused(_with(PREDICTION, **changes), Prediction)
    assert issue.field == field


def test_prediction_with_tied_top_outcomes_may_name_either() -> None:
    """With two outcomes tied on top, either is a valid `predicted`."""
    for predicted in ("H", "D"):
        raw = _with(
            PREDICTION, probabilities=_probabilities(0.4, 0.4, 0.2), predicted=predicted,
            confidence=0.4,
        )  # fmt: skip
        assert decode(raw, Prediction).predicted == predicted


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hit": False}, "$.hit"),
        ({"outcome": "D", "hit": False}, "$.outcome"),
        ({"predicted": "D", "hit": False}, "$.predicted"),
        ({"model_version": INT4_MAX + 1}, "$.model_version"),
    ],
)
def test_inconsistent_evaluation_is_refused(changes: dict[str, Any], field: str) -> None:
    """`hit` agrees with predicted and outcome, outcome with the goals, and the version fits
    int4 (before: an evaluation contradicting its own score was accepted)."""
    issue = _refused(_with(EVALUATION, **changes), Evaluation)
    assert issue.field == field


def test_snapshot_parent_version_must_precede_its_version() -> None:
    """A snapshot's parent is an earlier version of its model."""
    issue = _refused(_with(SNAPSHOT, parent_version=4), ModelSnapshot)
    assert issue.field == "$.parent_version"


@cache
def _real_events() -> tuple[tuple[MatchFeatures, MatchResult], ...]:
    return tuple(build_events(read_rows(default_data_files()).rows))


def test_every_real_match_still_passes_every_rule() -> None:
    """The features, result and model inputs of all 27,700 shared matches decode: no rule or
    bound refuses real data."""
    events = _real_events()
    assert len(events) == 27_700
    for features, result in events:
        assert decode(encode(features), MatchFeatures) == features
        assert decode(encode(result), MatchResult) == result
        inputs = model_input(features)
        item = ModelFeedItem(evaluation=EVALUATION, inputs=inputs)
        assert decode(encode(item), ModelFeedItem).inputs == inputs


# -- 3. properties: nothing but a record or InvalidEvent -----------------------------------


def _decodes_or_refuses(raw: bytes, record_type: type[Record]) -> None:
    """Any exception but InvalidEvent propagates and fails the property."""
    outcome = decode_or_issue(raw, record_type)
    assert isinstance(outcome, record_type | ValidationIssue)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECORD_TYPES = st.sampled_from(list(EVENT_TYPES.values()))


@SETTINGS
@given(raw=st.binary(max_size=2048), record_type=RECORD_TYPES)
def test_arbitrary_bytes_decode_or_are_refused(raw: bytes, record_type: type[Record]) -> None:
    """For any bytes at all, decode returns a record or raises InvalidEvent, nothing else."""
    _decodes_or_refuses(raw, record_type)


@SETTINGS
@given(
    text=st.text(alphabet=st.characters(codec=None, categories=None), max_size=200).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
    record_type=RECORD_TYPES,
)
def test_arbitrary_text_with_surrogates_decodes_or_is_refused(
    text: bytes, record_type: type[Record]
) -> None:
    """Any text, lone surrogates encoded raw included, is a record or an InvalidEvent."""
    _decodes_or_refuses(text, record_type)


def _strings_of(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _strings_of(value, (*path, key))]
    return [path] if isinstance(node, str) else []


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[bytes, type[Record]]:
    """A valid event broken in one or more of the hostile ways of the issue."""
    record = draw(st.sampled_from(VALID))
    document = to_builtins(record)
    strings = _strings_of(document)
    text_mutations = draw(st.lists(st.sampled_from(["unicode", "surrogate", "deep", "bigint"])))
    raw_text = ""
    for mutation in text_mutations:
        if mutation == "unicode" and strings:
            _set(document, draw(st.sampled_from(strings)), draw(st.text(max_size=30)))
        elif mutation == "surrogate" and strings:
            _set(document, draw(st.sampled_from(strings)), "\udc00x\ud800")
        elif mutation == "deep":
            depth = draw(st.integers(1, 3000))
            key = draw(st.sampled_from(sorted(document)))
            raw_text = f'"{key}":' + "[" * depth + "]" * depth
        elif mutation == "bigint":
            digits = draw(st.integers(1, 6000))
            key = draw(st.sampled_from(sorted(document)))
            raw_text = f'"{key}":' + "7" * digits
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    if raw_text:
        text = text[:-1] + "," + raw_text + "}"
    raw = text.encode("utf-8", "surrogatepass")
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32"]))
    if encoding != "utf-8":
        raw = text.encode(encoding, "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8)) + raw[cut:]
    return raw, type(record)


@SETTINGS
@given(event=mutated_events())
def test_mutated_valid_events_decode_or_are_refused(event: tuple[bytes, type[Record]]) -> None:
    """A valid event with a BOM, in UTF-16/32, with surrogates, deep nesting, huge integers,
    random unicode in a string or random bytes inserted: a record or InvalidEvent, no crash."""
    raw, record_type = event
    _decodes_or_refuses(raw, record_type)


# -- 4. the same classes, other bytes ---------------------------------------------------------

OTHER_HOSTILE: list[Any] = [
    pytest.param(_with(FEATURES, home_team="Man\u2066 United"), MatchFeatures, id="isolate-U+2066"),
    pytest.param(_with(FEATURES, away_team="Ful\ufeffham"), MatchFeatures, id="bom-inside-name"),
    pytest.param(
        _with(FEATURES, away_team="Ful\u2028ham"), MatchFeatures, id="line-separator-in-name"
    ),
    pytest.param(_with(FEATURES, away_team="Ful\x85ham"), MatchFeatures, id="c1-control-in-name"),
    pytest.param(
        _with(FEATURES, away_team="\u3000\u3000"), MatchFeatures, id="ideographic-spaces-only"
    ),
    pytest.param(
        _with(FEATURES, away_team="MAN\u2003UNITED"), MatchFeatures, id="same-team-em-space"
    ),
    pytest.param(RAW.decode().encode("utf-32-be"), MatchFeatures, id="utf32-be-no-bom"),
    pytest.param(b"\xfe\xff" + RAW.decode().encode("utf-16-be"), MatchFeatures, id="utf16-be-bom"),
    pytest.param(
        b"\x00\x00\xfe\xff" + RAW.decode().encode("utf-32-be"), MatchFeatures, id="utf32-be-bom"
    ),
    pytest.param(
        RAW.replace(b"1712.5", b"1712.5e-1234567890"), MatchFeatures, id="10-digit-neg-exponent"
    ),
    pytest.param(
        RAW.replace(b"1712.5", b"1" + b"0" * 400 + b".5"), MatchFeatures, id="400-digit-float"
    ),
    pytest.param(
        RAW.replace(b"1712.5", b"-" + b"9" * 4301), MatchFeatures, id="4301-digit-negative"
    ),
    pytest.param(b'{"a":' * 600 + b"1" + b"}" * 600, MatchFeatures, id="600-nested-objects"),
    pytest.param(
        RAW.replace(b'"rest_home":6.0', b'"rest_home":' + b'{"a":[' * 300 + b"]}" * 300),
        MatchFeatures,
        id="mixed-nesting-inside",
    ),
    pytest.param(
        RAW.replace(b"Fulham", b"Ful\\udfffham"), MatchFeatures, id="escaped-low-surrogate"
    ),
    pytest.param(
        RAW.replace(b"Fulham", b"Ful\\uD83Dham"), MatchFeatures, id="escaped-high-no-pair"
    ),
    pytest.param(RAW.replace(b'"elo_home"', b'"elo\\udc80"'), MatchFeatures, id="surrogate-in-key"),
    pytest.param(RAW.replace(b"Fulham", b"Ful\xc0\xafham"), MatchFeatures, id="overlong-utf8"),
    pytest.param(
        RAW.replace(b"Fulham", b"Ful\xf4\x90\x80\x80ham"), MatchFeatures, id="beyond-U+10FFFF"
    ),
    pytest.param(RAW + b"\x00", MatchFeatures, id="trailing-nul"),
    pytest.param(RAW + b" ]", MatchFeatures, id="trailing-bracket"),
    pytest.param(_with(FEATURES, match_id="E0\r\n"), MatchFeatures, id="id-crlf"),
    pytest.param(_with(FEATURES, league="E0\u2028"), MatchFeatures, id="id-line-separator"),
    pytest.param(_with(FEATURES, season="2023-2022"), MatchFeatures, id="season-backwards"),
    pytest.param(_with(FEATURES, features={"elo_home": -1.0}), MatchFeatures, id="negative-elo"),
    pytest.param(
        _with(FEATURES, features={"goals_exp_home": 1e9}), MatchFeatures, id="huge-expected-goals"
    ),
    pytest.param(_with(FEATURES, features={"Elo diff": 1.0}), MatchFeatures, id="space-in-key"),
    pytest.param(
        _with(FEATURES, features={"elo_\u0430": 1.0}), MatchFeatures, id="cyrillic-in-key"
    ),
    pytest.param(_with(PREDICTION, model_version=2**63), Prediction, id="version-int8"),
    pytest.param(_with(SNAPSHOT, version=INT4_MAX + 1), ModelSnapshot, id="snapshot-version-int4"),
    pytest.param(
        _with(EVALUATION, home_goals=0, away_goals=0, outcome="D"), Evaluation, id="hit-on-draw"
    ),
]


@pytest.mark.parametrize(("raw", "record_type"), OTHER_HOSTILE)
def test_hostile_payloads_not_in_the_issue_are_refused_alike(
    raw: bytes, record_type: type[Record]
) -> None:
    """Payloads of the issue's classes but other bytes (isolates, BOM inside a name, UTF-32-BE,
    huge exponents, 600 nested objects, other surrogates, ...) are InvalidEvent too."""
    _refused(raw, record_type)
