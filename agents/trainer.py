"""Trainer agent: refits the batch models on the stored results, on a schedule and on decay.

Two parts, both off unless configured (``TIPSTREAM_RETRAIN_INTERVAL_SECONDS``,
``TIPSTREAM_RETRAIN_ON_DECAY``):

* the **decay listener** reads the ``alerts`` topic (consumer group: each alert is handled once,
  by the worker owning its partition) and, for a firing decay alert on the champion, records a
  requested run in ``retrain_runs``, at most one per ``TIPSTREAM_RETRAIN_DECAY_COOLDOWN_SECONDS``
  (one incident raises several decay alerts: one refit);
* the **refit timer** (leader only, every ``CHECK_EVERY_S``) requests a scheduled run when the
  interval has passed since the last one, then runs the oldest unfinished run: it reads every
  stored match with features and a result (one JSON string), and fits each model of
  ``TIPSTREAM_RETRAIN_MODELS`` in a separate process (scikit-learn holds the GIL in parts: in a
  thread it would stall heartbeats and scoring), cross-validated on expanding folds by kickoff
  (:mod:`agents.trainer_rules`). Each fit is registered as a challenger (a new version of the
  model, or ``<base>-refit`` when the base is the champion) with its CV figures in the version's
  metrics, and announced on ``model-snapshots``: every scorer scores it from its next batch, and
  the promotion gate judges it like any challenger. Nothing here promotes. A registered fit is
  then recorded through ``runtime.record_fit`` (MLflow, where ``MLFLOW_TRACKING_URI`` is set).

Too few results, a fit that raises, a broken process pool: logged with the reason and recorded
in the run's row; the worker keeps scoring.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from agents import registry, trainer_store
from agents.learner import prune_versions
from agents.loop import run_batches
from agents.runtime import AgentRuntime
from agents.trainer_rules import (
    REFIT_SUFFIX,
    FitRequest,
    ModelOutcome,
    RefitPlan,
    RunOutcome,
    candidate_id,
    decay_triggers,
    refit_all,
    schedule_due,
)
from models import catalog
from schemas.events import Alert, DeadLetter

log = structlog.get_logger(__name__)

AGENT = "trainer"
CHECK_EVERY_S = 2.0
"""How often the leader looks for a due or requested run (one indexed query)."""


FIT_NICENESS = 10
"""The fit process yields the CPU to the worker (and its scorer) when both want it."""


def lower_priority() -> None:
    """The fit process's initializer: one core at most (BLAS and OpenMP pools of one thread:
    a fit takes one core from the worker, never all), at a lower CPU priority than the worker."""
    threadpool_limits(limits=1)
    if os.getpriority(os.PRIO_PROCESS, 0) < FIT_NICENESS:
        os.nice(FIT_NICENESS)


def _nice() -> None:
    """The starter thread's initializer: the fit process it spawns inherits this priority."""
    os.nice(FIT_NICENESS)


def _ready() -> bool:
    """A no-op run in the fresh fit process: it is up once this returns."""
    return True


class FitPool:
    """One worker process for fits, started on first use (spawned: a fork of a process with
    Kafka client threads is not safe) and replaced if it dies."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None

    async def run(self, plan: RefitPlan) -> RunOutcome:
        if self._executor is None:
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lower_priority,
            )
            # The first submit starts the process, and a spawn writes its preparation data to
            # the child's pipe until the child, still starting Python, reads it: off the loop,
            # from a thread of its own at the fit's priority (on Linux a thread's nice value is
            # its own, and the child inherits it: its imports already yield to the worker).
            with ThreadPoolExecutor(max_workers=1, initializer=_nice) as starter:
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        starter, lambda: executor.submit(_ready).result()
                    )
                except BaseException:
                    executor.shutdown(wait=False, cancel_futures=True)
                    raise
            self._executor = executor
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, refit_all, plan)
        except BrokenProcessPool:
            self.close()  # the next run starts a fresh process
            raise

    def close(self) -> None:
        """Stop the fit process now (a fit in progress is abandoned; its run is redone)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # terminate_workers() arrives in Python 3.14; until then, the processes it would stop.
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)


def base_models(runtime: AgentRuntime) -> list[str]:
    """The batch model ids the settings ask to refit."""
    return [m.strip() for m in runtime.settings.retrain_models.split(",") if m.strip()]


async def tick(runtime: AgentRuntime, pool: FitPool, *, now: datetime | None = None) -> Any:
    """One round of the leader's timer: request a scheduled run if due, run the oldest
    unfinished run. Returns the finished run's row, or None when there was nothing to do."""
    now = now or datetime.now(UTC)

    async def take() -> Any:
        async with runtime.connection() as conn:
            interval = runtime.settings.retrain_interval_seconds
            if schedule_due(now, await trainer_store.last_requested(conn, "schedule"), interval):
                await trainer_store.request(conn, "schedule", requested_at=now)
            run = await trainer_store.next_pending(conn)
            if run is not None:
                await trainer_store.start(conn, run["run_id"])
            return run

    run = await runtime.retry_transient("trainer runs", take)
    if run is None:
        return None
    try:
        return await execute(runtime, pool, run)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"[:500]
        log.exception("refit failed", run=run["run_id"], error=reason)
        detail = [{"outcome": "failed", "reason": reason}]

        async def finish() -> None:
            async with runtime.connection() as conn:
                await trainer_store.finish(conn, run["run_id"], "failed", detail)

        await runtime.retry_transient("trainer runs", finish)
        return {"run_id": run["run_id"], "outcome": "failed", "detail": detail}


async def execute(runtime: AgentRuntime, pool: FitPool, run: Any) -> dict[str, Any]:
    """Fit, register and announce one run's models; record what each did."""
    bases = base_models(runtime)
    log.info("refit started", run=run["run_id"], trigger=run["trigger"], models=bases)
    started = asyncio.get_running_loop().time()

    async def read() -> tuple[str, dict[str, str]]:
        async with runtime.connection() as conn:
            ids = [*bases, *(b + REFIT_SUFFIX for b in bases)]
            statuses = await trainer_store.locked_statuses(conn, ids)
            return await trainer_store.stored_matches(conn), statuses

    stored, statuses = await runtime.retry_transient("trainer read", read)
    detail: list[dict[str, Any]] = []
    fits = []
    for base in bases:
        model_id, why = candidate_id(base, statuses)
        if model_id is None:
            detail.append({"base": base, "outcome": "skipped", "reason": why})
            log.warning("refit skipped", run=run["run_id"], base=base, reason=why)
        else:
            fits.append(FitRequest(base, model_id, runtime.settings.retrain_folds))
    outcome = RunOutcome(0, {}, ())
    if fits:
        plan = RefitPlan(stored, tuple(fits), runtime.settings.retrain_min_matches)
        try:
            outcome = await pool.run(plan)
        except Exception as error:  # noqa: BLE001 - the fit process failed: record, keep scoring
            reason = f"{type(error).__name__}: {error}"[:500]
            log.error("refit failed", run=run["run_id"], error=reason)
            detail += [{"base": f.base_id, "outcome": "failed", "reason": reason} for f in fits]
    for model in outcome.models:
        detail.append(await _settle(runtime, run["run_id"], model, trigger=run["trigger"]))
    state = _run_state(detail)
    seconds = asyncio.get_running_loop().time() - started

    async def finish() -> None:
        async with runtime.connection() as conn:
            await trainer_store.finish(conn, run["run_id"], state, detail)

    await runtime.retry_transient("trainer runs", finish)
    runtime.counters[f"refits:{state}"] += 1
    log.info(
        "refit finished",
        run=run["run_id"],
        outcome=state,
        matches=outcome.examples,
        excluded=dict(outcome.excluded),
        seconds=round(seconds, 1),
        models=[f"{d['base']}: {d['outcome']}" for d in detail],
    )
    return {"run_id": run["run_id"], "outcome": state, "detail": detail}


def _run_state(detail: Sequence[dict[str, Any]]) -> str:
    outcomes = {d["outcome"] for d in detail}
    if "registered" in outcomes:
        return "registered"
    return "failed" if "failed" in outcomes else "skipped"


async def _settle(
    runtime: AgentRuntime, run_id: int, model: ModelOutcome, *, trigger: str
) -> dict[str, Any]:
    """Register a fitted model (or log why not), then record the registered fit with the
    experiment tracker (MLflow, where configured); the detail entry of the run's row."""
    request = model.request
    entry: dict[str, Any] = {"base": request.base_id, "model_id": request.model_id}
    if model.skipped is not None:
        log.warning("refit skipped", run=run_id, base=request.base_id, reason=model.skipped)
        return entry | {"outcome": "skipped", "reason": model.skipped}
    if model.error is not None or model.result is None:
        log.error("refit failed", run=run_id, base=request.base_id, error=model.error)
        return entry | {"outcome": "failed", "reason": model.error}
    result = model.result
    fitted = catalog.restore(result.kind, result.state)

    async def register() -> dict[str, Any]:
        async with runtime.connection() as conn:
            async with conn.transaction():
                ids = [request.base_id, request.base_id + REFIT_SUFFIX]
                now_id, why = candidate_id(
                    request.base_id, await trainer_store.locked_statuses(conn, ids)
                )
                if now_id != request.model_id:
                    reason = f"status changed during the fit ({why})"
                    return entry | {"outcome": "skipped", "reason": reason}
                fitted.version = await registry.next_version(conn, request.model_id)
                await registry.register(
                    conn,
                    fitted,
                    status="challenger",
                    keys=runtime.registry_keys,
                    metrics=result.metrics,
                )
            snapshot = await registry.status_snapshot(conn, request.model_id)
        await runtime.publish_all([(runtime.topics.snapshots, request.model_id, snapshot)])
        return entry | {"outcome": "registered", "version": fitted.version} | result.metrics

    settled = await runtime.retry_transient("trainer register", register)
    if settled["outcome"] == "registered":
        if runtime.settings.keep_versions:  # the learner's retention policy, for refits too
            await prune_versions(runtime, [request.model_id])
        log.info(
            "refit registered",
            run=run_id,
            model=request.model_id,
            version=settled["version"],
            cv_log_loss=round(result.metrics["cv_log_loss"], 4),
            cv_market_log_loss=result.metrics.get("cv_market_log_loss"),
            rows=int(result.metrics["rows"]),
        )
        params = {
            "run": run_id,
            "trigger": trigger,
            "base": request.base_id,
            "model_id": request.model_id,
            "folds": request.folds,
            "embargo_s": request.embargo_s,
            "min_matches": runtime.settings.retrain_min_matches,
        }
        await runtime.record_fit(
            fitted, version=settled["version"], params=params, metrics=result.metrics
        )
    else:
        log.warning("refit skipped", run=run_id, base=request.base_id, reason=settled["reason"])
    return settled


async def handle_alerts(runtime: AgentRuntime, events: Sequence[Any]) -> None:
    """Request one refit per decay incident on the champion; dead-letter undecodable alerts."""
    letters: list[DeadLetter] = []
    decays: list[Alert] = []
    for event in events:
        decoded = runtime.decode(event.message, Alert, AGENT)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        elif decoded.kind == "decay" and decoded.state == "firing":
            decays.append(decoded)
    if decays:
        await runtime.retry_transient("trainer requests", lambda: _request(runtime, decays))
    await runtime.publish_dead_letters(letters)


async def _request(runtime: AgentRuntime, alerts: Sequence[Alert]) -> None:
    async with runtime.connection() as conn:
        champion = await registry.champion_id(conn)
        last = await trainer_store.last_requested(conn, "decay")
        for alert in alerts:
            if await trainer_store.known_alert(conn, alert.alert_id):
                continue  # a redelivery: it asked already
            if not decay_triggers(
                kind=alert.kind,
                state=alert.state,
                model_id=alert.model_id,
                champion=champion,
                last_requested=last,
                created_at=alert.created_at,
                cooldown_s=runtime.settings.retrain_decay_cooldown_seconds,
            ):
                log.info(
                    "decay alert: no refit",
                    alert=alert.alert_id,
                    model=alert.model_id,
                    reason="not the champion" if alert.model_id != champion else "cooldown",
                )
                continue
            run = await trainer_store.request(
                conn,
                "decay",
                requested_at=alert.created_at,
                alert_id=alert.alert_id,
                model_id=alert.model_id,
            )
            if run is not None:
                last = alert.created_at
                runtime.counters["refit_requests"] += 1
                log.info("refit requested", run=run, alert=alert.alert_id, model=alert.model_id)


async def guarded(runtime: AgentRuntime, pool: FitPool) -> None:
    """One tick as a task: an unexpected error is logged, never lost with the task."""
    try:
        await tick(runtime, pool)
    except Exception:  # logged; the next tick tries again
        log.exception("refit round failed")


def register(app: faust.App, runtime: AgentRuntime) -> None:
    """Declare the refit timer and the decay listener, each only when configured."""
    settings = runtime.settings
    if settings.retrain_interval_seconds <= 0 and not settings.retrain_on_decay:
        return
    pool = FitPool()
    running: set[asyncio.Task[Any]] = set()

    async def close_pool() -> None:
        for task in running:
            task.cancel()
        pool.close()

    runtime.shutdown_hooks.append(close_pool)

    @app.timer(interval=CHECK_EVERY_S, on_leader=True)
    async def refit() -> None:
        # A refit takes minutes: it runs as a task of its own, so the timer's tick stays short
        # (no "overlapping timer" warnings) and never starts a second run beside it.
        if not running:
            task = asyncio.create_task(guarded(runtime, pool), name="trainer refit")
            running.add(task)
            task.add_done_callback(running.discard)

    if settings.retrain_on_decay:
        alerts = app.topic(runtime.topics.alerts, key_serializer="raw", value_serializer="raw")

        @app.agent(alerts, name=AGENT)
        async def decay_listener(stream: Any) -> None:
            await run_batches(stream, runtime, AGENT, lambda events: handle_alerts(runtime, events))
