"""``streams.mlflow_log``: nothing without a tracking URI, one clear line when the URI is set
but mlflow is missing, and a fit logged to a local MLflow file store (params, finite metrics,
the model's snapshot as an artifact with its hash), skipped only where mlflow is not installed."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from models import catalog
from models.serialization import sha256_hex
from streams import mlflow_log
from streams.cli import train
from streams.settings import Settings
from streams.worker.app import run_worker
from streams.worker.runtime import Runtime

NEEDS_MLFLOW = "mlflow is not installed: pip install '.[mlflow]' (make setup installs it)"


def test_without_a_tracking_uri_nothing_is_logged_or_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importing it would fail
    assert mlflow_log.require({}) is None
    assert mlflow_log.require({mlflow_log.TRACKING_ENV: "  "}) is None
    model = catalog.create("market-open")
    assert mlflow_log.log_fit(model, version=0, params={}, metrics={}, env={}) is None


def test_a_tracking_uri_without_mlflow_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    env = {mlflow_log.TRACKING_ENV: "file:///tmp/nowhere"}
    with pytest.raises(mlflow_log.MlflowUnavailable, match=r"pip install 'tipstream\[mlflow\]'"):
        mlflow_log.require(env)
    # tipstream train refuses before reading any data or training.
    monkeypatch.setenv(mlflow_log.TRACKING_ENV, "file:///tmp/nowhere")
    args = argparse.Namespace(data=[Path("/no/such.csv")], until=date(2020, 1, 1))
    assert train._train(args, Settings()) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "MLFLOW_TRACKING_URI is set (file:///tmp/nowhere) but mlflow is not installed" in out[0]


def test_a_fit_is_logged_to_a_local_file_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason=NEEDS_MLFLOW)
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in for file stores
    uri = (tmp_path / "mlruns").as_uri()
    model = catalog.create("online-rating")
    model.learn_one({"elo_diff": 80.0, "pi_exp_gd": 0.4}, "H")
    env = {mlflow_log.TRACKING_ENV: uri}
    run_id = mlflow_log.log_fit(
        model,
        version=3,
        params={"lr": 0.002, "inputs": "elo_diff,pi_exp_gd"},
        metrics={"cv_log_loss": 0.98, "no_folds": float("nan")},
        env=env,
    )
    assert run_id is not None
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.002", "inputs": "elo_diff,pi_exp_gd"}
    assert run.data.metrics == {"cv_log_loss": 0.98}  # the NaN is left out
    assert run.data.tags["tipstream.model_id"] == "online-rating"
    assert run.data.tags["tipstream.version"] == "3"
    assert run.info.status == "FINISHED"
    local = client.download_artifacts(run_id, "model/online-rating-v3.msgpack", str(tmp_path))
    state = Path(local).read_bytes()
    assert sha256_hex(state) == run.data.tags["tipstream.state_sha256"]
    restored = catalog.restore(model.kind, state)
    x = {"elo_diff": 10.0, "pi_exp_gd": 0.1}
    assert restored.predict_proba_one(x) == model.predict_proba_one(x)
    # A second fit goes to the same experiment.
    again = mlflow_log.log_fit(model, version=4, params={}, metrics={}, env=env)
    assert client.get_run(str(again)).info.experiment_id == run.info.experiment_id


def test_mlflow_refusing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason=NEEDS_MLFLOW)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    env = {mlflow_log.TRACKING_ENV: (tmp_path / "mlruns").as_uri()}
    model = catalog.create("market-open")
    with pytest.raises(mlflow_log.MlflowFailed) as refused:
        mlflow_log.log_fit(model, version=0, params={}, metrics={}, env=env)
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("MLflow at file://")


def test_a_run_that_fails_half_way_is_ended_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run is created before its metrics are logged: when MLflow refuses one (a metric name
    it does not accept), the run is ended FAILED, never left RUNNING for a reader to wait on."""
    pytest.importorskip("mlflow", reason=NEEDS_MLFLOW)
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    env = {mlflow_log.TRACKING_ENV: uri}
    model = catalog.create("market-open")
    with pytest.raises(mlflow_log.MlflowFailed):
        mlflow_log.log_fit(model, version=0, params={}, metrics={"bad*name": 1.0}, env=env)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(mlflow_log.EXPERIMENT)
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


async def test_the_worker_logs_a_refit_and_a_refusal_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Runtime.record_fit``: a registered refit goes to MLflow; MLflow refusing is a warning
    and a count (the version stays registered), not an error in the trainer."""
    pytest.importorskip("mlflow", reason=NEEDS_MLFLOW)
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv(mlflow_log.TRACKING_ENV, uri)
    worker: Any = SimpleNamespace(counters=Counter())
    model = catalog.create("market-open")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses file:
    await Runtime.record_fit(worker, model, version=3, params={}, metrics={"rows": 1.0})
    assert worker.counters["mlflow_failures"] == 1
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    await Runtime.record_fit(worker, model, version=3, params={"run": 1}, metrics={"rows": 1.0})
    assert worker.counters["mlflow_failures"] == 1
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(mlflow_log.EXPERIMENT)
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["tipstream.version"] == "3"
    assert run.data.params["run"] == "1"


def test_the_worker_refuses_to_start_with_a_tracking_uri_and_no_mlflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One line at start, before it touches Kafka or PostgreSQL (none is reachable here)."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv(mlflow_log.TRACKING_ENV, "file:///tmp/nowhere")
    settings = Settings(dev_mode=True, database_url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(
        SystemExit, match=r"^tipstream: MLFLOW_TRACKING_URI is set .* not installed"
    ):
        run_worker(settings)
