"""The worker's operator endpoints on its Faust web port (``TIPSTREAM_WEB_PORT``, 127.0.0.1):
``GET /status/`` (JSON: models in use, partitions, counters) and ``GET /metrics/`` (the same
counters in Prometheus text format)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import faust

from agents.scorer import ActiveModels
from streams.worker.runtime import Runtime

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
        "app_id": runtime.settings.app_id,
        "topic_prefix": runtime.settings.topic_prefix,
        "models": [
            {"model_id": m.model_id, "status": m.status, "version": m.version, "kind": m.kind}
            for m in models.models
        ],
        "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assignment),
        "counters": dict(sorted(runtime.counters.items())),
    }


def register(app: faust.App, runtime: Runtime, models: ActiveModels) -> None:
    """Declare the views on ``app``."""

    @app.page("/status/")
    async def status_view(web: Any, request: Any) -> Any:
        return web.json(status(runtime, models))

    @app.page("/metrics/")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.text(
            prometheus_text(runtime.counters, models), content_type="text/plain; version=0.0.4"
        )
