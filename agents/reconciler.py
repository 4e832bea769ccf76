"""Reconciler agent: joins features, predictions and results of each match, in any order.

State: one ledger per match id in a changelog-backed Faust table (the three input topics are
co-partitioned by match id, so a match's ledger lives in the partition that owns its events).
Effects per batch, in this order: the evaluation log in PostgreSQL (one transaction of
upserts), the evaluations and model-feed topics (awaited), the ledgers the batch changed to the
table, then the offsets. A crash anywhere replays the batch, and deterministic ids make the
replay change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import msgspec

from agents import reconciler_store
from agents.loop import run_batches
from agents.reconciler_rules import (
    NOTHING,
    MatchLedger,
    Reconciled,
    apply_features,
    apply_prediction,
    apply_result,
    feed,
)
from agents.reconciler_store import LogBatch
from agents.runtime import AgentRuntime, Output
from schemas.events import DeadLetter, MatchFeatures, MatchResult, ModelFeedItem, Prediction, Record

AGENT = "reconciler"
_LEDGER_DECODER = msgspec.json.Decoder(MatchLedger)


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
    )
    inputs = app.topic(
        topics.features,
        topics.predictions,
        topics.results,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(inputs, name=AGENT)
    async def reconciler(stream: Any) -> None:
        await run_batches(
            stream, runtime, AGENT, lambda events: reconcile_batch(runtime, ledgers, events)
        )


async def reconcile_batch(runtime: AgentRuntime, ledgers: Any, events: Sequence[Any]) -> None:
    """Apply a batch of events to the ledgers; persist, publish, then store the ledgers."""
    topics = runtime.topics
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
    for event in events:
        decoded = runtime.decode(event.message, schema[event.message.topic], AGENT)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
            continue
        assert isinstance(decoded, MatchFeatures | Prediction | MatchResult)
        match_id = decoded.match_id
        ledger = touched.get(match_id)
        if ledger is None:
            stored = ledgers.get(match_id.encode())
            ledger = _LEDGER_DECODER.decode(stored) if stored is not None else MatchLedger()
            touched[match_id] = ledger
        reconciled = _apply(ledger, decoded, log_batch, now)
        if not reconciled.changed:
            continue  # a duplicate: no evaluation, nothing fed, the ledger as it was
        changed.add(match_id)
        for superseded in reconciled.superseded:
            log_batch.supersede(superseded.old_evaluation_id, superseded.new_evaluation_id)
        for evaluation in reconciled.evaluations:
            log_batch.add_evaluation(evaluation)
        feed_items.extend(feed(ledger, reconciled.evaluations))

    evaluations_topic, feed_topic = topics.evaluations, topics.model_feed
    outputs: list[Output] = [
        (evaluations_topic, e.match_id, e) for e in log_batch.evaluations.values()
    ]
    outputs += [(feed_topic, item.evaluation.model_id, item) for item in feed_items]

    if log_batch:

        async def write() -> None:
            async with runtime.connection() as conn:
                await reconciler_store.write(conn, log_batch)

        await runtime.retry_transient("evaluation log", write)
    await runtime.publish_all(outputs)
    await runtime.publish_dead_letters(letters)
    for match_id in changed:
        ledgers[match_id.encode()] = encode_ledger(touched[match_id])
    runtime.counters["evaluated"] += len(log_batch.evaluations)


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


def encode_ledger(ledger: MatchLedger) -> bytes:
    """Table value of a ledger."""
    return msgspec.json.encode(ledger)
