"""The model registry in PostgreSQL: versions, statuses, and state it refuses to trust."""

from __future__ import annotations

import asyncpg
import pytest

from agents import registry
from models import catalog
from models.serialization import IntegrityError

pytestmark = pytest.mark.integration
KEY = b"test-registry-key"


async def seed(conn: asyncpg.Connection) -> None:
    await registry.register(
        conn, catalog.create("online-logreg"), status="champion", key=KEY, policy="all"
    )
    await registry.register(
        conn, catalog.create("online-rating"), status="challenger", key=KEY, policy="all"
    )
    await registry.register(conn, catalog.create("market-open"), status="reference", key=KEY)


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
        await registry.save_version(conn, model, key=KEY, learned=30)
        loaded = await registry.load_model(conn, "online-logreg", key=KEY)
    assert loaded.version == 1
    assert loaded.learned == 30
    assert loaded.model.predict_proba_one(x) == model.predict_proba_one(x)


async def test_tampered_or_foreign_state_is_refused(db: asyncpg.Pool) -> None:
    """State bytes changed in the database, or signed with another key, are never restored."""
    async with db.acquire() as conn:
        await seed(conn)
        with pytest.raises(IntegrityError):
            await registry.load_active(conn, key=b"another-deployment-key")
        await conn.execute(
            "UPDATE model_versions SET state = overlay(state placing '\\xff'::bytea from 40) "
            "WHERE model_id = 'online-logreg'"
        )
        with pytest.raises(IntegrityError):
            await registry.load_model(conn, "online-logreg", key=KEY)


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
