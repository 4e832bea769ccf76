"""Stored model state that was refused: one ``fault`` alert and one dead letter per bad row.

A row whose signature does not verify (tampered, copied from another row, signed with a key
this deployment no longer accepts) or whose state does not restore is *skipped* by the scorer
and the learner (``agents.registry.StateRefused``), never raised: an exception there would stop
the app, and every worker would crash-loop on the same row. What is left is to say so, once:

- a ``fault`` alert (``alerts`` table and topic), id deterministic from the row and its bytes,
  so every worker and every reload report the same alert and the table keeps one;
- a dead letter with the refused bytes (base64), ``source_topic`` ``db:model_versions`` or
  ``db:learner_checkpoints``, partition and offset -1 (a row, not a message), the model id as
  key and the reason as rule: the evidence an operator inspects before ``tipstream models
  resign`` or a restore from backup.

Each :class:`FaultReporter` reports a given (row, bytes) once per process; the scorer re-reads
the registry every few seconds and would otherwise repeat itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from agents import alert_store
from agents.dead_letters import dead_letter
from agents.registry import RefusedState
from agents.runtime import AgentRuntime
from models.serialization import sha256_hex
from schemas.events import Alert, DeadLetter, ValidationIssue

log = structlog.get_logger(__name__)

TABLES = {"version": "model_versions", "checkpoint": "learner_checkpoints"}
DETECTOR = "state-signature"


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A database row in the shape of a consumed message, for :func:`dead_letter`."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1


def alert_id(refused: RefusedState) -> str:
    """Same row, same bytes: same alert (a re-tampered row is a new one)."""
    digest = sha256_hex(refused.state)[:16]
    return f"fault:{DETECTOR}:{refused.purpose}:{refused.model_id}:{refused.version}:{digest}"


def fault_alert(refused: RefusedState, *, agent: str, now: datetime) -> Alert:
    """The operator-facing alert for one refused row."""
    table = TABLES[refused.purpose]
    return Alert(
        alert_id=alert_id(refused),
        kind="fault",
        state="firing",
        model_id=refused.model_id,
        source=agent,
        scope=f"{table} {refused.model_id} v{refused.version}",
        detector=DETECTOR,
        message=(
            f"stored state of {refused.model_id} v{refused.version} ({table}) refused and "
            f"skipped: {refused.reason}"
        )[:2000],
        created_at=now,
    )


def fault_letter(refused: RefusedState, *, agent: str, now: datetime) -> DeadLetter:
    """The dead letter keeping the refused bytes and the reason."""
    row = StoredRow(f"db:{TABLES[refused.purpose]}", refused.model_id.encode(), refused.state)
    issue = ValidationIssue(
        field="state",
        value=f"{refused.model_id} v{refused.version} kind {refused.kind}",
        rule=f"unverifiable model state: {refused.reason}"[:500],
    )
    return dead_letter(row, issue, agent, now=now)


@dataclass
class FaultReporter:
    """Reports refused rows of one agent, each (row, bytes) once per process."""

    agent: str
    reported: set[str] = field(default_factory=set)

    async def report(
        self, runtime: AgentRuntime, conn: Any, refused: Sequence[RefusedState]
    ) -> list[Alert]:
        """Store and publish a fault alert and a dead letter for each row not reported yet."""
        fresh = [r for r in refused if alert_id(r) not in self.reported]
        if not fresh:
            return []
        now = datetime.now(UTC)
        alerts = [fault_alert(r, agent=self.agent, now=now) for r in fresh]
        await alert_store.write(conn, alerts)
        await runtime.publish_all((runtime.topics.alerts, a.model_id, a) for a in alerts)
        await runtime.publish_dead_letters(
            [fault_letter(r, agent=self.agent, now=now) for r in fresh], invalid=False
        )
        for r in fresh:
            log.error(
                "stored model state refused",
                model_id=r.model_id,
                version=r.version,
                table=TABLES[r.purpose],
                reason=r.reason,
            )
        runtime.counters["state_refused"] += len(fresh)
        self.reported.update(a.alert_id for a in alerts)
        return alerts
