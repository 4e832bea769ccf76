"""The ledger table's encoding: a compact value decodes to the ledger encoded; JSON still reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.reconciler_codec import (
    _UUID,
    FEATURE_NAMES_V1,
    FORMAT_V1,
    _Features,
    _Prediction,
    _Result,
    decode_ledger,
    encode_ledger,
)
from agents.reconciler_rules import (
    MatchLedger,
    apply_features,
    apply_prediction,
    apply_result,
    feed,
    prediction_id,
)
from agents.scorer_rules import predict_many
from schemas.events import MatchFeatures, MatchResult, Odds, Prediction, Probabilities
from tests.bench.workload import Matches, default_models

NOW = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)
MATCH = "england-premier-league:2023-12-30:arsenal:chelsea"


def features(revision: int = 0, values: dict[str, float] | None = None) -> MatchFeatures:
    return MatchFeatures(
        match_id=MATCH,
        league="england-premier-league",
        season="2023-2024",
        kickoff=KICKOFF,
        home_team="Arsenal",
        away_team="Chelsea",
        odds_open=Odds(home=2.1, draw=3.4, away=3.6),
        odds_close=Odds(home=2.0, draw=3.5, away=3.9) if revision else None,
        features={name: i / 100 for i, name in enumerate(FEATURE_NAMES_V1)}
        if values is None
        else values,
        issued_at=NOW if revision else None,
        revision=revision,
    )


def prediction(model_id: str = "m1", *, pid: str | None = None, league: str | None = None,
               made_at: datetime | None = None) -> Prediction:  # fmt: skip
    return Prediction(
        prediction_id=pid or prediction_id(MATCH, model_id, 1),
        match_id=MATCH,
        league=league or "england-premier-league",
        kickoff=KICKOFF,
        model_id=model_id,
        model_version=1,
        is_champion=model_id == "m1",
        probabilities=Probabilities(H=0.5, D=0.3, A=0.2),
        predicted="H",
        confidence=0.5,
        created_at=NOW,
        made_at=made_at,
    )


def result(home: int = 2, away: int = 1) -> MatchResult:
    return MatchResult(
        match_id=MATCH,
        league="england-premier-league",
        kickoff=KICKOFF,
        home_goals=home,
        away_goals=away,
        outcome="H" if home > away else "A" if away > home else "D",
        half_time_home_goals=min(home, 1),
        half_time_away_goals=0,
    )


def round_trip(ledger: MatchLedger) -> MatchLedger:
    value = encode_ledger(ledger)
    assert value[0] == FORMAT_V1
    decoded = decode_ledger(value)
    assert decoded == ledger
    assert list(decoded.predictions) == list(ledger.predictions)  # arrival order kept
    assert encode_ledger(decoded) == value
    return decoded


def test_every_stage_of_a_ledger_round_trips() -> None:
    """Empty, features only, predictions before features, evaluated, corrected, unfed."""
    round_trip(MatchLedger())
    early = MatchLedger()
    apply_prediction(early, prediction("m1"), now=NOW)
    round_trip(early)  # the match facts come from the prediction
    evaluated = apply_result(early, result(), now=NOW)
    feed(early, evaluated.evaluations)  # no features yet: the evaluation waits, unfed
    assert early.unfed
    round_trip(early)
    apply_features(early, features(revision=1))
    feed(early, [])
    apply_prediction(early, prediction("m2", made_at=NOW - timedelta(days=3)), now=NOW)
    apply_result(early, result(1, 1), now=NOW)  # a correction: every prediction re-evaluated
    assert len(early.evaluated) == 2
    assert not early.unfed
    round_trip(early)
    only_result = MatchLedger()
    apply_result(only_result, result(), now=NOW)
    round_trip(only_result)


def test_odd_records_are_kept_as_they_were() -> None:
    """A prediction whose league differs from the features' (arrived first, kept by the
    ledger), ids not of the UUID form, unknown and reordered feature names, another offset."""
    ledger = MatchLedger()
    apply_prediction(ledger, prediction("m1", pid="pred-7f3c2a", league="other-league"), now=NOW)
    values = {"open_p_H": 0.5, "elo_home": 1500.0, "new_feature_x": 3.25}
    apply_features(ledger, features(values=values))
    ledger.result = msgspec.structs.replace(
        result(), kickoff=KICKOFF.astimezone(timezone(timedelta(hours=2)))
    )
    ledger.evaluated["pred-7f3c2a"] = "eval-91b0"
    ledger.evaluated["not-a-prediction-of-it"] = "eval-0"  # no rule leaves one, but it is kept
    decoded = round_trip(ledger)
    assert list(decoded.features.features) == list(values)  # type: ignore[union-attr]
    assert decoded.predictions["pred-7f3c2a"].league == "other-league"
    assert decoded.evaluated == {"pred-7f3c2a": "eval-91b0", "not-a-prediction-of-it": "eval-0"}


def test_a_json_ledger_of_an_earlier_release_still_reads() -> None:
    """Values written before the compact encoding (a changelog recovered after the upgrade)."""
    ledger = MatchLedger()
    apply_features(ledger, features())
    apply_prediction(ledger, prediction("m1"), now=NOW)
    apply_result(ledger, result(), now=NOW)
    legacy = msgspec.json.encode(ledger)
    assert legacy.startswith(b"{")
    assert decode_ledger(legacy) == ledger
    assert decode_ledger(b"{}") == MatchLedger()


@pytest.mark.parametrize("value", [b"", b"\x01", b"\x01\x93", b"\x02abc", b"{not json"])
def test_a_corrupt_value_is_an_error_not_a_ledger(value: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, ValueError)):
        decode_ledger(value)


def test_the_encoding_carries_every_field_of_the_records() -> None:
    """A field added to a record must be added here too (and the format version bumped), or
    the compact encoding would drop it: the stored arrays name every field but the match facts
    (``facts``), and nothing else."""
    facts = {"match_id", "league", "kickoff"}
    for record, stored, split, extra in (
        (MatchFeatures, _Features, {"features": {"names", "values"}}, set()),
        (Prediction, _Prediction, {}, {"evaluation_id"}),  # the ledger's, kept beside it
        (MatchResult, _Result, {}, set()),
    ):
        fields = {f.name for f in msgspec.structs.fields(record)}
        assert fields >= facts
        expected: set[str] = set()
        for name in fields - facts:
            expected |= split.get(name, {name})
        stored_names = {f.name for f in msgspec.structs.fields(stored)}
        assert stored_names - {"facts"} - extra == expected, record


def test_the_benchmark_ledger_is_four_times_smaller() -> None:
    """Real features and the four default models' predictions: the compact value against the
    JSON one (the figures of docs/BENCHMARKS.md are measured by make bench)."""
    models = default_models()
    for match, match_result in list(Matches.load().take(50, "c")):
        ledger = MatchLedger()
        apply_features(ledger, match)
        for p in predict_many([match], models, now=NOW):
            apply_prediction(ledger, p, now=NOW)
        apply_result(ledger, match_result, now=NOW)
        assert len(round_trip_value := encode_ledger(ledger)) * 3 < len(msgspec.json.encode(ledger))
        assert decode_ledger(round_trip_value) == ledger


_names = st.sampled_from(FEATURE_NAMES_V1) | st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    values=st.dictionaries(_names, st.floats(0.0, 1.0), max_size=30),
    home=st.integers(0, 9),
    away=st.integers(0, 9),
    ids=st.lists(
        st.uuids().map(str) | st.from_regex(r"[a-z][a-z0-9-]{0,30}", fullmatch=True),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    order=st.permutations(["features", "predictions", "result"]),
)
def test_any_ledger_round_trips(
    values: dict[str, float], home: int, away: int, ids: list[str], order: list[str]
) -> None:
    """Events in any order, any feature names, UUID and other ids: decode(encode(l)) == l."""
    ledger = MatchLedger()
    for step in order:
        if step == "features":
            apply_features(ledger, features(revision=1, values=values))
        elif step == "predictions":
            for n, pid in enumerate(ids):
                apply_prediction(ledger, prediction(f"m{n}", pid=pid), now=NOW)
        else:
            feed(ledger, apply_result(ledger, result(home, away), now=NOW).evaluations)
    round_trip(ledger)
    assert all(_UUID.fullmatch(e) for e in ledger.evaluated.values())
