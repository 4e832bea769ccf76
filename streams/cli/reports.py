"""The reconciliation report behind ``tipstream reconcile``, like the earlier ``reconcile_logs``:
what is waiting, what is orphaned, and where the topics and the database disagree."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from streams.db import connect
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics

_ID = msgspec.json.Decoder(dict[str, Any])
SAMPLE = 10


@dataclass
class ReconciliationReport:
    """Counts and samples; ``render`` prints it for a terminal."""

    predictions: int
    results: int
    evaluations: int
    superseded: int
    waiting_predictions: int
    waiting_oldest_hours: float | None
    waiting_sample: list[str]
    orphan_results: int
    orphan_sample: list[str]
    topic_predictions: int | None = None
    topic_evaluations: int | None = None
    missing_in_db: dict[str, list[str]] = field(default_factory=dict)
    missing_in_topics: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def consistent(self) -> bool:
        return not any(self.missing_in_db.values()) and not any(self.missing_in_topics.values())

    def render(self) -> str:
        lines = [
            f"predictions in database : {self.predictions}",
            f"results in database     : {self.results}",
            f"evaluations (current)   : {self.evaluations - self.superseded}"
            f" (+{self.superseded} superseded)",
            f"waiting for a result    : {self.waiting_predictions}"
            + (
                f" (oldest kickoff {self.waiting_oldest_hours:.1f} h ago)"
                if self.waiting_oldest_hours is not None
                else ""
            ),
        ]
        lines += [f"    {m}" for m in self.waiting_sample]
        lines.append(f"results with no prediction: {self.orphan_results}")
        lines += [f"    {m}" for m in self.orphan_sample]
        if self.topic_predictions is not None:
            lines.append(
                f"distinct ids on topics   : predictions={self.topic_predictions} "
                f"evaluations={self.topic_evaluations}"
            )
            for kind, ids in self.missing_in_db.items():
                lines.append(f"on the {kind} topic, not in the database: {len(ids)}")
                lines += [f"    {i}" for i in ids[:SAMPLE]]
            for kind, ids in self.missing_in_topics.items():
                lines.append(f"in the database, not on the {kind} topic: {len(ids)}")
                lines += [f"    {i}" for i in ids[:SAMPLE]]
            lines.append(
                "topics and database agree" if self.consistent else "topics and database DISAGREE"
            )
        return "\n".join(lines)


async def reconciliation_report(
    settings: Settings, *, now: datetime, read_topics: bool = True
) -> ReconciliationReport:
    """Build the report from the database and, unless told not to, the topics."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            counts = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM predictions) AS predictions,
                          (SELECT count(*) FROM results) AS results,
                          (SELECT count(*) FROM evaluations) AS evaluations,
                          (SELECT count(*) FROM evaluations
                           WHERE superseded_by IS NOT NULL) AS superseded"""
            )
            waiting = await conn.fetch(
                """SELECT p.match_id, min(p.kickoff) AS kickoff, count(*) AS models
                   FROM predictions p LEFT JOIN results r USING (match_id)
                   WHERE r.match_id IS NULL GROUP BY p.match_id ORDER BY kickoff"""
            )
            orphans = await conn.fetch(
                """SELECT r.match_id FROM results r
                   WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.match_id = r.match_id)
                   ORDER BY r.kickoff"""
            )
            db_predictions = {
                r["prediction_id"]
                for r in await conn.fetch("SELECT prediction_id FROM predictions")
            }
            db_evaluations = {
                r["evaluation_id"]
                for r in await conn.fetch("SELECT evaluation_id FROM evaluations")
            }
    finally:
        await pool.close()
    report = ReconciliationReport(
        predictions=counts["predictions"],
        results=counts["results"],
        evaluations=counts["evaluations"],
        superseded=counts["superseded"],
        waiting_predictions=len(waiting),
        waiting_oldest_hours=(
            (now - waiting[0]["kickoff"]).total_seconds() / 3600 if waiting else None
        ),
        waiting_sample=[
            f"{w['match_id']} kickoff {w['kickoff']:%Y-%m-%d %H:%M} ({w['models']} models)"
            for w in waiting[:SAMPLE]
        ],
        orphan_results=len(orphans),
        orphan_sample=[o["match_id"] for o in orphans[:SAMPLE]],
    )
    if read_topics:
        topics = Topics.from_settings(settings)
        topic_predictions = await _ids_on(settings, topics.predictions, "prediction_id")
        topic_evaluations = await _ids_on(settings, topics.evaluations, "evaluation_id")
        report.topic_predictions = len(topic_predictions)
        report.topic_evaluations = len(topic_evaluations)
        # The reconciler keeps the first prediction per (match, model): a re-scored match's
        # later prediction is on the topic but deliberately not in the log.
        report.missing_in_db = {"evaluations": sorted(topic_evaluations - db_evaluations)}
        report.missing_in_topics = {
            "predictions": sorted(db_predictions - topic_predictions),
            "evaluations": sorted(db_evaluations - topic_evaluations),
        }
    return report


async def _ids_on(settings: Settings, topic: str, id_field: str) -> set[str]:
    """Every distinct id on a topic, read from the beginning to the current end."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        partitions = list(consumer.assignment())
        end = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    try:
                        ids.add(str(_ID.decode(record.value)[id_field]))
                    except (msgspec.DecodeError, KeyError, TypeError):
                        continue
    finally:
        await consumer.stop()
    return ids
