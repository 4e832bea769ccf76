"""The runtime an agent needs, as the agents define it: decode, publish, a connection, retries.

Agents are written against these Protocols, never against the worker that implements them
(``streams.worker.runtime.Runtime`` on Kafka and PostgreSQL) nor the one tests use
(:mod:`agents.testing`, in memory). That keeps the import arrows pointing one way: ``streams``
wires the agents, the agents never reach up into ``streams``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from models.base import Model
from models.serialization import Keyring
from schemas.events import DeadLetter, Record, Tick

R = TypeVar("R", bound=Record)
T = TypeVar("T")

Output = tuple[str, str | None, Record]
"""One record to publish: topic, key (None: any partition), record."""


class AgentSettings(Protocol):
    """The settings agents read (a subset of ``streams.settings.Settings``)."""

    @property
    def partitions(self) -> int: ...
    @property
    def learning_policy(self) -> str: ...
    @property
    def snapshot_every(self) -> int: ...
    @property
    def snapshot_seconds(self) -> float: ...
    @property
    def decay_window(self) -> int: ...
    @property
    def decay_threshold(self) -> float: ...
    @property
    def drift_detector(self) -> str: ...
    @property
    def features_idle_seconds(self) -> float: ...
    @property
    def drift_window_days(self) -> int: ...
    @property
    def drift_grace_days(self) -> int: ...
    @property
    def drift_min_window(self) -> int: ...
    @property
    def drift_reference_windows(self) -> int: ...
    @property
    def drift_min_reference(self) -> int: ...
    @property
    def drift_resamples(self) -> int: ...
    @property
    def drift_alarms_per_year(self) -> float: ...
    @property
    def gate_confidence(self) -> float: ...
    @property
    def gate_min_matches(self) -> int: ...
    @property
    def gate_market_margin(self) -> float: ...
    @property
    def gate_calibration_limit(self) -> float: ...
    @property
    def gate_league_regression(self) -> float: ...
    @property
    def gate_league_min_matches(self) -> int: ...
    @property
    def auto_promote(self) -> bool: ...
    @property
    def retrain_interval_seconds(self) -> float: ...
    @property
    def retrain_on_decay(self) -> bool: ...
    @property
    def retrain_models(self) -> str: ...
    @property
    def retrain_min_matches(self) -> int: ...
    @property
    def retrain_folds(self) -> int: ...
    @property
    def retrain_decay_cooldown_seconds(self) -> float: ...
    @property
    def min_insync_replicas(self) -> int: ...
    @property
    def ledger_retention_days(self) -> int: ...
    @property
    def keep_versions(self) -> int: ...
    @property
    def ledger_segment_seconds(self) -> int: ...


class TopicNames(Protocol):
    """Resolved topic names of one deployment (``streams.topics.Topics``)."""

    @property
    def fixtures(self) -> str: ...
    @property
    def league_inputs(self) -> str: ...
    @property
    def features(self) -> str: ...
    @property
    def results(self) -> str: ...
    @property
    def predictions(self) -> str: ...
    @property
    def evaluations(self) -> str: ...
    @property
    def model_feed(self) -> str: ...
    @property
    def learn_feed(self) -> str: ...
    @property
    def snapshots(self) -> str: ...
    @property
    def alerts(self) -> str: ...
    @property
    def drift_inputs(self) -> str: ...
    @property
    def dead_letters(self) -> str: ...


class Notices(Protocol):
    """Messages of a broadcast topic, counted: every worker sees all of them."""

    async def wait(self, timeout: float) -> int:
        """How many messages arrived within ``timeout`` seconds (0: none)."""
        ...


class AgentRuntime(Protocol):
    """What every agent of a worker shares."""

    @property
    def settings(self) -> AgentSettings: ...
    @property
    def topics(self) -> TopicNames: ...
    @property
    def counters(self) -> Counter[str]: ...
    @property
    def registry_keys(self) -> Keyring: ...
    @property
    def shutdown_hooks(self) -> list[Callable[[], Awaitable[None]]]: ...

    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A database connection (asyncpg's API) for the duration of a block."""
        ...

    def decode(self, message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
        """One consumed message as a record, or the dead letter that says why not."""
        ...

    async def publish_all(self, items: Iterable[Output]) -> None:
        """Publish records and wait until the broker has acknowledged every one."""
        ...

    async def publish_dead_letters(
        self, letters: list[DeadLetter], *, invalid: bool = True
    ) -> None:
        """Publish dead letters (those this agent owns, if ``invalid``) and wait for them."""
        ...

    async def publish_ticks(self, topic: str, ticks: Iterable[Tick]) -> None:
        """Publish each tick to every partition of ``topic``, with the tick header
        (``agents.tick_rules.TICK_HEADERS``), after everything published before it, and wait
        until the broker has acknowledged them."""
        ...

    async def retry_transient(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` until it succeeds, waiting out transient failures."""
        ...

    def observe(self, metric: str, value: float, label: str = "") -> None:
        """One measurement for a distribution the worker keeps (its /metrics/ histograms):
        ``batch_events`` (events per batch) or ``batch_seconds`` (time to handle it), labelled
        by agent. Counts go to ``counters``; agents never import a metrics library."""
        ...

    def partition_for(self, key: bytes) -> int:
        """The partition a message (or table changelog record) keyed ``key`` goes to."""
        ...

    def follow(self, topic: str) -> AbstractAsyncContextManager[Notices]:
        """Every message of ``topic`` from now on, without a consumer group."""
        ...

    async def record_fit(
        self,
        model: Model,
        *,
        version: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None:
        """Record a fit already registered as ``version`` with the experiment tracker (MLflow
        where configured, else nothing). Never raises: the registry is the source of truth, a
        tracker that fails leaves the version registered and is logged."""
        ...
