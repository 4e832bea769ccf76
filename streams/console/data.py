"""What the console shows, read from the deployment: PostgreSQL through the stores the operator
commands use (``agents.alert_store``, ``agents.registry``, ``agents.reconciler_store``,
``streams.cli.predictions``), the
Kafka admin API (the group's committed offsets against the end offsets), and each worker's
``/status/`` and ``/metrics/``. Read-only: nothing here writes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from agents import alert_store, reconciler_store, registry
from streams.cli import dead_letter_view
from streams.cli.dead_letters import read_letters
from streams.console import quality, rules
from streams.log import get_logger
from streams.settings import Settings

log = get_logger(__name__)

WORKER_TIMEOUT_S = 2.0
"""Longest wait for a worker's endpoint: a worker that does not answer is shown as such."""
ALERTS_SHOWN = 50
LETTERS_SHOWN = 5
LETTERS_TTL_S = 10.0
"""The latest dead letters are re-read at most this often (each read is a consumer of its own
seeking to the tail of every partition of the dead-letter topic)."""
QUALITY_TTL_S = 10.0
"""The quality plot is drawn at most this often (matplotlib takes a fraction of a second)."""
BETTING_TTL_S = 10.0
"""The betting figures are computed again at most this often, in the background, and only when
the evaluation log has changed since: they read every current evaluation with its odds and
bootstrap each model's ROI (100,000 evaluations: ~2 s on a loaded 2-core machine)."""
DEAD_LETTERS_METRIC = "tipstream_dead_letters_total"


def worker_urls(settings: Settings) -> list[str]:
    """The workers' base URLs: ``TIPSTREAM_CONSOLE_WORKERS``, else the one of the settings.

    >>> worker_urls(Settings(console_workers="http://a:1/, http://b:2"))
    ['http://a:1', 'http://b:2']
    >>> worker_urls(Settings(web_port=6100))
    ['http://127.0.0.1:6100']
    """
    given = [u.strip().rstrip("/") for u in settings.console_workers.split(",") if u.strip()]
    return given or [f"http://{settings.web_host}:{settings.web_port}"]


def dead_letters_by_reason(metrics_text: str) -> dict[tuple[str, str], int]:
    """(source topic, reason) -> count from a worker's /metrics/ text."""
    out: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == DEAD_LETTERS_METRIC:
                key = (sample.labels.get("topic", ""), sample.labels.get("reason", ""))
                out[key] = out.get(key, 0) + int(sample.value)
    return out


@dataclass
class Reader:
    """The console's long-lived clients and the last reading of the committed offsets (the
    processing rate is the change between two snapshots)."""

    settings: Settings
    pool: Any
    consumer: AIOKafkaConsumer | None = None
    admin: AIOKafkaAdminClient | None = None
    http: aiohttp.ClientSession | None = None
    last_commit: tuple[float, int] | None = None
    moved_at: float | None = None
    plot: tuple[float, bytes] | None = None
    letters: tuple[float, list[dict[str, Any]] | str] | None = None
    bets: tuple[float, tuple[int, Any], rules.BettingFigures | str] | None = None
    bets_task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self, kafka_options: dict[str, Any]) -> None:
        self.consumer = AIOKafkaConsumer(**kafka_options, group_id=None, enable_auto_commit=False)
        self.admin = AIOKafkaAdminClient(**kafka_options)
        await self.consumer.start()
        await self.admin.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S))

    async def stop(self) -> None:
        if self.bets_task is not None:
            self.bets_task.cancel()
        if self.http is not None:
            await self.http.close()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def snapshot(self) -> dict[str, Any]:
        """Every panel's data; a source that fails is reported in its panel, not fatal."""
        async with self.lock:
            pipeline, workers, letters = await asyncio.gather(
                self._pipeline(), self._workers(), self._latest_letters()
            )
            pipeline["latest_dead_letters"] = letters
            async with self.pool.acquire() as conn:
                models = await _models(conn, self.settings)
                alerts = await alert_store.list_alerts(
                    conn, alert_store.AlertFilter(), limit=ALERTS_SHOWN
                )
                window = self.settings.decay_window
                scores = quality.summary(await quality.evaluations(conn, window), window)
            return {
                "pipeline": pipeline,
                "workers": workers,
                "models": models,
                "alerts": alerts,
                "quality": {"window": window, "models": scores},
                "betting": self._betting(),
            }

    def _betting(self) -> rules.BettingFigures | str | None:
        """The latest betting figures (None: not computed yet), and a recomputation started in
        the background when they are older than :data:`BETTING_TTL_S`: the page polls every
        2 s and never waits for them."""
        now = time.monotonic()
        stale = self.bets is None or now - self.bets[0] >= BETTING_TTL_S
        if stale and (self.bets_task is None or self.bets_task.done()):
            self.bets_task = asyncio.create_task(self._refresh_betting())
        return None if self.bets is None else self.bets[2]

    async def _refresh_betting(self) -> None:
        """Compute the figures again if the evaluation log changed; a failure is kept as the
        panel's message (and retried after the TTL), never raised."""
        try:
            async with self.pool.acquire() as conn:
                mark = await reconciler_store.evaluation_log_mark(conn)
                if self.bets is not None and self.bets[1] == mark:
                    self.bets = (time.monotonic(), mark, self.bets[2])
                    return
                rows = await reconciler_store.bet_rows(conn)
            figures: rules.BettingFigures | str = await asyncio.to_thread(
                rules.betting_figures, rows
            )
        except Exception as error:  # noqa: BLE001 - the panel says what failed
            log.warning("console: betting figures not computed", error=repr(error))
            mark, figures = (-1, None), f"{type(error).__name__}: {error}"
        self.bets = (time.monotonic(), mark, figures)

    async def quality_svg(self) -> bytes:
        """The quality plot, redrawn when older than :data:`QUALITY_TTL_S` (in a thread: the
        event loop keeps answering meanwhile)."""
        now = time.monotonic()
        if self.plot is None or now - self.plot[0] > QUALITY_TTL_S:
            window = self.settings.decay_window
            async with self.pool.acquire() as conn:
                rows = await quality.evaluations(conn, window * 4)
            drawn = await asyncio.to_thread(quality.svg, rows, window)
            if not rows:  # nothing evaluated yet: draw again next time, not in 10 s
                return drawn
            self.plot = (now, drawn)
        return self.plot[1]

    async def _pipeline(self) -> dict[str, Any]:
        assert self.admin is not None
        assert self.consumer is not None
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.settings.group_id)
            committed = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in offsets.items()
                if meta.offset >= 0
            }
            ends_tp = await self.consumer.end_offsets([TopicPartition(*p) for p in committed])
            ends = {(tp.topic, tp.partition): end for tp, end in ends_tp.items()}
        except Exception as error:  # noqa: BLE001 - the panel says what failed
            log.warning("console: offsets not read", error=repr(error))
            return {"error": f"Kafka: {type(error).__name__}: {error}", "partitions": []}
        partitions = rules.lags(ends, committed)
        now = (time.monotonic(), rules.committed_total(partitions))
        per_second = rules.rate(self.last_commit, now)
        if self.last_commit is None or now[1] != self.last_commit[1]:
            self.moved_at = now[0]
        self.last_commit = now
        return {
            "group": self.settings.group_id,
            "partitions": partitions,
            "total_lag": sum(p.lag for p in partitions),
            "processed": now[1],
            "per_second": per_second,
            # Since the committed offsets last moved, as this console saw them (Kafka keeps no
            # commit time a client can read): growing with lag above 0 means a stuck group.
            "since_commit_s": None if self.moved_at is None else now[0] - self.moved_at,
        }

    async def _latest_letters(self) -> list[dict[str, Any]] | str:
        """The newest :data:`LETTERS_SHOWN` dead letters as ``dead-letters list`` shows them,
        or what went wrong reading them."""
        now = time.monotonic()
        if self.letters is not None and now - self.letters[0] < LETTERS_TTL_S:
            return self.letters[1]
        try:
            found = await read_letters(self.settings, last=LETTERS_SHOWN)
        except Exception as error:  # noqa: BLE001 - the panel says what failed
            result: list[dict[str, Any]] | str = f"{type(error).__name__}: {error}"
        else:
            newest = sorted(found, key=lambda item: item[1].failed_at)[-LETTERS_SHOWN:]
            prefix = self.settings.topic_prefix
            result = [
                dead_letter_view.letter_row(i, letter, 0, prefix=prefix)
                for i, letter in reversed(newest)
            ]
        self.letters = (now, result)
        return result

    async def _workers(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._worker(u) for u in worker_urls(self.settings))))

    async def _worker(self, url: str) -> dict[str, Any]:
        assert self.http is not None
        try:
            async with self.http.get(f"{url}/status/") as response:
                status = await response.json()
            async with self.http.get(f"{url}/metrics/") as response:
                letters = dead_letters_by_reason(await response.text())
        except Exception as error:  # noqa: BLE001 - an unreachable worker is shown, not fatal
            return {"url": url, "error": f"{type(error).__name__}: {error}".strip(": ")}
        return {"url": url, "status": status, "dead_letters": letters}


async def _models(conn: Any, settings: Settings) -> dict[str, Any]:
    rows = await registry.list_models(conn)
    order = {"champion": 0, "challenger": 1, "reference": 2}
    rows.sort(key=lambda r: (order.get(r["status"], 3), r["model_id"]))
    history = await conn.fetch(
        "SELECT model_id, reason, changed_at FROM champion_history ORDER BY id DESC LIMIT 5"
    )
    return {
        "models": rows,
        "changes": [dict(h) for h in history],
        "learning_policy": settings.learning_policy,
    }
