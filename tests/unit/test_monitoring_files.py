"""The monitoring files of infra/monitoring/: they parse, name only metrics the worker exposes,
and pass Prometheus' own checker (promtool, from Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings
from streams.worker.app import create_app
from streams.worker.metrics import metric_names

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
RULES = MONITORING / "prometheus-rules.yml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SCRAPE = MONITORING / "prometheus.yml"
PROMTOOL = MONITORING / "promtool.sh"
UNAVAILABLE = 3  # promtool.sh's exit code when promtool cannot be had
METRIC = re.compile(r"\btipstream_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Every metric name a worker app's registry exposes (families and their samples)."""
    _, runtime = create_app(Settings(dev_mode=True))
    return set(metric_names(runtime.metrics.registry))


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


INSTALL_S = 900
"""A fresh machine installs Debian's prometheus package first (~20 MB to download)."""
needs_promtool = pytest.mark.timeout(INSTALL_S)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool's run, installed first where missing; skips only where it cannot be had."""
    done = subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=INSTALL_S, check=False
    )
    if done.returncode == UNAVAILABLE:
        pytest.skip(f"promtool cannot be installed here: {done.stderr.strip()}")
    return done


def test_every_metric_the_rules_name_is_in_the_workers_registry(exposed: set[str]) -> None:
    """Renaming a metric breaks this test until the alert rules follow."""
    named = {(alert, m) for alert, expr in rule_exprs() for m in METRIC.findall(expr)}
    assert named, "the rules name no tipstream metric"
    assert [(alert, m) for alert, m in sorted(named) if m not in exposed] == []


def test_every_metric_the_dashboard_queries_is_in_the_workers_registry(
    exposed: set[str],
) -> None:
    """Renaming a metric breaks this test until the Grafana dashboard follows."""
    named = {(title, m) for title, expr in dashboard_exprs() for m in METRIC.findall(expr)}
    assert named, "the dashboard queries no tipstream metric"
    assert [(title, m) for title, m in sorted(named) if m not in exposed] == []


def test_the_alerts_the_runbook_promises_are_there() -> None:
    """Worker down, lag, dead letters, no predictions, open decay alerts, slow transactions."""
    alerts = {alert for alert, _ in rule_exprs()}
    assert {
        "TipstreamWorkerDown",
        "TipstreamConsumerLagHigh",
        "TipstreamDeadLetters",
        "TipstreamNoPredictions",
        "TipstreamModelDecayAlertsOpen",
        "TipstreamDatabaseTransactionsSlow",
    } <= alerts


def test_the_dashboard_has_a_panel_for_every_metric_family(exposed: set[str]) -> None:
    """Each metric the worker exposes is on some panel of the dashboard (so a new metric is
    not forgotten there)."""
    queried = {m for _, expr in dashboard_exprs() for m in METRIC.findall(expr)}
    bare = {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in queried}
    families = {n for n in exposed if not re.search(r"_(total|bucket|count|sum|created)$", n)}
    unplotted = sorted(f for f in families if f not in bare)
    # Counted for completeness, not worth a panel: ledger bookkeeping, features outcomes,
    # broken learner checkpoints (which also raise a fault alert) and routing.
    assert set(unplotted) <= {
        "tipstream_ledgers_rebuilt",
        "tipstream_ledgers_retired",
        "tipstream_feature_inputs",
        "tipstream_learn_broken_states",
        "tipstream_routed_inputs",
    }, unplotted


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    """`promtool check rules` and `promtool check config` (which loads the rules too)."""
    for args in (("check", "rules", str(RULES)), ("check", "config", str(SCRAPE))):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_rule_tests_fire_the_alerts_on_their_series() -> None:
    """`promtool test rules`: each alert fires on the series meant to raise it, not before."""
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """The dashboard's queries are valid PromQL: each is checked as a recording rule."""
    job = "tipstream"
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr.replace("$job", job)}
                    for i, (_, expr) in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
