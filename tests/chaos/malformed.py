"""Malformed events of every kind an upstream producer can send, made from real ones.

Each malformed event is a real match's fixture or result, broken in one way (or bytes that
were never JSON), so it looks like what a buggy producer would really publish (producers
publish facts; the service computes the features itself). Every one is
checked against the codec before it is returned: an event this module calls malformed is
one the workers must dead-letter.

>>> from schemas.events import MatchResult
>>> from datetime import UTC, datetime
>>> result = MatchResult(match_id="m1", league="l", kickoff=datetime(2020, 1, 1, tzinfo=UTC),
...                      home_goals=1, away_goals=0, outcome="H")
>>> events = generate([], [result], 30, seed=1)
>>> len(events), len({e.kind for e in events}) > 10
(30, True)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from models.features import RESULT_DELAY
from models.timeline import FIXTURE_LEAD
from schemas.codec import MAX_EVENT_BYTES, InvalidEvent, decode, encode, to_builtins
from schemas.events import Fixture, MatchResult, Record

Topic = Literal["fixture", "result"]
Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """One malformed event: how it is broken, where it goes, and its exact key and bytes."""

    kind: str
    topic: Topic
    key: bytes | None
    value: bytes | None
    at: datetime | None = None  # the template's event time (the header a producer sets)


def _doc(record: Record) -> Document:
    return to_builtins(record)


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def random_bytes(rng: random.Random, record: Record) -> bytes:
    return rng.randbytes(rng.randint(1, 300))


def truncated_json(rng: random.Random, record: Record) -> bytes:
    raw = encode(record)
    return raw[: rng.randint(1, len(raw) - 1)]


def wrong_type(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    field, value = rng.choice(
        [("match_id", 42), ("kickoff", 1_566_000_000), ("league", ["E0"]), ("schema_version", "1")]
        + (
            [("home_goals", "two"), ("away_goals", 1.5), ("outcome", 1)]
            if "outcome" in doc
            else [("odds_open", "1.5/4/6"), ("odds_close", [1, 2]), ("home_team", None)]
        )
    )
    doc[field] = value
    return _dumps(doc)


def missing_field(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    required = ["match_id", "league", "kickoff"] + (
        ["home_goals", "away_goals", "outcome"]
        if "outcome" in doc
        else ["season", "home_team", "away_team", "odds_open"]
    )
    del doc[rng.choice(required)]
    return _dumps(doc)


def out_of_range(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    if "outcome" in doc:
        choice = rng.randrange(3)
        if choice == 0:
            doc["home_goals"] = 150
        elif choice == 1:
            doc["kickoff"] = "1850-05-01T15:00:00Z"
        else:
            doc["outcome"] = "X"
    else:
        choice = rng.randrange(4)
        if choice == 0:
            doc["odds_open"]["home"] = rng.choice([0.5, 1.0, 5000.0])
        elif choice == 1:
            doc["season"] = "19-20"
        elif choice == 2:
            doc["kickoff"] = "2999-01-01T00:00:00Z"
        else:
            doc["away_team"] = doc["home_team"]
    return _dumps(doc)


def huge_payload(rng: random.Random, record: Record) -> bytes:
    """Valid-looking JSON far beyond the codec's limit (up to ~900 KB, under the broker's 1 MB)."""
    doc = _doc(record)
    doc["padding"] = "x" * rng.randint(MAX_EVENT_BYTES, 900_000)
    return _dumps(doc)


def unknown_version(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    doc["schema_version"] = rng.choice([0, 2, 7, 99])
    if doc["schema_version"] > 1 and rng.random() < 0.5:
        doc["introduced_in_v2"] = True  # a newer producer's new field
    return _dumps(doc)


def nan(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    value = rng.choice([float("nan"), float("inf"), float("-inf")])
    if "outcome" in doc:
        doc[rng.choice(["home_goals", "away_goals"])] = value
    elif rng.random() < 0.5:
        doc["odds_open"]["draw"] = value
    else:
        doc["odds_open"]["home"] = value
    return _dumps(doc)  # json.dumps writes NaN / Infinity, which is not JSON


def duplicate_key(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    field = rng.choice(
        ["home_goals", "match_id"] if "outcome" in doc else ["home_team", "match_id"]
    )
    first = _dumps({field: doc[field]})[:-1]  # '{"field":value'
    return first + b"," + _dumps(doc)[1:]


def negative_goals(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    if "outcome" in doc:
        doc[rng.choice(["home_goals", "away_goals", "half_time_home_goals"])] = -rng.randint(1, 3)
    else:
        doc["odds_open"]["away"] = -2.5  # fixtures have no goals: a negative price instead
    return _dumps(doc)


def not_an_object(rng: random.Random, record: Record) -> bytes:
    return rng.choice([b"[]", b'"match"', b"42", b"null", b"true", _dumps([_doc(record)])])


def unknown_field(rng: random.Random, record: Record) -> bytes:
    doc = _doc(record)
    doc[rng.choice(["homeTeam", "score", "extra"])] = "surprise"
    return _dumps(doc)


def not_utf8(rng: random.Random, record: Record) -> bytes:
    raw = encode(record)
    cut = rng.randint(1, len(raw) - 2)
    return raw[:cut] + b"\xff\xfe" + raw[cut:]


def other_encoding(rng: random.Random, record: Record) -> bytes:
    """The same event with a byte order mark, or in UTF-16 or UTF-32 (a producer on Windows)."""
    text = encode(record).decode()
    choice = rng.randrange(3)
    if choice == 0:
        return b"\xef\xbb\xbf" + text.encode()
    family = rng.choice(["utf-16", "utf-32"])
    return text.encode(rng.choice([family, f"{family}-le", f"{family}-be"]))


def surrogate(rng: random.Random, record: Record) -> bytes:
    """A lone UTF-16 surrogate in a string: escaped in the JSON, or as raw (invalid) bytes."""
    doc = _doc(record)
    field = rng.choice(["match_id", "league"] + (["home_team"] if "home_team" in doc else []))
    if rng.random() < 0.5:
        doc[field] = f"{doc[field][:3]}\ud800{doc[field][3:]}"
        return json.dumps(doc, separators=(",", ":")).encode()  # ASCII: the escape stays
    raw = encode(record)
    cut = raw.index(b'"match_id":"') + len(b'"match_id":"') + 2
    return raw[:cut] + b"\xed\xa0\x80" + raw[cut:]


def deep_nesting(rng: random.Random, record: Record) -> bytes:
    """An extra field nested far deeper than any event (up to 5,000 levels)."""
    depth = rng.randint(17, 5000)
    return encode(record)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"


def huge_number(rng: random.Random, record: Record) -> bytes:
    """A number of thousands of digits, or an exponent of ten digits."""
    doc = _doc(record)
    number = "9" * rng.randint(41, 5000) if rng.random() < 0.5 else "1e-1234567890"
    field = "home_goals" if "outcome" in doc else "odds_open"
    marker = "__number__"
    if field == "odds_open":
        doc["odds_open"]["draw"] = marker
    else:
        doc[field] = marker
    return _dumps(doc).replace(f'"{marker}"'.encode(), number.encode())


def trailing_data(rng: random.Random, record: Record) -> bytes:
    return encode(record) + rng.choice([b'{"x":1}', b" garbage", b"\x00", b"[]"])


def semantic(rng: random.Random, record: Record) -> bytes:
    """Well-formed JSON of the right types that no real match has: an id with a trailing
    newline, an invisible or blank team name, the same team twice, a season backwards,
    closing odds with a price of zero, half-time goals for one side only."""
    doc = _doc(record)
    if "outcome" in doc:
        if rng.random() < 0.5:
            doc["match_id"] += "\n"
        else:
            doc["half_time_home_goals"], doc["half_time_away_goals"] = 0, None
        return _dumps(doc)
    choice = rng.randrange(5)
    if choice == 0:
        doc["match_id"] += "\n"
    elif choice == 1:
        doc["home_team"] = rng.choice(["Ful\u0000ham", "Ful\u202eham", "Ful\u200bham", "   "])
    elif choice == 2:
        doc["away_team"] = doc["home_team"].upper()
    elif choice == 3:
        first = int(doc["season"][:4])
        doc["season"] = f"{first + 2}-{first}"
    else:
        doc["odds_close"] = {**doc["odds_open"], "draw": 0.0}
    return _dumps(doc)


Breaker = Callable[[random.Random, Record], bytes]
BREAKERS: dict[str, Breaker] = {
    "random_bytes": random_bytes,
    "truncated_json": truncated_json,
    "wrong_type": wrong_type,
    "missing_field": missing_field,
    "out_of_range": out_of_range,
    "huge_payload": huge_payload,
    "unknown_version": unknown_version,
    "nan": nan,
    "duplicate_key": duplicate_key,
    "negative_goals": negative_goals,
    "not_an_object": not_an_object,
    "unknown_field": unknown_field,
    "not_utf8": not_utf8,
    "other_encoding": other_encoding,
    "surrogate": surrogate,
    "deep_nesting": deep_nesting,
    "huge_number": huge_number,
    "trailing_data": trailing_data,
    "semantic": semantic,
}
EMPTY_KINDS = ("empty", "null")
"""A zero-byte value and a null value (a tombstone): nothing to decode at all."""
KINDS: tuple[str, ...] = (*BREAKERS, *EMPTY_KINDS)


def generate(
    fixtures: Sequence[Fixture],
    results: Sequence[MatchResult],
    count: int,
    *,
    seed: int = 7,
    huge: int = 6,
) -> list[Malformed]:
    """``count`` malformed events cycling through every kind, at most ``huge`` huge ones.

    Half carry a real match's id as key (a producer's bad copy of a real event must not disturb
    that match), the rest a key of their own, no key, or a key that is not UTF-8.
    """
    rng = random.Random(seed)
    templates: list[tuple[Topic, Record]] = [("fixture", f) for f in fixtures]
    templates += [("result", r) for r in results]
    if not templates:
        raise ValueError("need at least one valid event to break")
    out: list[Malformed] = []
    huge_left = huge
    while len(out) < count:
        kind = KINDS[len(out) % len(KINDS)]
        if kind == "huge_payload":
            if huge_left == 0:
                kind = "random_bytes"
            else:
                huge_left -= 1
        topic, record = rng.choice(templates)
        value: bytes | None
        if kind == "empty":
            value = b""
        elif kind == "null":
            value = None
        else:
            value = BREAKERS[kind](rng, record)
            if not _is_invalid(topic, value):
                continue  # e.g. random bytes that happen to be valid: draw again
        key = _key(rng, len(out), record)
        if value is None and key is None:
            key = f"malformed-{len(out)}".encode()  # Kafka takes no record without both
        out.append(Malformed(kind, topic, key, value, event_time(record)))
    return out


def event_time(record: Record) -> datetime | None:
    """When a replay says the template happened: a fixture just before kickoff, a result at
    its final whistle (``models.timeline.fact_timeline``)."""
    if isinstance(record, Fixture):
        return record.kickoff - FIXTURE_LEAD
    if isinstance(record, MatchResult):
        return record.kickoff + RESULT_DELAY
    return None


def _key(rng: random.Random, index: int, record: Record) -> bytes | None:
    choice = index % 4
    if choice in (0, 1):
        return str(getattr(record, "match_id", "")).encode()
    if choice == 2:
        return f"malformed-{index}".encode()
    return None if rng.random() < 0.5 else b"\xff\x00bad-key-" + str(index).encode()


def _is_invalid(topic: Topic, value: bytes) -> bool:
    try:
        decode(value, Fixture if topic == "fixture" else MatchResult)
    except InvalidEvent:
        return True
    return False
