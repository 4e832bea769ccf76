"""Reconciler agent: joins features, predictions and results of each match, in any order.

State: one ledger per match id in a changelog-backed Faust table (the three input topics are
co-partitioned by match id, so a match's ledger lives in the partition that owns its events),
each value in the compact encoding of :mod:`agents.reconciler_codec` (earlier releases' JSON
values still read).
Effects per batch, in this order: the evaluations, model-feed and learn-feed topics
(awaited), the learn feed's ticks, the evaluation log in PostgreSQL (one transaction of
upserts), the ledgers the batch changed and the backfill marks to the table, then the offsets.
A crash anywhere replays the batch, and deterministic ids make the replay change nothing but
duplicates on the topics (consumers deduplicate by id). The topics go first because a ledger
missing from the table is rebuilt from the log, and what a rebuilt ledger holds is never
published again: with the log first, a crash between the two lost the batch's evaluations for
the topics, the learners and the monitors whenever the batch had created the ledger.

In a backfill (features issued by ``tipstream replay --backfill``) the reconciler also sends
each result to every model on the learn feed as soon as the match's features and result are
both in its ledger, and forwards how far it has sent them (:mod:`agents.learn_feed_rules`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
import structlog

from agents import probes, reconciler_store, registry
from agents.backfill_rules import is_marks_key, marks_key
from agents.dead_letters import dead_letter
from agents.learn_feed_rules import (
    SOURCE_PREFIX,
    LearnMarks,
    decode_marks,
    encode_marks,
    features_sources,
    learn_items,
    pairing,
)
from agents.loop import run_batches
from agents.reconciler_codec import decode_ledger, encode_ledger
from agents.reconciler_rules import (
    NOTHING,
    MatchLedger,
    Reconciled,
    Retention,
    apply_features,
    apply_prediction,
    apply_result,
    counted_prediction,
    distrust,
    feed,
    is_reconciled,
    made_after_kickoff,
    would_count,
)
from agents.reconciler_store import LogBatch
from agents.runtime import AgentRuntime, Output
from agents.tick_rules import split_ticks
from agents.ticks import latest_ticks
from schemas.events import (
    DeadLetter,
    LearnItem,
    MatchFeatures,
    MatchResult,
    ModelFeedItem,
    Prediction,
    Record,
    Tick,
    ValidationIssue,
)

log = structlog.get_logger(__name__)
AGENT = "reconciler"


def register(app: faust.App, runtime: AgentRuntime) -> None:
    """Declare the reconciler agent and its ledger table on ``app``."""
    topics = runtime.topics
    ledgers = app.Table(
        "ledgers",
        partitions=runtime.settings.partitions,
        # Bytes in, bytes out: without these types Faust writes the changelog raw but reads it
        # back as JSON, and recovery after a restart silently loses every ledger.
        key_type=bytes,
        value_type=bytes,
        # Batches mutate many keys: let the producer route each changelog record by its key,
        # which lands it in the same partition number as the match's input events.
        use_partitioner=True,
        # Its replicas are the app's topic_replication_factor; a write needs this many in sync.
        # Segments roll after ledger_segment_seconds, so the compaction of retired ledgers
        # (tombstones) reaches what a restarted worker reads (docs/DEPLOYMENT.md).
        extra_topic_configs={
            "min.insync.replicas": str(runtime.settings.min_insync_replicas),
            "segment.ms": str(runtime.settings.ledger_segment_seconds * 1000),
        },
    )
    inputs = app.topic(
        topics.features,
        topics.predictions,
        topics.results,
        key_serializer="raw",
        value_serializer="raw",
    )

    versions = TrustedVersions()
    retention = Retention(runtime.settings.ledger_retention_days)
    candidates = LearnerCandidates()

    @app.on_partitions_revoked.connect
    def forget_retention(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A rebalance may hand this worker ledgers another one wrote: scan again."""
        retention.forget()

    @app.agent(inputs, name=AGENT)
    async def reconciler(stream: Any) -> None:
        await run_batches(
            stream,
            runtime,
            AGENT,
            lambda events: reconcile_batch(
                runtime, ledgers, events, versions, retention, candidates
            ),
        )


class TrustedVersions:
    """Model versions the reconciler found in the registry: versions are never changed once
    stored, so each is looked up once (bounded: a full cache starts over)."""

    MAX = 100_000

    def __init__(self) -> None:
        self.known: set[tuple[str, int]] = set()

    def missing(self, pairs: set[tuple[str, int]]) -> set[tuple[str, int]]:
        return pairs - self.known

    def add(self, pairs: set[tuple[str, int]]) -> None:
        if len(self.known) + len(pairs) > self.MAX:
            self.known.clear()
        self.known |= pairs


class LearnerCandidates:
    """The models a backfill's learn items go to (``registry.learner_candidates``), read at
    most every :attr:`TTL` seconds: a model registered during a backfill gets its items from
    then on."""

    TTL = 30.0

    def __init__(self) -> None:
        self.model_ids: list[str] = []
        self.read_at: float | None = None

    async def get(self, runtime: AgentRuntime) -> list[str]:
        now = time.monotonic()
        if self.read_at is None or now - self.read_at >= self.TTL:

            async def read() -> list[str]:
                async with runtime.connection() as conn:
                    return await registry.learner_candidates(conn)

            self.model_ids = await runtime.retry_transient("learner candidates", read)
            self.read_at = now
        return self.model_ids


async def reconcile_batch(
    runtime: AgentRuntime,
    ledgers: Any,
    events: Sequence[Any],
    versions: TrustedVersions | None = None,
    retention: Retention | None = None,
    candidates: LearnerCandidates | None = None,
) -> None:
    """Apply a batch of events to the ledgers; persist, publish, then store the ledgers (and
    retire the reconciled ones out of the retention window)."""
    topics = runtime.topics
    events, ticks = split_ticks(events)
    if retention is None:
        retention = Retention(runtime.settings.ledger_retention_days)
    now = datetime.now(UTC)
    touched: dict[str, MatchLedger] = {}
    # Ledgers the batch changed: only these are written back to the table (and its changelog);
    # a re-delivered event leaves its ledger as it was.
    changed: set[str] = set()
    log_batch = LogBatch()
    feed_items: list[ModelFeedItem] = []
    letters: list[DeadLetter] = []
    schema: dict[str, type[Record]] = {
        topics.features: MatchFeatures,
        topics.predictions: Prediction,
        topics.results: MatchResult,
    }
    decoded: list[tuple[Any, MatchFeatures | Prediction | MatchResult]] = []
    partition_of: dict[str, int] = {}  # co-partitioned: all of a match's events share one
    missing: list[str] = []  # matches without a ledger in the table
    # Each ledger's backfill pairing before the batch: learn items are owed when it changes.
    paired: dict[str, tuple[int, int] | None] = {}
    for event in events:
        partition = event.message.partition
        if retention.needs_scan(partition):
            _scan(runtime, ledgers, retention, partition)
        record = runtime.decode(event.message, schema[event.message.topic], AGENT)
        if isinstance(record, DeadLetter):
            letters.append(record)
            continue
        assert isinstance(record, MatchFeatures | Prediction | MatchResult)
        decoded.append((event, record))
        if isinstance(record, MatchResult):
            retention.observe(partition, record.kickoff)
        if record.match_id not in touched:
            partition_of[record.match_id] = partition
            stored = ledgers.get(record.match_id.encode())
            if stored is None:
                missing.append(record.match_id)
            ledger = decode_ledger(stored) if stored is not None else MatchLedger()
            touched[record.match_id] = ledger
            paired[record.match_id] = pairing(ledger)
    if missing:
        rebuilt = await _rebuild(runtime, missing)
        touched.update(rebuilt)
        runtime.counters["ledgers_rebuilt"] += len(rebuilt)
        # What the log holds was published first: a rebuilt ledger's items were sent.
        paired.update({m: pairing(lg) for m, lg in rebuilt.items()})
    trust = await _trust_facts(runtime, versions or TrustedVersions(), decoded, touched)
    for event, record in decoded:
        match_id = record.match_id
        ledger = touched[match_id]
        if isinstance(record, Prediction):
            if trust.stale(record, ledger):
                runtime.counters["predictions_stale"] += 1
                continue
            issue = trust.issue(record, ledger)
            if issue is not None:
                letters.append(dead_letter(event.message, issue, AGENT))
                continue
        reconciled = _apply(ledger, record, log_batch, now)
        if not reconciled.changed:
            continue  # a duplicate: no evaluation, nothing fed, the ledger as it was
        changed.add(match_id)
        for superseded in reconciled.superseded:
            log_batch.supersede(superseded.old_evaluation_id, superseded.new_evaluation_id)
        for evaluation in reconciled.evaluations:
            log_batch.add_evaluation(evaluation)
        if not reconciled.revised:
            feed_items.extend(feed(ledger, reconciled.evaluations))

    learn = await _learn_items(runtime, touched, paired, candidates or LearnerCandidates())
    evaluations_topic, feed_topic = topics.evaluations, topics.model_feed
    outputs: list[Output] = [
        (evaluations_topic, e.match_id, e) for e in log_batch.evaluations.values()
    ]
    outputs += [(feed_topic, item.evaluation.model_id, item) for item in feed_items]
    outputs += [(topics.learn_feed, item.model_id, item) for item in learn]

    # The topics before the log: a ledger missing from the table is rebuilt from the log, and a
    # rebuilt ledger re-publishes nothing, so whatever the log holds must be on the topics
    # already (a crash between the two then re-publishes, with the same ids, instead of losing
    # the batch's evaluations for the learners and monitors).
    await runtime.publish_all(outputs)
    marks = PartitionMarks(runtime, ledgers)
    forwarded = marks.forward(latest_ticks(runtime, AGENT, ticks))
    await runtime.publish_ticks(topics.learn_feed, forwarded)
    await runtime.publish_dead_letters(letters)
    if log_batch:
        probes.reach("reconciler.published")  # on the topics, not yet in the log

        async def write() -> None:
            async with runtime.connection() as conn:
                await reconciler_store.write(conn, log_batch)

        await runtime.retry_transient("evaluation log", write)
    retired = 0
    kept_out = set(missing)  # rebuilt from the evaluation log: not in the table
    for match_id, ledger in touched.items():
        partition, key = partition_of[match_id], match_id.encode()
        if is_reconciled(ledger):
            assert ledger.result is not None
            if retention.expired(partition, ledger.result.kickoff):
                if match_id not in kept_out:
                    del ledgers[key]
                    retired += 1
                continue
            retention.track(partition, match_id, ledger.result.kickoff)
        if match_id in changed:
            ledgers[key] = encode_ledger(ledger)
    for partition in set(partition_of.values()):
        retired += _retire_due(ledgers, retention, partition, skip=touched)
    marks.store()
    runtime.counters["evaluated"] += len(log_batch.evaluations)
    runtime.counters["ledgers_retired"] += retired
    runtime.counters["learn_items"] += len(learn)


async def _learn_items(
    runtime: AgentRuntime,
    ledgers: dict[str, MatchLedger],
    paired: dict[str, tuple[int, int] | None],
    candidates: LearnerCandidates,
) -> list[LearnItem]:
    """The learn items the batch owes: for each backfill ledger whose pairing of features and
    result is new, one per model the registry lists (read only when one is owed)."""
    owed = [
        (match_id, ledger)
        for match_id, ledger in ledgers.items()
        if (score := pairing(ledger)) is not None and score != paired.get(match_id)
    ]
    if not owed:
        return []
    model_ids = await candidates.get(runtime)
    return [
        item
        for match_id, ledger in owed
        for item in learn_items(ledger, model_ids, before=paired.get(match_id))
    ]


class PartitionMarks:
    """The batch's view of its partitions' :class:`LearnMarks`, read from the ledgers table
    on first use and stored back (before the ack) when a tick raised one."""

    def __init__(self, runtime: AgentRuntime, ledgers: Any) -> None:
        self._runtime, self._ledgers = runtime, ledgers
        self._topics = runtime.topics
        self._sources = features_sources(runtime.settings.partitions)
        self._marks: dict[int, LearnMarks] = {}
        self._raised: set[int] = set()

    def _of(self, partition: int) -> LearnMarks:
        marks = self._marks.get(partition)
        if marks is None:
            raw = self._ledgers.get(_marks_key(self._runtime, partition))
            marks = self._marks[partition] = decode_marks(raw)
        return marks

    def forward(self, ticked: list[tuple[str, int, Tick]]) -> list[Tick]:
        """Raise the marks with the batch's latest ticks; the ticks to forward to the learn
        feed: per ticked partition and backfill, its mark once known, as ``reconciler:<p>``.
        A tick the reconciler cannot place (on ``predictions``, a results tick with a source,
        a features tick of an unknown source) is counted as refused and logged."""
        touched: set[tuple[int, str]] = set()
        for topic, partition, tick in ticked:
            marks = self._of(partition)
            if topic == self._topics.results and tick.source is None:
                raised = marks.observe_results(tick.backfill, tick.event_time)
            elif topic == self._topics.features and tick.source in self._sources:
                assert tick.source is not None
                raised = marks.observe_features(
                    tick.backfill, tick.source, tick.event_time, self._sources
                )
            else:
                self._runtime.counters[f"ticks_refused:{AGENT}"] += 1
                log.warning("tick refused", agent=AGENT, topic=topic, source=tick.source)
                continue
            if raised:
                self._raised.add(partition)
            touched.add((partition, tick.backfill))
        out: list[Tick] = []
        for partition, backfill in sorted(touched):
            through = self._of(partition).through(backfill, self._sources)
            if through is not None:
                source = f"{SOURCE_PREFIX}{partition}"
                out.append(Tick(event_time=through, backfill=backfill, source=source))
        return out

    def store(self) -> None:
        for partition in self._raised:
            self._ledgers[_marks_key(self._runtime, partition)] = encode_marks(
                self._marks[partition]
            )


_MARKS_KEYS: dict[tuple[int, int], bytes] = {}


def _marks_key(runtime: AgentRuntime, partition: int) -> bytes:
    """The ledgers-table key of a partition's marks, found once per partition count."""
    where = (runtime.settings.partitions, partition)
    key = _MARKS_KEYS.get(where)
    if key is None:
        key = _MARKS_KEYS[where] = marks_key(partition, runtime.partition_for)
    return key


async def _rebuild(runtime: AgentRuntime, match_ids: list[str]) -> dict[str, MatchLedger]:
    """Ledgers of matches absent from the table that the evaluation log knows (retired, or
    lost with the table): one round trip for the batch; a new match has none."""

    async def read() -> dict[str, MatchLedger]:
        async with runtime.connection() as conn:
            return await reconciler_store.stored_ledgers(conn, match_ids)

    return await runtime.retry_transient("ledger rebuild", read)


def _scan(runtime: AgentRuntime, ledgers: Any, retention: Retention, partition: int) -> None:
    """Track the reconciled ledgers of ``partition`` already in the table (recovered from the
    changelog after a restart or a rebalance) and start its clock from their newest result, so
    they are retired without waiting for an event of their match."""
    for key in list(ledgers.keys()):
        if is_marks_key(key) or runtime.partition_for(key) != partition:
            continue
        stored = ledgers.get(key)
        if stored is None:
            continue
        ledger = decode_ledger(stored)
        if ledger.result is not None:
            retention.observe(partition, ledger.result.kickoff)
            if is_reconciled(ledger):
                retention.track(partition, key.decode(), ledger.result.kickoff)


def _retire_due(
    ledgers: Any, retention: Retention, partition: int, *, skip: dict[str, MatchLedger]
) -> int:
    """Delete (a tombstone in the compacted changelog) the tracked ledgers of ``partition``
    now out of the window and still reconciled; how many."""
    retired = 0
    for match_id in retention.due(partition):
        if match_id in skip:
            continue  # decided with the batch's own ledgers
        key = match_id.encode()
        stored = ledgers.get(key)
        if stored is None:
            continue
        ledger = decode_ledger(stored)
        if is_reconciled(ledger):
            del ledgers[key]
            retired += 1
    return retired


@dataclass
class TrustFacts:
    """What the registry and the learner say of a batch's predictions."""

    registered: set[tuple[str, int]]
    knew: set[tuple[str, str, int]]

    def stale(self, prediction: Prediction, ledger: MatchLedger) -> bool:
        """A prediction from re-issued features made by a version that had learned the match's
        result while the model's earlier prediction counts already: the features' re-issue
        lost a race with the result in a fast backfill. Not a forgery: ignored (counted), the
        earlier prediction keeps counting."""
        return (
            counted_prediction(ledger, prediction.model_id) is not None
            and (prediction.model_id, prediction.match_id, prediction.model_version) in self.knew
        )

    def issue(self, prediction: Prediction, ledger: MatchLedger) -> ValidationIssue | None:
        """Why ``prediction`` must not be evaluated (``distrust``), or None. A prediction that
        would not count (made after kickoff, or from a revision its model predicted already:
        a re-scored match in a second replay) is left to the ledger, which ignores it: nothing
        to dead-letter."""
        if not would_count(ledger, prediction):
            return None
        return distrust(
            prediction,
            ledger,
            registered=(prediction.model_id, prediction.model_version) in self.registered,
            knew_result=(prediction.model_id, prediction.match_id, prediction.model_version)
            in self.knew,
        )


async def _trust_facts(
    runtime: AgentRuntime,
    versions: TrustedVersions,
    decoded: Sequence[tuple[Any, MatchFeatures | Prediction | MatchResult]],
    ledgers: dict[str, MatchLedger],
) -> TrustFacts:
    """One database round trip (at most) for the batch's predictions that could count: their
    model's version in the registry (once per version), and, for those made after kickoff,
    whether the version had learned the match's result."""
    candidates = [
        record
        for _, record in decoded
        if isinstance(record, Prediction) and would_count(ledgers[record.match_id], record)
    ]
    pairs = {(p.model_id, p.model_version) for p in candidates}
    unknown = versions.missing(pairs)
    registered = pairs - unknown
    late = [(p.model_id, p.match_id, p.model_version) for p in candidates if made_after_kickoff(p)]
    knew: set[tuple[str, str, int]] = set()
    if unknown or late:

        async def look_up() -> tuple[set[tuple[str, int]], set[tuple[str, str, int]]]:
            async with runtime.connection() as conn:
                found = await reconciler_store.registered_versions(conn, sorted(unknown))
                return found, await reconciler_store.knew_results(conn, late) if late else set()

        found, knew = await runtime.retry_transient("prediction trust", look_up)
        versions.add(found)
        registered |= found
    return TrustFacts(registered, knew)


def _apply(
    ledger: MatchLedger,
    record: MatchFeatures | Prediction | MatchResult,
    batch: LogBatch,
    now: datetime,
) -> Reconciled:
    if isinstance(record, MatchFeatures):
        if not apply_features(ledger, record):
            return NOTHING
        batch.features[record.match_id] = record
        return Reconciled(evaluations=[], superseded=[], changed=True)
    if isinstance(record, Prediction):
        reconciled = apply_prediction(ledger, record, now=now)
        if reconciled.changed:
            batch.predictions[record.prediction_id] = record
        return reconciled
    reconciled = apply_result(ledger, record, now=now)
    if reconciled.changed:
        batch.results[record.match_id] = record
    return reconciled
