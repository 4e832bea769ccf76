"""The one topic registry: names, keys, partitions and retention of every tipstream topic.

Agents never spell a topic name; they ask :class:`Topics` built from the settings, so one
prefix separates deployments (and tests, which each get their own prefix).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.kafka import client_options, topic_configs
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
LEARN_FEED = TopicSpec(
    "learn-feed",
    "model id",
    "internal: a backfill's results with their match's inputs, for the learner's time line",
)
SNAPSHOTS = TopicSpec(
    "model-snapshots", "model id", "a model's new version or status", compacted=True, partitions=1
)
ALERTS = TopicSpec("alerts", "model id or source", "decay, drift, recovery, promotion, fault")
DRIFT_INPUTS = TopicSpec(
    "drift-inputs",
    "the constant 'drift'",
    "internal: every match's features, for the one feature drift monitor",
    partitions=1,
)
DEAD_LETTERS = TopicSpec("dead-letters", "original key", "rejected events with reason and bytes")

ALL_TOPICS = (
    FIXTURES,
    LEAGUE_INPUTS,
    FEATURES,
    RESULTS,
    PREDICTIONS,
    EVALUATIONS,
    MODEL_FEED,
    LEARN_FEED,
    SNAPSHOTS,
    ALERTS,
    DRIFT_INPUTS,
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
    def learn_feed(self) -> str:
        return self.name(LEARN_FEED)

    @property
    def snapshots(self) -> str:
        return self.name(SNAPSHOTS)

    @property
    def alerts(self) -> str:
        return self.name(ALERTS)

    @property
    def drift_inputs(self) -> str:
        return self.name(DRIFT_INPUTS)

    @property
    def dead_letters(self) -> str:
        return self.name(DEAD_LETTERS)


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic (e.g. more replicas than brokers), with its reason."""


class TopicMismatchError(RuntimeError):
    """An existing topic the service cannot run on as configured (wrong partitions or policy)."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One way an existing topic differs from what the settings ask for."""

    topic: str
    what: str
    actual: str
    wanted: str
    refuses: bool  # True: the worker refuses to start; False: a warning

    def __str__(self) -> str:
        return f"{self.topic}: {self.what} is {self.actual}, the settings want {self.wanted}"


@dataclass(frozen=True, slots=True)
class Existing:
    """What the cluster says about one topic."""

    partitions: int
    replicas: int
    configs: dict[str, str]


def differences(
    settings: Settings,
    name: str,
    existing: Existing,
    *,
    partitions: int | None,
    compacted: bool | None,
) -> list[Difference]:
    """How an existing topic differs from the settings. Partitions and cleanup policy refuse a
    start (``None``: not checked, for Faust's changelogs): a co-partitioned join or a compacted
    snapshot log would silently go wrong. Fewer replicas or a lower ``min.insync.replicas`` than
    asked only warn: the topic still works (less safely) and is fixed by a partition
    reassignment or a config change, without stopping anything."""
    found: list[Difference] = []
    if partitions is not None and existing.partitions != partitions:
        found.append(
            Difference(name, "partitions", str(existing.partitions), str(partitions), True)
        )
    policy = existing.configs.get("cleanup.policy", "delete")
    wanted_policy = "compact" if compacted else "delete"
    if compacted is not None and set(policy.split(",")) != {wanted_policy}:
        found.append(Difference(name, "cleanup.policy", policy, wanted_policy, True))
    if existing.replicas < settings.replication_factor:
        found.append(
            Difference(
                name,
                "replication factor",
                str(existing.replicas),
                f"{settings.replication_factor} (TIPSTREAM_REPLICATION_FACTOR)",
                False,
            )
        )
    isr = existing.configs.get("min.insync.replicas")
    if isr is not None and int(isr) < settings.min_insync_replicas:
        found.append(
            Difference(
                name,
                "min.insync.replicas",
                isr,
                f"{settings.min_insync_replicas} (TIPSTREAM_MIN_INSYNC_REPLICAS)",
                False,
            )
        )
    return found


async def describe_existing(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, Existing]:
    """Partition count, replication factor and configs of existing topics."""
    if not names:
        return {}
    metadata = await admin.describe_topics(names)
    shape = {
        t["topic"]: (len(t["partitions"]), min(len(p["replicas"]) for p in t["partitions"]))
        for t in metadata
        if t["partitions"]
    }
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = resource["config_entries"]
            configs[resource["resource_name"]] = {
                entry.get("config_names", entry.get("config_name")): entry["config_value"]
                for entry in entries
            }
    return {
        name: Existing(shape[name][0], shape[name][1], configs.get(name, {}))
        for name in names
        if name in shape
    }


LISTED_WITHIN_S = 10.0
"""How long a topic that "already exists" may take to appear in the broker's listing."""


async def _listed(admin: AIOKafkaAdminClient, names: set[str]) -> set[str]:
    """The broker's topic listing once it holds ``names`` (or after ``LISTED_WITHIN_S``)."""
    deadline = asyncio.get_running_loop().time() + LISTED_WITHIN_S
    while True:
        existing = set(await admin.list_topics())
        if names <= existing or asyncio.get_running_loop().time() > deadline:
            return existing
        await asyncio.sleep(0.2)


async def _check_existing(
    admin: AIOKafkaAdminClient, settings: Settings, topics: Topics, existing: set[str]
) -> None:
    """Warn of, or refuse (:class:`TopicMismatchError`), existing topics and Faust changelogs
    that differ from the settings."""
    ours = {topics.name(spec): spec for spec in ALL_TOPICS if topics.name(spec) in existing}
    changelogs = sorted(
        t for t in existing if t.startswith(f"{settings.group_id}-") and t.endswith("-changelog")
    )
    described = await describe_existing(admin, [*ours, *changelogs])
    found: list[Difference] = []
    for name, state in described.items():
        spec = ours.get(name)
        found += differences(
            settings,
            name,
            state,
            partitions=topics.partitions_of(spec) if spec else None,
            compacted=spec.compacted if spec else None,
        )
    for difference in found:
        if not difference.refuses:
            log.warning("topic differs from the settings", difference=str(difference))
    refused = [str(d) for d in found if d.refuses]
    if refused:
        raise TopicMismatchError(
            "existing topics differ from the settings: "
            + "; ".join(refused)
            + " (recreate them, or use another TIPSTREAM_TOPIC_PREFIX)"
        )


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic that does not exist yet, check the others against the settings;
    return the names created.

    Topics are created explicitly rather than left to broker auto-creation so partition
    counts, replication and ``min.insync.replicas`` are right from the first event
    (co-partitioned joins depend on the first). An existing topic that differs is named with
    both values: a warning, or :class:`TopicMismatchError` for what the service cannot run on.
    Faust's changelogs (``<app id>-...-changelog``) are checked too; Faust creates them.
    """
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _check_existing(admin, settings, topics, existing)
        wanted = [
            NewTopic(
                name=topics.name(spec),
                num_partitions=topics.partitions_of(spec),
                replication_factor=settings.replication_factor,
                topic_configs=topic_configs(settings, compacted=spec.compacted),
            )
            for spec in ALL_TOPICS
            if topics.name(spec) not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
        already: set[str] = set()
        failed: list[str] = []
        for topic, code, *detail in response.topic_errors:
            if code == TopicAlreadyExistsError.errno:
                already.add(topic)
            elif code:
                message = f": {detail[0]}" if detail and detail[0] else ""
                failed.append(f"{topic}: {for_code(code).__name__}{message}")
        if failed:
            raise TopicCreationError("could not create topics: " + "; ".join(failed))
        if already:
            # Another worker created them between our list and create (that is the goal), or
            # the broker's listing had not caught up with topics made moments ago: wait until
            # they are listed, then check them like any existing topic.
            await _check_existing(admin, settings, topics, await _listed(admin, already))
            log.info("topics already created by another process", topics=sorted(already))
        created = [topic.name for topic in wanted if topic.name not in already]
        if not created:
            return []
        log.info(
            "topics created",
            topics=created,
            replication_factor=settings.replication_factor,
            min_insync_replicas=settings.min_insync_replicas,
        )
        return created
    finally:
        await admin.close()
