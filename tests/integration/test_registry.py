"""The model registry in PostgreSQL: versions, statuses, and state it refuses to trust."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from agents import registry
from agents.backfill_rules import Coverage, unknown
from agents.testing import TEST_REGISTRY_KEYS
from models import catalog
from models.serialization import LEGACY_MAGIC, Keyring, sign, signed_key_id
from schemas.codec import decode
from schemas.events import DeadLetter
from streams.settings import Settings
from streams.topics import Topics
from streams.worker.app import seed_registry
from tests.deployment import run_cli
from tests.integration.conftest import Worker, read_topic, wait_for
from tests.integration.test_pipeline import events_between, publish_events

pytestmark = pytest.mark.integration
KEY = TEST_REGISTRY_KEYS
OLD = Keyring("old-key", b"o" * 32)


async def seed(conn: asyncpg.Connection) -> None:
    await registry.register(
        conn, catalog.create("online-logreg"), status="champion", keys=KEY, policy="all"
    )
    await registry.register(
        conn, catalog.create("online-rating"), status="challenger", keys=KEY, policy="all"
    )
    await registry.register(conn, catalog.create("market-open"), status="reference", keys=KEY)


async def test_versions_round_trip_and_latest_wins(db: asyncpg.Pool) -> None:
    """A saved version restores to a model that predicts identically; the latest one loads."""
    async with db.acquire() as conn:
        await seed(conn)
        model = catalog.create("online-logreg")
        x = {
            "elo_diff": 120.0,
            "pi_exp_gd": 0.4,
            "open_p_H": 0.55,
            "open_p_D": 0.25,
            "open_p_A": 0.2,
        }
        for _ in range(30):
            model.learn_one(x, "H")
        model.version = 1
        await registry.save_version(conn, model, keys=KEY, learned=30)
        loaded = await registry.load_model(conn, "online-logreg", keys=KEY)
    assert loaded.version == 1
    assert loaded.learned == 30
    assert loaded.model.predict_proba_one(x) == model.predict_proba_one(x)


async def test_coverages_round_trip_and_rebuild_a_backfill_time_line(db: asyncpg.Pool) -> None:
    """A backfill's versions store their coverage in event time and read it back (the model's
    coverage list, ``models versions`` rows, the status snapshot); live versions store none;
    a version without coverage inside the time line makes the rest unknown; the database
    refuses an inconsistent coverage written around the registry."""
    start = datetime(2012, 8, 18, 16, 55, tzinfo=UTC)
    covered = [
        Coverage(1, start, start + timedelta(hours=2), start + timedelta(days=1)),
        Coverage(2, None, None, start + timedelta(days=2)),  # took nothing, the mark moved on
        Coverage(3, start + timedelta(days=7), start + timedelta(days=8), None),
    ]
    async with db.acquire() as conn:
        await seed(conn)  # online-logreg v0: the base, no coverage
        model = catalog.create("online-logreg")
        for coverage in covered:
            model.version = coverage.version
            await registry.save_version(conn, model, keys=KEY, coverage=coverage)
        model.version = 4
        with pytest.raises(registry.RegistryError, match="coverage of v3 given for"):
            await registry.save_version(conn, model, keys=KEY, coverage=covered[2])
        assert await registry.coverages(conn, "online-logreg") == [
            Coverage(0, None, None, None),
            *covered,
        ]
        listed = await registry.model_versions(conn, "online-logreg")
        assert [(r["learned_from"], r["complete_through"]) for r in listed[:2]] == [
            (covered[2].learned_from, None),
            (None, covered[1].complete_through),
        ]
        announced = await registry.status_snapshot(conn, "online-logreg")
        assert (announced.version, announced.learned_from, announced.learned_until) == (
            3,
            covered[2].learned_from,
            covered[2].learned_until,
        )
        assert announced.complete_through is None
        # A live version on top (no coverage): it and everything after it are unknown.
        await registry.save_version(conn, model, keys=KEY)
        model.version = 5
        later = Coverage(5, start + timedelta(days=9), start + timedelta(days=9), None)
        await registry.save_version(conn, model, keys=KEY, coverage=later)
        rebuilt = await registry.coverages(conn, "online-logreg")
        assert rebuilt[4:] == [unknown(4), unknown(5)]
        live = await registry.status_snapshot(conn, "online-rating")
        assert (live.learned_from, live.learned_until, live.complete_through) == (None, None, None)
        with pytest.raises(asyncpg.CheckViolationError, match="complete_after_whistles"):
            await conn.execute(
                "UPDATE model_versions SET complete_through = learned_until - interval '1 second'"
                " WHERE model_id = 'online-logreg' AND version = 1"
            )
        with pytest.raises(asyncpg.CheckViolationError, match="whistles_together"):
            await conn.execute(
                "UPDATE model_versions SET learned_from = NULL"
                " WHERE model_id = 'online-logreg' AND version = 1"
            )
        with pytest.raises(registry.RegistryError, match="no model 'nope'"):
            await registry.coverages(conn, "nope")


async def test_tampered_or_foreign_state_is_refused(db: asyncpg.Pool) -> None:
    """State bytes changed in the database, signed with another key, or copied from another
    model's row are never restored: load_model raises StateRefused, load_active skips the row
    (reporting it in ``refused``) and restores every other model."""
    async with db.acquire() as conn:
        await seed(conn)
        foreign = await registry.load_active(conn, keys=Keyring.single(b"another-key" * 3))
        assert foreign.models == []
        assert len(foreign.refused) == 3
        await conn.execute(
            "UPDATE model_versions SET state = state || '\\x00'::bytea "
            "WHERE model_id = 'online-logreg'"
        )
        with pytest.raises(registry.StateRefused, match="does not match"):
            await registry.load_model(conn, "online-logreg", keys=KEY)
        # A validly signed state of online-rating, copied into market-open's row.
        await conn.execute(
            "UPDATE model_versions SET state = (SELECT state FROM model_versions "
            "WHERE model_id = 'online-rating') WHERE model_id = 'market-open'"
        )
        active = await registry.load_active(conn, keys=KEY)
    assert [m.model_id for m in active.models] == ["online-rating"]
    assert sorted((r.model_id, r.version) for r in active.refused) == [
        ("market-open", 0),
        ("online-logreg", 0),
    ]


async def test_a_refused_latest_version_is_served_at_the_previous_one(db: asyncpg.Pool) -> None:
    """With v1 tampered, load_active serves the model at v0 and reports v1."""
    async with db.acquire() as conn:
        await seed(conn)
        model = catalog.create("online-rating")
        model.version = 1
        await registry.save_version(conn, model, keys=KEY)
        await conn.execute(
            "UPDATE model_versions SET state = state || '\\x00'::bytea "
            "WHERE model_id = 'online-rating' AND version = 1"
        )
        active = await registry.load_active(conn, keys=KEY)
    assert ("online-rating", 0) in [(m.model_id, m.version) for m in active.models]
    assert [(r.model_id, r.version) for r in active.refused] == [("online-rating", 1)]


async def test_resign_rotates_every_version_and_checkpoint_to_the_new_key(
    db: asyncpg.Pool,
) -> None:
    """Rows signed with the old key verify while it is accepted; resign re-signs every version
    and checkpoint with the new key (verified first), leaves current and unverifiable rows
    alone, and afterwards the old key is no longer needed. First-format rows migrate only with
    the legacy key."""
    rotated = Keyring("new-key", b"n" * 32, {"old-key": OLD.key})
    new_only = Keyring("new-key", b"n" * 32)
    async with db.acquire() as conn:
        await seed_with(conn, OLD)
        model = catalog.create("online-logreg")
        context = registry.checkpoint_context("online-logreg", model.kind, 0)
        await conn.execute(
            "INSERT INTO learner_checkpoints (model_id, version, learned, learned_since_version, "
            "positions, state) VALUES ('online-logreg', 0, 0, 0, '{}', $1)",
            sign(model.snapshot(), OLD, context),
        )
        legacy_key = b"tipstream-dev-key-change-me"
        state = catalog.create("market-close").snapshot()
        tag = hmac.new(legacy_key, LEGACY_MAGIC + state, hashlib.sha256).digest()
        await registry.register(conn, catalog.create("market-close"), status="reference", keys=OLD)
        await conn.execute(
            "UPDATE model_versions SET state = $1 WHERE model_id = 'market-close'",
            LEGACY_MAGIC + tag + state,
        )
        assert len((await registry.load_active(conn, keys=rotated)).models) == 3

        report = await registry.resign(conn, rotated)
        assert (report.resigned, report.current) == (4, 0)
        assert [(r.model_id, r.purpose) for r in report.refused] == [("market-close", "version")]
        again = await registry.resign(conn, rotated, legacy_key=legacy_key)
        assert (again.resigned, again.current, again.refused) == (1, 4, [])
        everything = await registry.resign(conn, rotated, everything=True)
        assert (everything.resigned, everything.current) == (5, 0)

        active = await registry.load_active(conn, keys=new_only)
        states = await conn.fetch(
            "SELECT state FROM model_versions UNION ALL SELECT state FROM learner_checkpoints"
        )
    assert len(active.models) == 4
    assert active.refused == []
    assert {signed_key_id(bytes(row["state"])) for row in states} == {"new-key"}


async def seed_with(conn: asyncpg.Connection, keys: Keyring) -> None:
    for model_id, status in (
        ("online-logreg", "champion"),
        ("online-rating", "challenger"),
        ("market-open", "reference"),
    ):
        await registry.register(conn, catalog.create(model_id), status=status, keys=keys)


async def test_a_worker_keeps_scoring_the_other_models_past_a_tampered_row(
    settings: Settings, db: asyncpg.Pool, start_worker: Callable[..., Worker], producer: Any
) -> None:
    """A worker whose registry holds a tampered champion row starts, stays up, and scores
    every match with every other model; the row is reported as a fault alert and a dead
    letter instead of crashing the app (before: load_active raised, the app stopped)."""
    async with db.acquire() as conn:
        await seed_registry(conn, settings)
        await conn.execute(
            "UPDATE model_versions SET state = state || '\\x00'::bytea "
            "WHERE model_id = 'online-logreg'"
        )
    worker = start_worker()
    events = events_between("2009-08-01", "2009-08-31")
    matches = sum(1 for e in events if e.kind == "features")
    await publish_events(producer, settings, events)
    others = 3  # online-rating, market-open, market-close

    async def predictions() -> bool:
        async with db.acquire() as conn:
            rows = await conn.fetch("SELECT model_id, count(*) AS n FROM predictions GROUP BY 1")
        return {r["model_id"]: r["n"] for r in rows} == dict.fromkeys(
            ("online-rating", "market-open", "market-close"), matches
        )

    await wait_for(predictions, timeout=180, what=f"{matches * others} predictions")
    assert worker.process is not None
    assert worker.process.poll() is None, worker.log_text()[-3000:]
    async with db.acquire() as conn:
        faults = await conn.fetch("SELECT model_id, message FROM alerts WHERE kind = 'fault'")
    assert [f["model_id"] for f in faults] == ["online-logreg"]
    assert "refused" in faults[0]["message"]
    letters = [
        decode(m.value, DeadLetter)
        for m in await read_topic(Topics.from_settings(settings).dead_letters, expect=1)
    ]
    assert [(d.source_topic, d.agent) for d in letters] == [("db:model_versions", "scorer")]


async def test_promote_rollback_rules(db: asyncpg.Pool) -> None:
    """One champion at a time; references are never promoted; rollback restores the previous
    champion and refuses when there is none."""
    async with db.acquire() as conn:
        await seed(conn)
        with pytest.raises(registry.RegistryError, match="no previous champion"):
            await registry.rollback(conn)
        with pytest.raises(registry.RegistryError, match="reference"):
            await registry.promote(conn, "market-open", reason="test")
        with pytest.raises(registry.RegistryError, match="no model"):
            await registry.promote(conn, "nope", reason="test")
        await registry.promote(conn, "online-rating", reason="test")
        assert await registry.champion_id(conn) == "online-rating"
        assert await conn.fetchval("SELECT count(*) FROM models WHERE status = 'champion'") == 1
        assert await registry.rollback(conn) == "online-logreg"
        assert await registry.champion_id(conn) == "online-logreg"


async def test_models_resign_command_reports_its_counts(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """`tipstream models resign` re-signs what another key signed and reports the counts; a row
    that does not verify makes it exit 1 and is named."""
    async with db.acquire() as conn:
        await seed_with(conn, OLD)
    rotated = settings.replace(registry_verify_keys=f"{OLD.key_id}={OLD.key.decode()}")
    key_id = settings.registry_keys().key_id
    first = run_cli(rotated, "models", "resign")
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert f"re-signed with key {key_id}: 3; already current: 0; refused: 0" in out
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE model_versions SET state = state || '\\x00'::bytea "
            "WHERE model_id = 'online-rating'"
        )
    done = run_cli(settings, "models", "resign", "--all")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused: 1" in done.stdout
    assert "refused version online-rating v0" in done.stdout


async def _versions(conn: asyncpg.Connection, model_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT version FROM model_versions WHERE model_id = $1 ORDER BY version", model_id
    )
    return [row["version"] for row in rows]


async def test_prune_keeps_the_newest_champions_checkpoints_and_recent_versions(
    db: asyncpg.Pool, settings: Settings
) -> None:
    """Of twelve versions of the champion (and a challenger's two), a prune keeping the six
    newest deletes only old versions nothing references: kept are the newest six, the version
    the model had when it became champion, the learner checkpoint's version, and every version
    younger than the age limit; a dry run lists the same versions and deletes nothing."""
    async with db.acquire() as conn:
        await seed(conn)  # online-logreg v0 registered as champion
        model = catalog.create("online-logreg")
        for version in range(1, 13):
            model.version = version
            await registry.save_version(conn, model, keys=KEY, learned=version)
        await conn.execute(
            "UPDATE model_versions SET created_at = now() - make_interval(days => 100 - version)"
            " WHERE model_id = 'online-logreg'"
        )
        await conn.execute(  # promoted again the day after v3 was registered
            "INSERT INTO champion_history (model_id, reason, changed_at)"
            " VALUES ('online-logreg', 'test', now() - interval '96 days 12 hours')"
        )
        await conn.execute(
            "UPDATE champion_history SET changed_at = now() - interval '99 days 12 hours'"
            " WHERE reason = 'registered as champion'"
        )
        await conn.execute(
            "INSERT INTO learner_checkpoints (model_id, version, learned, learned_since_version,"
            " positions, state) VALUES ('online-logreg', 4, 4, 0, '{}', '\\x00')"
        )
        await conn.execute(  # v5 is recent: younger than 30 days
            "UPDATE model_versions SET created_at = now() - interval '1 day'"
            " WHERE model_id = 'online-logreg' AND version = 5"
        )
        old = timedelta(days=30)
        other = await registry.prune_versions(conn, keep=6, older_than=old, model_ids=["x"])
        assert other.pruned == []  # a learner prunes only its own models
        dry = await registry.prune_versions(conn, keep=6, older_than=old, dry_run=True)
        assert await _versions(conn, "online-logreg") == list(range(13))
        done = await registry.prune_versions(conn, keep=6, older_than=old)
        assert done.pruned == dry.pruned == [("online-logreg", v) for v in (1, 2, 6)]
        assert await _versions(conn, "online-logreg") == [0, 3, 4, 5, 7, 8, 9, 10, 11, 12]
        assert await _versions(conn, "online-rating") == [0]
        assert (await registry.load_model(conn, "online-logreg", keys=KEY)).version == 12
        with pytest.raises(registry.RegistryError, match="keep at least"):
            await registry.prune_versions(conn, keep=2, older_than=old)


async def test_models_prune_command_lists_what_it_would_delete(
    db: asyncpg.Pool, settings: Settings
) -> None:
    """`tipstream models prune --dry-run` names each version it would delete and deletes none;
    without --dry-run it deletes them."""
    async with db.acquire() as conn:
        await seed(conn)
        model = catalog.create("online-rating")
        for version in range(1, 9):
            model.version = version
            await registry.save_version(conn, model, keys=KEY, learned=version)
        await conn.execute("UPDATE model_versions SET created_at = now() - interval '60 days'")
    command = ["models", "prune", "--keep", "6"]
    dry = await asyncio.to_thread(run_cli, settings, *command, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would prune online-rating v0" in dry.stdout
    assert "would prune online-rating v2" in dry.stdout
    assert "would prune 3 versions" in dry.stdout
    async with db.acquire() as conn:
        assert await _versions(conn, "online-rating") == list(range(9))
    done = await asyncio.to_thread(run_cli, settings, *command)
    assert done.returncode == 0, done.stdout + done.stderr
    async with db.acquire() as conn:
        assert await _versions(conn, "online-rating") == list(range(3, 9))
