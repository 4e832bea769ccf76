"""The worker's operator endpoints on its Faust web port (``TIPSTREAM_WEB_HOST``:
``TIPSTREAM_WEB_PORT``, loopback by default): ``GET /status/`` (JSON: models in use,
partitions, counters), ``GET /metrics/`` (the same counters in Prometheus text format),
``GET /health`` (liveness: the process and its event loop answer) and ``GET /ready``
(readiness: 200 once recovery is done, partitions are assigned and the database answers, else
503 with the reasons)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import faust

from agents.scorer import ActiveModels
from streams.worker.runtime import Runtime

DATABASE_PROBE_SECONDS = 2.0
"""Longest wait for ``SELECT 1`` before /ready calls the database unreachable."""

_LABEL = re.compile(r"[^A-Za-z0-9_.:\-]")


def prometheus_text(counters: Mapping[str, int], models: ActiveModels) -> str:
    """Counters named ``kind`` or ``kind:label`` as ``tipstream_<kind>_total{label=...}``."""
    lines: list[str] = []
    seen_kinds: set[str] = set()
    for name in sorted(counters):
        kind, _, label = name.partition(":")
        metric = f"tipstream_{kind}_total"
        if kind not in seen_kinds:
            seen_kinds.add(kind)
            lines.append(f"# TYPE {metric} counter")
        labels = f'{{name="{_LABEL.sub("_", label)}"}}' if label else ""
        lines.append(f"{metric}{labels} {counters[name]}")
    lines.append("# TYPE tipstream_model_version gauge")
    for entry in models.models:
        lines.append(
            f'tipstream_model_version{{model="{entry.model_id}",status="{entry.status}"}} '
            f"{entry.version}"
        )
    return "\n".join(lines) + "\n"


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
        return web.text(
            prometheus_text(runtime.counters, models), content_type="text/plain; version=0.0.4"
        )
