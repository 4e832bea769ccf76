"""Optional MLflow logging of a model fit (issue 18 item 6).

Where ``MLFLOW_TRACKING_URI`` is set, :func:`log_fit` records one fit as an MLflow run: its
parameters, its metrics and the fitted model's state (the very snapshot bytes the registry
signs, with their SHA-256, which ``model_versions.state_sha256`` holds too). The PostgreSQL
registry stays the source of truth: a run points at a registered version (model id, version,
hash), it never replaces it, and nothing in tipstream reads a model back from MLflow.

mlflow is an optional extra (``pip install '.[mlflow]'``: mlflow-skinny, the client without
MLflow's server); it is imported only when a URI is set, and its absence is then one clear line
(:class:`MlflowUnavailable`), raised by :func:`require` before any work is done.

MLflow's client API (``MlflowClient``), not its fluent one: no process-wide active run, so a
scheduled refit in a worker thread can call :func:`log_fit` beside anything else. MLflow 3
refuses a ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true`` (its own opt-out).

>>> from models.market import MarketModel
>>> log_fit(MarketModel.opening(), version=0, params={}, metrics={}, env={}) is None  # no URI
True
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.base import Model
from models.serialization import sha256_hex

TRACKING_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT = "tipstream"
"""The MLflow experiment every tipstream fit is logged under (created when missing)."""


class MlflowUnavailable(RuntimeError):
    """``MLFLOW_TRACKING_URI`` is set but mlflow is not installed."""


class MlflowFailed(RuntimeError):
    """MLflow refused or failed to log a run (its first line as the message)."""


def tracking_uri(env: Mapping[str, str] | None = None) -> str | None:
    """The tracking URI of the environment, None when unset or empty."""
    value = (os.environ if env is None else env).get(TRACKING_ENV, "").strip()
    return value or None


def require(env: Mapping[str, str] | None = None) -> str | None:
    """The tracking URI, after checking mlflow can be imported when one is set: call it before
    a fit, so a missing extra fails in a second, not after the training.

    Raises :class:`MlflowUnavailable` with a one-line message."""
    uri = tracking_uri(env)
    if uri is None:
        return None
    try:
        import mlflow  # noqa: F401 - only whether it imports
    except ImportError as error:
        raise MlflowUnavailable(
            f"{TRACKING_ENV} is set ({uri}) but mlflow is not installed: "
            "pip install 'tipstream[mlflow]' (or unset it)"
        ) from error
    return uri


def log_fit(
    model: Model,
    *,
    version: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    experiment: str = EXPERIMENT,
) -> str | None:
    """Log one fit of ``model`` (registered as ``version``) as an MLflow run; its run id, or
    None when no tracking URI is set.

    Parameters are logged as text; non-finite metrics (a fit without folds has no CV log loss)
    are left out, as MLflow's stores do not all keep NaN. The model's snapshot goes to the
    run's ``model/`` artifacts as ``<model id>-v<version>.msgpack``; tags name the model, its
    kind, version and state hash. Raises :class:`MlflowUnavailable` without mlflow and
    :class:`MlflowFailed` (one line) when MLflow refuses.
    """
    uri = require(env)
    if uri is None:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    state = model.snapshot()
    run_tags = {
        "tipstream.model_id": model.model_id,
        "tipstream.kind": model.kind,
        "tipstream.version": str(version),
        "tipstream.state_sha256": sha256_hex(state),
        **(tags or {}),
    }
    now = int(time.time() * 1000)
    run_id: str | None = None
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None else client.create_experiment(experiment)
        )
        run = client.create_run(
            experiment_id, tags=run_tags, run_name=f"{model.model_id} v{version}"
        )
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[
                Metric(name, float(value), now, 0)
                for name, value in metrics.items()
                if math.isfinite(value)
            ],
            params=[Param(name, str(value)) for name, value in params.items()],
        )
        with tempfile.TemporaryDirectory(prefix="tipstream-mlflow-") as folder:
            path = Path(folder) / f"{model.model_id}-v{version}.msgpack"
            path.write_bytes(state)
            client.log_artifact(run_id, str(path), artifact_path="model")
        client.set_terminated(run_id)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if run_id is not None:  # a half-logged run is ended as FAILED, never left RUNNING
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, status="FAILED")
        raise MlflowFailed(f"MLflow at {uri}: {first}") from error
    return run_id
