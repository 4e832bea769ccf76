"""The online ensemble as a challenger on the real broker and database: the scorer scores live
matches with it (predictions on the topic and in the table), the reconciler evaluates them,
the learner learns them (its members' weights move) and versions it; the scorer swaps the
learned version in. Its stored state is signed and restores only for its own row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from agents import registry
from models.ensemble import Ensemble
from models.serialization import MAGIC, IntegrityError, verify
from schemas.codec import decode
from schemas.events import Prediction
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import Worker, publish, read_topic, wait_for
from tests.integration.test_pipeline import events_between, publish_events

pytestmark = pytest.mark.integration

ENSEMBLE = "online-ensemble"
SEEDED = 4  # the champion, the ensemble, the two market references


async def _value(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def test_the_ensemble_scores_is_evaluated_and_learns_live(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    worker = start_worker(TIPSTREAM_CHALLENGER_MODELS=ENSEMBLE)
    topics = Topics.from_settings(settings)
    stretch = events_between("2013-08-01", "2013-10-31")
    matches = [e.key for e in stretch if e.kind == "features"]
    await publish_events(producer, settings, stretch)
    expected = len(matches) * SEEDED
    await wait_for(
        lambda: _value(db, "SELECT count(*) = $1 FROM evaluations", expected),
        timeout=240,
        what=f"{expected} evaluations",
    )

    # Scored: one prediction per match on the topic and in the table; evaluated: one each.
    messages = await read_topic(topics.predictions, expect=expected)
    on_topic = [decode(m.value, Prediction) for m in messages]
    assert {p.match_id for p in on_topic if p.model_id == ENSEMBLE} == set(matches)
    for sql in (
        "SELECT count(DISTINCT match_id) FROM predictions WHERE model_id = $1",
        "SELECT count(*) FROM evaluations WHERE model_id = $1 AND superseded_by IS NULL",
    ):
        assert await _value(db, sql, ENSEMBLE) == len(matches), sql
    status = await _value(db, "SELECT status FROM models WHERE model_id = $1", ENSEMBLE)
    assert status == "challenger"

    # Learned and versioned: the newest version has learned every evaluation, and its
    # weights have moved away from the uniform start toward the members that did better.
    await wait_for(
        lambda: _value(
            db,
            "SELECT max(learned) = $2 FROM model_versions WHERE model_id = $1",
            ENSEMBLE,
            len(matches),
        ),
        timeout=120,
        what="an ensemble version that learned every result",
    )
    keys = settings.registry_keys()
    async with db.acquire() as conn:
        latest = await registry.load_model(conn, ENSEMBLE, keys=keys)
        first = await conn.fetchrow(
            "SELECT kind, state FROM model_versions WHERE model_id = $1 AND version = 0",
            ENSEMBLE,
        )
        learned_rows = await conn.fetchval(
            "SELECT count(*) FROM learned_evaluations WHERE model_id = $1", ENSEMBLE
        )
    assert learned_rows == len(matches)
    assert latest.version >= 1
    assert isinstance(latest.model, Ensemble)
    start = registry.restore_state(
        bytes(first["state"]), keys, registry.version_context(ENSEMBLE, first["kind"], 0)
    )
    assert isinstance(start, Ensemble)
    before, after = start.member_weights(), latest.model.member_weights()
    assert len(set(before.values())) == 1  # uniform before learning
    assert max(after.values()) > max(before.values())
    assert latest.model.state_is_finite()

    # Signed for its own row: the same bytes do not verify as another model's or version's.
    state = bytes(first["state"])
    assert state.startswith(MAGIC)
    with pytest.raises(IntegrityError):
        verify(state, keys, registry.version_context("online-logreg", first["kind"], 0))
    with pytest.raises(IntegrityError):
        verify(state, keys, registry.version_context(ENSEMBLE, first["kind"], 1))

    # The scorer swaps the learned version in: the next matches are scored with it.
    await wait_for(
        lambda: _logged(worker, f"{ENSEMBLE}@{latest.version}:"),
        timeout=60,
        what=f"the scorer swapping in v{latest.version}",
    )
    following = [e for e in events_between("2013-11-01", "2013-11-30") if e.kind == "features"]
    await publish(producer, topics.features, [(e.key, e.record) for e in following])
    await wait_for(
        lambda: _value(
            db,
            "SELECT count(*) = $2 FROM predictions WHERE model_id = $1 AND match_id = ANY($3)",
            ENSEMBLE,
            len(following),
            [e.key for e in following],
        ),
        timeout=60,
        what="the ensemble's predictions of the next matches",
    )
    used = await _value(
        db,
        "SELECT min(model_version) FROM predictions WHERE model_id = $1 AND match_id = ANY($2)",
        ENSEMBLE,
        [e.key for e in following],
    )
    assert used >= latest.version
    assert "Traceback" not in worker.log_text()


async def _logged(worker: Worker, text: str) -> bool:
    return text in worker.log_text()
