"""Ticks at the agents: forwarded (router, features agent) or skipped (every other reader),
each counted in ``ticks:<agent>`` (``tipstream_ticks_total{agent=...}``), never dead-lettered:
a tick carries no data to repair, and a malformed one (a producer bug) is counted as
``ticks_refused:<agent>`` and logged instead. The header rules are in :mod:`agents.tick_rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from agents.runtime import AgentRuntime
from agents.tick_rules import decode_tick, split_ticks
from schemas.events import Tick

log = structlog.get_logger(__name__)


def latest_ticks(
    runtime: AgentRuntime, agent: str, ticks: Sequence[Any]
) -> list[tuple[str, int, Tick]]:
    """The latest valid tick of each topic, partition, source and backfill among a batch's
    ticks, with its topic and partition (a tick only raises a mark: the earlier ones of a
    batch say less); each tick counted as ``ticks:<agent>``."""
    latest: dict[tuple[str, int, str | None, str], Tick] = {}
    for event in ticks:
        runtime.counters[f"ticks:{agent}"] += 1
        tick = decode_tick(event.message)
        if not isinstance(tick, Tick):
            runtime.counters[f"ticks_refused:{agent}"] += 1
            log.warning(
                "tick refused",
                agent=agent,
                topic=event.message.topic,
                partition=event.message.partition,
                offset=event.message.offset,
                field=tick.field,
                rule=tick.rule,
            )
            continue
        where = (event.message.topic, event.message.partition, tick.source, tick.backfill)
        held = latest.get(where)
        if held is None or tick.event_time >= held.event_time:
            latest[where] = tick
    return [(topic, partition, tick) for (topic, partition, _, _), tick in latest.items()]


def skip_ticks(runtime: AgentRuntime, agent: str, events: Sequence[Any]) -> Sequence[Any]:
    """A batch without its ticks, each counted as ``ticks:<agent>``: for the agents that only
    read past them (scorer, reconciler, drift router)."""
    facts, ticks = split_ticks(events)
    if ticks:
        runtime.counters[f"ticks:{agent}"] += len(ticks)
    return facts if ticks else events
