"""``tipstream train``: fit a batch scikit-learn model offline and register it.

The batch model is the classic set-up (train on a history window, cross-validate, deploy,
never learn in the stream): the natural model to watch decay. Where ``MLFLOW_TRACKING_URI`` is
set, the fit is also logged to MLflow once registered (``streams.mlflow_log``).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import date
from pathlib import Path

from agents import registry
from models import catalog
from models.batch import BatchModel
from models.training import training_set
from schemas.football_csv import RowError, read_rows
from streams import mlflow_log
from streams.db import connect
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train", help="fit a batch model on matches before a date and register it"
    )
    parser.add_argument("--data", nargs="+", type=Path, required=True, metavar="CSV")
    parser.add_argument(
        "--until",
        type=date.fromisoformat,
        required=True,
        help="train on matches that kicked off before this date",
    )
    parser.add_argument("--model", default="batch-logreg", choices=catalog.BATCH_MODEL_IDS)
    parser.add_argument("--status", default="challenger", choices=("challenger", "champion"))
    parser.add_argument("--folds", type=int, default=5)
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace, settings: Settings) -> int:
    try:
        mlflow_uri = mlflow_log.require()
    except mlflow_log.MlflowUnavailable as error:
        print(f"tipstream train: {error}")
        return 2
    missing = [str(p) for p in args.data if not p.is_file()]
    if missing:
        print(f"tipstream train: no such file: {', '.join(missing)}")
        return 2
    try:
        history = read_rows(args.data).rows
    except RowError as error:
        print(f"tipstream train: {error} (fix the row: a training set has no bad rows)")
        return 1
    rows, outcomes = training_set(history, args.until)
    if not rows:
        print(f"tipstream train: no match before {args.until} in the data")
        return 1
    model = catalog.create(args.model)
    assert isinstance(model, BatchModel)
    report = model.fit(rows, outcomes, folds=args.folds)  # type: ignore[arg-type]
    metrics = {"cv_log_loss": report.cv_log_loss, "rows": float(report.rows)}

    async def store() -> int:
        pool = await connect(settings.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                model.version = await registry.next_version(conn, model.model_id)
                return await registry.register(
                    conn,
                    model,
                    status=args.status,
                    keys=settings.registry_keys(),
                    metrics=metrics,
                )
        finally:
            await pool.close()

    version = asyncio.run(store())
    print(
        f"trained {model.model_id} v{version} on {report.rows} matches before {args.until}: "
        f"cross-validated log loss {report.cv_log_loss:.4f} "
        f"({len(report.fold_log_losses)} forward-chaining folds); registered as {args.status}"
    )
    if mlflow_uri is None:
        return 0
    params = {
        "model_id": model.model_id,
        "estimator": model.estimator,
        "seed": model.seed,
        "inputs": ",".join(model.inputs),
        "folds": args.folds,
        "until": args.until.isoformat(),
        "data": ",".join(p.name for p in args.data),
        "status": args.status,
    }
    fold_metrics = {f"fold_{i}_log_loss": v for i, v in enumerate(report.fold_log_losses)}
    try:
        run_id = mlflow_log.log_fit(
            model, version=version, params=params, metrics=metrics | fold_metrics
        )
    except mlflow_log.MlflowFailed as error:
        print(f"tipstream train: v{version} is registered but not logged: {error}")
        return 1
    print(f"logged to MLflow ({mlflow_uri}): run {run_id}")
    return 0
