"""Ticks: the watermarks of an as-of-correct backfill, told apart from facts by a header.

A tick (:class:`schemas.events.Tick`) is not a fact: ``tipstream replay --backfill`` sends one
to every partition of ``fixtures`` and ``match-results`` after each acknowledged chunk, the
league router forwards it to every ``league-inputs`` partition and the features agent to every
``match-features`` partition (docs/BACKFILL.md). Every agent reading those topics looks at the
Kafka header first (no JSON parsed for a fact) and forwards the tick or skips it
(:mod:`agents.ticks` counts them); a tick is never dead-lettered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas.codec import decode_or_issue
from schemas.events import BACKFILL_ID_MAX, IDENTIFIER_PATTERN, Tick, ValidationIssue

_BACKFILL_ID = re.compile(IDENTIFIER_PATTERN)

RECORD_HEADER = "tipstream-record"
"""Kafka header naming a record that is not its topic's usual kind; ``tick`` for a tick."""
TICK = b"tick"
BACKFILL_HEADER = "tipstream-backfill"
"""Kafka header a backfill (``tipstream replay --backfill``) stamps on every fact: its replay
id. The router carries it as ``LeagueInput.backfill``."""
TICK_HEADERS: tuple[tuple[str, bytes], ...] = ((RECORD_HEADER, TICK),)
"""The headers every tick is published with."""

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None


def header(headers: Headers, name: str) -> bytes | None:
    """The value of header ``name`` (the first, if repeated), or None. Faust hands headers as
    a list of pairs or a mapping, depending on its version and path."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return next((value for key, value in pairs if key == name), None)


def is_tick(message: Any) -> bool:
    """Whether a consumed message is a tick (by its header: a fact is never parsed here)."""
    return header(getattr(message, "headers", None), RECORD_HEADER) == TICK


def backfill_of(headers: Headers) -> str | ValidationIssue | None:
    """The replay id of a backfill fact (its :data:`BACKFILL_HEADER`), None for a live one,
    or why the header is refused (not an identifier of at most 64 characters)."""
    raw = header(headers, BACKFILL_HEADER)
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    if len(text) > BACKFILL_ID_MAX or not _BACKFILL_ID.match(text):
        return ValidationIssue(
            field=f"header {BACKFILL_HEADER}",
            value=text[:200],
            rule=f"a replay id: 1 to {BACKFILL_ID_MAX} of A-Z a-z 0-9 _ . : -",
        )
    return text


def split_ticks(events: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """A batch's events in two lists, in order: the facts and the ticks."""
    facts: list[Any] = []
    ticks: list[Any] = []
    for event in events:
        (ticks if is_tick(event.message) else facts).append(event)
    return facts, ticks


def decode_tick(message: Any) -> Tick | ValidationIssue:
    """A tick message's record, or why its payload is not a valid tick."""
    return decode_or_issue(message.value, Tick)
