"""Smoke test of ``make bench`` at a tiny size: the BENCH line is well formed and its counts agree.

No figure is asserted against a target (speed is measured by the benchmark, not by tests); the
checks are that every phase saw every event it was given and that the line matches the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.report import parse_line

REPO = Path(__file__).resolve().parents[2]


def test_tiny_bench_prints_a_consistent_bench_line(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--events", "300", "--rate", "100",
         "--seconds", "2", "--results", "60", "--learn", "200", "--score", "200",
         "--json", str(figures), "--timeout", "120"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    line = parse_line(last)  # ValueError unless exactly the form

    data = json.loads(figures.read_text())
    models = data["models"]
    assert models == 4  # the default champion, one challenger and the two market references
    assert data["passthrough"]["events"] == data["passthrough"]["outputs"] == 300
    assert (
        data["confluent_passthrough"]["events"] == data["confluent_passthrough"]["outputs"] == 300
    )
    assert data["relay"]["events"] == data["relay"]["outputs"] == 300
    assert data["scorer"]["events"] == 300
    assert data["scorer"]["outputs"] == 300 * models
    latency = data["latency"]
    assert latency["offered_eps"] == line["offered_eps"] == 100
    assert latency["received"] == latency["sent"] == 200
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    reconciliation = data["reconciliation"]
    assert reconciliation["results"] == 60
    assert (
        reconciliation["evaluations"]
        == reconciliation["evaluation_rows"]
        == reconciliation["feed_items"]
        == 60 * models
    )
    # Every match's ledger went to the changelog at least once (primed, then reconciled).
    assert reconciliation["changelog_records"] >= 60
    assert reconciliation["ledger_bytes"] > 0

    # The line says what the figures say (rounded as printed).
    passthrough_eps = data["passthrough"]["eps"]
    scorer_eps = data["scorer"]["eps"]
    assert line["passthrough_eps"] == pytest.approx(passthrough_eps, abs=0.05)
    assert line["scorer_eps"] == pytest.approx(scorer_eps, abs=0.05)
    assert line["ratio"] == pytest.approx(scorer_eps / passthrough_eps, abs=0.0005)
    # The peer ceiling is the faster passthrough, and the peer ratio the scorer against it.
    peer_eps = max(passthrough_eps, data["confluent_passthrough"]["eps"])
    assert line["peer_passthrough_eps"] == pytest.approx(peer_eps, abs=0.05)
    assert line["peer_ratio"] == pytest.approx(scorer_eps / peer_eps, abs=0.0005)
    assert line["p99_ms"] == pytest.approx(latency["p99_ms"], abs=0.005)
    assert line["reconcile_eps"] == pytest.approx(reconciliation["eps"], abs=0.05)
    assert line["learn_per_s"] == pytest.approx(data["learn_per_s"], abs=0.05)
    scoring = data["scoring"]
    score_us = sum(scoring[f"{step}_us"] for step in ("decode", "predict", "encode", "estimates"))
    assert line["score_us"] == pytest.approx(score_us, abs=0.05)
    assert line["estimates_us"] == pytest.approx(scoring["estimates_us"], abs=0.05)
    # Batch (vectorised) and one-by-one scoring give the same probabilities.
    assert data["scoring_difference"] < 1e-9
