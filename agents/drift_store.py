"""The drift monitor's tables (migration 009): ``drift_observations``, every match it took in
the order it took them (replayed by a new owner to rebuild its state; append-only: a replay of
the history appends it again), and ``drift_resets``, the operator's resets of its references
(``tipstream drift reset``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Observation:
    """One match as the monitor took it: its source partition, event time and kickoff, and
    the features it watches, by name."""

    match_id: str
    source: int
    event_time: datetime
    kickoff: datetime
    features: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Reset:
    """An operator's reset: the kickoff time asked for (None: the first open window) and, once
    the monitor has taken it, the start of the window its references restart from."""

    reset_id: int
    requested_at: datetime | None
    effective_at: datetime | None


async def write(conn: Any, observations: Sequence[Observation]) -> None:
    """Append what the monitor took, in the order it took it (late matches too: they move
    their partition's watermark)."""
    await conn.executemany(
        """INSERT INTO drift_observations (match_id, source, event_time, kickoff, features)
           VALUES ($1, $2, $3, $4, $5::jsonb)""",
        [
            (o.match_id, o.source, o.event_time, o.kickoff, json.dumps(dict(o.features)))
            for o in observations
        ],
    )


async def history(conn: Any) -> list[Observation]:
    """Every stored observation in the order the monitor took them."""
    rows = await conn.fetch(
        "SELECT match_id, source, event_time, kickoff, features FROM drift_observations "
        "ORDER BY seq"
    )
    return [
        Observation(
            r["match_id"], r["source"], r["event_time"], r["kickoff"], json.loads(r["features"])
        )
        for r in rows
    ]


async def resets(conn: Any, *, pending_only: bool = False) -> list[Reset]:
    """The resets in the order they were asked for (only those not yet taken, if told)."""
    rows = await conn.fetch(
        "SELECT reset_id, requested_at, effective_at FROM drift_resets "
        + ("WHERE effective_at IS NULL " if pending_only else "")
        + "ORDER BY reset_id"
    )
    return [Reset(r["reset_id"], r["requested_at"], r["effective_at"]) for r in rows]


async def take_reset(conn: Any, reset_id: int, effective_at: datetime) -> datetime:
    """Record where a reset takes effect, once: the stored answer (an owner that took it
    first, in a rebalance, keeps its own)."""
    stored: datetime = await conn.fetchval(
        "UPDATE drift_resets SET effective_at = COALESCE(effective_at, $2) WHERE reset_id = $1 "
        "RETURNING effective_at",
        reset_id,
        effective_at,
    )
    return stored


async def request_reset(
    conn: Any, requested_at: datetime | None, *, by: str, note: str | None
) -> int:
    """Ask the monitor to restart its references (from ``requested_at``'s window, or the
    first window it has not closed); the reset's id."""
    reset_id: int = await conn.fetchval(
        "INSERT INTO drift_resets (requested_at, requested_by, note) VALUES ($1, $2, $3) "
        "RETURNING reset_id",
        requested_at,
        by,
        note,
    )
    return reset_id
