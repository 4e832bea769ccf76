"""``tipstream train``: fit a batch scikit-learn model offline and register it.

The batch model is the earlier pipeline's set-up (train on a history window, cross-validate,
deploy, never learn in the stream): the natural model to watch decay. Features come from the
same time line as the replay (``streams.replay.timeline``), so what it trains on is what the
stream shows it.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import date
from pathlib import Path

from models import catalog, registry
from models.batch import BatchModel
from models.features import model_input
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import read_rows
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


def training_set(paths: list[Path], until: date) -> tuple[list[dict[str, float]], list[str]]:
    """Model inputs and outcomes of every match before ``until``, built leak-free."""
    from streams.replay import Filters, timeline

    rows = read_rows(paths).rows
    events = timeline(rows, Filters(end=until))
    inputs: dict[str, dict[str, float]] = {}
    outcomes: dict[str, str] = {}
    for event in events:
        if event.record.kickoff.date() >= until:
            continue
        if isinstance(event.record, MatchFeatures):
            inputs[event.key] = model_input(event.record)
        elif isinstance(event.record, MatchResult):
            outcomes[event.key] = event.record.outcome
    keys = [k for k in inputs if k in outcomes]
    return [inputs[k] for k in keys], [outcomes[k] for k in keys]


def _train(args: argparse.Namespace, settings: Settings) -> int:
    missing = [str(p) for p in args.data if not p.is_file()]
    if missing:
        print(f"tipstream train: no such file: {', '.join(missing)}")
        return 2
    rows, outcomes = training_set(args.data, args.until)
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
                current = await conn.fetchval(
                    "SELECT max(version) FROM model_versions WHERE model_id = $1", model.model_id
                )
                model.version = 0 if current is None else current + 1
                return await registry.register(
                    conn,
                    model,
                    status=args.status,
                    key=settings.registry_key.encode(),
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
    return 0
