"""The one topic registry: names, keys, partitions and retention of every tipstream topic.

Agents never spell a topic name; they ask :class:`Topics` built from the settings, so one
prefix separates deployments (and tests, which each get their own prefix).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.log import get_logger
from streams.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name suffix, what its key is, and how it is kept."""

    suffix: str
    key: str
    carries: str
    compacted: bool = False
    # None: the deployment's partition count. Co-partitioned topics must share it.
    partitions: int | None = None


FIXTURES = TopicSpec("fixtures", "match id", "a match announced before kickoff (no features)")
LEAGUE_INPUTS = TopicSpec(
    "league-inputs", "league", "internal: fixtures and results re-keyed by league, in route order"
)
FEATURES = TopicSpec("match-features", "match id", "pre-match features of one match")
RESULTS = TopicSpec("match-results", "match id", "final score and outcome of one match")
PREDICTIONS = TopicSpec("predictions", "match id", "one prediction of one model for one match")
EVALUATIONS = TopicSpec("evaluations", "match id", "a prediction reconciled with its result")
MODEL_FEED = TopicSpec(
    "model-feed", "model id", "internal: an evaluation with its features, for learner and monitor"
)
SNAPSHOTS = TopicSpec(
    "model-snapshots", "model id", "a model's new version or status", compacted=True, partitions=1
)
ALERTS = TopicSpec("alerts", "model id or source", "decay, drift, recovery, promotion, fault")
DEAD_LETTERS = TopicSpec("dead-letters", "original key", "rejected events with reason and bytes")

ALL_TOPICS = (
    FIXTURES,
    LEAGUE_INPUTS,
    FEATURES,
    RESULTS,
    PREDICTIONS,
    EVALUATIONS,
    MODEL_FEED,
    SNAPSHOTS,
    ALERTS,
    DEAD_LETTERS,
)


@dataclass(frozen=True, slots=True)
class Topics:
    """Resolved topic names of one deployment."""

    prefix: str
    partitions: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(prefix=settings.topic_prefix, partitions=settings.partitions)

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}.{spec.suffix}"

    def partitions_of(self, spec: TopicSpec) -> int:
        return spec.partitions or self.partitions

    @property
    def fixtures(self) -> str:
        return self.name(FIXTURES)

    @property
    def league_inputs(self) -> str:
        return self.name(LEAGUE_INPUTS)

    @property
    def features(self) -> str:
        return self.name(FEATURES)

    @property
    def results(self) -> str:
        return self.name(RESULTS)

    @property
    def predictions(self) -> str:
        return self.name(PREDICTIONS)

    @property
    def evaluations(self) -> str:
        return self.name(EVALUATIONS)

    @property
    def model_feed(self) -> str:
        return self.name(MODEL_FEED)

    @property
    def snapshots(self) -> str:
        return self.name(SNAPSHOTS)

    @property
    def alerts(self) -> str:
        return self.name(ALERTS)

    @property
    def dead_letters(self) -> str:
        return self.name(DEAD_LETTERS)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic that does not exist yet; return the names created.

    Topics are created explicitly rather than left to broker auto-creation so partition counts
    are right from the first event (co-partitioned joins depend on it).
    """
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=topics.name(spec),
                num_partitions=topics.partitions_of(spec),
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in ALL_TOPICS
            if topics.name(spec) not in existing
        ]
        if not wanted:
            return []
        # Another worker may create them between our list and create: that is the goal.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted)
        created = [topic.name for topic in wanted]
        log.info("topics created", topics=created)
        return created
    finally:
        await admin.close()
