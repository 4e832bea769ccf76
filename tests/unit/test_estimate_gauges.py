"""The per-model estimate gauges of /metrics/: a series per model with a value, none before."""

from __future__ import annotations

import pytest

from agents.estimates_rules import MatchEstimate, RollingEstimates
from streams.worker.metrics import ESTIMATE_GAUGES, estimate_families


def test_a_model_without_a_closing_line_has_only_its_expected_log_loss() -> None:
    known, unknown = RollingEstimates(window=2), RollingEstimates(window=2)
    known.add("x1", MatchEstimate(1.0, 1.2, -0.1))
    known.add("x2", MatchEstimate(0.8, 1.0, 0.3))
    unknown.add("x1", MatchEstimate(0.9, None, None))
    families = {
        f.name: {s.labels["model"]: s.value for s in f.samples}
        for f in estimate_families({"a": known.summary(), "b": unknown.summary()})
    }
    assert set(families) == {name for name, _, _ in ESTIMATE_GAUGES}
    assert families["tipstream_expected_log_loss"] == pytest.approx({"a": 0.9, "b": 0.9})
    assert families["tipstream_closing_cross_entropy"] == pytest.approx({"a": 1.1})
    assert families["tipstream_expected_edge_vs_market"] == pytest.approx({"a": 0.1})
