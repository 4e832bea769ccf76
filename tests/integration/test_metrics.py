"""A worker's GET /metrics/ on the real broker and database, read with prometheus-client's
parser: the counters move with the events scored, consumer lag is there per partition, and
the histograms (batch sizes, fixture to champion, transactions) hold what the worker did."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents import alert_store
from models.features import fixture_of, result_event
from schemas.events import Alert
from streams.settings import Settings
from streams.topics import Topics
from streams.worker.metrics import ALERTS_CACHE_S
from tests.integration.conftest import Worker, publish_facts, publish_raw, wait_for
from tests.integration.test_features_agent import month_rows
from tests.integration.test_pipeline import SEEDED_MODELS, count
from tests.integration.test_reliability import metrics

pytestmark = pytest.mark.integration

MATCHES = 6
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(settings: Settings) -> Samples:
    """Every sample of the worker's /metrics/, parsed back."""
    text = await metrics(settings)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    return sum(
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    )


async def answered(settings: Settings) -> Samples | None:
    try:
        return await scrape(settings)
    except OSError:
        return None


async def test_metrics_follow_the_events_a_worker_scores(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """Six fixtures and one malformed one, then their results: the scored counter reaches 6
    and the evaluation counter equals the evaluation log's rows, each fixture's champion
    prediction is timed once, the scorer's batch sizes add up to the events it scored, the
    malformed fixture is one dead letter (topic fixtures, reason malformed), every input
    partition that got data shows a consumer lag that drains to 0, the reconciler's
    transactions are timed, each seeded model has its version, and an open decay alert stored
    in PostgreSQL shows in the open-alerts gauge."""
    topics = Topics.from_settings(settings)
    rows = sorted(month_rows(), key=lambda r: r.kickoff)[:MATCHES]
    start_worker()
    before = await wait_for(lambda: answered(settings), timeout=120, what="/metrics/ answers")
    assert value(before, "tipstream_scored_events_total") == 0

    # Each historical fact carries its event time (a fixture before its kickoff), or none of
    # its predictions would count; the Kafka timestamp, the metric's clock, is now.
    await publish_facts(producer, topics.fixtures, [fixture_of(r) for r in rows])
    await publish_raw(producer, topics.fixtures, [(b"not-a-match", b"{not json")])

    async def scored() -> Samples | None:
        got = await scrape(settings)
        return got if value(got, "tipstream_scored_events_total") >= MATCHES else None

    got = await wait_for(scored, timeout=180, what=f"{MATCHES} feature events scored")
    assert value(got, "tipstream_scored_events_total") == MATCHES
    assert value(got, "tipstream_fixture_to_champion_seconds_count") == MATCHES
    assert value(got, "tipstream_fixture_to_champion_seconds_sum") > 0
    assert value(got, "tipstream_batch_size_events_sum", agent="scorer") == MATCHES
    assert value(got, "tipstream_batch_size_events_count", agent="scorer") >= 1
    assert (
        value(got, "tipstream_dead_letters_total", topic=topics.fixtures, reason="malformed") == 1
    )
    assert (
        value(got, "tipstream_produced_messages_total", topic=topics.predictions)
        == MATCHES * SEEDED_MODELS
    )
    versions = {
        dict(labels)["model"]: v
        for (name, labels), v in got.items()
        if name == "tipstream_model_version"
    }
    async with db.acquire() as conn:
        registered = await conn.fetch(
            "SELECT model_id, max(version) AS version FROM model_versions GROUP BY model_id"
        )
    # No result has been published yet, so no model has learned a new version.
    assert versions == {row["model_id"]: row["version"] for row in registered}
    assert len(versions) == SEEDED_MODELS

    await publish_facts(producer, topics.results, [result_event(r) for r in rows])
    # A result re-issues the features of the league's open fixtures (re-scored, and possibly
    # re-evaluated): the counter is compared with the evaluation log, not a fixed figure.
    await wait_for(
        lambda: current_evaluations(db, MATCHES * SEEDED_MODELS),
        timeout=180,
        what="every match evaluated by every model",
    )

    async def evaluated() -> Samples | None:
        got = await scrape(settings)
        logged = await count(db, "SELECT count(*) FROM evaluations")
        return got if value(got, "tipstream_evaluations_total") == logged else None

    got = await wait_for(evaluated, timeout=60, what="the counter equal to the evaluation log")
    assert value(got, "tipstream_db_transaction_seconds_count", outcome="commit") >= 1
    assert value(got, "tipstream_db_transaction_seconds_sum", outcome="commit") > 0

    # Lag: each input partition that received data is reported, and drains to 0 once the
    # worker has committed what it handled.
    fed = {topics.fixtures, topics.results, topics.features, topics.league_inputs}

    async def drained() -> Samples | None:
        got = await scrape(settings)
        lags = {
            dict(labels)["topic"]: v
            for (name, labels), v in got.items()
            if name == "tipstream_consumer_lag_messages" and dict(labels)["topic"] in fed
        }
        return got if set(lags) == fed and not any(lags.values()) else None

    got = await wait_for(drained, timeout=120, what="lag reported and drained on every input")
    lag_series = [
        labels for (name, labels), _ in got.items() if name == "tipstream_consumer_lag_messages"
    ]
    assert all(dict(labels)["partition"] in {"0", "1"} for labels in lag_series)

    # Open alerts come from PostgreSQL, cached for ALERTS_CACHE_S.
    assert total(got, "tipstream_alerts_open") == 0
    async with db.acquire() as conn:
        await alert_store.write(conn, [decay_alert()])

    async def alert_open() -> Samples | None:
        got = await scrape(settings)
        return got if value(got, "tipstream_alerts_open", kind="decay") == 1 else None

    got = await wait_for(alert_open, timeout=ALERTS_CACHE_S * 3, what="the decay alert counted")
    assert value(got, "tipstream_alerts_open", kind="drift") == 0


async def current_evaluations(db: asyncpg.Pool, expected: int) -> bool:
    sql = "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL"
    return await count(db, sql) == expected


def decay_alert() -> Alert:
    return Alert(
        alert_id="metrics-test-decay",
        kind="decay",
        state="firing",
        model_id="river-logreg",
        source="decay-monitor",
        scope="all",
        metric="log_loss",
        detector="window",
        window=100,
        baseline=0.98,
        current=1.2,
        threshold=0.1,
        first_evaluation_id=None,
        last_evaluation_id=None,
        message="test: the log loss of river-logreg rose above its baseline",
        created_at=datetime.now(UTC),
    )
