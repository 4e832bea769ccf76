"""The pipeline end to end on the real broker and database, with a worker subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from agents.registry import RegisteredModel
from agents.scorer_rules import predict
from models import catalog
from models.timeline import Filters, TimedEvent, timeline
from schemas.codec import decode
from schemas.events import Alert, DeadLetter, MatchFeatures, MatchResult, Prediction
from schemas.football_csv import FootballRow, league_file, read_rows
from streams.cli.reports import reconciliation_report
from streams.settings import Settings
from streams.topics import Topics
from tests.deployment import run_cli
from tests.integration.conftest import (
    Worker,
    publish,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

EPL = league_file("england-premier-league")
SEEDED_MODELS = 4  # champion, one challenger, two market references


def epl_rows() -> list[FootballRow]:
    return read_rows([EPL]).rows


def events_between(start: str, end: str) -> list[TimedEvent]:
    return timeline(
        epl_rows(), Filters(start=date.fromisoformat(start), end=date.fromisoformat(end))
    )


async def publish_events(producer: Any, settings: Settings, events: list[TimedEvent]) -> None:
    topics = Topics.from_settings(settings)
    batch: list[tuple[str, Any]] = []
    current = None
    for event in events:
        topic = topics.features if event.kind == "features" else topics.results
        if topic != current and batch:
            await publish(producer, current, batch)  # type: ignore[arg-type]
            batch = []
        current = topic
        batch.append((event.key, event.record))
    if batch:
        await publish(producer, current, batch)  # type: ignore[arg-type]


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    async with pool.acquire() as conn:
        value: int = await conn.fetchval(sql, *args)
        return value


def cli(settings: Settings, *args: str) -> str:
    done = run_cli(settings, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_two_seasons_end_to_end(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """Two seasons of one league: every match scored by every model, every prediction
    evaluated once, the database equal to the topics, the online model's version advanced."""
    worker = start_worker()
    events = events_between("2009-08-01", "2011-06-30")
    matches = sum(1 for e in events if e.kind == "features")
    await publish_events(producer, settings, events)
    expected = matches * SEEDED_MODELS

    await wait_for(
        lambda: _equals(db, "SELECT count(*) FROM evaluations", expected),
        timeout=240,
        what=f"{expected} evaluations",
    )
    assert await count(db, "SELECT count(*) FROM predictions") == expected
    assert await count(db, "SELECT count(DISTINCT match_id) FROM predictions") == matches
    assert await count(db, "SELECT count(*) FROM results") == matches
    assert await count(db, "SELECT count(*) FROM predictions WHERE is_champion") == matches
    report = await reconciliation_report(settings, now=datetime.now(UTC))
    assert report.consistent, report.render()
    assert report.waiting_predictions == 0
    assert report.orphan_results == 0
    await wait_for(
        lambda: _greater(
            db, "SELECT max(version) FROM model_versions WHERE model_id = 'online-logreg'", 0
        ),
        timeout=60,
        what="a new online-logreg version",
    )
    decays = await count(
        db,
        "SELECT count(*) FROM alerts WHERE kind = 'decay' "
        "AND model_id LIKE 'market-%' AND scope = 'all'",
    )
    # The market references do not learn: on an ordinary stretch their overall windows hold.
    assert decays == 0
    assert "Traceback" not in worker.log_text()


async def _equals(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return await count(pool, sql) == expected


async def _greater(pool: asyncpg.Pool, sql: str, floor: int) -> bool:
    value = await count(pool, sql)
    return value is not None and value > floor


async def test_out_of_order_duplicate_and_corrected_results(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """Results before features, the same result twice, and a corrected score: one current
    evaluation per prediction, the first one superseded by the correction."""
    topics = Topics.from_settings(settings)
    start_worker()
    events = events_between("2012-08-01", "2012-09-30")
    features = [e for e in events if e.kind == "features"]
    results = [e for e in events if e.kind == "result"]
    # Every result first (as in a backfill), twice; then the features.
    await publish(producer, topics.results, [(e.key, e.record) for e in results])
    await publish(producer, topics.results, [(e.key, e.record) for e in results])
    await publish(producer, topics.features, [(e.key, e.record) for e in features])
    expected = len(features) * SEEDED_MODELS
    await wait_for(
        lambda: _equals(db, "SELECT count(*) FROM evaluations", expected),
        timeout=120,
        what=f"{expected} evaluations",
    )

    original = results[0].record
    assert isinstance(original, MatchResult)
    corrected = MatchResult(
        match_id=original.match_id,
        league=original.league,
        kickoff=original.kickoff,
        home_goals=original.home_goals + 1,
        away_goals=original.away_goals,
        outcome="H" if original.home_goals + 1 > original.away_goals else "D",
    )
    await publish(producer, topics.results, [(corrected.match_id, corrected)])
    await wait_for(
        lambda: _equals(
            db, "SELECT count(*) FROM evaluations WHERE superseded_by IS NOT NULL", SEEDED_MODELS
        ),
        timeout=60,
        what="superseded evaluations",
    )
    assert (
        await count(db, "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL") == expected
    )
    assert (
        await count(
            db,
            "SELECT count(*) FROM evaluations WHERE match_id = $1 "
            "AND superseded_by IS NULL AND home_goals = $2",
            corrected.match_id,
            corrected.home_goals,
        )
        == SEEDED_MODELS
    )
    assert (
        await count(db, "SELECT revision FROM results WHERE match_id = $1", corrected.match_id) == 2
    )


async def test_promote_and_rollback_reach_the_running_scorer(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """After `tipstream models promote`, the next prediction marks the new champion; after
    `rollback`, the old one again."""
    topics = Topics.from_settings(settings)
    start_worker()
    features = [e for e in events_between("2013-08-01", "2013-08-31") if e.kind == "features"]
    first, second, third = features[0], features[1], features[2]

    async def champion_of(match_id: str, seen: int) -> str | None:
        messages = await read_topic(topics.predictions, expect=seen, timeout=60)
        for message in messages:
            prediction = decode(message.value, Prediction)
            if prediction.match_id == match_id and prediction.is_champion:
                return prediction.model_id
        return None

    await publish(producer, topics.features, [(first.key, first.record)])
    assert await champion_of(first.key, SEEDED_MODELS) == "online-logreg"
    out = cli(settings, "models", "promote", "online-rating")
    assert "online-logreg -> online-rating" in out
    await _settle()
    await publish(producer, topics.features, [(second.key, second.record)])
    assert await champion_of(second.key, 2 * SEEDED_MODELS) == "online-rating"
    assert "online-rating -> online-logreg" in cli(settings, "models", "rollback")
    await _settle()
    await publish(producer, topics.features, [(third.key, third.record)])
    assert await champion_of(third.key, 3 * SEEDED_MODELS) == "online-logreg"
    listing = cli(settings, "models", "list")
    assert "online-logreg" in listing
    assert "champion" in listing


async def _settle() -> None:
    """Snapshots are consumed asynchronously by the scorer: give it a moment."""
    import asyncio

    await asyncio.sleep(2.0)


async def test_decay_alert_then_recovery(
    settings: Settings, tmp_path: Path, producer: Any, db: asyncpg.Pool
) -> None:
    """Scrambled results after a stable stretch make the market reference decay: one decay
    alert within a bounded number of evaluations, and a recovery once results are true again."""
    settings = settings.replace(decay_window=60)
    worker = Worker(settings, tmp_path / "worker.log")
    worker.start()
    try:
        events = events_between("2014-08-01", "2015-06-30")
        matches = [e for e in events if e.kind == "features"]
        stable, scrambled_ids = matches[:120], {e.key for e in matches[120:200]}
        assert len(stable) == 120
        scrambled_events = []
        for event in events:
            record = event.record
            if event.kind == "result" and event.key in scrambled_ids:
                assert isinstance(record, MatchResult)
                # Swap the score: favourites lose, and the market's loss jumps.
                record = MatchResult(
                    match_id=record.match_id,
                    league=record.league,
                    kickoff=record.kickoff,
                    home_goals=record.away_goals,
                    away_goals=record.home_goals,
                    outcome={"H": "A", "A": "H", "D": "D"}[record.outcome],
                )
            scrambled_events.append(TimedEvent(event.at, event.kind, record))
        # Three phases, each reconciled before the next is sent, as time would pass: a burst
        # across partitions could otherwise put scrambled matches into the baseline window.
        by_match = {e.key: i for i, e in enumerate(matches)}
        for start, end in ((0, 120), (120, 200), (200, 320)):
            phase = [e for e in scrambled_events if start <= by_match[e.key] < end]
            await publish_events(producer, settings, phase)
            await wait_for(
                lambda n=end: _equals(
                    db, "SELECT count(*) FROM evaluations WHERE model_id = 'market-open'", n
                ),
                timeout=120,
                what=f"{end} market-open evaluations",
            )
        alert = await wait_for(
            lambda: _alert(db, "market-open", "decay"), timeout=180, what="a decay alert"
        )
        assert alert["state"] == "firing"
        assert alert["metric"] in ("log_loss", "accuracy")
        # What an operator acts on: the version and the matches of the window, in the row.
        assert alert["model_version"] is not None
        assert alert["first_match_id"] is not None
        assert alert["last_match_id"] is not None
        assert alert["message"].startswith(f"market-open v{alert['model_version']} (all leagues)")
        # It fired after the scrambling began, within one window of it.
        fired_at = await count(
            db,
            "SELECT count(*) FROM evaluations WHERE model_id = 'market-open' AND kickoff <= "
            "(SELECT kickoff FROM evaluations WHERE evaluation_id = $1)",
            alert["last_evaluation_id"],
        )
        assert len(stable) < fired_at <= len(stable) + settings.decay_window
        assert (
            await count(
                db,
                "SELECT count(*) FROM alerts WHERE kind = 'decay' AND "
                "model_id = 'market-open' AND scope = 'all' AND metric = $1",
                alert["metric"],
            )
            == 1
        )
        recovery = await wait_for(
            lambda: _alert(db, "market-open", "recovery"), timeout=180, what="a recovery"
        )
        assert recovery["state"] == "resolved"
        messages = await read_topic(Topics.from_settings(settings).alerts, expect=2)
        kinds = {decode(m.value, Alert).kind for m in messages}
        assert {"decay", "recovery"} <= kinds
    finally:
        worker.stop()


async def _alert(pool: asyncpg.Pool, model_id: str, kind: str) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow(
            "SELECT * FROM alerts WHERE model_id = $1 AND kind = $2 AND scope = 'all' "
            "ORDER BY created_at LIMIT 1",
            model_id,
            kind,
        )


async def test_ledgers_survive_a_killed_worker(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """Predictions made before a SIGKILL are still joined with results that arrive after the
    restart: the reconciler's ledgers come back from their changelog, not from memory."""
    topics = Topics.from_settings(settings)
    worker = start_worker()
    events = events_between("2016-08-01", "2016-08-31")
    features = [e for e in events if e.kind == "features"]
    results = [e for e in events if e.kind == "result"]
    await publish(producer, topics.features, [(e.key, e.record) for e in features])
    expected = len(features) * SEEDED_MODELS
    await wait_for(
        lambda: _equals(db, "SELECT count(*) FROM predictions", expected),
        timeout=120,
        what="predictions stored",
    )
    await asyncio.sleep(2.0)  # let the changelog and the offsets be committed
    worker.kill()
    # Results arrive while no worker runs; the restarted worker has only its changelog.
    await publish(producer, topics.results, [(e.key, e.record) for e in results])
    worker.start()
    await wait_for(
        lambda: _equals(db, "SELECT count(*) FROM evaluations", expected),
        timeout=180,
        what=f"{expected} evaluations after the restart",
    )
    assert await count(db, "SELECT count(DISTINCT prediction_id) FROM evaluations") == expected


async def test_forged_predictions_are_dead_lettered_not_evaluated(
    settings: Settings, start_worker: Callable[..., Worker], producer: Any, db: asyncpg.Pool
) -> None:
    """A prediction of a model version the registry does not hold, and one with a forged id,
    published beside the scorer's own: both end on the dead-letter topic with their reason,
    only the scorer's predictions are evaluated."""
    topics = Topics.from_settings(settings)
    start_worker()
    events = events_between("2012-08-18", "2012-08-19")
    features = [e.record for e in events if isinstance(e.record, MatchFeatures)]
    target = features[0]
    model = catalog.create("online-logreg")
    fake = RegisteredModel("online-logreg", model.kind, "champion", "all", 777, model)
    (unregistered,) = predict(target, [fake], now=datetime.now(UTC))
    real = RegisteredModel("online-logreg", model.kind, "champion", "all", 0, model)
    (genuine,) = predict(target, [real], now=datetime.now(UTC))
    forged_id = msgspec.structs.replace(
        genuine, prediction_id="00000000-0000-5000-8000-000000000000", model_version=0
    )
    # Before the match's features: the scorer cannot have predicted it yet, so both are the
    # first predictions of their model the reconciler sees.
    await publish(
        producer,
        topics.predictions,
        [(target.match_id, unregistered), (target.match_id, forged_id)],
    )
    letters = await read_topic(topics.dead_letters, expect=2, timeout=90)
    await publish_events(producer, settings, events)
    rules = sorted(
        (decode(letter.value, DeadLetter).error.field, decode(letter.value, DeadLetter).error.rule)
        for letter in letters
    )
    assert rules[0] == ("model_version", "model version not in the registry")
    assert rules[1][0] == "prediction_id"
    expected = len(features) * SEEDED_MODELS
    await wait_for(
        lambda: _equals(db, "SELECT count(*) FROM evaluations", expected),
        timeout=120,
        what=f"{expected} evaluations",
    )
    assert (
        await count(
            db,
            "SELECT count(*) FROM evaluations WHERE prediction_id = ANY($1::text[])",
            [unregistered.prediction_id, forged_id.prediction_id],
        )
        == 0
    )
