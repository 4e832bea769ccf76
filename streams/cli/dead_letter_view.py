"""The pure part of ``tipstream dead-letters``: letter ids, filters, what a listing shows, which
event type a source topic carries and whether a payload would now pass. No I/O.

A dead letter's id is its position on the dead-letter topic, ``PARTITION:OFFSET`` (``0:17``):
unique within a deployment, printed by ``list``, and enough for ``show`` and ``redrive`` to
read that one record without scanning the topic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from schemas.codec import InvalidEvent, decode
from schemas.events import (
    Alert,
    DeadLetter,
    Evaluation,
    Fixture,
    LeagueInput,
    MatchFeatures,
    MatchResult,
    ModelFeedItem,
    ModelSnapshot,
    Prediction,
    Record,
    ValidationIssue,
)
from streams.topics import (
    ALERTS,
    DRIFT_INPUTS,
    EVALUATIONS,
    FEATURES,
    FIXTURES,
    LEAGUE_INPUTS,
    MODEL_FEED,
    PREDICTIONS,
    RESULTS,
    SNAPSHOTS,
    Topics,
    TopicSpec,
)

RECORD_TYPES: dict[TopicSpec, type[Record]] = {
    FIXTURES: Fixture,
    LEAGUE_INPUTS: LeagueInput,
    FEATURES: MatchFeatures,
    RESULTS: MatchResult,
    PREDICTIONS: Prediction,
    EVALUATIONS: Evaluation,
    MODEL_FEED: ModelFeedItem,
    SNAPSHOTS: ModelSnapshot,
    ALERTS: Alert,
    DRIFT_INPUTS: MatchFeatures,
}
"""The event each consumed topic carries: the type its consuming agent decodes it as."""
MATCH_KEYED = (Fixture, MatchFeatures, MatchResult, Prediction, Evaluation)
"""Events published keyed by their match id (``streams.topics``: key "match id")."""


@dataclass(frozen=True, slots=True)
class LetterId:
    """A dead letter's position on the dead-letter topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_letter_id(text: str) -> LetterId:
    """``PARTITION:OFFSET`` as ``list`` prints it; ValueError saying the form otherwise."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(
            f"dead letter id {text!r}: expected PARTITION:OFFSET on the dead-letter topic, "
            "as `tipstream dead-letters list` prints it (e.g. 0:17)"
        )
    return LetterId(int(partition), int(offset))


def record_type_of(topics: Topics, source_topic: str) -> type[Record] | None:
    """The event type ``source_topic`` carries in this deployment, or None (not one of ours)."""
    for spec, record_type in RECORD_TYPES.items():
        if topics.name(spec) == source_topic:
            return record_type
    return None


def topic_matches(topics: Topics, source_topic: str, wanted: str) -> bool:
    """``--topic`` takes the full name or the suffix (``match-features``)."""
    return source_topic in (wanted, f"{topics.prefix}.{wanted}")


def reason(letter: DeadLetter) -> str:
    """Why the event was rejected, as one line: ``field=value: rule`` (the form of a bad
    row in ``tipstream replay``)."""
    return issue_text(letter.error)


def issue_text(issue: ValidationIssue) -> str:
    value = "" if issue.value is None else issue.value
    return f"{issue.field}={value}: {issue.rule}"


def reason_matches(letter: DeadLetter, wanted: str) -> bool:
    """``--reason`` is a case-insensitive part of the field or the rule."""
    needle = wanted.casefold()
    return needle in letter.error.rule.casefold() or needle in letter.error.field.casefold()


def original_bytes(letter: DeadLetter) -> bytes:
    return base64.b64decode(letter.payload_b64)


def original_key_bytes(letter: DeadLetter) -> bytes | None:
    return None if letter.key_b64 is None else base64.b64decode(letter.key_b64)


def still_invalid(payload: bytes, record_type: type[Record]) -> ValidationIssue | None:
    """Why the consuming agent would dead-letter ``payload`` again, or None when it decodes:
    the same decoder, so the same field, value and rule."""
    try:
        decode(payload, record_type)
    except InvalidEvent as error:
        return error.issue
    return None


def key_mismatch(payload: bytes, record_type: type[Record], key: bytes | None) -> str | None:
    """Why a valid payload must not go out under the letter's key, or None: an event keyed by
    match id whose ``match_id`` is not the key would land on another match's partition (the
    reconciler joins a match's events on one partition)."""
    record = decode(payload, record_type)
    match_id = getattr(record, "match_id", None)
    if key is None or not isinstance(match_id, str) or record_type not in MATCH_KEYED:
        return None
    text = key.decode("utf-8", "replace")
    if text == match_id:
        return None
    return f"its match_id {match_id!r} is not the letter's key {text!r}"


def letter_row(
    letter_id: LetterId, letter: DeadLetter, redrives: int, *, prefix: str
) -> dict[str, Any]:
    """A dead letter as ``list`` shows it (and ``--json`` gives it)."""
    return {
        "id": str(letter_id),
        "failed_at": letter.failed_at,
        "topic": letter.source_topic.removeprefix(f"{prefix}."),
        "source_topic": letter.source_topic,
        "source": f"{letter.partition}:{letter.offset}",
        "key": None if letter.key_b64 is None else _key_text(letter),
        "agent": letter.agent,
        "field": letter.error.field,
        "value": letter.error.value,
        "rule": letter.error.rule,
        "redriven": redrives,
        "reason": reason(letter),
    }


def letter_detail(
    letter_id: LetterId, letter: DeadLetter, redrives: list[dict[str, Any]], *, prefix: str
) -> dict[str, Any]:
    """Every field of one letter for ``show``: the row, the original payload as text (when it
    is UTF-8) and base64, and each redrive so far."""
    raw = original_bytes(letter)
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    row = letter_row(letter_id, letter, len(redrives), prefix=prefix)
    return row | {
        "payload_bytes": len(raw),
        "payload": text,
        "payload_b64": letter.payload_b64,
        "key_b64": letter.key_b64,
        "redrives": redrives,
    }


def _key_text(letter: DeadLetter) -> str:
    key = original_key_bytes(letter) or b""
    return key.decode("utf-8", "replace")
