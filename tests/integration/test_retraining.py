"""Scheduled retraining on the real broker and database: the leader's trainer refits the batch
model from the stored results, registers each fit as a challenger with its cross-validated
figures (and logs it to MLflow), and the scorers score it; a decay alert on the champion
triggers one refit; too few results and a failing fit are recorded with the reason while the
worker keeps scoring."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agents import reconciler_store, trainer_store
from agents.reconciler_store import LogBatch
from schemas.events import Alert, MatchFeatures, MatchResult
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import Worker, publish, wait_for
from tests.integration.test_pipeline import events_between

pytestmark = pytest.mark.integration

CV_METRICS = {"rows", "cv_folds", "cv_log_loss", "cv_brier", "cv_market_log_loss"}


async def store_history(
    pool: asyncpg.Pool, start: str, end: str, *, every_outcome: str | None = None
) -> int:
    """Features and results of a stretch written to the evaluation log, as the reconciler would
    have stored them (with ``every_outcome``, every result's outcome that one, in the same
    transaction: a refit never sees the real ones); returns the number of matches with both."""
    batch = LogBatch()
    for event in events_between(start, end):
        if isinstance(event.record, MatchFeatures):
            batch.features[event.key] = event.record
        elif isinstance(event.record, MatchResult):
            batch.results[event.key] = event.record
    async with pool.acquire() as conn, conn.transaction():
        await reconciler_store.write(conn, batch)
        if every_outcome is not None:
            await conn.execute("UPDATE results SET outcome = $1", every_outcome)
    return len(batch.features.keys() & batch.results.keys())


async def fetch(pool: asyncpg.Pool, sql: str, *args: Any) -> list[Any]:
    async with pool.acquire() as conn:
        rows: list[Any] = await conn.fetch(sql, *args)
        return rows


async def value(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def runs(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await trainer_store.runs(conn, limit=100)


async def scored_by(
    pool: asyncpg.Pool, producer: Any, settings: Settings, model_id: str, stretch: tuple[str, str]
) -> list[int]:
    """Publish a stretch's features; wait until ``model_id`` has predicted every match; the
    versions it predicted with."""
    features = [e for e in events_between(*stretch) if e.kind == "features"]
    topics = Topics.from_settings(settings)
    await publish(producer, topics.features, [(e.key, e.record) for e in features])
    ids = [e.key for e in features]
    await wait_for(
        lambda: value(
            pool,
            "SELECT count(DISTINCT match_id) = $2 FROM predictions "
            "WHERE model_id = $1 AND match_id = ANY($3)",
            model_id,
            len(ids),
            ids,
        ),
        timeout=90,
        what=f"{model_id}'s predictions of {len(ids)} matches",
    )
    rows = await fetch(
        pool,
        "SELECT DISTINCT model_version FROM predictions WHERE model_id = $1 AND match_id = ANY($2)",
        model_id,
        ids,
    )
    return sorted(row["model_version"] for row in rows)


async def test_the_schedule_refits_from_stored_results_and_the_scorers_score_the_fit(
    settings: Settings,
    start_worker: Callable[..., Worker],
    producer: Any,
    db: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip(
        "mlflow", reason="mlflow is not installed: pip install '.[mlflow]' (make setup does)"
    )
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client
    stored = await store_history(db, "2009-08-01", "2011-06-30")
    assert stored > 500
    uri = (tmp_path / "mlruns").as_uri()
    worker = start_worker(
        TIPSTREAM_RETRAIN_INTERVAL_SECONDS="15",
        TIPSTREAM_RETRAIN_MODELS="batch-logreg",
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_ALLOW_FILE_STORE="true",  # MLflow 3's opt-in for file stores
    )
    # Two scheduled runs, 15 s apart: versions 0 and 1 of the challenger.
    await wait_for(
        lambda: value(
            db,
            "SELECT count(*) >= 2 FROM model_versions WHERE model_id = 'batch-logreg'",
        ),
        timeout=150,
        what="two scheduled refits of batch-logreg",
    )
    status = await value(db, "SELECT status FROM models WHERE model_id = 'batch-logreg'")
    assert status == "challenger"
    champion = await value(db, "SELECT model_id FROM models WHERE status = 'champion'")
    assert champion == "online-logreg"  # a refit never replaces the champion
    versions = await fetch(
        db,
        "SELECT version, state_sha256, metrics::text AS metrics FROM model_versions "
        "WHERE model_id = 'batch-logreg' ORDER BY version LIMIT 2",
    )
    assert [row["version"] for row in versions] == [0, 1]
    for row in versions:
        metrics = json.loads(row["metrics"])
        assert set(metrics) >= CV_METRICS
        assert metrics["rows"] == stored
        assert metrics["cv_folds"] == settings.retrain_folds
    # Each registered refit is logged to MLflow (after its registration: wait for the runs).
    client = MlflowClient(tracking_uri=uri)

    async def logged() -> dict[int, Any]:
        found = client.get_experiment_by_name("tipstream")
        if found is None:
            return {}
        return {
            int(r.data.tags["tipstream.version"]): r
            for r in client.search_runs([found.experiment_id])
            if r.data.tags.get("tipstream.model_id") == "batch-logreg"
        }

    await wait_for(
        lambda: _has_versions(logged, {0, 1}),
        timeout=60,
        what="finished MLflow runs of v0 and v1",
    )
    by_version = await logged()
    for row in versions:
        metrics = json.loads(row["metrics"])
        run = by_version[row["version"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["tipstream.state_sha256"] == row["state_sha256"]
        assert run.data.params["trigger"] == "schedule"
        for name in CV_METRICS:
            assert run.data.metrics[name] == pytest.approx(metrics[name])
    scheduled = [r for r in await runs(db) if r["trigger"] == "schedule" and r["finished_at"]]
    assert len(scheduled) >= 2
    assert all(r["outcome"] == "registered" for r in scheduled)
    # The scorers swap the fit in and score new matches with it.
    assert await scored_by(db, producer, settings, "batch-logreg", ("2011-08-01", "2011-08-31"))
    assert "refit registered" in worker.log_text()


async def _has_versions(logged: Callable[[], Any], versions: set[int]) -> bool:
    """Whether every version has an ended run: a run is listed from its creation, before
    its metrics, artifact and end are logged."""
    found = await logged()
    return all(v in found and found[v].info.status != "RUNNING" for v in versions)


async def test_a_decay_alert_on_the_champion_triggers_one_refit(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """The champion is a batch model: its refit goes to batch-logreg-refit as a challenger.
    Two decay alerts of one incident, a redelivery and an alert on another model: one run."""
    await store_history(db, "2009-08-01", "2011-06-30")
    worker = start_worker(
        TIPSTREAM_RETRAIN_ON_DECAY="1",
        TIPSTREAM_CHAMPION_MODEL="batch-logreg",
        TIPSTREAM_CHALLENGER_MODELS="online-rating",
    )
    await wait_for(lambda: _contains(worker, "models swapped in"), timeout=90, what="a scorer")
    now = datetime.now(UTC)

    def decay(alert_id: str, model_id: str, minutes: int) -> Alert:
        return Alert(
            alert_id=alert_id,
            kind="decay",
            state="firing",
            model_id=model_id,
            source="decay-monitor",
            scope="all",
            metric="log_loss_vs_market",
            detector="paired-cusum",
            window=300,
            message=f"{model_id} decayed",
            created_at=now + timedelta(minutes=minutes),
        )

    alerts = [
        decay("a-other", "online-rating", 0),
        decay("a-first", "batch-logreg", 1),
        decay("a-first", "batch-logreg", 1),  # redelivered
        decay("a-second", "batch-logreg", 2),  # same incident, another detector
    ]
    topics = Topics.from_settings(settings)
    await publish(producer, topics.alerts, [(a.model_id or "", a) for a in alerts])
    await wait_for(
        lambda: value(
            db, "SELECT count(*) > 0 FROM model_versions WHERE model_id = 'batch-logreg-refit'"
        ),
        timeout=120,
        what="the decay-triggered refit",
    )
    await wait_for(
        lambda: value(db, "SELECT bool_and(finished_at IS NOT NULL) FROM retrain_runs"),
        timeout=60,
        what="the run to finish",
    )
    recorded = await runs(db)
    assert [(r["trigger"], r["alert_id"], r["outcome"]) for r in recorded] == [
        ("decay", "a-first", "registered")
    ]
    statuses = {
        row["model_id"]: row["status"]
        for row in await fetch(db, "SELECT model_id, status FROM models")
    }
    assert statuses["batch-logreg"] == "champion"
    assert statuses["batch-logreg-refit"] == "challenger"
    metrics = json.loads(
        await value(
            db, "SELECT metrics::text FROM model_versions WHERE model_id = 'batch-logreg-refit'"
        )
    )
    assert set(metrics) >= CV_METRICS
    assert await scored_by(
        db, producer, settings, "batch-logreg-refit", ("2011-08-01", "2011-08-31")
    ) == [0]
    assert "refit requested" in worker.log_text()


async def test_too_few_results_and_a_failing_fit_are_logged_and_scoring_goes_on(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    worker = start_worker(TIPSTREAM_RETRAIN_INTERVAL_SECONDS="3")
    await wait_for(
        lambda: value(db, "SELECT count(*) > 0 FROM retrain_runs WHERE outcome = 'skipped'"),
        timeout=90,
        what="a skipped run on an empty evaluation log",
    )
    skipped = next(r for r in await runs(db) if r["outcome"] == "skipped")
    assert "too few results" in skipped["detail"][0]["reason"]
    assert "refit skipped" in worker.log_text()

    # Enough matches, but every result a home win: the logistic regression refuses to fit.
    await store_history(db, "2009-08-01", "2011-06-30", every_outcome="H")
    await wait_for(
        lambda: value(db, "SELECT count(*) > 0 FROM retrain_runs WHERE outcome = 'failed'"),
        timeout=90,
        what="a failed run",
    )
    failed = next(r for r in await runs(db) if r["outcome"] == "failed")
    assert "ValueError" in failed["detail"][0]["reason"]
    assert "refit failed" in worker.log_text()
    assert (
        await value(db, "SELECT count(*) FROM model_versions WHERE model_id = 'batch-logreg'") == 0
    )
    # The worker is alive and scores with its champion.
    assert worker.process is not None
    assert worker.process.poll() is None
    assert await scored_by(db, producer, settings, "online-logreg", ("2011-08-01", "2011-08-15"))


async def _contains(worker: Worker, text: str) -> bool:
    return text in worker.log_text()
