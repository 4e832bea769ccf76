"""The operator commands against the real broker and database (issue 17 item 4, issue 16 item 5):
``alerts list|show|tail|ack|resolve``, ``dead-letters list|show|redrive`` with a worker running,
and ``predictions show``."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agents import alert_store
from schemas.codec import encode
from schemas.events import Alert, MatchFeatures
from streams.cli.replay import Drain
from streams.settings import Settings
from streams.topics import Topics
from tests.deployment import REPO, environment, run_cli
from tests.integration.conftest import BASE, Worker, publish_raw, wait_for
from tests.integration.test_pipeline import SEEDED_MODELS, events_between, publish_events

pytestmark = pytest.mark.integration

CLOSED_DATABASE = "postgresql://tipstream:s3cr3t@127.0.0.1:1/tipstream"
CLOSED_KAFKA = "kafka://127.0.0.1:1"


def cli_json(settings: Settings, *args: str) -> Any:
    done = run_cli(settings, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def alert(
    kind: str, *, model_id: str = "online-logreg", at: datetime, metric: str = "log_loss"
) -> Alert:
    resolved = kind == "recovery"
    return Alert(
        alert_id=f"{kind}-{model_id}-{at:%H%M%S%f}",
        kind=kind,  # type: ignore[arg-type]
        state="resolved" if resolved else "firing",
        model_id=model_id,
        source="monitor",
        scope="all",
        metric=metric,
        detector="window",
        window=300,
        baseline=0.98,
        current=1.07,
        threshold=0.05,
        first_evaluation_id="e-first",
        last_evaluation_id="e-last",
        message=f"{model_id} (all): log_loss {kind}",
        created_at=at,
    )


async def store(db: asyncpg.Pool, *alerts: Alert) -> None:
    async with db.acquire() as conn:
        await alert_store.write(conn, alerts)


async def test_alert_lifecycle_list_show_ack_resolve(settings: Settings, db: asyncpg.Pool) -> None:
    """Alerts written by the store are listed and filtered, shown with every column, and
    acknowledged then resolved once each (repeating changes nothing; an unknown id is an
    error); a recovery resolves the open decay it ends, not a decay that fired after it."""
    now = datetime.now(UTC)
    decay = alert("decay", at=now - timedelta(hours=3))
    other = alert("decay", model_id="market-open", at=now - timedelta(hours=2))
    drift = alert("drift", at=now - timedelta(minutes=5))
    await store(db, decay, other, drift)

    listed = cli_json(settings, "alerts", "list")
    assert [a["alert_id"] for a in listed] == [drift.alert_id, other.alert_id, decay.alert_id]
    assert {a["status"] for a in listed} == {"open"}
    by_kind = cli_json(settings, "alerts", "list", "--kind", "decay", "--model", "market-open")
    assert [a["alert_id"] for a in by_kind] == [other.alert_id]
    recent = cli_json(settings, "alerts", "list", "--since", "1h")
    assert [a["alert_id"] for a in recent] == [drift.alert_id]
    assert len(cli_json(settings, "alerts", "list", "--limit", "2")) == 2

    shown = cli_json(settings, "alerts", "show", decay.alert_id)
    assert shown["message"] == decay.message
    assert shown["baseline"] == decay.baseline
    text = run_cli(settings, "alerts", "show", decay.alert_id).stdout
    assert decay.message in text
    assert "first_evaluation_id" in text

    acked = cli_json(settings, "alerts", "ack", decay.alert_id, "--by", "ana", "--note", "looking")
    assert (acked["status"], acked["acknowledged_by"], acked["changed"]) == (
        "acknowledged",
        "ana",
        True,
    )
    again = run_cli(settings, "alerts", "ack", decay.alert_id, "--by", "bo")
    assert again.returncode == 0
    assert "already acknowledged by ana; unchanged" in again.stdout
    resolved = cli_json(settings, "alerts", "resolve", decay.alert_id, "--by", "bo")
    assert (resolved["status"], resolved["resolved_by"], resolved["note"]) == (
        "resolved",
        "bo",
        "looking",
    )
    after = cli_json(settings, "alerts", "ack", decay.alert_id)
    assert (after["status"], after["changed"]) == ("resolved", False)

    unknown = run_cli(settings, "alerts", "ack", "no-such-alert")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "tipstream alerts ack: no alert with id 'no-such-alert'"
    assert "Traceback" not in unknown.stderr

    # The recovery of market-open ends its open decay; a decay stored after it stays open.
    recovery = alert("recovery", model_id="market-open", at=now - timedelta(hours=1))
    later = alert("decay", model_id="market-open", at=now - timedelta(minutes=1))
    await store(db, recovery, later)
    ended = cli_json(settings, "alerts", "show", other.alert_id)
    assert (ended["status"], ended["resolved_by"], ended["resolved_by_alert"]) == (
        "resolved",
        "recovery",
        recovery.alert_id,
    )
    assert cli_json(settings, "alerts", "show", recovery.alert_id)["status"] == "resolved"
    assert cli_json(settings, "alerts", "show", later.alert_id)["status"] == "open"
    open_now = cli_json(settings, "alerts", "list", "--status", "open")
    assert {a["alert_id"] for a in open_now} == {drift.alert_id, later.alert_id}


async def _line(stream: asyncio.StreamReader, timeout: float = 60.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(stream.readline(), timeout)
    assert raw, "tail ended its output"
    value: dict[str, Any] = json.loads(raw)
    return value


async def test_alerts_tail_follows_new_alerts_and_ctrl_c_exits_cleanly(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """``tail`` prints the latest alert, then each alert stored afterwards, once; SIGINT (what
    Ctrl-C sends) ends it with exit code 0 and no traceback."""
    now = datetime.now(UTC)
    first = alert("decay", at=now - timedelta(minutes=10))
    await store(db, first)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        "alerts",
        "tail",
        "--json",
        "--interval",
        "0.2",
        cwd=REPO,
        env=environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        assert (await _line(process.stdout))["alert_id"] == first.alert_id
        second = alert("drift", at=datetime.now(UTC))
        await store(db, second)
        assert (await _line(process.stdout))["alert_id"] == second.alert_id
        # Stored again (a redelivered batch): nothing new to print; the next one is a third.
        await store(db, second)
        third = alert("decay", model_id="market-open", at=datetime.now(UTC))
        await store(db, third)
        assert (await _line(process.stdout))["alert_id"] == third.alert_id
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 60)
        err = (await process.stderr.read()).decode()
        assert code == 0, err
        assert "Traceback" not in err
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_alerts_and_dead_letters_with_a_service_down_print_one_line() -> None:
    """Unreachable PostgreSQL (alerts) or Kafka (dead letters): the one-line error of every
    command, exit code 2."""
    down_db = run_cli(
        BASE.replace(database_url=CLOSED_DATABASE, log_format="json"), "alerts", "list"
    )
    assert down_db.returncode == 2
    assert down_db.stderr.splitlines() == [
        "tipstream: cannot reach PostgreSQL at 127.0.0.1:1 (connection refused); "
        "check TIPSTREAM_DATABASE_URL"
    ]
    down_kafka = run_cli(
        BASE.replace(kafka_url=CLOSED_KAFKA, log_format="json"), "dead-letters", "list"
    )
    assert down_kafka.returncode == 2
    assert down_kafka.stderr.splitlines() == [
        "tipstream: cannot reach Kafka at 127.0.0.1:1 (no broker answered); "
        "check TIPSTREAM_KAFKA_URL"
    ]


async def count(db: asyncpg.Pool, sql: str, *args: Any) -> int:
    async with db.acquire() as conn:
        value: int = await conn.fetchval(sql, *args)
        return value


async def _drained(settings: Settings) -> None:
    """Wait until the worker group has committed everything on its topics."""
    drain = Drain(settings, timeout=180)
    await drain.start()
    try:
        await drain.wait()
    finally:
        await drain.stop()


async def test_an_invalid_event_fixed_and_redriven_is_scored_and_evaluated_once(
    settings: Settings,
    start_worker: Callable[..., Worker],
    producer: Any,
    db: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    """A match whose features are invalid is dead-lettered by the running worker; redriving the
    original bytes (or a still-broken fix) is refused with the agent's reason; the fixed
    payload redriven is scored by every model and evaluated once each; a second redrive is
    refused, and a forced one changes nothing."""
    topics = Topics.from_settings(settings)
    start_worker()
    events = events_between("2012-08-18", "2012-08-19")
    target = next(e for e in events if e.kind == "features")
    assert isinstance(target.record, MatchFeatures)
    match_id = target.record.match_id
    fixed = encode(target.record)
    broken = json.loads(fixed)
    broken["home_team"] = "  "
    broken_bytes = json.dumps(broken).encode()
    await publish_raw(producer, topics.features, [(target.key.encode(), broken_bytes)])
    await publish_events(producer, settings, [e for e in events if e is not target])
    others = sum(1 for e in events if e.kind == "features") - 1

    async def letters() -> list[dict[str, Any]]:
        return [
            letter
            for letter in cli_json(settings, "dead-letters", "list", "--topic", "match-features")
            if letter["key"] == match_id
        ]

    (letter,) = await wait_for(letters, timeout=120, what="the dead letter of the broken match")
    assert (letter["field"], letter["agent"], letter["redriven"]) == ("$.home_team", "scorer", 0)
    assert cli_json(settings, "dead-letters", "list", "--reason", "must not be blank")
    assert cli_json(settings, "dead-letters", "list", "--reason", "no such rule") == []
    partition = letter["id"].split(":")[0]
    missing = run_cli(settings, "dead-letters", "show", f"{partition}:999999")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"tipstream dead-letters show: no dead letter {partition}:")
    shown = cli_json(settings, "dead-letters", "show", letter["id"])
    assert shown["payload"] == broken_bytes.decode()
    await wait_for(
        lambda: _at_least(db, "SELECT count(*) FROM evaluations", others * SEEDED_MODELS),
        timeout=180,
        what="the other matches evaluated",
    )
    assert await count(db, "SELECT count(*) FROM predictions WHERE match_id = $1", match_id) == 0

    original = run_cli(settings, "dead-letters", "redrive", letter["id"])
    assert original.returncode == 1
    assert letter["rule"] in original.stderr
    assert "$.home_team" in original.stderr
    assert "Traceback" not in original.stderr
    still_broken = json.loads(fixed)
    still_broken["away_team"] = ""
    refused = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "streams.cli",
            "dead-letters",
            "redrive",
            letter["id"],
            "--payload",
            "-",
        ],
        cwd=REPO,
        env=environment(settings),
        input=json.dumps(still_broken),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
    assert "corrected payload is still invalid, $.away_team=" in refused.stderr

    payload = tmp_path / "fixed.json"
    payload.write_bytes(fixed)
    done = cli_json(settings, "dead-letters", "redrive", letter["id"], "--payload", str(payload))
    assert (done["corrected"], done["forced"], done["source_topic"]) == (
        True,
        False,
        topics.features,
    )
    await wait_for(
        lambda: _at_least(
            db, "SELECT count(*) FROM evaluations WHERE match_id = $1", SEEDED_MODELS, match_id
        ),
        timeout=180,
        what="the redriven match evaluated",
    )
    twice = run_cli(settings, "dead-letters", "redrive", letter["id"], "--payload", str(payload))
    assert twice.returncode == 1
    assert "was already redriven" in twice.stderr
    forced = cli_json(
        settings, "dead-letters", "redrive", letter["id"], "--payload", str(payload), "--force"
    )
    assert forced["forced"] is True
    await _drained(settings)  # the forced copy went through every agent

    predictions = await count(db, "SELECT count(*) FROM predictions WHERE match_id = $1", match_id)
    evaluations = await count(
        db, "SELECT count(DISTINCT prediction_id) FROM evaluations WHERE match_id = $1", match_id
    )
    assert (predictions, evaluations) == (SEEDED_MODELS, SEEDED_MODELS)
    assert await count(db, "SELECT count(*) FROM evaluations WHERE match_id = $1", match_id) == (
        SEEDED_MODELS
    )
    assert cli_json(settings, "dead-letters", "show", letter["id"])["redriven"] == 2

    record = cli_json(settings, "predictions", "show", match_id)
    assert record["features"]["home_team"] == target.record.home_team
    assert len(record["predictions"]) == SEEDED_MODELS
    assert record["result"]["outcome"] in ("H", "D", "A")
    assert {e["prediction_id"] for e in record["evaluations"]} == {
        p["prediction_id"] for p in record["predictions"]
    }
    text = run_cli(settings, "predictions", "show", match_id).stdout
    for heading in ("features", "predictions", "result", "evaluations"):
        assert f"\n{heading}\n" in text


async def _at_least(db: asyncpg.Pool, sql: str, floor: int, *args: Any) -> bool:
    return await count(db, sql, *args) >= floor
