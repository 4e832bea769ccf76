"""How the operator commands (``alerts``, ``dead-letters``, ``predictions``) print: aligned
columns for a person, ``--json`` for a script. Pure functions, no I/O.

Plain aligned columns rather than ``rich`` or ``tabulate``: the rest of the command line prints
plain columns already, the tables here have a handful of short columns, and one 30-line
function keeps the output greppable and the dependency list short.

``--json`` is the same everywhere: a listing is one JSON array of objects, one item (``show``,
``ack``, ``resolve``, ``redrive``) one object, a follower (``alerts tail``) one object per line
(JSON Lines). Datetimes are ISO 8601 strings, bytes base64, every other value as stored.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

ELLIPSIS = "…"
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings, bytes as base64, containers converted."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def to_json(value: Any, *, lines: bool = False) -> str:
    """The ``--json`` text of a value (compact, one line, when ``lines``)."""
    if lines:
        return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return json.dumps(jsonable(value), ensure_ascii=False, indent=2)


def cell(value: Any) -> str:
    """One value as a table shows it: ``-`` for none, datetimes to the second, floats to four
    decimals, line breaks and tabs as spaces."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    # Line breaks only: other whitespace is kept, as a rule may be about it (a blank name).
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    headers: Mapping[str, str] | None = None,
    width: int | None = None,
) -> str:
    """Rows as aligned columns under a header; with ``width`` (a terminal's), the last column
    is cut to fit with an ellipsis (``show`` prints it whole). Numbers align right."""
    names = [(headers or {}).get(c, c) for c in columns]
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    numeric = [
        bool(rows) and all(isinstance(row.get(c), int | float) for row in rows) for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            (v.rjust(w) if right else v.ljust(w)) if i < len(values) - 1 else v
            for i, (v, w, right) in enumerate(zip(values, widths, numeric, strict=True))
        ]
        text = "  ".join(parts).rstrip()
        if width is not None and len(text) > width:
            text = text[: max(width - 1, 0)] + ELLIPSIS
        return text

    return "\n".join([line(names), *(line(r) for r in cells)])


def fields(item: Mapping[str, Any]) -> str:
    """Every field of one item, one per line (``name: value``), names aligned; a value over
    several lines keeps its lines, indented."""
    if not item:
        return ""
    pad = max(len(str(k)) for k in item)
    out = []
    for key, value in item.items():
        text = cell(value) if not isinstance(value, str) else value
        first, *rest = text.splitlines() or [""]
        out.append(f"{key!s:{pad}}  {first}")
        out.extend(f"{'':{pad}}  {more}" for more in rest)
    return "\n".join(out)


def parse_since(text: str, now: datetime) -> datetime:
    """A ``--since`` value: a span back from ``now`` (``30m``, ``2h``, ``7d``, ``90s``), an ISO
    date (midnight UTC) or an ISO datetime (UTC when it names no zone). ValueError otherwise."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        return now - timedelta(seconds=amount * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a span (30m, 2h, 7d) or an ISO date or datetime"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
