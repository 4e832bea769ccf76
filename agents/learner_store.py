"""The learner's tables: ``learner_checkpoints`` and ``learned_evaluations``.

A checkpoint is each model's state with the feed offsets it has applied; it is written in one
transaction with the ids of the evaluations learned since the last one, so a result is never
learned twice after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple


async def learned(conn: Any, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (model id, evaluation id) pairs were learned already (recorded by a checkpoint)."""
    rows = await conn.fetch(
        """SELECT model_id, evaluation_id FROM learned_evaluations
           WHERE (model_id, evaluation_id) IN
                 (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [model_id for model_id, _ in keys],
        [evaluation_id for _, evaluation_id in keys],
    )
    return {(row["model_id"], row["evaluation_id"]) for row in rows}


async def load_checkpoint(conn: Any, model_id: str) -> Any:
    """The model's checkpoint row (version, learned, learned_since_version, positions, signed
    state), or None."""
    return await conn.fetchrow(
        "SELECT version, learned, learned_since_version, positions, state "
        "FROM learner_checkpoints WHERE model_id = $1",
        model_id,
    )


class Learned(NamedTuple):
    """One result a model learned: its evaluation, its match, and the version it was learned
    on top of (every later version of the model knows it)."""

    model_id: str
    evaluation_id: str
    match_id: str
    after_version: int


async def write_checkpoints(
    conn: Any,
    rows: Sequence[tuple[str, int, int, int, dict[str, int], bytes]],
    learned_now: Sequence[Learned],
) -> None:
    """Store checkpoints (model id, version, learned, learned since version, positions, signed
    state) and the newly learned results, in the caller's transaction."""
    if learned_now:
        await conn.execute(
            """INSERT INTO learned_evaluations (model_id, evaluation_id, match_id,
                                                learned_after_version)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
               ON CONFLICT DO NOTHING""",
            [item.model_id for item in learned_now],
            [item.evaluation_id for item in learned_now],
            [item.match_id for item in learned_now],
            [item.after_version for item in learned_now],
        )
    await conn.executemany(
        """INSERT INTO learner_checkpoints (model_id, version, learned,
               learned_since_version, positions, state)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6)
           ON CONFLICT (model_id) DO UPDATE SET version = EXCLUDED.version,
               learned = EXCLUDED.learned,
               learned_since_version = EXCLUDED.learned_since_version,
               positions = EXCLUDED.positions, state = EXCLUDED.state, updated_at = now()""",
        [
            (model_id, version, count, since, json.dumps(positions), state)
            for model_id, version, count, since, positions, state in rows
        ],
    )


async def mark_versioned(conn: Any, model_id: str, version: int, state: bytes) -> None:
    """The checkpoint's state is now stored as ``version``: nothing learned since. ``state`` is
    that state signed for the checkpoint at ``version`` (a signature binds the version)."""
    await conn.execute(
        """UPDATE learner_checkpoints SET version = $2, learned_since_version = 0, state = $3
           WHERE model_id = $1""",
        model_id,
        version,
        state,
    )
