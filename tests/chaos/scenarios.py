"""The eight scenarios of ``make chaos``, each checked against a fault-free run of its input.

Every scenario replays the same window of real matches (so one fault-free run is the reference
for all), injects its fault into real worker subprocesses, a real broker and a real database,
waits until the consumer group has committed everything, and then checks per event id:
evaluation rows (lost / duplicate / unexpected), input rows, predictions, dead letters, how
many results each online model learned, and that each online model predicts exactly as the
same model trained once, in order, on every result of its feed.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from agents.registry import checkpoint_context
from models import catalog
from models.policy import parse as parse_policy
from models.serialization import verify
from models.timeline import TimedEvent
from schemas.codec import decode
from schemas.events import Evaluation, Fixture, MatchFeatures, MatchResult, Prediction
from streams.log import get_logger
from streams.settings import Settings
from tests.chaos import malformed as bad
from tests.chaos.checker import (
    EvaluationRow,
    Position,
    RunData,
    SentEvent,
    Verdict,
    check_dead_letters,
    check_evaluations,
    check_learned,
    check_predictions,
    feed_once,
    prediction_mismatches,
    train_once,
)
from tests.chaos.harness import Deployment, Outgoing, Sent, Worker, valid_outgoing
from tests.chaos.services import PrivateServices

log = get_logger(__name__)

MALFORMED_EVENTS = 1200
DRAIN_TIMEOUT_S = 300.0
SIGKILL_RATE = 5.0
"""Facts per second while scenario 1 kills: 760 facts last ~150 s, time for five kills even
when a restart takes 20-30 s (a loaded machine; the league books are restored from their
changelog before the worker answers)."""
SIGTERM_BUDGET_S = 30.0
"""A SIGTERM must end the worker within this many seconds (the issue's bar)."""


@dataclass
class Outcome:
    """One scenario's result."""

    number: int
    name: str
    verdict: Verdict
    seconds: float
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        v = self.verdict
        status = "PASS" if v.passed else "FAIL"
        text = (
            f"scenario {self.number} {self.name}: {status} lost={v.lost} "
            f"duplicated={v.duplicated} unexpected={v.unexpected} "
            f"deadlettered={v.deadlettered}/{v.malformed_sent} ({self.seconds:.0f} s)"
        )
        details = self.notes + v.problems
        return text + ("" if not details else " | " + "; ".join(details))


@dataclass
class Run:
    """What a scenario body hands back: every event sent, and a place for notes."""

    deployment: Deployment
    verdict: Verdict
    notes: list[str]
    sent: list[Sent] = field(default_factory=list)


Body = Callable[[Run], Awaitable[None]]


class Chaos:
    """The scenarios of one ``make chaos`` run and the fault-free reference they share."""

    def __init__(
        self,
        base: Settings,
        workdir: Path,
        events: Sequence[TimedEvent],
        seed: int,
        *,
        keep_failed: bool = False,
    ):
        self.base = base
        self.workdir = workdir
        self.events = list(events)
        self.rng = random.Random(seed)
        self.seed = seed
        self.keep_failed = keep_failed
        self.tag = f"{int(time.time()) % 100_000:05d}"
        self.reference: RunData | None = None
        self.private: PrivateServices | None = None

    def deployment(self, name: str, base: Settings | None = None) -> Deployment:
        return Deployment(base or self.base, f"{self.tag}-{name}", self.workdir / name)

    def valid(self, deployment: Deployment) -> list[Outgoing]:
        return valid_outgoing(deployment.topics, self.events)

    # -- the reference -------------------------------------------------------------------

    async def fault_free(self) -> tuple[RunData, float]:
        """One worker, the window published once, nothing broken."""
        started = time.monotonic()
        deployment = self.deployment("reference")
        await deployment.create()
        try:
            worker = deployment.worker()
            worker.start()
            await deployment.publish(self.valid(deployment))
            if await deployment.wait_drained(DRAIN_TIMEOUT_S):
                raise SystemExit(
                    "chaos: the fault-free run did not finish; see " + str(worker.log_path)
                )
            self.reference = await collect(deployment)
        finally:
            await deployment.remove()
        return self.reference, time.monotonic() - started

    # -- running one scenario ------------------------------------------------------------

    async def scenario(
        self, number: int, name: str, body: Body, base: Settings | None = None
    ) -> Outcome:
        """Run ``body`` on a fresh deployment, then check everything it left behind."""
        assert self.reference is not None
        started = time.monotonic()
        deployment = self.deployment(f"s{number}", base)
        run = Run(deployment, Verdict(), [])
        await deployment.create()
        try:
            await body(run)
            lag = await deployment.wait_drained(DRAIN_TIMEOUT_S)
            if lag:
                run.verdict.problem(f"not drained within {DRAIN_TIMEOUT_S:.0f} s, lag {lag}")
            if not any(w.running for w in deployment.workers):
                run.verdict.problem("no worker running at the end")
            await self.check(run)
        except Exception as error:  # a broken harness fails this scenario, not the whole run
            log.exception("scenario failed", scenario=number)
            run.verdict.problem(f"harness error: {error!r}")
        finally:
            if self.keep_failed and not run.verdict.passed:
                await deployment.stop_workers()
                run.notes.append(
                    f"kept: database {deployment.database}, topics "
                    f"{deployment.settings.topic_prefix}.*"
                )
            else:
                await deployment.remove()
        outcome = Outcome(number, name, run.verdict, time.monotonic() - started, run.notes)
        print(outcome.line(), flush=True)
        return outcome

    async def check(self, run: Run) -> None:
        assert self.reference is not None
        deployment, verdict = run.deployment, run.verdict
        observed = await collect(deployment)
        check_evaluations(self.reference, observed, verdict)
        check_predictions(self.reference, observed, verdict)
        check_learned(self.reference, observed, verdict)
        sent = [
            SentEvent(
                Position(s.topic, s.partition, s.offset),
                s.event.key,
                s.event.value,
                s.event.malformed,
            )
            for s in run.sent
        ]
        check_dead_letters(sent, await deployment.dead_letters(), verdict)
        mismatches = await model_mismatches(deployment)
        for model_id, count in sorted(mismatches.items()):
            if count:
                verdict.problem(
                    f"{model_id} predicts differently from a model trained once "
                    f"on the same results ({count} inputs)"
                )
        run.notes.append("models equal trained-once: " + ", ".join(sorted(mismatches)))

    # -- the scenarios -------------------------------------------------------------------

    async def all(self, only: set[int] | None = None) -> list[Outcome]:
        plan: list[tuple[int, str, Body, bool]] = [
            (1, "sigkill-restart", self.sigkill, False),
            (2, "broker-restart", self.broker_restart, True),
            (3, "database-outage-20s", self.database_outage, True),
            (4, "rebalance-join-leave", self.rebalance, False),
            (5, "replay-twice", self.replay_twice, False),
            (6, "malformed-1200", self.malformed, False),
            (7, "sigterm-restart", self.sigterm, False),
            (8, "kill-between-learn-and-snapshot", self.learner_crash, False),
        ]
        outcomes = []
        try:
            for number, name, body, private in plan:
                if only and number not in only:
                    continue
                base = None
                if private:
                    base = await self.private_settings()
                outcomes.append(await self.scenario(number, name, body, base))
        finally:
            if self.private is not None:
                await self.private.close()
        return outcomes

    async def private_settings(self) -> Settings:
        if self.private is None:
            self.private = PrivateServices(self.workdir / "services", self.workdir / "services.log")
            await self.private.start()
        return self.private.settings(self.base)

    async def streaming(self, deployment: Deployment) -> tuple[Worker, asyncio.Task[list[Sent]]]:
        """A started worker, and the valid replay being published at 25 events/s meanwhile."""
        worker = deployment.worker()
        worker.start()
        await worker.wait_web()
        return worker, asyncio.create_task(deployment.publish(self.valid(deployment), rate=25))

    async def sigkill(self, run: Run) -> None:
        """SIGKILL the worker at five random moments while the replay is published, restart."""
        deployment = run.deployment
        worker = deployment.worker()
        worker.start()
        publishing = asyncio.create_task(
            deployment.publish(self.valid(deployment), rate=SIGKILL_RATE)
        )
        kills = 0
        while kills < 5 and not publishing.done():
            await worker.wait_web()
            await asyncio.sleep(self.rng.uniform(1.0, 5.0))
            await worker.kill()
            kills += 1
            worker.start()
        run.sent = await publishing
        run.notes.append(f"{kills} SIGKILLs mid-stream")
        if kills < 5:
            run.verdict.problem(f"only {kills} kills happened before the replay ended")

    async def broker_restart(self, run: Run) -> None:
        """Stop the (private) broker mid-stream, start it again; the worker must reconnect."""
        assert self.private is not None
        deployment = run.deployment
        _worker, publishing = await self.streaming(deployment)
        await asyncio.sleep(8)
        down = time.monotonic()
        await self.private.stop_kafka()
        await asyncio.sleep(5)
        await self.private.start_kafka()
        run.notes.append(f"broker down {time.monotonic() - down:.0f} s")
        run.sent = await publishing

    async def database_outage(self, run: Run) -> None:
        """Stop the (private) PostgreSQL for 20 s mid-stream: retries and backpressure, no loss."""
        assert self.private is not None
        deployment = run.deployment
        worker, publishing = await self.streaming(deployment)
        await asyncio.sleep(8)
        await self.private.stop_postgres()
        await asyncio.sleep(20)
        await self.private.start_postgres()
        run.sent = await publishing
        if not await deployment.wait_drained(DRAIN_TIMEOUT_S):
            retries = metric_total(await worker.metrics(), "tipstream_retries_total")
            run.notes.append(f"{retries} retried writes while the database was down")
            if not retries:
                run.verdict.problem("no retry was counted: the outage was not observed")

    async def rebalance(self, run: Run) -> None:
        """A second worker joins mid-stream, then the first one leaves (SIGTERM)."""
        deployment = run.deployment
        first, publishing = await self.streaming(deployment)
        await asyncio.sleep(8)
        second = deployment.worker()
        second.start()
        await second.wait_web()
        await asyncio.sleep(8)
        code, seconds = await first.signal(signal.SIGTERM, timeout=60)
        run.notes.append(f"first worker left in {seconds:.1f} s (exit {code})")
        run.sent = await publishing

    async def replay_twice(self, run: Run) -> None:
        """The same replay published twice, back to back."""
        deployment = run.deployment
        worker = deployment.worker()
        worker.start()
        valid = self.valid(deployment)
        run.sent = await deployment.publish(valid + valid)

    async def malformed(self, run: Run) -> None:
        """1,200 malformed fixtures and results of every kind mixed at random into the valid
        stream, each stamped with its template's event time like the valid facts."""
        deployment = run.deployment
        worker = deployment.worker()
        worker.start()
        valid = self.valid(deployment)
        fixtures = [e.record for e in self.events if isinstance(e.record, Fixture)]
        results = [e.record for e in self.events if isinstance(e.record, MatchResult)]
        broken = bad.generate(fixtures, results, MALFORMED_EVENTS, seed=self.seed)
        mixed = mix(
            valid,
            [
                Outgoing(
                    deployment.topics.fixtures
                    if m.topic == "fixture"
                    else deployment.topics.results,
                    m.key,
                    m.value,
                    m.kind,
                    at=m.at,
                )
                for m in broken
            ],
            self.rng,
        )
        run.sent = await deployment.publish(mixed, rate=200)
        if not await deployment.wait_drained(DRAIN_TIMEOUT_S):
            counted = metric_total(await worker.metrics(), "tipstream_dead_letters_total")
            run.notes.append(f"metric tipstream_dead_letters_total={counted}")
            if counted != len(broken):
                run.verdict.problem(f"the dead-letter metric says {counted}, not {len(broken)}")

    async def sigterm(self, run: Run) -> None:
        """SIGTERM mid-stream: out within 30 s with offsets and the model snapshot flushed;
        the restart reprocesses nothing that was already committed."""
        deployment = run.deployment
        worker, publishing = await self.streaming(deployment)
        await asyncio.sleep(10)
        code, seconds = await worker.signal(signal.SIGTERM, timeout=60)
        run.notes.append(f"SIGTERM -> exit {code} in {seconds:.1f} s")
        if code != 0 or seconds > SIGTERM_BUDGET_S:
            run.verdict.problem(f"SIGTERM: exit {code} after {seconds:.1f} s")
        pending = await unsnapshotted(deployment)
        if pending:
            run.verdict.problem(f"learned results not in a model version at exit: {pending}")
        worker.start()
        run.sent = await publishing
        if not await deployment.wait_drained(DRAIN_TIMEOUT_S):
            replayed = await republished(deployment)
            if replayed:
                run.verdict.problem(f"restart reprocessed committed events: {replayed}")

    async def learner_crash(self, run: Run) -> None:
        """The worker kills itself right after a learn step (before its checkpoint), and later
        right after a checkpoint (before the ack and the version); restarts each time."""
        deployment = run.deployment
        worker = deployment.worker()
        worker.start(TIPSTREAM_CHAOS_CRASH="learner.learned:3")
        publishing = asyncio.create_task(deployment.publish(self.valid(deployment), rate=25))
        # Each life is armed with the next crash point; the last one runs clean.
        for point, next_point in (
            ("learner.learned:3", "learner.checkpointed:2"),
            ("learner.checkpointed:2", ""),
        ):
            code = await worker.wait_exit(timeout=120)
            run.notes.append(f"{point} -> exit {code}")
            if code != -signal.SIGKILL:
                run.verdict.problem(f"crash point {point} did not kill the worker (exit {code})")
            worker.start(TIPSTREAM_CHAOS_CRASH=next_point)
        run.sent = await publishing


def mix(valid: Sequence[Outgoing], extra: Sequence[Outgoing], rng: random.Random) -> list[Outgoing]:
    """``extra`` inserted at random places into ``valid``, which keeps its order."""
    slots = sorted(rng.randrange(len(valid) + 1) for _ in extra)
    out: list[Outgoing] = []
    queue = list(extra)
    rng.shuffle(queue)
    index = 0
    for position, event in enumerate(valid):
        while index < len(slots) and slots[index] == position:
            out.append(queue[index])
            index += 1
        out.append(event)
    out.extend(queue[index:])
    return out


def metric_total(text: str, name: str) -> int:
    """Sum of a Prometheus counter over its labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def collect(deployment: Deployment) -> RunData:
    """What a run left in its database."""
    conn = await asyncpg.connect(deployment.settings.database_url)
    try:
        evaluations = [
            EvaluationRow(
                r["evaluation_id"],
                r["match_id"],
                r["model_id"],
                r["outcome"],
                r["home_goals"],
                r["away_goals"],
                prediction_id=r["prediction_id"],
                current=r["superseded_by"] is None,
                log_loss=r["log_loss"],
                probabilities=(r["p_home"], r["p_draw"], r["p_away"]),
            )
            for r in await conn.fetch(
                """SELECT e.evaluation_id, e.match_id, e.model_id, e.outcome, e.home_goals,
                          e.away_goals, e.prediction_id, e.superseded_by, e.log_loss,
                          p.p_home, p.p_draw, p.p_away
                   FROM evaluations e LEFT JOIN predictions p USING (prediction_id)"""
            )
        ]
        data = RunData(
            evaluations,
            features={
                r[0]: json.loads(r[1])
                for r in await conn.fetch("SELECT match_id, payload::text FROM match_features")
            },
            results={r[0] for r in await conn.fetch("SELECT match_id FROM results")},
            learned={
                r[0]: r[1]
                for r in await conn.fetch("SELECT model_id, learned FROM learner_checkpoints")
            },
        )
        data.predictions = Counter(
            (r[0], r[1], r[2])
            for r in await conn.fetch(
                "SELECT match_id, model_id, features_revision FROM predictions"
            )
        )
        return data
    finally:
        await conn.close()


async def model_mismatches(deployment: Deployment) -> dict[str, int]:
    """Per online model: inputs on which its stored state predicts differently from the same
    model trained once, in feed order, on every distinct result of its feed."""
    settings = deployment.settings
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT c.model_id, c.version, c.state, m.kind, m.policy FROM learner_checkpoints c "
            "JOIN models m USING (model_id)"
        )
    finally:
        await conn.close()
    feed = await deployment.model_feed()
    inputs = list({item.evaluation.match_id: item.inputs for _, _, item in feed}.values())
    out = {}
    for row in rows:
        context = checkpoint_context(row["model_id"], row["kind"], row["version"])
        online = catalog.restore(
            row["kind"], verify(bytes(row["state"]), settings.registry_keys(), context)
        )
        once = catalog.create(row["model_id"])
        policy = parse_policy(row["policy"] or settings.learning_policy)
        train_once(once, feed_once(feed, row["model_id"]), policy)
        out[row["model_id"]] = prediction_mismatches(online, once, inputs)
    return out


async def unsnapshotted(deployment: Deployment) -> int:
    """Learned results not yet in a registered model version (what a clean exit must flush)."""
    conn = await asyncpg.connect(deployment.settings.database_url)
    try:
        value: int = await conn.fetchval(
            "SELECT coalesce(sum(learned_since_version), 0) FROM learner_checkpoints"
        )
        return value
    finally:
        await conn.close()


async def republished(deployment: Deployment) -> str:
    """Outputs published twice (an input processed twice), per topic; empty when none."""
    topics = deployment.topics
    keys: dict[str, Counter[str]] = {
        # A match's features are issued once per revision; each issue scored once per model.
        "features": Counter(
            f"{f.match_id}|r{f.revision}"
            for f in (
                decode(m.value, MatchFeatures) for m in await deployment.read_topic(topics.features)
            )
        ),
        "predictions": Counter(
            f"{p.match_id}|{p.model_id}|r{p.features_revision}"
            for p in (
                decode(m.value, Prediction) for m in await deployment.read_topic(topics.predictions)
            )
        ),
        "evaluations": Counter(
            decode(m.value, Evaluation).evaluation_id
            for m in await deployment.read_topic(topics.evaluations)
        ),
        "model-feed": Counter(
            item.evaluation.evaluation_id for _, _, item in await deployment.model_feed()
        ),
    }
    found = []
    for name, counts in keys.items():
        twice = sum(n - 1 for n in counts.values() if n > 1)
        if twice:
            found.append(f"{twice} on {name}")
    return ", ".join(found)
