"""Bytes <-> records: the only place events are encoded and decoded.

Agents consume raw bytes and call :func:`decode` themselves (Faust's own value decoding commits
an offset before a decode error surfaces, so a bad event would be lost silently). Every failure
becomes an :class:`InvalidEvent` carrying a :class:`ValidationIssue` (field, value, rule) that
the dead-letter envelope keeps next to the original bytes.

:func:`decode` raises nothing but :class:`InvalidEvent`, whatever the bytes: a payload must be
UTF-8 JSON without a byte order mark (RFC 8259 section 8.1), without lone surrogates, nested at
most :data:`MAX_DEPTH` deep, with numbers of at most :data:`MAX_NUMBER_CHARS` characters and
:data:`MAX_EXPONENT_DIGITS` exponent digits, and nothing after the document. A hostile payload
is therefore one dead letter, never an exception that fails a whole batch.
:func:`decode_or_issue` returns the issue instead of raising it.
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
MAX_DEPTH = 16
"""Deepest nesting of objects and arrays: events nest 3 deep (a feed item's probabilities); the
parser would hit Python's recursion limit near 1,000."""
MAX_NUMBER_CHARS = 40
"""Longest number token: a float's shortest repr has at most 24 characters, an int64 20;
Python refuses to read integers of more than 4,300 digits at all."""
MAX_EXPONENT_DIGITS = 3
"""Longest exponent: 1e308 is the largest finite float; ``1e-1000000000`` is 0 read the slow way."""

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Record], msgspec.json.Decoder[Any]] = {}
# A bad dict key is reported "at `key` in `$.path`": the field is the dict's path.
_PATH = re.compile(r" - at (?:`key` in )?`(\$[^`]*)`$")
# msgspec names the field itself, not its path, when one is missing or unknown.
_OBJECT_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")
# Our own rules (``__post_init__``) start with the field they are about, in backticks.
_RULE_FIELD = re.compile(r"^`([A-Za-z0-9_.]+)`")
_VERSION_RANGE = re.compile(r"^Expected `int` [<>]=? ")
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BYTE_ORDER_MARKS = (
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\xef\xbb\xbf", "UTF-8"),
    (b"\xfe\xff", "UTF-16-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONG_EXPONENT = re.compile(rf"[eE][+-]?[0-9]{{{MAX_EXPONENT_DIGITS + 1},}}")
_NUMBER_SUSPECT = re.compile(
    rf"[-+.eE0-9]{{{MAX_NUMBER_CHARS + 1}}}|[eE][+-]?[0-9]{{{MAX_EXPONENT_DIGITS + 1}}}"
)


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
    """Decode and validate one event, or raise :class:`InvalidEvent` saying why.

    :class:`InvalidEvent` is the only exception raised, for any bytes whatsoever.
    """
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
    except (msgspec.DecodeError, ValueError, RecursionError):
        # Malformed, invalid (ValidationError is a DecodeError) or not UTF-8 (ValueError): the
        # strict path below runs as before and says why.
        record = None
    if (
        record is not None
        and record.schema_version in SUPPORTED_VERSIONS
        and _ENCODER.encode(record) == raw
    ):
        # Bytes this encoder wrote have no duplicate key, no NaN/Infinity, no BOM, no oversized
        # number and no deep nesting, so the strict parse could not object: skip it. This is
        # every event tipstream itself publishes and every replayed one; it costs ~5 us instead
        # of ~17 us (the pre-pass builds every float as a Python object and calls a hook per
        # JSON object).
        return record
    document = _parse_strict(raw)
    _check_version(document)
    if record is not None:
        return record
    try:
        record = decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidEvent(_issue_from(error, document)) from error
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        # Anything the strict parse let through and msgspec still cannot read: refused alike.
        raise InvalidEvent(
            ValidationIssue(field="$", value=_preview(raw), rule=f"not valid JSON: {error}")
        ) from error
    return record


def decode_or_issue(
    raw: bytes | None, record_type: type[R], *, max_bytes: int = MAX_EVENT_BYTES
) -> R | ValidationIssue:
    """The record, or the :class:`ValidationIssue` saying why not: for a caller that
    dead-letters instead of handling an exception."""
    try:
        return decode(raw, record_type, max_bytes=max_bytes)
    except InvalidEvent as error:
        return error.issue


def undecodable(raw: bytes | None, error: BaseException) -> ValidationIssue:
    """The issue of a payload whose decoding failed with something other than
    :class:`InvalidEvent` (a bug here): a consumer still dead-letters it, rule "undecodable"."""
    value = None if raw is None else _preview(raw)
    return ValidationIssue(
        field="$", value=value, rule=f"undecodable: {type(error).__name__}: {error}"[:500]
    )


def _parse_strict(raw: bytes) -> Any:
    """Parse JSON rejecting what msgspec would accept silently (duplicate keys, NaN, Infinity,
    oversized numbers) and what it or ``json`` would fail on with another exception (BOM, other
    encodings, surrogates, deep nesting, integers beyond Python's 4,300 digits).

    The parser's hooks do not know where they are in the document, so they leave markers and
    the (rare) marked document is walked afterwards to name the offending field's path.
    """
    text = _text_of(raw)
    _check_depth(text, raw)
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

    def int_hook(token: str) -> int | _Oversized:
        if len(token) <= MAX_NUMBER_CHARS:
            return int(token)
        marked.append(True)
        return _Oversized(token)

    def float_hook(token: str) -> float | _Oversized:
        if len(token) <= MAX_NUMBER_CHARS and not _LONG_EXPONENT.search(token):
            return float(token)
        marked.append(True)
        return _Oversized(token)

    # The number hooks cost a Python call per number: only text that may hold an oversized one
    # (any such token is a run the cheap pattern finds, maybe inside a string) pays for them.
    suspect = _NUMBER_SUSPECT.search(text) is not None
    try:
        document = json.loads(
            text,
            object_pairs_hook=pairs_hook,
            parse_constant=constant_hook,
            parse_int=int_hook if suspect else None,
            parse_float=float_hook if suspect else None,
        )
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise InvalidEvent(
            ValidationIssue(field="$", value=_preview(raw), rule=f"not valid JSON: {error}")
        ) from error
    # json reads an escaped lone surrogate ("\ud800") into a str no UTF-8 can encode.
    if marked or _SURROGATE_ESCAPE.search(text):
        issue = _first_marker(document, "$")
        if issue is not None:
            raise InvalidEvent(issue)
    return document


def _text_of(raw: bytes) -> str:
    """The payload as text: UTF-8 without a byte order mark, or :class:`InvalidEvent`."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            rule = f"not valid JSON: a {encoding} byte order mark; send UTF-8 without one"
            raise InvalidEvent(ValidationIssue(field="$", value=_preview(raw), rule=rule))
    # JSON text has no NUL byte anywhere (not even in a string, where it must be escaped); UTF-16
    # and UTF-32 have one in every ASCII character.
    if b"\x00" in raw:
        rule = "not valid JSON: NUL bytes (UTF-16 or UTF-32?); send UTF-8"
        raise InvalidEvent(ValidationIssue(field="$", value=_preview(raw), rule=rule))
    try:
        return raw.decode("utf-8")  # strict: refuses encoded surrogates and overlong forms
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.end].hex(" ")
        rule = f"not valid JSON: not UTF-8, {error.reason} (bytes {bad} at offset {error.start})"
        raise InvalidEvent(ValidationIssue(field="$", value=_preview(raw), rule=rule)) from error


def _check_depth(text: str, raw: bytes) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` before a recursive parser sees it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # too few brackets to be too deep: every event takes this exit
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                rule = f"nested deeper than {MAX_DEPTH} objects or arrays"
                raise InvalidEvent(ValidationIssue(field="$", value=_preview(raw), rule=rule))
        else:
            depth -= 1


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


class _Oversized:
    """A parsed number token longer than the limits allow, kept unread."""

    def __init__(self, token: str) -> None:
        self.token = token


def _first_marker(node: Any, path: str) -> ValidationIssue | None:
    """The first duplicate key, non-finite or oversized number or lone surrogate in document
    order, as an issue."""
    if isinstance(node, _NonFinite):
        return ValidationIssue(field=path, value=node.token, rule="NaN and Infinity are not JSON")
    if isinstance(node, _Oversized):
        rule = (
            f"number longer than {MAX_NUMBER_CHARS} characters or with an exponent of more "
            f"than {MAX_EXPONENT_DIGITS} digits"
        )
        token = node.token if len(node.token) <= 60 else node.token[:60] + "..."
        return ValidationIssue(field=path, value=token, rule=rule)
    if isinstance(node, str):
        surrogate = _SURROGATE.search(node)
        if surrogate is None:
            return None
        code = f"U+{ord(surrogate.group()):04X}"
        rule = f"contains the lone surrogate {code}, which is not Unicode text"
        return ValidationIssue(field=path, value=_preview(node), rule=rule)
    if isinstance(node, _Duplicates):
        field = f"{path}.{node.duplicate}"
        value = _preview(node[node.duplicate])  # the value that was kept: the last one
        return ValidationIssue(field=field, value=value, rule="duplicate key in object")
    children: Iterable[tuple[str, Any]] = ()
    if isinstance(node, dict):
        for key in node:
            if _SURROGATE.search(key):
                rule = "a key contains a lone surrogate, which is not Unicode text"
                return ValidationIssue(field=path, value=_preview(key), rule=rule)
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
    """At most ``limit`` characters of a value, as text that any JSON encoder can carry."""
    if isinstance(value, bytes):
        # Only the head is shown: decoding 64 KiB to show 200 characters would be waste.
        text = value[: limit * 4].decode("utf-8", "replace")
    else:
        text = json.dumps(value, default=_marker_token)
    # A dead letter's value must itself be encodable: no lone surrogate, no NUL.
    text = _SURROGATE.sub("\ufffd", text).replace("\x00", "\\u0000")
    return text if len(text) <= limit else text[:limit] + "..."


def _marker_token(value: Any) -> str:
    """A marker still inside a value being previewed (e.g. under a duplicate key)."""
    if isinstance(value, _NonFinite | _Oversized):
        return value.token
    raise TypeError(f"{type(value).__name__} is not JSON")
