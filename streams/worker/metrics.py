"""The worker's Prometheus metrics (``GET /metrics/``), kept in one registry per worker app.

Agents know nothing of Prometheus: they count in ``runtime.counters`` (``kind`` or
``kind:label``) and measure through ``runtime.observe``; this module maps both onto
prometheus-client, and adds what only the worker sees: consumer lag per partition, the time
from a fixture's arrival to its champion prediction, database transaction time, dead letters
by topic and reason, open alerts by kind, the model versions in use and each model's rolling
estimates before results (``agents.estimates_rules``). Every name is in
:data:`COUNTERS` or built in :class:`WorkerMetrics`; ``infra/monitoring/`` refers to them and a
unit test checks that every name the rules and the dashboard use exists here.

A registry per app (not prometheus-client's global default) lets tests build several apps in
one process without "Duplicated timeseries" errors.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from faust.exceptions import ConsumerNotStarted
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.estimates_rules import EstimateSummary
from schemas.events import DeadLetter


@dataclass(frozen=True)
class CounterSpec:
    """How one runtime counter kind is exposed: its metric name (without ``_total``), the
    label its ``:label`` part fills (None: the kind has no label), and its help text."""

    name: str
    label: str | None
    help: str


COUNTERS: dict[str, CounterSpec] = {
    "scored": CounterSpec(
        "tipstream_scored_events", None, "Feature events scored (one prediction per model)."
    ),
    "evaluated": CounterSpec(
        "tipstream_evaluations", None, "Predictions evaluated against their result."
    ),
    "predictions_stale": CounterSpec(
        "tipstream_stale_predictions",
        None,
        "Re-issued predictions ignored: their version had learned the result already.",
    ),
    "routed": CounterSpec(
        "tipstream_routed_inputs", None, "Fixtures and results re-keyed by league."
    ),
    "features": CounterSpec(
        "tipstream_feature_inputs", "outcome", "League inputs applied by the features agent."
    ),
    "ticks": CounterSpec(
        "tipstream_ticks",
        "agent",
        "Backfill ticks an agent took (forwarded or skipped; never dead-lettered).",
    ),
    "ticks_refused": CounterSpec(
        "tipstream_ticks_refused",
        "agent",
        "Records with the tick header that are not valid ticks (dropped and logged).",
    ),
    "learn_items": CounterSpec(
        "tipstream_learn_items",
        None,
        "Backfill results the reconciler sent to the learn feed (one per match and model).",
    ),
    "learned": CounterSpec("tipstream_learn_steps", None, "Examples a model learned from."),
    "learn_skipped_duplicate": CounterSpec(
        "tipstream_learn_skipped_duplicates", None, "Evaluations already learned, skipped."
    ),
    "learn_refused": CounterSpec(
        "tipstream_learn_refused", None, "Model-feed items a model refused to learn."
    ),
    "learn_broken_state": CounterSpec(
        "tipstream_learn_broken_states", None, "Learner checkpoints that could not be restored."
    ),
    "refits": CounterSpec(
        "tipstream_refits",
        "outcome",
        "Refit runs the trainer finished: registered, skipped or failed.",
    ),
    "refit_requests": CounterSpec(
        "tipstream_refit_requests", None, "Refits requested by a decay alert on the champion."
    ),
    "mlflow_failures": CounterSpec(
        "tipstream_mlflow_failures",
        None,
        "Registered fits MLflow failed to log (the versions stay registered).",
    ),
    "versions_pruned": CounterSpec(
        "tipstream_model_versions_pruned", None, "Old model versions deleted by the learner."
    ),
    "state_refused": CounterSpec(
        "tipstream_model_states_refused", None, "Stored model states refused (signature)."
    ),
    "alerts": CounterSpec(
        "tipstream_alerts_emitted",
        None,
        "Alerts emitted by the decay and feature drift monitors of this worker.",
    ),
    "drift": CounterSpec(
        "tipstream_drift_matches",
        "outcome",
        "Matches the feature drift monitor took (observed, late) and resets it applied.",
    ),
    "ledgers_rebuilt": CounterSpec(
        "tipstream_ledgers_rebuilt", None, "Reconciler ledgers rebuilt from PostgreSQL."
    ),
    "ledgers_retired": CounterSpec(
        "tipstream_ledgers_retired", None, "Reconciler ledgers retired after retention."
    ),
    "faults": CounterSpec(
        "tipstream_processing_faults", "agent", "Events that failed processing, dead-lettered."
    ),
    "produced": CounterSpec(
        "tipstream_produced_messages", "topic", "Messages the agents published, acked or not."
    ),
    "retries": CounterSpec(
        "tipstream_retries", "operation", "Transient failures waited out (backpressure)."
    ),
    "partition_rereads": CounterSpec(
        "tipstream_partition_rereads", "topic", "Stalled partitions the watchdog re-read."
    ),
}
"""Every counter kind the agents and the runtime increment. ``dead_letters:<topic>`` is not
here: the runtime counts dead letters by topic and reason itself (``tipstream_dead_letters``)."""

SKIPPED_KINDS = frozenset({"dead_letters"})
"""Counter kinds exposed by a dedicated metric instead of the mapping."""

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500)
"""Events per batch: up to agents.loop.BATCH_SIZE (500)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
"""Seconds: the scorer's median is ~20 ms on an idle worker; minutes mean a backlog."""
TRANSACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

ALERT_KINDS = ("decay", "drift", "recovery", "promotion", "fault", "estimate")
"""``schemas.events.AlertKind``: each is exported, at 0 when none is open."""
ALERTS_CACHE_S = 10.0
"""Open alerts are read from PostgreSQL at most this often: a scrape every 15 s by several
Prometheus servers (or a person reloading) costs one query per worker per 10 s at most."""
ARRIVALS_KEPT = 65_536
"""Fixture arrivals remembered until their champion prediction (~5 MB at most); the oldest go
first (a fixture whose features are dead-lettered never gets a prediction)."""


def counter_families(counters: Mapping[str, int]) -> list[Metric]:
    """The runtime counters as Prometheus counter families, one per kind of :data:`COUNTERS`
    (those without a label at 0 when never counted, so ``rate()`` has a series to read).

    A kind missing from the mapping is still exposed, as ``tipstream_<kind>_total{name=...}``,
    so a new counter is never lost (a unit test fails until it is given a name).

    >>> [(m.name, [(s.labels, s.value) for s in m.samples])
    ...  for m in counter_families({"retries:load models": 2}) if m.name == "tipstream_retries"]
    [('tipstream_retries', [({'operation': 'load models'}, 2.0)])]
    """
    families: dict[str, CounterMetricFamily] = {}
    for kind, spec in COUNTERS.items():
        labels = [spec.label] if spec.label else []
        families[kind] = CounterMetricFamily(spec.name, spec.help, labels=labels)
        if spec.label is None:
            families[kind].add_metric([], float(counters.get(kind, 0)))
    for key in sorted(counters):
        kind, _, label = key.partition(":")
        if kind in SKIPPED_KINDS:
            continue
        family = families.get(kind)
        if family is None:
            family = families[kind] = CounterMetricFamily(
                f"tipstream_{kind}", f"Runtime counter {kind!r}.", labels=["name"]
            )
        if kind in COUNTERS and COUNTERS[kind].label is None:
            continue  # added above
        family.add_metric([label], float(counters[key]))
    return list(families.values())


def partition_lag(highwater: int | None, committed: int | None) -> int | None:
    """Messages of a partition not yet committed by this worker's group: the high watermark
    (the offset the next message will get) minus the committed offset (the next one to read
    after a restart). None when either is unknown (no fetch yet, or never committed). Never
    negative: the cached high watermark can trail a commit made since the last fetch.

    >>> partition_lag(120, 100), partition_lag(100, 100), partition_lag(None, 3)
    (20, 0, None)
    >>> partition_lag(9, 12)
    0
    """
    if highwater is None or committed is None:
        return None
    return max(highwater - committed, 0)


def dead_letter_reason(letter: DeadLetter) -> str:
    """A dead letter's reason, from a closed set (the rule's text holds values: too many label
    values for Prometheus): ``processing_failed`` (an agent raised on it),
    ``unverifiable_state`` (stored model state refused), ``unsupported_schema_version``,
    ``malformed`` (the payload as a whole: empty, too large, not JSON, undecodable) or
    ``invalid_field`` (a field broke a schema or service rule; the letter names it)."""
    rule, field = letter.error.rule, letter.error.field
    if rule.startswith("processing failed"):
        return "processing_failed"
    if rule.startswith("unverifiable model state"):
        return "unverifiable_state"
    if field == "$.schema_version":
        return "unsupported_schema_version"
    if field == "$":
        return "malformed"
    return "invalid_field"


class Arrivals:
    """When each fixture arrived (its Kafka timestamp), until its champion prediction is acked.

    The router decodes the fixture and the scorer publishes its predictions in the same worker:
    ``fixtures``, ``match-features`` and ``predictions`` are keyed by match id with one
    partition count, and Faust assigns co-partitioned topics' partitions together. A champion
    prediction without a known arrival (features published by ``tipstream replay`` or a producer,
    a re-delivered feature, a restart in between) is not measured.
    """

    def __init__(self, kept: int = ARRIVALS_KEPT) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()
        self._kept = kept

    def arrived(self, match_id: str, timestamp: float) -> None:
        """The first arrival counts: a re-delivered fixture does not restart the clock."""
        if match_id in self._at:
            return
        self._at[match_id] = timestamp
        if len(self._at) > self._kept:
            self._at.popitem(last=False)

    def predicted(self, match_id: str, now: float) -> float | None:
        """Seconds from the fixture's arrival to ``now``, once per match (None: unknown)."""
        at = self._at.pop(match_id, None)
        return None if at is None else max(now - at, 0.0)

    def __len__(self) -> int:
        return len(self._at)


class _RuntimeCollector(Collector):
    """What is read at scrape time: the runtime counters, consumer lag, open alerts, models."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        yield from counter_families(m.counters)
        lag = GaugeMetricFamily(
            "tipstream_consumer_lag_messages",
            "Messages of an assigned partition beyond this worker group's committed offset.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(m.lags().items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        alerts = GaugeMetricFamily(
            "tipstream_alerts_open",
            "Alerts not yet acknowledged or resolved, by kind (read from PostgreSQL).",
            labels=["kind"],
        )
        for kind in ALERT_KINDS:
            alerts.add_metric([kind], m.open_alerts.get(kind, 0))
        yield alerts
        versions = GaugeMetricFamily(
            "tipstream_model_version",
            "The version of each model this worker scores with.",
            labels=["model", "status", "kind"],
        )
        for model, status, kind, version in m.models():
            versions.add_metric([model, status, kind], version)
        yield versions
        yield from estimate_families(m.estimates())


ESTIMATE_GAUGES = (
    (
        "tipstream_expected_log_loss",
        "Mean expected log loss -sum p log p of the model's last scored matches (this worker's).",
        "expected_log_loss",
    ),
    (
        "tipstream_closing_cross_entropy",
        "Mean cross-entropy of the model against the normalised closing line, last scored matches.",
        "closing_cross_entropy",
    ),
    (
        "tipstream_expected_edge_vs_market",
        "Mean expected log-loss edge over the opening line, the closing line taken as the truth.",
        "expected_edge",
    ),
)
"""(name, help, :class:`EstimateSummary` field) of the per-model estimate gauges."""


def estimate_families(summaries: Mapping[str, EstimateSummary]) -> Iterator[Metric]:
    """One gauge per estimate, a series per model that has a value (none before any match)."""
    for name, documentation, field in ESTIMATE_GAUGES:
        gauge = GaugeMetricFamily(name, documentation, labels=["model"])
        for model, summary in sorted(summaries.items()):
            value = getattr(summary, field)
            if value is not None:
                gauge.add_metric([model], value)
        yield gauge


class WorkerMetrics:
    """One worker's registry and the metrics the runtime records into it.

    ``counters`` are the runtime's counters; ``consumer`` returns Faust's consumer (or None
    before it starts); ``models`` lists (model id, status, kind, version) in use;
    ``estimates`` (set by the web views) gives each model's rolling estimates.
    """

    def __init__(
        self,
        counters: Mapping[str, int],
        consumer: Callable[[], Any],
        models: Callable[[], Iterable[tuple[str, str, str, int]]] = lambda: (),
    ) -> None:
        self.registry = CollectorRegistry()
        self.counters = counters
        self._consumer = consumer
        self.models = models
        self.estimates: Callable[[], Mapping[str, EstimateSummary]] = dict
        self.open_alerts: dict[str, int] = {}
        self._alerts_read_at: float | None = None
        self.arrivals = Arrivals()
        self.dead_letters = Counter(
            "tipstream_dead_letters",
            "Events dead-lettered, by source topic and reason.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "tipstream_batch_size_events",
            "Events per batch an agent handled.",
            ["agent"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "tipstream_batch_duration_seconds",
            "Time an agent took to handle one batch, up to the broker's acks.",
            ["agent"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fixture_to_champion = Histogram(
            "tipstream_fixture_to_champion_seconds",
            "From a fixture's Kafka timestamp to the broker's ack of its champion prediction.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transaction_seconds = Histogram(
            "tipstream_db_transaction_seconds",
            "Duration of the agents' outermost database transactions, by outcome.",
            ["outcome"],
            buckets=TRANSACTION_BUCKETS,
            registry=self.registry,
        )
        self._histograms: dict[str, Histogram] = {
            "batch_events": self.batch_events,
            "batch_seconds": self.batch_seconds,
        }
        self.registry.register(_RuntimeCollector(self))

    def observe(self, metric: str, value: float, label: str = "") -> None:
        """One measurement an agent reports (``agents.runtime.AgentRuntime.observe``)."""
        histogram = self._histograms.get(metric)
        if histogram is None:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(self._histograms)}")
        histogram.labels(label).observe(value)

    def dead_lettered(self, letter: DeadLetter) -> None:
        self.dead_letters.labels(letter.source_topic, dead_letter_reason(letter)).inc()

    def champion_acked(self, match_ids: Iterable[str], now: float) -> None:
        """Champion predictions of these matches were acked by the broker at ``now``."""
        for match_id in match_ids:
            seconds = self.arrivals.predicted(match_id, now)
            if seconds is not None:
                self.fixture_to_champion.observe(seconds)

    def lags(self) -> dict[tuple[str, int], int]:
        """Lag of every assigned partition whose offsets are known (see :func:`partition_lag`).

        Faust keeps the committed offset of each partition in ``_committed_offset`` (private,
        read as the watchdog reads it; the version is pinned) and the high watermark of the
        last fetch response per partition: both are in memory, so a scrape asks no broker.
        """
        consumer = self._consumer()
        if consumer is None:
            return {}
        try:
            assignment = consumer.assignment()
        except ConsumerNotStarted:  # scraped while the worker starts: no partitions yet
            return {}
        out: dict[tuple[str, int], int] = {}
        committed = consumer._committed_offset
        for tp in assignment:
            lag = partition_lag(consumer.highwater(tp), committed.get(tp))
            if lag is not None:
                out[(tp.topic, tp.partition)] = lag
        return out

    async def refresh_open_alerts(self, read: Callable[[], Any], now: float) -> None:
        """Re-read the open alerts by kind through ``read`` unless read in the last
        :data:`ALERTS_CACHE_S`. A failed read keeps the last figures (and is raised)."""
        if self._alerts_read_at is not None and now - self._alerts_read_at < ALERTS_CACHE_S:
            return
        self._alerts_read_at = now
        self.open_alerts = dict(await read())

    @asynccontextmanager
    async def timed_transaction(self, transaction: Any) -> AsyncIterator[Any]:
        """``transaction`` (asyncpg's) entered and left, its duration observed by outcome."""
        started = time.perf_counter()
        outcome = "rollback"
        try:
            async with transaction as entered:
                yield entered
            outcome = "commit"
        finally:
            self.transaction_seconds.labels(outcome).observe(time.perf_counter() - started)

    def text(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


OPEN_ALERTS_SQL = """
SELECT kind, count(*) AS open FROM alerts
WHERE {condition}
GROUP BY kind
"""
LIFECYCLE_SQL = """
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_name = 'alerts' AND column_name = 'status' AND table_schema = current_schema()
)
"""


async def read_open_alerts(conn: Any) -> dict[str, int]:
    """Open alerts by kind: ``status = 'open'`` where the alert lifecycle (acknowledge,
    resolve) is migrated, else every alert whose detector state is still ``firing``."""
    lifecycle = await conn.fetchval(LIFECYCLE_SQL)
    condition = "status = 'open'" if lifecycle else "state = 'firing'"
    rows = await conn.fetch(OPEN_ALERTS_SQL.format(condition=condition))
    return {row["kind"]: int(row["open"]) for row in rows}


class TimedConnection:
    """A pooled asyncpg connection whose outermost ``transaction()`` blocks are timed; every
    other attribute is the connection's own."""

    def __init__(self, conn: Any, metrics: WorkerMetrics) -> None:
        self._conn = conn
        self._metrics = metrics

    def transaction(self, **options: Any) -> Any:
        inner = self._conn.transaction(**options)
        if self._conn.is_in_transaction():
            return inner  # a savepoint: its time is part of the outer transaction's
        return self._metrics.timed_transaction(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def metric_names(registry: CollectorRegistry) -> Iterator[str]:
    """Every family and sample name the registry exposes (``x``, ``x_total``, ``x_bucket``)."""
    for family in registry.collect():
        yield family.name
        for sample in family.samples:
            yield sample.name
        if family.type == "counter":
            yield f"{family.name}_total"
        if family.type == "histogram":
            yield from (f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
