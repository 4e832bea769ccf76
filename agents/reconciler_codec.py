"""The reconciler's ledger table values: a compact binary encoding, and the JSON one before it.

Every ledger is written to the table and its changelog at least twice (features and
predictions, then the result) and read back for every event of its match, so its size and its
decoding are the reconciler's own cost per match. The JSON of :class:`MatchLedger` repeated the
match's id, league and kickoff in every prediction, every field name in every record, each
feature's name and each id as 36 characters of text: ~3.9 KB per reconciled match of the
benchmark's features (``make bench``; docs/BENCHMARKS.md has the figures).

The compact encoding (version 1) is one format byte, ``0x01``, then a MessagePack array
(:class:`_Ledger`): the match facts once, records as arrays in a fixed field order (each
prediction with the id of its current evaluation), the features' values in the order of
:data:`FEATURE_NAMES_V1` (a name outside it is kept by name), ids of the UUID form as their 16
bytes, times as MessagePack timestamps. Nothing is dropped: decoding gives back a ledger equal
to the one encoded (tests/unit/test_reconciler_codec.py, which also fails when a record gains a
field this encoding does not carry yet).

A value that starts with ``{`` is a ledger in the JSON encoding, as earlier releases wrote it:
:func:`decode_ledger` reads both, so a changelog written before the upgrade recovers as it was,
and each of its ledgers is rewritten compactly when its match next changes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from agents.reconciler_rules import MatchLedger
from schemas.events import (
    Evaluation,
    MatchFeatures,
    MatchResult,
    Odds,
    Outcome,
    Prediction,
    Probabilities,
)

FORMAT_V1 = 0x01
"""First byte of a version 1 value (a JSON ledger starts with ``{``, 0x7B)."""

FEATURE_NAMES_V1: tuple[str, ...] = (
    "elo_home", "elo_away", "elo_diff", "elo_p_home", "pi_home", "pi_away", "pi_exp_gd",
    "goals_exp_home", "goals_exp_away",
    "form_home_ppg", "form_home_gf", "form_home_ga", "form_away_ppg", "form_away_gf",
    "form_away_ga", "form_home_at_home_ppg", "form_home_at_home_gf", "form_home_at_home_ga",
    "form_away_at_away_ppg", "form_away_at_away_gf", "form_away_at_away_ga",
    "rest_home", "rest_away", "open_p_H", "open_p_D", "open_p_A", "open_margin",
)  # fmt: skip
"""The features agent's 27 names, in its order. Frozen with version 1: a value written with
it must decode the same forever, so a new feature is stored by name (or in a version 2)."""
_NAME_INDEX = {name: index for index, name in enumerate(FEATURE_NAMES_V1)}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_Facts = tuple[str, str, datetime]
"""(match id, league, kickoff): stored once per ledger, and in a record only where it differs."""
_Triple = tuple[float, float, float]
_Id = Any
"""A UUID-form id as its 16 bytes (MessagePack bin), any other id as text (str)."""


class _Features(msgspec.Struct, array_like=True, frozen=True):
    schema_version: int
    facts: _Facts | None
    season: str
    home_team: str
    away_team: str
    odds_open: _Triple
    odds_close: _Triple | None
    # None: exactly FEATURE_NAMES_V1 in order; else an index into it or the name, per value
    names: list[int | str] | None
    values: list[float]
    issued_at: datetime | None
    revision: int
    # Added within version 1, last and with a default: a value written before it (one field
    # shorter) still decodes, as a live issue.
    backfill: str | None = None


class _Prediction(msgspec.Struct, array_like=True, frozen=True):
    schema_version: int
    facts: _Facts | None
    prediction_id: _Id
    model_id: str
    model_version: int
    is_champion: bool
    probabilities: _Triple
    predicted: Outcome
    confidence: float
    created_at: datetime
    made_at: datetime | None
    features_revision: int
    evaluation_id: _Id | None  # its current evaluation (the ledger's ``evaluated``), if any


class _Result(msgspec.Struct, array_like=True, frozen=True):
    schema_version: int
    facts: _Facts | None
    home_goals: int
    away_goals: int
    outcome: Outcome
    half_time_home_goals: int | None
    half_time_away_goals: int | None


class _Ledger(msgspec.Struct, array_like=True, frozen=True):
    facts: _Facts | None
    features: _Features | None
    predictions: list[_Prediction]
    result: _Result | None
    # (prediction id, evaluation id) of ``evaluated`` for a prediction not in the ledger (none
    # the rules leave; kept so that any ledger round-trips)
    evaluated: list[tuple[_Id, _Id]]
    unfed: list[Evaluation]  # rare (evaluations waiting for features): kept as records


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Ledger)
_JSON_DECODER = msgspec.json.Decoder(MatchLedger)


def encode_ledger(ledger: MatchLedger) -> bytes:
    """The table value of ``ledger`` (version 1)."""
    facts = _facts_of(ledger)
    features = ledger.features
    stored = _Ledger(
        facts=facts,
        features=None if features is None else _pack_features(features, facts),
        predictions=[
            _pack_prediction(p, facts, ledger.evaluated.get(pid))
            for pid, p in ledger.predictions.items()
        ],
        result=None if ledger.result is None else _pack_result(ledger.result, facts),
        evaluated=[
            (_pack_id(p), _pack_id(e))
            for p, e in ledger.evaluated.items()
            if p not in ledger.predictions
        ],
        unfed=ledger.unfed,
    )
    return bytes((FORMAT_V1,)) + _ENCODER.encode(stored)


def decode_ledger(value: bytes) -> MatchLedger:
    """A ledger from its table value, in either encoding. The values are the reconciler's own
    writes, so anything else is a bug or a corrupted store: ``msgspec.DecodeError`` or
    ``ValueError``, as decoding the JSON always raised."""
    if not value:
        raise ValueError("empty ledger value")
    if value[0] != FORMAT_V1:
        return _JSON_DECODER.decode(value)
    stored = _DECODER.decode(memoryview(value)[1:])
    facts = stored.facts
    ledger = MatchLedger(
        features=None if stored.features is None else _unpack_features(stored.features, facts),
        predictions={},
        result=None if stored.result is None else _unpack_result(stored.result, facts),
        evaluated={},
        unfed=stored.unfed,
    )
    for packed in stored.predictions:
        prediction = _unpack_prediction(packed, facts)
        ledger.predictions[prediction.prediction_id] = prediction
        if packed.evaluation_id is not None:
            ledger.evaluated[prediction.prediction_id] = _unpack_id(packed.evaluation_id)
    for p, e in stored.evaluated:
        ledger.evaluated[_unpack_id(p)] = _unpack_id(e)
    return ledger


def _facts_of(ledger: MatchLedger) -> _Facts | None:
    record: MatchFeatures | Prediction | MatchResult | None = ledger.features or next(
        iter(ledger.predictions.values()), ledger.result
    )
    return None if record is None else (record.match_id, record.league, record.kickoff)


def _own_facts(record: MatchFeatures | Prediction | MatchResult, shared: _Facts | None) -> Any:
    facts = (record.match_id, record.league, record.kickoff)
    return None if facts == shared else facts


def _facts(own: _Facts | None, shared: _Facts | None) -> _Facts:
    facts = own or shared
    if facts is None:
        raise ValueError("a ledger record without its match's id, league and kickoff")
    return facts


def _pack_id(identifier: str) -> _Id:
    return bytes.fromhex(identifier.replace("-", "")) if _UUID.fullmatch(identifier) else identifier


def _unpack_id(packed: _Id) -> str:
    if isinstance(packed, str):
        return packed
    h = bytes(packed).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _odds(odds: Odds) -> _Triple:
    return (odds.home, odds.draw, odds.away)


def _pack_features(features: MatchFeatures, shared: _Facts | None) -> _Features:
    names = list(features.features)
    return _Features(
        schema_version=features.schema_version,
        facts=_own_facts(features, shared),
        season=features.season,
        home_team=features.home_team,
        away_team=features.away_team,
        odds_open=_odds(features.odds_open),
        odds_close=None if features.odds_close is None else _odds(features.odds_close),
        names=None
        if tuple(names) == FEATURE_NAMES_V1
        else [_NAME_INDEX.get(name, name) for name in names],
        values=list(features.features.values()),
        issued_at=features.issued_at,
        revision=features.revision,
        backfill=features.backfill,
    )


def _unpack_features(packed: _Features, shared: _Facts | None) -> MatchFeatures:
    match_id, league, kickoff = _facts(packed.facts, shared)
    names = (
        FEATURE_NAMES_V1
        if packed.names is None
        else [FEATURE_NAMES_V1[n] if isinstance(n, int) else n for n in packed.names]
    )
    return MatchFeatures(
        schema_version=packed.schema_version,
        match_id=match_id,
        league=league,
        season=packed.season,
        kickoff=kickoff,
        home_team=packed.home_team,
        away_team=packed.away_team,
        odds_open=Odds(*packed.odds_open),
        odds_close=None if packed.odds_close is None else Odds(*packed.odds_close),
        features=dict(zip(names, packed.values, strict=True)),
        issued_at=packed.issued_at,
        revision=packed.revision,
        backfill=packed.backfill,
    )


def _pack_prediction(
    prediction: Prediction, shared: _Facts | None, evaluation_id: str | None
) -> _Prediction:
    p = prediction.probabilities
    return _Prediction(
        schema_version=prediction.schema_version,
        facts=_own_facts(prediction, shared),
        prediction_id=_pack_id(prediction.prediction_id),
        model_id=prediction.model_id,
        model_version=prediction.model_version,
        is_champion=prediction.is_champion,
        probabilities=(p.H, p.D, p.A),
        predicted=prediction.predicted,
        confidence=prediction.confidence,
        created_at=prediction.created_at,
        made_at=prediction.made_at,
        features_revision=prediction.features_revision,
        evaluation_id=None if evaluation_id is None else _pack_id(evaluation_id),
    )


def _unpack_prediction(packed: _Prediction, shared: _Facts | None) -> Prediction:
    match_id, league, kickoff = _facts(packed.facts, shared)
    return Prediction(
        schema_version=packed.schema_version,
        prediction_id=_unpack_id(packed.prediction_id),
        match_id=match_id,
        league=league,
        kickoff=kickoff,
        model_id=packed.model_id,
        model_version=packed.model_version,
        is_champion=packed.is_champion,
        probabilities=Probabilities(*packed.probabilities),
        predicted=packed.predicted,
        confidence=packed.confidence,
        created_at=packed.created_at,
        made_at=packed.made_at,
        features_revision=packed.features_revision,
    )


def _pack_result(result: MatchResult, shared: _Facts | None) -> _Result:
    return _Result(
        schema_version=result.schema_version,
        facts=_own_facts(result, shared),
        home_goals=result.home_goals,
        away_goals=result.away_goals,
        outcome=result.outcome,
        half_time_home_goals=result.half_time_home_goals,
        half_time_away_goals=result.half_time_away_goals,
    )


def _unpack_result(packed: _Result, shared: _Facts | None) -> MatchResult:
    match_id, league, kickoff = _facts(packed.facts, shared)
    return MatchResult(
        schema_version=packed.schema_version,
        match_id=match_id,
        league=league,
        kickoff=kickoff,
        home_goals=packed.home_goals,
        away_goals=packed.away_goals,
        outcome=packed.outcome,
        half_time_home_goals=packed.half_time_home_goals,
        half_time_away_goals=packed.half_time_away_goals,
    )
