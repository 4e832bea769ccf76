"""The Faust application: built from settings, with every agent registered on it.

``tipstream worker`` calls :func:`run_worker`: it checks the database is migrated, creates the
topics, seeds the registry on a first start, and runs the worker until SIGTERM/SIGINT, when
Faust stops the agents, flushes the producer and commits the acked offsets.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from pathlib import Path
from typing import Any

import faust

from agents import (
    champion,
    drift,
    features,
    learner,
    monitor,
    reconciler,
    registry,
    scorer,
    trainer,
)
from models import catalog
from streams import mlflow_log
from streams.db import bundled_migrations, connect
from streams.kafka import faust_credentials
from streams.log import get_logger
from streams.settings import Settings, use_event_loop
from streams.topics import TopicMismatchError, ensure_topics
from streams.worker import web
from streams.worker.runtime import Runtime
from streams.worker.tables import KeyRoutedTable

log = get_logger(__name__)


def table_store(settings: Settings) -> dict[str, Any]:
    """Faust's ``store`` (and ``datadir``) for ``TIPSTREAM_TABLE_STORE``.

    ``memory``: the tables live in memory and are rebuilt from their changelogs at each start.
    ``rocksdb``: one RocksDB database per table partition on local disk; a restarted worker
    reads only the changelog records past the offsets its databases hold. Each worker gets a
    directory of its own (app id and web port, both unique on a machine: two deployments or
    two workers of one never open each other's databases, which RocksDB would refuse with a
    lock error); a restart with the same settings finds its state again.
    """
    if settings.table_store == "memory":
        return {"store": "memory://"}
    if importlib.util.find_spec("rocksdict") is None:
        raise SystemExit(
            "tipstream: TIPSTREAM_TABLE_STORE=rocksdb needs rocksdict: "
            "pip install 'tipstream[rocksdb]' (or set TIPSTREAM_TABLE_STORE=memory)"
        )
    from streams.worker import table_store as rocksdb  # imports rocksdict: only when chosen

    return {"store": rocksdb.register(), "datadir": str(table_data_dir(settings))}


def table_data_dir(settings: Settings) -> Path:
    """The worker's own RocksDB directory: ``<table_dir>/<app id>-<web port>``."""
    return Path(settings.table_dir).absolute() / f"{settings.group_id}-{settings.web_port}"


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The Faust app with all agents, and the runtime they share."""
    store = table_store(settings)
    if "datadir" in store:
        Path(store["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        broker=settings.kafka_url,
        **store,
        key_serializer="raw",
        value_serializer="raw",
        # Key-routed changelogs partitioned without the producer's metadata cache, which may
        # not know a changelog Faust created after the producer started (streams/worker/tables.py).
        Table=KeyRoutedTable,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_credentials=faust_credentials(settings),
        # Our topics are created by ensure_topics with their partition counts; internal
        # (changelog) topics Faust declares itself.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        # Three heartbeats per session at least (Kafka's rule of thumb), Faust's 3 s at most.
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        web_enabled=True,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        # The web port serves our /status/ and /metrics/ only. Faust's own pages would show
        # the reconciler's ledgers (/table/), the cluster's workers (/router/), every sensor
        # and the assignment (/, /assignment/), the service graph (/graph/): off, whatever
        # Faust's defaults or `debug` say. Nothing routes table keys across workers.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
    )
    runtime = Runtime(settings, app)
    active = scorer.ActiveModels()
    features.register(app, runtime)
    scorer.register(app, runtime, active)
    reconciler.register(app, runtime)
    learner.register(app, runtime)
    monitor.register(app, runtime)
    drift.register(app, runtime)
    champion.register(app, runtime)
    trainer.register(app, runtime)
    web.register(app, runtime, active)

    @app.on_before_shutdown.connect
    async def stop_runtime(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await runtime.stop()

    return app, runtime


async def prepare(settings: Settings) -> None:
    """Everything a worker needs before it consumes: schema, topics, a seeded registry."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = (
                {
                    row["version"]
                    for row in await conn.fetch("SELECT version FROM schema_migrations")
                }
                if await conn.fetchval("SELECT to_regclass('schema_migrations')")
                else set()
            )
            missing = [m.version for m in bundled_migrations() if m.version not in applied]
            if missing:
                raise SystemExit(
                    f"tipstream: database not migrated (missing {', '.join(missing)}); "
                    "run `tipstream db migrate` first"
                )
            await seed_registry(conn, settings)
    finally:
        await pool.close()
    await ensure_topics(settings)


async def seed_registry(conn: Any, settings: Settings) -> list[str]:
    """Register the configured champion, challengers and market references that the registry
    has never seen (a model trained before the first start, e.g. by `tipstream train`, stays)."""
    known = {row["model_id"] for row in await conn.fetch("SELECT model_id FROM models")}
    has_champion = await registry.champion_id(conn) is not None
    keys = settings.registry_keys()
    plan = [(settings.champion_model, "champion")]
    plan += [(m, "challenger") for m in settings.challenger_models.split(",") if m]
    plan += [(m, "reference") for m in catalog.REFERENCE_MODEL_IDS]
    seeded = []
    for model_id, status in plan:
        if model_id in known:
            continue
        model = catalog.create(model_id)
        policy = settings.learning_policy if model.learns_online else None
        if status == "champion" and has_champion:
            status = "challenger"
        await registry.register(conn, model, status=status, keys=keys, policy=policy)
        seeded.append(model_id)
    if seeded:
        log.info("registry seeded", models=seeded)
    return seeded


def run_worker(settings: Settings) -> int:
    """Run one worker until it is stopped."""
    settings.check_isolation()
    try:
        mlflow_log.require()  # refits log to MLflow: a URI without mlflow fails here, not later
    except mlflow_log.MlflowUnavailable as error:
        raise SystemExit(f"tipstream: {error}") from error
    use_event_loop(settings)
    try:
        asyncio.run(prepare(settings))
    except TopicMismatchError as error:
        raise SystemExit(f"tipstream: {error}") from error
    app, _ = create_app(settings)
    execute(app, settings)
    return 0


def execute(app: faust.App, settings: Settings) -> None:
    """Run ``app``'s worker in this process until it is stopped.

    Everything imported and built so far (Faust, River, scikit-learn, the app: ~140,000
    tracked objects) lives as long as the process, so it is moved out of the garbage collector's
    reach first (``gc.freeze``): otherwise every full collection walks it again, a pause of
    ~70 ms in the middle of the stream.
    """
    gc.collect()
    gc.freeze()
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), override_logging=False)
    worker.execute_from_commandline()
