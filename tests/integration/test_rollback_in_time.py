"""Rollback in time of a learning model on the real broker and database: the operator's
`tipstream models rollback MODEL --to-version V` reaches the running scorer and the learner,
which continues from the restored state; and every refusal is one clear line."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from schemas.events import MatchResult
from streams.settings import Settings
from streams.topics import Topics
from streams.worker.app import seed_registry
from tests.deployment import run_cli
from tests.integration.conftest import Worker, publish, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, events_between, publish_events

pytestmark = pytest.mark.integration

MODEL = "online-logreg"


async def _value(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def _row(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow(sql, *args)


async def test_rollback_to_version_zero_and_the_learner_continues_from_it(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """A worker learns a stretch; rollback to v0 registers v0's state as a new version R; the
    scorer predicts with R, and the learner's next version is R's child, its learned count R's
    plus what it learned since (not the old checkpoint's)."""
    worker = start_worker()
    topics = Topics.from_settings(settings)
    learned_stretch = events_between("2013-08-01", "2013-10-31")
    matches = sum(1 for e in learned_stretch if e.kind == "features")
    await publish_events(producer, settings, learned_stretch)
    expected = matches * SEEDED_MODELS
    await wait_for(
        lambda: _value(db, "SELECT count(*) = $1 FROM evaluations", expected),
        timeout=180,
        what=f"{expected} evaluations",
    )
    await wait_for(
        lambda: _value(
            db,
            "SELECT max(version) >= 1 FROM model_versions WHERE model_id = $1",
            MODEL,
        ),
        timeout=60,
        what="the learner's versions",
    )
    before = await _row(
        db,
        "SELECT max(version) AS version, max(learned) AS learned FROM model_versions "
        "WHERE model_id = $1",
        MODEL,
    )
    zero = await _row(
        db,
        "SELECT learned, state_sha256 FROM model_versions WHERE model_id = $1 AND version = 0",
        MODEL,
    )
    assert before["learned"] > zero["learned"]

    done = run_cli(settings, "models", "rollback", MODEL, "--to-version", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(rf"{MODEL}: v(\d+) restores v0", done.stdout)
    assert found, done.stdout
    rolled = int(found.group(1))
    assert rolled > before["version"]
    row = await _row(
        db,
        "SELECT parent_version, learned, state_sha256 FROM model_versions "
        "WHERE model_id = $1 AND version = $2",
        MODEL,
        rolled,
    )
    assert (row["parent_version"], row["learned"], row["state_sha256"]) == (
        0,
        zero["learned"],
        zero["state_sha256"],
    )

    # The scorer swaps R in (announced on the snapshot topic), then scores new matches with it.
    await wait_for(
        lambda: _contains(worker, f"{MODEL}@{rolled}:"),
        timeout=60,
        what=f"the scorer swapping in v{rolled}",
    )
    next_stretch = events_between("2013-11-01", "2013-11-30")
    features = [e for e in next_stretch if e.kind == "features"]
    results = [e for e in next_stretch if e.kind == "result"]
    await publish(producer, topics.features, [(e.key, e.record) for e in features])
    await wait_for(
        lambda: _value(
            db,
            "SELECT count(*) = $2 FROM predictions WHERE model_id = $1 AND match_id = ANY($3)",
            MODEL,
            len(features),
            [e.key for e in features],
        ),
        timeout=60,
        what="predictions of the next stretch",
    )
    versions = await _value(
        db,
        "SELECT array_agg(DISTINCT model_version) FROM predictions "
        "WHERE model_id = $1 AND match_id = ANY($2)",
        MODEL,
        [e.key for e in features],
    )
    assert versions == [rolled]

    # Results of those matches: the learner learns on from R, not from its old checkpoint.
    assert all(isinstance(e.record, MatchResult) for e in results)
    await publish(producer, topics.results, [(e.key, e.record) for e in results])
    child = await wait_for(
        lambda: _row(
            db,
            "SELECT version, parent_version, learned FROM model_versions "
            "WHERE model_id = $1 AND version = $2",
            MODEL,
            rolled + 1,
        ),
        timeout=90,
        what=f"the learner's version after v{rolled}",
    )
    learned_on_rolled = await _value(
        db,
        "SELECT count(*) FROM learned_evaluations "
        "WHERE model_id = $1 AND learned_after_version = $2",
        MODEL,
        rolled,
    )
    assert learned_on_rolled > 0
    assert child["parent_version"] == rolled
    assert child["learned"] == zero["learned"] + learned_on_rolled
    checkpointed = await _value(
        db, "SELECT version FROM learner_checkpoints WHERE model_id = $1", MODEL
    )
    assert checkpointed >= rolled + 1
    assert "learner adopts a version it did not produce" in worker.log_text()
    assert "Traceback" not in worker.log_text()


async def _contains(worker: Worker, text: str) -> bool:
    return text in worker.log_text()


async def test_rollback_in_time_before_a_time_and_its_refusals(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """`--before` picks the newest version created before the time; an unknown model, an
    unknown version, a model that does not learn, a time before any version and a state that
    fails verification are each refused with one line and exit code 1, nothing stored."""
    async with db.acquire() as conn:
        await seed_registry(conn, settings)
        created = await conn.fetchval(
            "SELECT created_at FROM model_versions WHERE model_id = $1 AND version = 0", MODEL
        )
    later = (created + timedelta(milliseconds=1)).isoformat()

    done = run_cli(settings, "models", "rollback", MODEL, "--before", later)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{MODEL}: v1 restores v0" in done.stdout

    async with db.acquire() as conn:
        # v1's stored bytes are altered: its signature no longer matches.
        state = bytes(
            await conn.fetchval(
                "SELECT state FROM model_versions WHERE model_id = $1 AND version = 1", MODEL
            )
        )
        await conn.execute(
            "UPDATE model_versions SET state = $2 WHERE model_id = $1 AND version = 1",
            MODEL,
            state[:-1] + bytes([state[-1] ^ 1]),
        )
    stored = await _value(db, "SELECT count(*) FROM model_versions")
    cases = [
        (["no-such-model", "--to-version", "0"], "no model 'no-such-model'"),
        ([MODEL, "--to-version", "7"], f"'{MODEL}' has no version 7"),
        (["market-open", "--to-version", "0"], "'market-open' is not a learning model"),
        ([MODEL, "--before", "2000-01-01T00:00:00"], "no version created before"),
        ([MODEL, "--to-version", "1"], "v1: state refused"),
        ([MODEL], "give MODEL with --to-version V or --before TIMESTAMP"),
    ]
    for argv, message in cases:
        refused = run_cli(settings, "models", "rollback", *argv)
        assert refused.returncode in (1, 2), refused.stdout + refused.stderr
        lines = refused.stdout.strip().splitlines()
        assert len(lines) == 1, (argv, refused.stdout, refused.stderr)
        assert message in lines[0], (argv, refused.stdout)
        assert "Traceback" not in refused.stderr
    assert await _value(db, "SELECT count(*) FROM model_versions") == stored
