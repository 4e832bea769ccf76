"""Bytes <-> records: the only place events are encoded and decoded.

Agents consume raw bytes and call :func:`decode` themselves (Faust's own value decoding commits
an offset before a decode error surfaces, so a bad event would be lost silently). Every failure
becomes an :class:`InvalidEvent` carrying a :class:`ValidationIssue` (field, value, rule) that
the dead-letter envelope keeps next to the original bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec

from schemas.events import Record, ValidationIssue

R = TypeVar("R", bound=Record)

MAX_EVENT_BYTES = 64 * 1024
"""Largest accepted payload: a feature event is ~1 KiB, so 64 KiB leaves room and stops abuse."""

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Record], msgspec.json.Decoder[Any]] = {}
_PATH = re.compile(r" - at `(\$[^`]*)`$")


class InvalidEvent(ValueError):
    """A payload that can never become a valid event: dead-letter it, do not retry."""

    def __init__(self, issue: ValidationIssue) -> None:
        super().__init__(f"{issue.field}: {issue.rule} (value: {issue.value})")
        self.issue = issue


def encode(record: Record) -> bytes:
    """Compact JSON bytes of a record."""
    return _ENCODER.encode(record)


def to_builtins(record: Record) -> dict[str, Any]:
    """The record as plain JSON-compatible Python values."""
    value = msgspec.to_builtins(record)
    assert isinstance(value, dict)
    return value


def decode(raw: bytes | None, record_type: type[R], *, max_bytes: int = MAX_EVENT_BYTES) -> R:
    """Decode and validate one event, or raise :class:`InvalidEvent` saying why."""
    if raw is None:
        raise InvalidEvent(ValidationIssue(field="$", value=None, rule="payload is empty"))
    if len(raw) > max_bytes:
        raise InvalidEvent(
            ValidationIssue(
                field="$", value=f"{len(raw)} bytes", rule=f"payload exceeds {max_bytes} bytes"
            )
        )
    document = _parse_strict(raw)
    decoder = _DECODERS.get(record_type)
    if decoder is None:
        decoder = _DECODERS[record_type] = msgspec.json.Decoder(record_type)
    try:
        record: R = decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidEvent(_issue_from(error, document)) from error
    return record


def _parse_strict(raw: bytes) -> Any:
    """Parse JSON rejecting what msgspec would accept silently: duplicate keys, NaN, Infinity."""
    try:
        return json.loads(raw, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject)
    except _DuplicateKey as error:
        raise InvalidEvent(
            ValidationIssue(field=error.field, value=None, rule="duplicate key in object")
        ) from error
    except _NonFinite as error:
        raise InvalidEvent(
            ValidationIssue(field="$", value=error.token, rule="NaN and Infinity are not JSON")
        ) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidEvent(
            ValidationIssue(field="$", value=_preview(raw), rule=f"not valid JSON: {error}")
        ) from error


class _DuplicateKey(ValueError):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class _NonFinite(ValueError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"$.{key}")
        result[key] = value
    return result


def _reject(token: str) -> Any:
    raise _NonFinite(token)


def _issue_from(error: msgspec.ValidationError, document: Any) -> ValidationIssue:
    message = str(error)
    match = _PATH.search(message)
    if match:
        path = match.group(1)
        rule = message[: match.start()]
        return ValidationIssue(field=path, value=_value_at(document, path), rule=rule)
    field = _field_named_in(message)
    value = _value_at(document, field) if field != "$" else None
    return ValidationIssue(field=field, value=value, rule=message)


def _field_named_in(message: str) -> str:
    """``Object missing required field `x``` and our own rules name a field in backticks."""
    found = re.search(r"`([A-Za-z0-9_.]+)`", message)
    return f"$.{found.group(1)}" if found else "$"


def _value_at(document: Any, path: str) -> str | None:
    node = document
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        try:
            node = node[int(index)] if index else node[key]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return _preview(node)


def _preview(value: Any, limit: int = 200) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
