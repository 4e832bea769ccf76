"""Figures from what arrived: throughput from broker timestamps, latency percentiles."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tests.bench.kafka_io import Arrived


@dataclass(frozen=True)
class Throughput:
    """Events processed per second, from the output messages' broker timestamps."""

    events: int  # events whose every output arrived
    outputs: int  # output messages
    seconds: float  # first to last completion
    eps: float


def throughput(arrived: Arrived, outputs_per_event: int) -> Throughput:
    """Rate at which events were completed, over the span of their completions.

    An event is complete when its last output was produced (all of a match's predictions, or
    its one passthrough copy). Timestamps are set by the producing client when it sends, so
    neither start-up before the first completion nor the time to read the topic afterwards
    counts. Timestamps have millisecond resolution: a run lasts seconds, so that is < 0.1%.
    """
    done: dict[bytes, list[int]] = defaultdict(list)
    for key, stamp in zip(arrived.keys, arrived.timestamps_ms, strict=True):
        done[key].append(stamp)
    completions = sorted(max(s) for s in done.values() if len(s) >= outputs_per_event)
    if len(completions) < 2:
        return Throughput(len(completions), len(arrived.keys), 0.0, 0.0)
    span_s = max(completions[-1] - completions[0], 1) / 1000
    # n completions span n - 1 intervals.
    return Throughput(len(completions), len(arrived.keys), span_s, (len(completions) - 1) / span_s)


@dataclass(frozen=True)
class Latency:
    """Producer-to-consumer latency percentiles of one offered load, in milliseconds."""

    offered_eps: int
    seconds: float
    sent: int
    received: int
    achieved_eps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..100) of sorted values; NaN for none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency(offered_eps: int, seconds: float, sent: int, samples_s: Sequence[float]) -> Latency:
    """Percentiles of the latencies (seconds in, milliseconds out)."""
    ordered = sorted(v * 1000 for v in samples_s)
    return Latency(
        offered_eps=offered_eps,
        seconds=seconds,
        sent=sent,
        received=len(ordered),
        achieved_eps=sent / seconds if seconds else 0.0,
        p50_ms=percentile(ordered, 50),
        p95_ms=percentile(ordered, 95),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1] if ordered else math.nan,
    )
