"""``tipstream train`` with ``MLFLOW_TRACKING_URI`` set, on the real database and a local MLflow
file store: the fit is registered in PostgreSQL (the source of truth) and logged to MLflow with
its parameters, metrics and state, the run's hash and metrics those of the registered version.
Skipped only where mlflow is not installed (``make setup`` installs the extra)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from agents import registry
from models import catalog
from models.serialization import sha256_hex
from schemas.football_csv import league_file
from streams.settings import Settings
from tests.deployment import REPO, environment

pytestmark = pytest.mark.integration

MODEL = "batch-logreg"


async def test_train_registers_and_logs_the_fit_to_mlflow(
    settings: Settings, db: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(
        "mlflow", reason="mlflow is not installed: pip install '.[mlflow]' (make setup does)"
    )
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in for file stores
    uri = (tmp_path / "mlruns").as_uri()
    env = environment(settings, MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_FILE_STORE="true")
    argv = ["train", "--data", str(league_file("england-premier-league")),
            "--until", "2012-07-01", "--model", MODEL, "--folds", "3"]  # fmt: skip
    done = _tipstream(env, argv)
    assert done.returncode == 0, done.stdout + done.stderr
    trained = re.search(rf"trained {MODEL} v(\d+) on (\d+) matches", done.stdout)
    logged = re.search(r"logged to MLflow \(.+\): run (\w+)", done.stdout)
    assert trained, done.stdout
    assert logged, done.stdout
    version, run_id = int(trained.group(1)), logged.group(1)

    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state_sha256, metrics FROM model_versions WHERE model_id = $1 AND version = $2",
            MODEL,
            version,
        )
        stored = await registry.load_model(conn, MODEL, keys=settings.registry_keys())
    assert row is not None
    metrics = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]

    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tipstream.model_id"] == MODEL
    assert run.data.tags["tipstream.version"] == str(version)
    assert run.data.tags["tipstream.state_sha256"] == row["state_sha256"]
    assert run.data.params["folds"] == "3"
    assert run.data.params["until"] == "2012-07-01"
    assert run.data.metrics["cv_log_loss"] == pytest.approx(metrics["cv_log_loss"])
    assert run.data.metrics["rows"] == int(trained.group(2))
    assert {f"fold_{i}_log_loss" for i in range(3)} <= set(run.data.metrics)
    local = MlflowClient(tracking_uri=uri).download_artifacts(
        run_id, f"model/{MODEL}-v{version}.msgpack", str(tmp_path)
    )
    state = _read(local)
    assert sha256_hex(state) == row["state_sha256"]
    # The artifact is the registered model (a re-pickled scikit-learn state may differ
    # byte-wise, never in what it predicts).
    logged_model = catalog.restore(stored.kind, state)
    x = {"elo_diff": 50.0, "open_p_H": 0.5, "open_p_D": 0.27, "open_p_A": 0.23}
    assert logged_model.predict_proba_one(x) == stored.model.predict_proba_one(x)


def _tipstream(env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def _read(path: str) -> bytes:
    return Path(path).read_bytes()
