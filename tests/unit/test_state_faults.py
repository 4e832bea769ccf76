"""A stored model state that fails verification is skipped and reported, never raised."""

from __future__ import annotations

import base64
from typing import Any

from agents import learner, registry
from agents.scorer import ActiveModels
from agents.testing import InMemoryRuntime
from models import catalog
from models.serialization import Keyring, sign
from schemas.events import Alert, DeadLetter
from streams.settings import Settings
from streams.topics import Topics


def runtime() -> InMemoryRuntime:
    settings = Settings()
    return InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))


def version_row(rt: InMemoryRuntime, model_id: str, version: int, **changes: Any) -> dict[str, Any]:
    """A ``model_versions`` row joined with ``models``, signed as the registry signs it."""
    model = catalog.create(model_id)
    model.version = version
    context = registry.version_context(model_id, model.kind, version)
    row = {
        "model_id": model_id,
        "kind": model.kind,
        "status": "challenger",
        "policy": "all",
        "version": version,
        "state": sign(model.snapshot(), rt.registry_keys, context),
        "learned": 0,
        "positions": "{}",
        "created_at": None,
    }
    return row | changes


def tampered(row: dict[str, Any]) -> dict[str, Any]:
    state = bytearray(row["state"])
    state[-1] ^= 0xFF
    return row | {"state": bytes(state)}


async def test_one_unverifiable_row_leaves_the_other_models_scoring() -> None:
    """The scorer's reload skips a model whose only version is tampered, keeps every other
    model, and reports the row once: one fault alert (stored and published) and one dead letter
    with the refused bytes, even though it reloads again."""
    rt = runtime()
    good = version_row(rt, "online-rating", 0)
    bad = tampered(version_row(rt, "online-logreg", 0, status="champion"))
    rt.db.answer("SELECT DISTINCT ON (m.model_id)", [good, bad])
    active = ActiveModels()
    assert await active.reload(rt)
    assert [m.model_id for m in active.models] == ["online-rating"]
    await active.reload(rt)
    alerts = rt.on(rt.topics.alerts)
    assert len(alerts) == 1
    alert = alerts[0]
    assert isinstance(alert, Alert)
    assert (alert.kind, alert.model_id, alert.source) == ("fault", "online-logreg", "scorer")
    assert "does not match" in alert.message
    assert len(rt.db.rows("alerts")) == 1
    assert len(rt.dead_letters) == 1
    letter = rt.dead_letters[0]
    assert isinstance(letter, DeadLetter)
    assert letter.source_topic == "db:model_versions"
    assert base64.b64decode(letter.payload_b64) == bad["state"]
    assert letter.error.rule.startswith("unverifiable model state")
    assert rt.counters["state_refused"] == 1


async def test_a_refused_latest_version_falls_back_to_the_newest_verified_one() -> None:
    """A tampered v2 (or v2 signed for another model) is skipped and the model is served at v1,
    the newest version whose state verifies."""
    rt = runtime()
    foreign = version_row(rt, "online-rating", 2)["state"]
    latest = version_row(rt, "online-logreg", 2, state=foreign)
    previous = version_row(rt, "online-logreg", 1)
    rt.db.answer("SELECT DISTINCT ON (m.model_id)", [latest])
    rt.db.answer("v.version < $2", lambda args: [previous] if args[1] == 2 else [])
    active = ActiveModels()
    await active.reload(rt)
    assert [(m.model_id, m.version) for m in active.models] == [("online-logreg", 1)]
    assert len(rt.on(rt.topics.alerts)) == 1


async def test_a_key_outside_the_accepted_ones_is_refused_with_its_id() -> None:
    """State signed with a key the deployment does not accept is refused, and the alert names
    the key id (what an operator adds to TIPSTREAM_REGISTRY_VERIFY_KEYS during a rotation)."""
    rt = runtime()
    other = InMemoryRuntime(
        settings=rt.settings,
        topics=rt.topics,
        registry_keys=Keyring("retired-key", b"r" * 32),
    )
    rt.db.answer("SELECT DISTINCT ON (m.model_id)", [version_row(other, "online-logreg", 0)])
    active = ActiveModels()
    await active.reload(rt)
    assert active.models == ()
    alert = rt.on(rt.topics.alerts)[0]
    assert isinstance(alert, Alert)
    assert "'retired-key', not among the accepted keys" in alert.message


async def test_the_learner_skips_a_model_whose_version_is_refused() -> None:
    """The learner does not learn (nor raise on) a model whose latest state is refused, and
    learns on from the verified version when only the checkpoint is refused."""
    rt = runtime()
    rt.db.answer(
        "FROM models m JOIN model_versions v", [tampered(version_row(rt, "online-logreg", 0))]
    )
    agent = learner.Learner(rt)
    assert await agent.state_for("online-logreg") is None
    assert len(rt.on(rt.topics.alerts)) == 1

    rt = runtime()
    rt.db.answer("FROM models m JOIN model_versions v", [version_row(rt, "online-logreg", 0)])
    checkpoint = {
        "version": 0,
        "learned": 5,
        "learned_since_version": 5,
        "positions": "{}",
        # A version's state is not a checkpoint's: refused in the checkpoint table.
        "state": version_row(rt, "online-logreg", 0)["state"],
    }
    rt.db.answer("FROM learner_checkpoints WHERE model_id", [checkpoint])
    agent = learner.Learner(rt)
    state = await agent.state_for("online-logreg")
    assert state is not None
    assert (state.entry.version, state.learned) == (0, 0)
    alert = rt.on(rt.topics.alerts)[0]
    assert isinstance(alert, Alert)
    assert "learner_checkpoints" in alert.message
