"""The worker's operator endpoints on its Faust web port (``TIPSTREAM_WEB_HOST``:
``TIPSTREAM_WEB_PORT``, loopback by default): ``GET /status/`` (JSON: models in use,
partitions, counters, each model's rolling estimates before results), ``GET /metrics/``
(Prometheus: the worker's registry of :mod:`streams.worker.metrics`),
``GET /health`` (liveness: the process and its event loop answer) and ``GET /ready``
(readiness: 200 once recovery is done, partitions are assigned and the database answers, else
503 with the reasons)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust

from agents.estimates_rules import summaries_json
from agents.scorer import ActiveModels
from streams.log import get_logger
from streams.worker.metrics import read_open_alerts
from streams.worker.runtime import Runtime

log = get_logger(__name__)

DATABASE_PROBE_SECONDS = 2.0
"""Longest wait for ``SELECT 1`` before /ready calls the database unreachable."""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text format, as prometheus-client writes it (every Prometheus reads 0.0.4)."""


def model_versions(models: ActiveModels) -> list[tuple[str, str, str, int]]:
    """(model id, status, kind, version) of every model the scorer uses."""
    return [(m.model_id, m.status, m.kind, m.version) for m in models.models]


async def metrics_text(runtime: Runtime) -> bytes:
    """The worker's metrics, the open alerts re-read first if their cache is stale. A
    database that does not answer leaves the last figures: the scrape still answers."""

    async def read() -> dict[str, int]:
        async with asyncio.timeout(DATABASE_PROBE_SECONDS), runtime.connection() as conn:
            return await read_open_alerts(conn)

    try:
        await runtime.metrics.refresh_open_alerts(read, time.monotonic())
    except Exception as error:  # noqa: BLE001 - metrics must answer; the failure is logged
        log.warning("open alerts not read for /metrics/", error=repr(error))
    return runtime.metrics.text()


def status(runtime: Runtime, models: ActiveModels) -> dict[str, Any]:
    """What an operator wants at a glance."""
    assignment = runtime.app.consumer.assignment() if runtime.app.consumer else set()
    return {
        "app_id": runtime.settings.group_id,
        "topic_prefix": runtime.settings.topic_prefix,
        "models": [
            {"model_id": m.model_id, "status": m.status, "version": m.version, "kind": m.kind}
            for m in models.models
        ],
        "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assignment),
        "counters": dict(sorted(runtime.counters.items())),
        # Of the matches this worker scored (its partitions' share), the last window's means.
        "estimates": summaries_json(models.estimates.summaries()),
    }


def readiness(
    *, rebalancing: bool, in_recovery: bool, recovered: bool, partitions: int, database: str | None
) -> list[str]:
    """Why the worker is not ready (empty: ready). ``database`` is None when it answered, else
    what went wrong. A worker without partitions (more workers than partitions, or between
    rebalances) is alive but does no work, so it is not ready."""
    reasons: list[str] = []
    if rebalancing:
        reasons.append("rebalancing")
    if in_recovery or not recovered:
        reasons.append("recovering tables from their changelogs")
    if partitions == 0:
        reasons.append("no partitions assigned")
    if database is not None:
        reasons.append(f"database unreachable: {database}")
    return reasons


async def probe_database(runtime: Runtime) -> str | None:
    """None if the database answers ``SELECT 1`` in time, else the error."""
    try:
        async with asyncio.timeout(DATABASE_PROBE_SECONDS):
            async with runtime.connection() as conn:
                await conn.fetchval("SELECT 1")
    except TimeoutError:
        return f"no answer in {DATABASE_PROBE_SECONDS:.0f} s"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
        return f"{type(error).__name__}: {error}"
    return None


async def ready(runtime: Runtime) -> dict[str, Any]:
    """The readiness report: ``ready`` and its ``reasons``, with the figures behind them."""
    app = runtime.app
    assignment = app.consumer.assignment() if app.consumer else set()
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]  # TableManager's
    report: dict[str, Any] = {
        "partitions": len(assignment),
        "reasons": readiness(
            rebalancing=bool(app.rebalancing),
            in_recovery=bool(getattr(app, "in_recovery", False)),
            recovered=recovery.completed.is_set(),
            partitions=len(assignment),
            database=await probe_database(runtime),
        ),
    }
    report["ready"] = not report["reasons"]
    return report


def register(app: faust.App, runtime: Runtime, models: ActiveModels) -> None:
    """Declare the views on ``app``."""
    runtime.metrics.models = lambda: model_versions(models)
    runtime.metrics.estimates = models.estimates.summaries

    @app.page("/status/")
    async def status_view(web: Any, request: Any) -> Any:
        return web.json(status(runtime, models))

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        return web.json({"alive": True})

    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        report = await ready(runtime)
        return web.json(report, status=200 if report["ready"] else 503)

    @app.page("/metrics/")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(
            await metrics_text(runtime), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )
