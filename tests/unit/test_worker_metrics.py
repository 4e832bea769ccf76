"""The worker's Prometheus metrics (streams/worker/metrics.py), without a broker: the names
the runtime counters get, dead-letter reasons, the fixture-to-champion clock, histograms."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.dead_letters import dead_letter, processing_failure
from agents.testing import Message
from schemas.codec import InvalidEvent, decode
from schemas.events import AlertKind, MatchFeatures, ValidationIssue
from streams.settings import Settings
from streams.worker.app import create_app
from streams.worker.metrics import (
    ALERT_KINDS,
    COUNTERS,
    SKIPPED_KINDS,
    Arrivals,
    WorkerMetrics,
    counter_families,
    dead_letter_reason,
)

ROOT = Path(__file__).resolve().parents[2]
COUNTED = re.compile(r"counters\[f?\"([a-z_]+)")


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's text, parsed back by prometheus-client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for s in family.samples
    }


def test_every_counter_the_code_increments_has_a_metric_name() -> None:
    """A new ``runtime.counters[...]`` kind in agents/ or streams/ fails here until it is given
    a name, a label and a help text in COUNTERS (it would be exposed under a generic name)."""
    kinds = {
        kind
        for package in ("agents", "streams")
        for path in (ROOT / package).rglob("*.py")
        for kind in COUNTED.findall(path.read_text())
    }
    assert kinds, "no counter found in the code"
    assert sorted(kinds - set(COUNTERS) - SKIPPED_KINDS) == []


def test_runtime_counters_are_exposed_with_their_labels_and_unlabelled_ones_at_zero() -> None:
    """``kind:label`` becomes ``<name>_total{<label>=...}``; a kind never counted is 0."""
    counters = Counter({"faults:scorer": 2, "produced:t.predictions": 8, "scored": 5})
    metrics = WorkerMetrics(counters, lambda: None)
    counters["scored"] += 1  # read at scrape time, not copied when the registry is built
    got = samples(metrics)
    assert got[("tipstream_processing_faults_total", (("agent", "scorer"),))] == 2
    assert got[("tipstream_produced_messages_total", (("topic", "t.predictions"),))] == 8
    assert got[("tipstream_scored_events_total", ())] == 6
    assert got[("tipstream_evaluations_total", ())] == 0


def test_an_unnamed_counter_is_still_exposed() -> None:
    """A counter kind missing from COUNTERS is not lost: ``tipstream_<kind>_total{name=...}``."""
    families = {f.name: f for f in counter_families(Counter({"surprise:x": 3}))}
    assert [(s.labels, s.value) for s in families["tipstream_surprise"].samples] == [
        ({"name": "x"}, 3)
    ]


def _rejected(raw: bytes) -> ValidationIssue:
    try:
        decode(raw, MatchFeatures)
    except InvalidEvent as error:
        return error.issue
    raise AssertionError("the payload was accepted")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "malformed"),
        (b"{not json", "malformed"),
        (b'{"schema_version": 99}', "unsupported_schema_version"),
        (b'{"schema_version": 1, "match_id": 5}', "invalid_field"),
    ],
)
def test_dead_letter_reasons_are_a_closed_set(raw: bytes, reason: str) -> None:
    """The reason label is one of a few words, whatever values the rule's text holds."""
    letter = dead_letter(Message("t.match-features", 0, 1, b"k", raw), _rejected(raw), "scorer")
    assert dead_letter_reason(letter) == reason


def test_a_processing_failure_is_its_own_reason() -> None:
    """An event an agent raised on is counted apart from invalid input."""
    letter = processing_failure(Message("t.x", 0, 1, b"k", b"{}"), KeyError("boom"), "learner")
    assert dead_letter_reason(letter) == "processing_failed"


def test_the_fixture_clock_counts_the_first_arrival_once_per_match() -> None:
    """A re-delivered fixture does not restart the clock; a second champion prediction of the
    same match (a re-delivered feature) is not measured again; the memory is bounded."""
    arrivals = Arrivals(kept=2)
    arrivals.arrived("m1", 100.0)
    arrivals.arrived("m1", 150.0)
    assert arrivals.predicted("m1", 102.5) == 2.5
    assert arrivals.predicted("m1", 103.0) is None
    for match, at in [("a", 1.0), ("b", 2.0), ("c", 3.0)]:
        arrivals.arrived(match, at)
    assert len(arrivals) == 2
    assert arrivals.predicted("a", 10.0) is None  # the oldest went first


def test_champion_predictions_fill_the_fixture_to_champion_histogram() -> None:
    """Only matches whose fixture arrival is known are observed, once each."""
    metrics = WorkerMetrics({}, lambda: None)
    metrics.arrivals.arrived("m1", 1000.0)
    metrics.champion_acked(["m1", "m2", "m1"], 1000.2)
    got = samples(metrics)
    assert got[("tipstream_fixture_to_champion_seconds_count", ())] == 1
    assert got[("tipstream_fixture_to_champion_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("tipstream_fixture_to_champion_seconds_bucket", (("le", "0.1"),))] == 0


def test_observe_feeds_the_agents_histograms_and_refuses_unknown_names() -> None:
    """``observe("batch_events", n, agent)`` is a per-agent histogram; a typo is an error."""
    metrics = WorkerMetrics({}, lambda: None)
    for size in (1, 1, 300):
        metrics.observe("batch_events", size, "scorer")
    got = samples(metrics)
    assert got[("tipstream_batch_size_events_count", (("agent", "scorer"),))] == 3
    assert got[("tipstream_batch_size_events_sum", (("agent", "scorer"),))] == 302
    assert got[("tipstream_batch_size_events_bucket", (("agent", "scorer"), ("le", "1.0")))] == 2
    with pytest.raises(ValueError, match="unknown metric 'batch_sizes'"):
        metrics.observe("batch_sizes", 1, "scorer")


class _Block:
    """An async context manager standing in for a transaction block (no database here)."""

    async def __aenter__(self) -> str:
        return "entered"

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_transaction_time_is_observed_by_outcome() -> None:
    """A block that ends normally counts as a commit, one that raises as a rollback."""
    metrics = WorkerMetrics({}, lambda: None)
    async with metrics.timed_transaction(_Block()) as entered:
        assert entered == "entered"
    with pytest.raises(RuntimeError):
        async with metrics.timed_transaction(_Block()):
            raise RuntimeError("rolled back")
    got = samples(metrics)
    assert got[("tipstream_db_transaction_seconds_count", (("outcome", "commit"),))] == 1
    assert got[("tipstream_db_transaction_seconds_count", (("outcome", "rollback"),))] == 1


async def test_open_alerts_are_cached_between_scrapes() -> None:
    """Open alerts are read at most once per cache period; every kind is exported, at 0."""
    metrics = WorkerMetrics({}, lambda: None)
    reads = []

    async def read() -> dict[str, int]:
        reads.append(1)
        return {"decay": len(reads)}

    await metrics.refresh_open_alerts(read, now=100.0)
    await metrics.refresh_open_alerts(read, now=105.0)
    got = samples(metrics)
    assert got[("tipstream_alerts_open", (("kind", "decay"),))] == 1
    assert got[("tipstream_alerts_open", (("kind", "fault"),))] == 0
    await metrics.refresh_open_alerts(read, now=111.0)
    assert samples(metrics)[("tipstream_alerts_open", (("kind", "decay"),))] == 2


def test_two_worker_apps_in_one_process_have_their_own_registries() -> None:
    """Each app's counters are its own: no duplicate-timeseries error, no shared figures."""
    _, first = create_app(Settings(dev_mode=True))
    _, second = create_app(Settings(dev_mode=True))
    first.counters["scored"] += 3
    first.metrics.observe("batch_events", 3, "scorer")
    assert samples(first.metrics)[("tipstream_scored_events_total", ())] == 3
    assert samples(second.metrics)[("tipstream_scored_events_total", ())] == 0
    assert ("tipstream_batch_size_events_count", (("agent", "scorer"),)) not in samples(
        second.metrics
    )


def test_agents_import_no_metrics_library() -> None:
    """Agents measure through ``runtime.counters`` and ``runtime.observe``; only the worker
    (streams/) knows prometheus-client."""
    for path in (ROOT / "agents").rglob("*.py"):
        assert "prometheus" not in path.read_text(), path


def test_every_alert_kind_has_an_open_alerts_series() -> None:
    """A new alert kind in the schema gets its tipstream_alerts_open series (at 0 when none)."""
    assert set(ALERT_KINDS) == set(get_args(AlertKind))
