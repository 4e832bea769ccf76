"""`tipstream replay` as a subprocess against the real broker and database.

Each test asserts on what the topics and the tables hold after the command: a dry run leaves
both empty, a killed and resumed replay leaves the database of one uninterrupted run, a second
replay changes nothing, bad rows are named and skipped (or stop the run), and ``--from-db``
re-drives stored matches through a newly registered model.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents import registry
from models import catalog
from schemas.codec import decode
from schemas.events import Fixture
from schemas.football_csv import league_file, read_rows
from streams.db import create_database, drop_database
from streams.settings import Settings
from streams.topics import Topics, describe_existing, ensure_topics
from tests.deployment import environment, free_port
from tests.integration.conftest import (
    BASE,
    REPO,
    Worker,
    database_url,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

EPL = league_file("england-premier-league")
EPL_ROWS = 5782
SEEDED_MODELS = 4
WINDOW = ("--from", "2015-08-01", "--to", "2015-09-30")
"""Two months of one league: 66 matches, 132 events; enough for several checkpoints."""
WINDOW_MATCHES = 66
WARM_UP = 2 * sum(row.kickoff.date() < date(2015, 8, 1) for row in read_rows([EPL]).rows)
"""Warm-up inputs before the window: each earlier match's fixture and result, published to
the features agent only (they build the ratings)."""
NO_SNAPSHOTS = {"snapshot_every": 10**9, "snapshot_seconds": 1e9}
"""Models stay at version 0: predictions then depend on the events only, not on how fast the
learner kept up, so two deployments can be compared row for row."""

# Columns that say what happened, without wall-clock times (received_at, created_at, ...).
COLUMNS = {
    "match_features": "match_id, league, season, kickoff, home_team, away_team, payload",
    "results": "match_id, league, kickoff, home_goals, away_goals, outcome, revision, payload",
    "predictions": "prediction_id, match_id, league, kickoff, model_id, model_version, "
    "is_champion, p_home, p_draw, p_away, predicted, confidence",
    "evaluations": "evaluation_id, prediction_id, match_id, model_id, model_version, "
    "is_champion, predicted, outcome, home_goals, away_goals, hit, log_loss, brier, rps, "
    "supersedes, superseded_by",
    "models": "model_id, kind, status, policy",
    "model_versions": "model_id, version, parent_version, kind, learned, last_evaluation_id",
    "learner_checkpoints": "model_id, version, learned, learned_since_version",
    "alerts": "alert_id, kind, state, model_id, scope, metric, first_evaluation_id, "
    "last_evaluation_id",
    "replay_checkpoints": "replay_id, position",
}


OUTCOME = {
    # What a backfill leaves, whatever order the worker read the facts in: a fast replay's
    # features are re-issued a varying number of times (so revisions and the counted
    # predictions' ids vary), but the final features, the counted predictions' figures and
    # the current evaluations do not.
    "match_features": "SELECT match_id, league, season, kickoff, home_team, away_team, "
    "(payload::jsonb - 'issued_at' - 'revision')::text FROM match_features",
    "results": f"SELECT {COLUMNS['results']} FROM results",
    "counted predictions": "SELECT match_id, model_id, model_version, is_champion, p_home, "
    "p_draw, p_away, predicted, confidence FROM predictions WHERE prediction_id IN "
    "(SELECT prediction_id FROM evaluations WHERE superseded_by IS NULL)",
    "current evaluations": "SELECT match_id, model_id, model_version, is_champion, predicted, "
    "outcome, home_goals, away_goals, hit, log_loss, brier, rps FROM evaluations "
    "WHERE superseded_by IS NULL",
    "models": f"SELECT {COLUMNS['models']} FROM models",
    "model_versions": "SELECT model_id, version, parent_version, kind, learned FROM model_versions",
    "learner_checkpoints": f"SELECT {COLUMNS['learner_checkpoints']} FROM learner_checkpoints",
    "alerts": "SELECT kind, state, model_id, scope, metric FROM alerts",
}


async def outcome(url: str) -> dict[str, list[Any]]:
    """The rows of :data:`OUTCOME`, sorted."""
    conn = await asyncpg.connect(url)
    try:
        return {
            name: sorted(tuple(r) for r in await conn.fetch(sql)) for name, sql in OUTCOME.items()
        }
    finally:
        await conn.close()


def replay(
    settings: Settings, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run `tipstream replay` on the test's deployment and return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", *args],
        cwd=REPO, env=environment(settings), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def counts_of(done: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """The figures of the REPLAY line, which must be the last line on stdout."""
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("REPLAY "), done.stdout + done.stderr
    return {k: int(v) for k, v in (part.split("=") for part in last.split()[1:])}


async def snapshot(url: str, tables: dict[str, str] = COLUMNS) -> dict[str, list[Any]]:
    """Every row of the tables (wall-clock columns left out), in a stable order."""
    conn = await asyncpg.connect(url)
    try:
        return {
            table: [
                tuple(r)
                for r in await conn.fetch(f"SELECT {columns} FROM {table} ORDER BY {columns}")
            ]
            for table, columns in tables.items()
        }
    finally:
        await conn.close()


async def count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        value: int = await conn.fetchval(sql)
        return value
    finally:
        await conn.close()


async def evaluated(url: str, expected: int) -> bool:
    """Every match evaluated by every model: ``expected`` current evaluations."""
    sql = "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL"
    return await count(url, sql) == expected


def _evaluated(url: str, expected: int) -> Callable[[], Awaitable[bool]]:
    return lambda: evaluated(url, expected)


async def end_offsets(*topics: str) -> int:
    """Messages ever written to the topics (sum of their partitions' end offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BASE.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    partitions = [
        TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=BASE.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


@pytest.fixture
async def other_settings(template_database: str) -> AsyncIterator[Settings]:
    """A second isolated deployment (database, topics, group), for side-by-side runs."""
    name = f"tipstream_t_{uuid.uuid4().hex[:12]}"
    await create_database(BASE.database_url, name, template=template_database)
    tag = uuid.uuid4().hex[:10]
    value = BASE.replace(
        topic_prefix=f"test-{tag}", app_id="", database_url=database_url(name),
        web_port=free_port(), partitions=2, log_format="json", **NO_SNAPSHOTS,
    )  # fmt: skip
    await ensure_topics(value)
    yield value
    await drop_database(BASE.database_url, name)


async def test_dry_run_publishes_nothing(settings: Settings) -> None:
    """A dry run reads and validates every row, prints published=0, and leaves the topics and
    the checkpoint table empty."""
    done = replay(settings, "--data", str(EPL), *WINDOW, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert counts_of(done) == {
        "rows": EPL_ROWS,
        "valid": EPL_ROWS,
        "rejected": 0,
        "published": 0,
        "warm_up": 0,
    }
    assert f'"matches": {WINDOW_MATCHES}' in done.stderr
    topics = Topics.from_settings(settings)
    assert await end_offsets(topics.fixtures, topics.results, topics.league_inputs) == 0
    assert await count(settings.database_url, "SELECT count(*) FROM replay_checkpoints") == 0


async def test_resume_after_a_kill_equals_one_uninterrupted_run(
    settings: Settings, other_settings: Settings, tmp_path: Path
) -> None:
    """SIGKILL part-way, then --resume: the resumed run publishes exactly the events after the
    checkpoint, the topics hold every event (at most one chunk twice), and the database holds
    what a single uninterrupted replay into another fresh deployment leaves (:data:`OUTCOME`:
    features, results, counted predictions, current evaluations, learning)."""
    settings = settings.replace(**NO_SNAPSHOTS)
    workers = [
        Worker(s, tmp_path / f"worker-{i}.log") for i, s in enumerate((settings, other_settings))
    ]
    for worker in workers:
        worker.start()
    try:
        chunk, total = 20, 2 * WINDOW_MATCHES
        args = ("--data", str(EPL), *WINDOW, "--checkpoint-every", str(chunk))
        # Paced to ~3 s of publishing, so the kill lands part-way through.
        killed = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.cli",
            "replay",
            *args,
            "--rate",
            "50",
            cwd=REPO,
            env=environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        position = await wait_for(
            lambda: count(
                settings.database_url,
                f"SELECT position FROM replay_checkpoints WHERE position >= {WARM_UP + 59}",
            ),
            timeout=60,
            interval=0.05,
            what="a checkpoint part-way",
        )
        killed.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(killed.wait(), timeout=10) == -signal.SIGKILL
        assert position < WARM_UP + total - 1

        resumed = replay(settings, *args, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert counts_of(resumed)["published"] == WARM_UP + total - (position + 1)
        assert counts_of(resumed)["warm_up"] == 0
        whole = replay(other_settings, *args)
        assert counts_of(whole)["published"] == total
        assert counts_of(whole)["warm_up"] == WARM_UP

        topics = Topics.from_settings(settings)
        written = await end_offsets(topics.fixtures, topics.results)
        assert total <= written <= total + chunk + 1
        messages = await read_topic(topics.features)
        assert len({m.key for m in messages}) == WINDOW_MATCHES

        expected = WINDOW_MATCHES * SEEDED_MODELS
        for url in (settings.database_url, other_settings.database_url):
            await wait_for(_evaluated(url, expected), timeout=120, what=f"{expected} evaluations")
        await _settled(settings, other_settings)
        interrupted = await outcome(settings.database_url)
        uninterrupted = await outcome(other_settings.database_url)
        for table in interrupted:
            assert interrupted[table] == uninterrupted[table], table
        assert len(interrupted["counted predictions"]) == expected
        checkpoints = [
            await snapshot(s.database_url, {"replay_checkpoints": "position"})
            for s in (settings, other_settings)
        ]
        # The replay id names the events and the deployment's prefix, so it differs by design.
        assert [c["replay_checkpoints"] for c in checkpoints] == [[(WARM_UP + total - 1,)]] * 2
    finally:
        for worker in workers:
            worker.stop()


async def _settled(*deployments: Settings) -> None:
    """Wait until learning has caught up with the evaluations (checkpoints stop changing)."""
    for deployment in deployments:
        previous: Any = None
        for _ in range(60):
            current = await snapshot(
                deployment.database_url, {"learner_checkpoints": COLUMNS["learner_checkpoints"]}
            )
            if current == previous:
                break
            previous = current
            await asyncio.sleep(1.0)


async def test_a_second_replay_leaves_the_database_as_the_first(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """Replaying the same window again republishes every fact, but no table changes and
    nothing is scored again: the features agent knows every fixture already, and a known
    result is not evaluated or learned again."""
    settings = settings.replace(commit_interval=0.1)
    start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    args = ("--data", str(EPL), *WINDOW, "--sync")
    first = replay(settings, *args)
    assert counts_of(first)["published"] == 2 * WINDOW_MATCHES, first.stderr
    expected = WINDOW_MATCHES * SEEDED_MODELS
    assert await evaluated(settings.database_url, expected)
    await asyncio.sleep(settings.snapshot_seconds + 1.0)  # a last timed version, if one is due
    assert (
        await count(settings.database_url, "SELECT count(*) FROM model_versions WHERE version > 0")
        > 0
    )
    once = await snapshot(settings.database_url)
    topics = Topics.from_settings(settings)
    issued = await end_offsets(topics.features, topics.predictions)
    assert issued >= WINDOW_MATCHES * (1 + SEEDED_MODELS)

    second = replay(settings, *args)
    assert counts_of(second)["published"] == 2 * WINDOW_MATCHES, second.stderr
    await asyncio.sleep(settings.snapshot_seconds + 1.0)
    twice = await snapshot(settings.database_url)
    for table in once:
        assert once[table] == twice[table], table
    assert await end_offsets(topics.features, topics.predictions) == issued
    assert await end_offsets(topics.dead_letters) == 0


GOOD_LINES = 6


def _bad_csv(tmp_path: Path) -> tuple[Path, list[int]]:
    """Six real rows with three bad ones between them; returns the file and the bad lines."""
    lines = EPL.read_text().splitlines()
    header, good = lines[0], lines[1 : 1 + GOOD_LINES]
    wrong_goals = good[0].split(",")
    wrong_goals[6] = "two"
    wrong_odds = good[1].split(",")
    wrong_odds[10] = "0.5"
    body = [
        good[0],
        ",".join(wrong_goals),
        good[1],
        good[2],
        good[2],
        good[3],
        ",".join(wrong_odds),
        good[4],
        good[5],
    ]
    path = tmp_path / "with-bad-rows.csv"
    path.write_text("\n".join([header, *body]) + "\n")
    return path, [3, 6, 8]  # file lines: header is line 1


async def test_on_error_stop_publishes_nothing_and_skip_publishes_the_good_rows(
    settings: Settings, tmp_path: Path
) -> None:
    """--on-error stop ends at the first bad row (named by file and line) before publishing;
    --on-error skip names every bad row and publishes exactly the good ones."""
    path, bad_lines = _bad_csv(tmp_path)
    topics = Topics.from_settings(settings)
    stopped = replay(settings, "--data", str(path), "--on-error", "stop")
    assert stopped.returncode != 0
    assert f"{path}:{bad_lines[0]}:" in stopped.stderr
    assert counts_of(stopped) == {
        "rows": 2,
        "valid": 1,
        "rejected": 1,
        "published": 0,
        "warm_up": 0,
    }
    assert await end_offsets(topics.fixtures, topics.results, topics.league_inputs) == 0

    skipped = replay(settings, "--data", str(path), "--on-error", "skip")
    assert skipped.returncode == 0, skipped.stderr
    rows = GOOD_LINES + len(bad_lines)
    assert counts_of(skipped) == {
        "rows": rows,
        "valid": GOOD_LINES,
        "rejected": len(bad_lines),
        "published": 2 * GOOD_LINES,
        "warm_up": 0,
    }
    for line in bad_lines:
        assert f"{path}:{line}:" in skipped.stderr
    fixtures = await read_topic(topics.fixtures, expect=GOOD_LINES)
    assert len(fixtures) == GOOD_LINES
    teams = {(f.home_team, f.away_team) for f in (decode(m.value, Fixture) for m in fixtures)}
    good = EPL.read_text().splitlines()[1 : 1 + GOOD_LINES]
    assert teams == {(line.split(",")[4], line.split(",")[5]) for line in good}
    assert await end_offsets(topics.results) == GOOD_LINES


async def test_from_db_redrives_stored_matches_through_a_new_model(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """After a model is added, `replay --from-db` re-publishes the stored features and
    results: the new model predicts and is evaluated on every stored match, while the rows
    of the models that had already scored them stay as they were."""
    settings = settings.replace(commit_interval=0.1)
    start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    first = replay(settings, "--data", str(EPL), *WINDOW, "--sync")
    assert counts_of(first)["published"] == 2 * WINDOW_MATCHES, first.stderr
    before = await snapshot(settings.database_url)

    conn = await asyncpg.connect(settings.database_url)
    try:
        await registry.register(
            conn,
            catalog.create("online-logreg-noodds"),
            status="challenger",
            keys=settings.registry_keys(),
            policy="errors",
        )
    finally:
        await conn.close()
    await wait_for(
        lambda: _scoring_with(settings, "online-logreg-noodds"),
        timeout=30,
        what="the scorer to load the new model",
    )

    again = replay(settings, "--from-db", "--sync")
    assert again.returncode == 0, again.stderr
    stored = 2 * WINDOW_MATCHES
    assert counts_of(again) == {
        "rows": stored,
        "valid": stored,
        "rejected": 0,
        "published": stored,
        "warm_up": 0,
    }
    after = await snapshot(settings.database_url)
    for table in ("match_features", "results"):
        assert after[table] == before[table], table
    for table, model in (("predictions", 4), ("evaluations", 3)):
        new = [r for r in after[table] if r[model] == "online-logreg-noodds"]
        assert len(new) == WINDOW_MATCHES, table
        assert [r for r in after[table] if r[model] != "online-logreg-noodds"] == before[table]


async def _scoring_with(settings: Settings, model_id: str) -> bool:
    def fetch() -> dict[str, Any]:
        url = f"http://127.0.0.1:{settings.web_port}/status/"
        with urllib.request.urlopen(url, timeout=5) as response:
            status: dict[str, Any] = json.loads(response.read())
            return status

    try:
        status = await asyncio.to_thread(fetch)
    except OSError:
        return False
    return any(m["model_id"] == model_id for m in status["models"])


SEASON = ("--from", "2015-08-01", "--to", "2016-06-30")
"""Ten months of one league: 364 matches (the rows of the file in that window), against a
30-day ledger window."""
SEASON_MATCHES = 364


async def live_ledgers(settings: Settings) -> tuple[int, int]:
    """(ledgers in the table, tombstones written): the ledgers changelog read from the start
    and compacted as the broker and a recovering worker do (last record per key wins, an
    empty value deletes)."""
    topic = f"{settings.group_id}-ledgers-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=BASE.kafka_bootstrap, group_id=None)
    await consumer.start()
    messages: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                messages.extend(records)
    finally:
        await consumer.stop()
    latest = {m.key: m.value for m in messages}
    return sum(v is not None for v in latest.values()), sum(m.value is None for m in messages)


async def test_a_replayed_season_leaves_only_the_window_of_ledgers_in_the_table(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """After a season is replayed, every match is evaluated by every model, yet the ledgers
    table holds only the matches of about the last 30 days of kickoffs (and tombstones for the
    rest): the reconciler's state is bounded by the window, not by history. The changelog is
    compacted, with segments that roll after TIPSTREAM_LEDGER_SEGMENT_SECONDS."""
    settings = settings.replace(commit_interval=0.1)
    start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    done = replay(settings, "--data", str(EPL), *SEASON, "--sync", timeout=600)
    assert counts_of(done)["published"] == 2 * SEASON_MATCHES, done.stderr
    await wait_for(
        _evaluated(settings.database_url, SEASON_MATCHES * SEEDED_MODELS),
        timeout=300,
        what="every match evaluated by every model",
    )

    async def bounded() -> bool:
        live, _ = await live_ledgers(settings)
        return live <= SEASON_MATCHES // 4

    await wait_for(bounded, timeout=60, what="the table to hold only the window's ledgers")
    live, tombstones = await live_ledgers(settings)
    assert tombstones >= SEASON_MATCHES - live
    admin = AIOKafkaAdminClient(bootstrap_servers=BASE.kafka_bootstrap)
    await admin.start()
    try:
        changelog = f"{settings.group_id}-ledgers-changelog"
        configs = (await describe_existing(admin, [changelog]))[changelog].configs
    finally:
        await admin.close()
    assert configs["cleanup.policy"] == "compact"  # tombstones delete
    assert configs["segment.ms"] == str(settings.ledger_segment_seconds * 1000)
    assert await count(
        settings.database_url, "SELECT count(DISTINCT (match_id, model_id)) FROM predictions"
    ) == (SEASON_MATCHES * SEEDED_MODELS)
