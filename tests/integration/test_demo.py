"""`make demo` on a small window: the SUMMARY line it prints last agrees with its database, and
the scripted incident's decay and recovery are in it, in the alert log and in the report."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date
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
WINDOW_MATCHES = 102  # England, 2015-08-01 .. 2015-10-31
DECAY_WINDOW = 20
"""The monitor's window for this short run (the service's is 300): a baseline of 20 evaluations,
then a recovery after 20 healthy ones fit a window of 102 matches."""
INCIDENT = "2015-09-12:2015-09-27"
"""Two weeks of broken inputs after the baseline, with a month of matches after them."""


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
    """A demo of one league over three months prints SUMMARY last; its counts are the
    database's (evaluations = predictions = matches x models) and its log losses are the
    evaluation log's means; the report folder holds the PNG and the Markdown table. The
    scripted incident's model fires a decay after it breaks and a recovery after that, in
    each of its scopes, and the report's Incident section says when."""
    demo_database, prefix = demo_deployment
    out = tmp_path / "report"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams.cli.demo", "--data", str(EPL),
         "--leagues", "england-premier-league", "--from", "2015-08-01", "--to", "2015-10-31",
         "--incident", INCIDENT, "--workers", "1", "--database", demo_database,
         "--prefix", prefix, "--out", str(out)],
        cwd=REPO, env=environment(BASE.replace(decay_window=DECAY_WINDOW)),
        capture_output=True, text=True, timeout=360,
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
        incident = await conn.fetch(
            """SELECT a.kind, a.scope, e.kickoff FROM alerts a
               JOIN evaluations e ON e.evaluation_id = a.last_evaluation_id
               WHERE a.model_id = 'demo-incident' AND a.kind IN ('decay', 'recovery')
               ORDER BY e.kickoff, a.alert_id"""
        )
        champion_versions = await conn.fetchval(
            "SELECT count(*) FROM models WHERE status = 'champion' AND model_id = 'online-logreg'"
        )
    finally:
        await conn.close()
    matches, models = int(line["matches"]), int(line["models"])
    assert matches == WINDOW_MATCHES == db["matches"] == db["predicted_matches"]
    # 4 seeded, batch-logreg and demo-incident
    assert models == db["models"] == db["predicting_models"] == 6
    assert champion_versions == 1  # the incident is a challenger: the champion is the seeded one
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
    assert int(line["decay"]) >= 1
    assert int(line["recovery"]) >= 1
    assert "REPLAY rows=5782 valid=5782 rejected=0 published=204" in done.stdout
    assert (out / "rolling_logloss.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert found.group(0) in summary
    assert "| batch-logreg | challenger | 102 |" in summary

    # The incident: in both scopes (all, the one league) a decay on or after its first day,
    # during it, then a recovery after it ended.
    start, end = (date.fromisoformat(day) for day in INCIDENT.split(":"))
    for scope in ("all", "league:england-premier-league"):
        kinds = [(a["kind"], a["kickoff"].date()) for a in incident if a["scope"] == scope]
        assert [k for k, _ in kinds][:2] == ["decay", "recovery"], (scope, kinds)
        assert start <= kinds[0][1] < end, (scope, kinds)
        assert kinds[1][1] >= end, (scope, kinds)
    section = summary.split("## Incident", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| all |")]
    assert len(rows) == 1, section
    assert "| none |" not in rows[0], section
    assert f"--incident {start}:{end}" in section
    assert "Traceback" not in (out / "logs" / "worker-0.log").read_text()
