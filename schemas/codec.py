"""Bytes <-> records: the only place events are encoded and decoded.

Agents consume raw bytes and call :func:`decode` themselves (Faust's own value decoding commits
an offset before a decode error surfaces, so a bad event would be lost silently). Every failure
becomes an :class:`InvalidEvent` carrying a :class:`ValidationIssue` (field, value, rule) that
the dead-letter envelope keeps next to the original bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from schemas.events import SUPPORTED_VERSIONS, Record, ValidationIssue

R = TypeVar("R", bound=Record)

MAX_EVENT_BYTES = 64 * 1024
"""Largest accepted payload: a feature event is ~1 KiB, so 64 KiB leaves room and stops abuse."""

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Record], msgspec.json.Decoder[Any]] = {}
_PATH = re.compile(r" - at `(\$[^`]*)`$")
# msgspec names the field itself, not its path, when one is missing or unknown.
_OBJECT_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")
# Our own rules (``__post_init__``) start with the field they are about, in backticks.
_RULE_FIELD = re.compile(r"^`([A-Za-z0-9_.]+)`")
_VERSION_RANGE = re.compile(r"^Expected `int` [<>]=? ")


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
    if not raw:
        raise InvalidEvent(ValidationIssue(field="$", value=None, rule="payload is empty"))
    if len(raw) > max_bytes:
        raise InvalidEvent(
            ValidationIssue(
                field="$", value=f"{len(raw)} bytes", rule=f"payload exceeds {max_bytes} bytes"
            )
        )
    decoder = _DECODERS.get(record_type)
    if decoder is None:
        decoder = _DECODERS[record_type] = msgspec.json.Decoder(record_type)
    try:
        record: R | None = decoder.decode(raw)
    except (msgspec.DecodeError, ValueError):
        # Malformed, invalid (ValidationError is a DecodeError) or not UTF-8 (ValueError): the
        # original path below runs as before and says why.
        record = None
    if (
        record is not None
        and record.schema_version in SUPPORTED_VERSIONS
        and _ENCODER.encode(record) == raw
    ):
        # Bytes this encoder wrote have no duplicate key and no NaN/Infinity, so the strict
        # parse could not object: skip it. This is every event tipstream itself publishes and
        # every replayed one; it costs ~5 us instead of ~17 us (the pre-pass builds every float
        # as a Python object and calls a hook per JSON object).
        return record
    document = _parse_strict(raw)
    _check_version(document)
    if record is not None:
        return record
    try:
        record = decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidEvent(_issue_from(error, document)) from error
    return record


def _parse_strict(raw: bytes) -> Any:
    """Parse JSON rejecting what msgspec would accept silently: duplicate keys, NaN, Infinity.

    The parser's hooks do not know where they are in the document, so they leave markers and
    the (rare) marked document is walked afterwards to name the offending field's path.
    """
    marked: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) == len(pairs):
            return result
        marked.append(True)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _Duplicates(result, key)
            seen.add(key)
        raise AssertionError("unreachable: fewer keys than pairs means a repeated key")

    def constant_hook(token: str) -> _NonFinite:
        marked.append(True)
        return _NonFinite(token)

    try:
        document = json.loads(raw, object_pairs_hook=pairs_hook, parse_constant=constant_hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidEvent(
            ValidationIssue(field="$", value=_preview(raw), rule=f"not valid JSON: {error}")
        ) from error
    if marked:
        issue = _first_marker(document, "$")
        if issue is not None:
            raise InvalidEvent(issue)
    return document


def _check_version(document: Any) -> None:
    """Reject an unsupported version before anything else.

    An event of a newer version may well have new fields, and "unsupported schema_version 2"
    tells its producer more than msgspec's "unknown field" or "Expected `int` <= 1" would.
    """
    if not isinstance(document, dict):
        return
    version = document.get("schema_version")
    # bool is an int subclass; msgspec rejects it with its own "Expected `int`, got `bool`".
    is_int = isinstance(version, int) and not isinstance(version, bool)
    if is_int and version not in SUPPORTED_VERSIONS:
        raise InvalidEvent(
            ValidationIssue(
                field="$.schema_version", value=str(version), rule=_unsupported(str(version))
            )
        )


def _unsupported(version: str) -> str:
    supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
    return f"unsupported schema_version {version}; supported: {supported}"


class _Duplicates(dict[str, Any]):
    """A parsed object in which ``duplicate`` occurred more than once."""

    def __init__(self, items: dict[str, Any], duplicate: str) -> None:
        super().__init__(items)
        self.duplicate = duplicate


class _NonFinite:
    """A parsed ``NaN``, ``Infinity`` or ``-Infinity`` token."""

    def __init__(self, token: str) -> None:
        self.token = token


def _first_marker(node: Any, path: str) -> ValidationIssue | None:
    """The first duplicate key or non-finite token in document order, as an issue."""
    if isinstance(node, _NonFinite):
        return ValidationIssue(field=path, value=node.token, rule="NaN and Infinity are not JSON")
    if isinstance(node, _Duplicates):
        field = f"{path}.{node.duplicate}"
        value = _preview(node[node.duplicate])  # the value that was kept: the last one
        return ValidationIssue(field=field, value=value, rule="duplicate key in object")
    children: Iterable[tuple[str, Any]] = ()
    if isinstance(node, dict):
        children = ((f"{path}.{key}", value) for key, value in node.items())
    elif isinstance(node, list):
        children = ((f"{path}[{index}]", value) for index, value in enumerate(node))
    for child_path, child in children:
        issue = _first_marker(child, child_path)
        if issue is not None:
            return issue
    return None


def _issue_from(error: msgspec.ValidationError, document: Any) -> ValidationIssue:
    message = str(error)
    match = _PATH.search(message)
    path, rule = (match.group(1), message[: match.start()]) if match else ("$", message)
    field = _field_path(path, rule)
    value = _value_at(document, field)
    if field.endswith(".schema_version") and _VERSION_RANGE.match(rule) and value is not None:
        rule = _unsupported(value)  # a nested record's version (the root's is checked first)
    return ValidationIssue(field=field, value=value, rule=rule)


def _field_path(path: str, rule: str) -> str:
    """The JSON path of the offending field: msgspec's path, made precise where it can be.

    A missing or unknown field is reported by msgspec at its parent object, and an error raised
    by a root ``__post_init__`` has no path at all; both name the field in backticks.
    """
    found = _OBJECT_FIELD.match(rule)
    if found:
        return f"{path}.{found.group(1)}"
    found = _RULE_FIELD.match(rule)
    if found and path == "$":
        return f"$.{found.group(1)}"
    return path


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
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = json.dumps(value, default=_marker_token)
    return text if len(text) <= limit else text[:limit] + "..."


def _marker_token(value: Any) -> str:
    """A NaN/Infinity marker still inside a value being previewed (e.g. under a duplicate key)."""
    if isinstance(value, _NonFinite):
        return value.token
    raise TypeError(f"{type(value).__name__} is not JSON")
