"""Estimates before results on a real worker: fixtures scored on the broker, no result yet;
``/status/`` shows each model's rolling estimates and ``/metrics/`` the same in its gauges."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from agents.estimates_rules import EDGE_FLOOR, ESTIMATE_WINDOW, ModelEstimates
from models.catalog import REFERENCE_MODEL_IDS
from models.features import fixture_of
from schemas.codec import decode
from schemas.events import Alert, Prediction
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import Worker, publish_facts, read_topic, wait_for
from tests.integration.test_features_agent import month_rows
from tests.integration.test_metrics import answered, value
from tests.integration.test_pipeline import SEEDED_MODELS, epl_rows
from tests.integration.test_reliability import drained

pytestmark = pytest.mark.integration

MATCHES = 6


def status(settings: Settings) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/status/") as response:
        body: dict[str, Any] = json.load(response)
    return body


async def test_a_worker_shows_its_estimates_before_any_result(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any
) -> None:
    """Six fixtures with opening and closing odds and no result: every seeded model has six
    matches in its window, and its expected log loss, closing cross-entropy and expected edge
    are those the rules give on the predictions the worker published; the gauges agree."""
    topics = Topics.from_settings(settings)
    rows = [r for r in sorted(month_rows(), key=lambda r: r.kickoff) if r.odds_close][:MATCHES]
    fixtures = {f.match_id: f for f in (fixture_of(r) for r in rows)}
    start_worker()
    await wait_for(lambda: answered(settings), timeout=120, what="/metrics/ answers")
    await publish_facts(producer, topics.fixtures, list(fixtures.values()))

    async def estimated() -> dict[str, Any] | None:
        shown = status(settings)["estimates"]
        full = len(shown) == SEEDED_MODELS and all(s["matches"] == MATCHES for s in shown.values())
        return shown if full else None

    shown = await wait_for(estimated, timeout=120, what="estimates of every model")
    messages = await read_topic(topics.predictions, expect=MATCHES * SEEDED_MODELS)
    predictions = [decode(m.value, Prediction) for m in messages]
    expected = ModelEstimates()
    expected.observe(
        (
            p.model_id,
            p.match_id,
            {"H": p.probabilities.H, "D": p.probabilities.D, "A": p.probabilities.A},
            fixtures[p.match_id].odds_open,
            fixtures[p.match_id].odds_close,
        )
        for p in sorted(predictions, key=lambda p: p.created_at)
    )
    samples = await answered(settings)
    assert samples is not None
    for model_id, summary in expected.summaries().items():
        got = shown[model_id]
        assert got["closing_matches"] == MATCHES
        for field, gauge in (
            ("expected_log_loss", "tipstream_expected_log_loss"),
            ("closing_cross_entropy", "tipstream_closing_cross_entropy"),
            ("expected_edge_vs_market", "tipstream_expected_edge_vs_market"),
        ):
            want = summary.as_json()[field]
            assert isinstance(want, float)
            assert got[field] == pytest.approx(want)
            assert value(samples, gauge, model=model_id) == pytest.approx(want)
    # The market-close reference is the closing line: no model can expect a larger edge.
    edges = {m: s["expected_edge_vs_market"] for m, s in shown.items()}
    assert max(edges, key=lambda m: edges[m]) == "market-close"


async def test_a_negative_expected_edge_raises_one_estimate_alert_per_model(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """A full window of fixtures, no result: each model whose window's expected edge (as
    /status/ shows it) is negative has exactly one firing ``estimate`` alert, stored in
    PostgreSQL and published on the alerts topic; the others (and the market references,
    which never alarm) have none."""
    topics = Topics.from_settings(settings)
    rows = [r for r in sorted(epl_rows(), key=lambda r: r.kickoff) if r.odds_close]
    fixtures = [fixture_of(r) for r in rows[:ESTIMATE_WINDOW]]
    worker = start_worker()
    await wait_for(lambda: answered(settings), timeout=120, what="/metrics/ answers")
    await publish_facts(producer, topics.fixtures, fixtures)

    async def full() -> dict[str, Any] | None:
        shown = status(settings)["estimates"]
        done = len(shown) == SEEDED_MODELS and all(
            s["closing_matches"] == ESTIMATE_WINDOW for s in shown.values()
        )
        return shown if done else None

    shown = await wait_for(full, timeout=300, what="a full window of every model")
    negative = sorted(
        m
        for m, s in shown.items()
        if m not in REFERENCE_MODEL_IDS and s["expected_edge_vs_market"] < -EDGE_FLOOR
    )
    # The seeded rating model, untrained, is far from the line: this window does alarm.
    assert negative

    async def stored() -> list[Any]:
        rows = await db.fetch(
            "SELECT alert_id, model_id, state, current_value FROM alerts WHERE kind = 'estimate'"
        )
        return rows if len(rows) >= len(negative) else []

    alerts = await wait_for(stored, timeout=60, what="the estimate alerts")
    assert sorted(r["model_id"] for r in alerts) == negative
    assert all(r["state"] == "firing" for r in alerts)
    for row in alerts:
        assert row["current_value"] == pytest.approx(
            shown[row["model_id"]]["expected_edge_vs_market"]
        )
    published = [decode(m.value, Alert) for m in await read_topic(topics.alerts)]
    assert sorted(a.model_id or "" for a in published if a.kind == "estimate") == negative

    # A restart empties the scorer's windows; a replay of the same features then fills them
    # again and the alarms fire again in memory: the alert log admits none of it.
    worker.stop()
    features = await read_topic(topics.features, expect=ESTIMATE_WINDOW)
    worker.start()
    await wait_for(lambda: answered(settings), timeout=120, what="/metrics/ after the restart")
    for message in features:
        await producer.send_and_wait(
            topics.features, message.value, key=message.key, headers=list(message.headers)
        )
    await wait_for(full, timeout=300, what="a full window again after the replay")
    await drained(settings)  # committed: every replayed batch's alerts went to the log
    after = await db.fetch("SELECT alert_id, status FROM alerts WHERE kind = 'estimate'")
    assert sorted(r["alert_id"] for r in after) == sorted(r["alert_id"] for r in alerts)
    assert all(r["status"] == "open" for r in after)
    republished = [decode(m.value, Alert) for m in await read_topic(topics.alerts)]
    assert sorted(a.model_id or "" for a in republished if a.kind == "estimate") == negative
    assert "Traceback" not in worker.log_text()
