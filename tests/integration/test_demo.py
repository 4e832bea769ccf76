"""`make demo` on a small window: the SUMMARY line it prints last agrees with its database."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from schemas.football_csv import league_file
from streams.cli.demo import delete_old_topics
from streams.db import drop_database
from tests.deployment import environment
from tests.integration.conftest import BASE, REPO, database_url

pytestmark = pytest.mark.integration

EPL = league_file("england-premier-league")
SUMMARY = re.compile(
    r"^SUMMARY matches=(?P<matches>\d+) predictions=(?P<predictions>\d+) "
    r"evaluations=(?P<evaluations>\d+) alerts=(?P<alerts>\d+) "
    r"alerts_decay=(?P<decay>\d+) alerts_recovery=(?P<recovery>\d+) alerts_drift=(?P<drift>\d+) "
    r"models=(?P<models>\d+) "
    r"champion_logloss=(?P<champion>[0-9.]+|nan) online_logloss=(?P<online>[0-9.]+|nan) "
    r"market_open_logloss=(?P<open>[0-9.]+|nan) market_close_logloss=(?P<close>[0-9.]+|nan)$"
)
WINDOW_MATCHES = 66  # England, 2015-08-01 .. 2015-09-30


@pytest.fixture
async def demo_deployment() -> AsyncIterator[tuple[str, str]]:
    """The database name and topic prefix family of one demo run; both removed afterwards."""
    name, prefix = f"tipstream_demo_t_{uuid.uuid4().hex[:10]}", f"demotest{uuid.uuid4().hex[:6]}"
    yield name, prefix
    await delete_old_topics(BASE, prefix)
    await drop_database(BASE.database_url, name)


async def test_small_demo_summary_agrees_with_the_database(
    demo_deployment: tuple[str, str], tmp_path: Path
) -> None:
    """A demo of one league over two months prints SUMMARY last; its counts are the
    database's (evaluations = predictions = matches x models) and its log losses are the
    evaluation log's means; the report folder holds the PNG and the Markdown table."""
    demo_database, prefix = demo_deployment
    out = tmp_path / "report"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams.cli.demo", "--data", str(EPL),
         "--leagues", "england-premier-league", "--from", "2015-08-01", "--to", "2015-09-30",
         "--workers", "1", "--database", demo_database,
         "--prefix", prefix, "--out", str(out)],
        cwd=REPO, env=environment(BASE), capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = SUMMARY.match(done.stdout.strip().splitlines()[-1])
    assert found, done.stdout[-2000:]
    line = found.groupdict()

    conn = await asyncpg.connect(database_url(demo_database))
    try:
        db = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM results) AS matches,
                      (SELECT count(DISTINCT match_id) FROM predictions) AS predicted_matches,
                      (SELECT count(DISTINCT (match_id, model_id)) FROM predictions) AS predictions,
                      (SELECT count(*) FROM evaluations WHERE superseded_by IS NULL)
                          AS evaluations,
                      (SELECT count(*) FROM alerts) AS alerts,
                      (SELECT count(*) FROM alerts WHERE kind = 'decay') AS decay,
                      (SELECT count(*) FROM alerts WHERE kind = 'recovery') AS recovery,
                      (SELECT count(*) FROM alerts WHERE kind = 'drift') AS drift,
                      (SELECT count(*) FROM models WHERE status <> 'retired') AS models,
                      (SELECT count(DISTINCT model_id) FROM predictions) AS predicting_models,
                      (SELECT avg(log_loss) FROM evaluations
                       WHERE is_champion AND superseded_by IS NULL) AS champion,
                      (SELECT avg(log_loss) FROM evaluations
                       WHERE model_id = 'market-close' AND superseded_by IS NULL) AS close"""
        )
    finally:
        await conn.close()
    matches, models = int(line["matches"]), int(line["models"])
    assert matches == WINDOW_MATCHES == db["matches"] == db["predicted_matches"]
    assert models == db["models"] == db["predicting_models"] == 5  # 4 seeded + batch-logreg
    assert int(line["predictions"]) == int(line["evaluations"]) == matches * models
    assert int(line["predictions"]) == db["predictions"]
    assert int(line["evaluations"]) == db["evaluations"]
    assert int(line["alerts"]) == db["alerts"]
    assert [int(line[k]) for k in ("decay", "recovery", "drift")] == [
        db["decay"],
        db["recovery"],
        db["drift"],
    ]
    assert float(line["champion"]) == pytest.approx(db["champion"], abs=5e-5)
    assert float(line["close"]) == pytest.approx(db["close"], abs=5e-5)
    assert "REPLAY rows=5782 valid=5782 rejected=0 published=132" in done.stdout
    assert (out / "rolling_logloss.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert found.group(0) in summary
    assert "| batch-logreg | challenger | 66 |" in summary
    assert "Traceback" not in (out / "logs" / "worker-0.log").read_text()
