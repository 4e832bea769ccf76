"""Bounded reconciler state: a reconciled ledger leaves the table once the retention window
has passed in event time, and an event of its match arriving later is handled from the
evaluation log as the ledger would have handled it (a correction supersedes, a repeat changes
nothing, a re-scored match is not evaluated twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.reconciler import TrustedVersions, reconcile_batch
from agents.reconciler_rules import MatchLedger, Retention, is_reconciled
from agents.registry import KEEP_AT_LEAST, RegisteredModel
from agents.scorer_rules import predict
from agents.testing import InMemoryRuntime, Statement
from models import catalog
from schemas.events import Evaluation, MatchFeatures, MatchResult, ModelFeedItem, Odds, Prediction
from streams.settings import MIN_KEEP_VERSIONS, Settings
from streams.topics import Topics

DAY0 = datetime(2023, 8, 12, 15, 0, tzinfo=UTC)
MODEL = "online-logreg"


def features(day: int, home: str = "home") -> MatchFeatures:
    kickoff = DAY0 + timedelta(days=day)
    return MatchFeatures(
        match_id=f"england-premier-league:{kickoff.date()}:{home}:away",
        league="england-premier-league",
        season="2023-2024",
        kickoff=kickoff,
        home_team=home.title(),
        away_team="Away",
        odds_open=Odds(home=2.0, draw=3.4, away=4.0),
        features={"elo_diff": 35.0},
    )


def result(f: MatchFeatures, home_goals: int = 2, away_goals: int = 1) -> MatchResult:
    outcome = "H" if home_goals > away_goals else "A" if home_goals < away_goals else "D"
    return MatchResult(
        match_id=f.match_id, league=f.league, kickoff=f.kickoff, home_goals=home_goals,
        away_goals=away_goals, outcome=outcome,
    )  # fmt: skip


def prediction(f: MatchFeatures, version: int = 3, *, late: bool = False) -> Prediction:
    model = catalog.create(MODEL)
    entry = RegisteredModel(MODEL, model.kind, "champion", "all", version, model)
    at = f.kickoff + (timedelta(days=400) if late else -timedelta(hours=2))
    return predict(f, [entry], now=at)[0]


def _latest(rows: list[tuple[Any, ...]], key: int) -> dict[Any, tuple[Any, ...]]:
    out: dict[Any, tuple[Any, ...]] = {}
    for row in rows:
        out[row[key]] = row
    return out


def runtime(days: int = 30) -> InMemoryRuntime:
    """A reconciler's runtime whose registry holds versions 3 and 8 of the model, no learned
    results, and whose evaluation log answers reads from what the reconciler committed."""
    settings = Settings(ledger_retention_days=days)
    rt = InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))
    db = rt.db
    rt.db.answer(
        "FROM model_versions",
        lambda args: [{"model_id": m, "version": v} for m, v in zip(*args, strict=True)],
    )

    def rows(table: str, key: int) -> dict[Any, tuple[Any, ...]]:
        return _latest(
            [s.args for s in db.committed if s.sql.split()[:3] == ["INSERT", "INTO", table]], key
        )

    def superseded() -> dict[str, str]:
        updates = [s for s in db.committed if s.sql.startswith("UPDATE evaluations")]
        marks = {row[0]: row[18] for row in rows("evaluations", 0).values() if row[18]}
        marks |= {s.args[1]: s.args[0] for s in updates}
        return marks

    db.answer(
        "FROM match_features",
        lambda args: [
            {"match_id": r[0], "payload": r[6]}
            for r in rows("match_features", 0).values()
            if r[0] in args[0]
        ],
    )
    db.answer(
        "FROM results",
        lambda args: [
            {"match_id": r[0], "payload": r[6]}
            for r in rows("results", 0).values()
            if r[0] in args[0]
        ],
    )
    columns = [
        "prediction_id",
        "match_id",
        "league",
        "kickoff",
        "model_id",
        "model_version",
        "is_champion",
        "p_home",
        "p_draw",
        "p_away",
        "predicted",
        "confidence",
        "created_at",
        "made_at",
        "features_revision",
    ]
    db.answer(
        "FROM predictions",
        lambda args: [
            dict(zip(columns, r, strict=True))
            for r in rows("predictions", 0).values()
            if r[1] in args[0]
        ],
    )
    db.answer(
        "FROM evaluations",
        lambda args: [
            {"match_id": r[2], "prediction_id": r[1], "evaluation_id": r[0]}
            for r in rows("evaluations", 0).values()
            if r[2] in args[0] and r[0] not in superseded()
        ],
    )
    return rt


async def reconcile(
    rt: InMemoryRuntime,
    ledgers: dict[bytes, bytes],
    *records: MatchFeatures | Prediction | MatchResult,
    retention: Retention,
) -> None:
    topic = {
        MatchFeatures: rt.topics.features,
        Prediction: rt.topics.predictions,
        MatchResult: rt.topics.results,
    }
    events = rt.events(*((topic[type(r)], r) for r in records))
    await reconcile_batch(rt, ledgers, events, TrustedVersions(), retention)


def evaluations(rt: InMemoryRuntime) -> list[Evaluation]:
    return [e for e in rt.on(rt.topics.evaluations) if isinstance(e, Evaluation)]


def writes(rt: InMemoryRuntime) -> list[Statement]:
    return list(rt.db.committed)


def key(f: MatchFeatures) -> bytes:
    return f.match_id.encode()


async def test_a_reconciled_ledger_leaves_the_table_once_the_window_has_passed() -> None:
    """A reconciled match stays in the table while results of the next 30 days arrive, and
    is deleted (a tombstone) by the first result 30 days of kickoffs after it, without any
    event of its own."""
    rt, ledgers, retention = runtime(30), {}, Retention(30)
    a = features(0)
    await reconcile(rt, ledgers, a, prediction(a), result(a), retention=retention)
    assert key(a) in ledgers
    b = features(29, "b")
    await reconcile(rt, ledgers, b, result(b), retention=retention)
    assert key(a) in ledgers
    c = features(30, "c")
    await reconcile(rt, ledgers, result(c), retention=retention)
    assert key(a) not in ledgers
    assert key(b) in ledgers
    assert key(c) in ledgers
    assert rt.counters["ledgers_retired"] == 1


async def test_an_unreconciled_ledger_is_kept() -> None:
    """A match still waiting for its result (or its features) is never retired, however old."""
    rt, ledgers, retention = runtime(0), {}, Retention(0)
    a, b = features(0), features(100, "b")
    await reconcile(rt, ledgers, a, prediction(a), retention=retention)
    await reconcile(rt, ledgers, prediction(b), result(b), retention=retention)
    assert key(a) in ledgers
    assert key(b) in ledgers
    assert rt.counters["ledgers_retired"] == 0


async def test_a_correction_inside_the_window_is_applied_from_the_ledger() -> None:
    """Within the window, a corrected score re-evaluates from the ledger (no log read) and
    supersedes the first evaluation."""
    rt, ledgers, retention = runtime(30), {}, Retention(30)
    a = features(0)
    await reconcile(rt, ledgers, a, prediction(a), result(a), retention=retention)
    b = features(10, "b")
    await reconcile(rt, ledgers, result(b), retention=retention)
    await reconcile(rt, ledgers, result(a, 1, 1), retention=retention)
    first, corrected = evaluations(rt)
    assert corrected.supersedes == first.evaluation_id
    assert corrected.outcome == "D"
    assert rt.counters["ledgers_rebuilt"] == 0
    assert key(a) in ledgers


async def test_a_correction_after_the_window_is_applied_from_the_evaluation_log() -> None:
    """After its ledger is retired, a corrected score is applied from the evaluation log: the
    new evaluation supersedes the current one, is published and fed to the learners with the
    match's inputs, and the ledger does not come back into the table."""
    rt, ledgers, retention = runtime(30), {}, Retention(30)
    a = features(0)
    await reconcile(rt, ledgers, a, prediction(a), result(a), retention=retention)
    b = features(40, "b")
    await reconcile(rt, ledgers, b, result(b), retention=retention)
    assert key(a) not in ledgers
    await reconcile(rt, ledgers, result(a, 0, 3), retention=retention)
    first, corrected = evaluations(rt)
    assert (corrected.supersedes, corrected.outcome) == (first.evaluation_id, "A")
    fed = [i for i in rt.on(rt.topics.model_feed) if isinstance(i, ModelFeedItem)]
    assert [i.evaluation.evaluation_id for i in fed][-1] == corrected.evaluation_id
    assert rt.counters["ledgers_rebuilt"] == 1
    assert key(a) not in ledgers
    superseded = [s.args for s in rt.db.committed if s.sql.startswith("UPDATE evaluations")]
    assert superseded == [(corrected.evaluation_id, first.evaluation_id)]


async def test_a_replay_after_retirement_changes_nothing() -> None:
    """Every event of a retired match again, and the match re-scored by a newer version: no
    evaluation, no write, no dead letter, and the table as it was; the model's first
    prediction (in the log) still stands as its only one."""
    rt, ledgers, retention = runtime(30), {}, Retention(30)
    a, b = features(0), features(40, "b")
    await reconcile(rt, ledgers, a, prediction(a), result(a), retention=retention)
    await reconcile(rt, ledgers, b, prediction(b), result(b), retention=retention)
    assert key(a) not in ledgers
    before, table, published = writes(rt), dict(ledgers), list(rt.published)
    await reconcile(
        rt, ledgers, a, prediction(a), prediction(a, 8, late=True), result(a), retention=retention
    )
    assert writes(rt) == before
    assert rt.published == published
    assert rt.dead_letters == []
    assert ledgers == table


async def test_a_restarted_worker_retires_what_it_recovered() -> None:
    """A worker that starts with reconciled ledgers out of the window in its table (a fresh
    clock, nothing tracked) retires them at its first batch of their partition, from the
    table's own newest result."""
    rt, ledgers = runtime(30), {}
    a, b = features(0), features(31, "b")
    await reconcile(rt, ledgers, a, prediction(a), retention=Retention(30))
    await reconcile(rt, ledgers, result(a), b, result(b), retention=Retention(10_000))
    assert key(a) in ledgers
    c = features(32, "c")
    await reconcile(rt, ledgers, c, retention=Retention(30))  # a restart: new state
    assert key(a) not in ledgers
    assert key(b) in ledgers
    assert key(c) in ledgers


async def test_a_zero_window_keeps_no_reconciled_ledger() -> None:
    """With a window of 0 days, a match reconciled in one batch never enters the table, and
    its late prediction of another model is still evaluated from the log (a first one)."""
    rt, ledgers, retention = runtime(0), {}, Retention(0)
    a = features(0)
    await reconcile(rt, ledgers, a, prediction(a), result(a), retention=retention)
    assert ledgers == {}
    rating = catalog.create("online-rating")
    other = RegisteredModel("rating", rating.kind, "challenger", "all", 3, rating)
    late = predict(a, [other], now=a.kickoff - timedelta(hours=1))[0]
    rt.db.answer(
        "FROM model_versions",
        lambda args: [{"model_id": m, "version": v} for m, v in zip(*args, strict=True)],
    )
    await reconcile(rt, ledgers, late, retention=retention)
    assert [e.model_id for e in evaluations(rt)] == [MODEL, "rating"]
    assert ledgers == {}


def test_the_clock_moves_forward_only_and_retires_each_match_once() -> None:
    """Event time: an older result does not move a partition's clock back; a tracked match is
    due once its kickoff is the window behind the clock, and returned once."""
    retention = Retention(7)
    retention.observe(0, DAY0 + timedelta(days=10))
    retention.observe(0, DAY0)
    retention.track(0, "m", DAY0 + timedelta(days=3))
    retention.track(0, "m", DAY0 + timedelta(days=3))
    assert retention.expired(0, DAY0 + timedelta(days=3))
    assert not retention.expired(0, DAY0 + timedelta(days=4))
    assert not retention.expired(1, DAY0)  # another partition has no clock yet
    assert retention.due(0) == ["m"]
    assert retention.due(0) == []


def test_a_ledger_is_reconciled_only_with_nothing_left_to_wait_for() -> None:
    """Features, result and every prediction evaluated and fed."""
    f = features(0)
    p = prediction(f)
    assert not is_reconciled(MatchLedger(features=f, predictions={p.prediction_id: p}))
    done = MatchLedger(
        features=f,
        result=result(f),
        predictions={p.prediction_id: p},
        evaluated={p.prediction_id: "e"},
    )
    assert is_reconciled(done)
    assert not is_reconciled(MatchLedger(result=result(f)))


@pytest.mark.parametrize("days", [-1, 36_501])
def test_the_retention_setting_is_validated(days: int) -> None:
    """A negative or absurd window is refused when the settings are built, naming the variable."""
    with pytest.raises(ValueError, match="TIPSTREAM_LEDGER_RETENTION_DAYS"):
        Settings(ledger_retention_days=days)


def test_the_settings_floor_of_kept_versions_is_the_registrys() -> None:
    """TIPSTREAM_KEEP_VERSIONS refuses fewer versions than a prune may keep."""
    assert MIN_KEEP_VERSIONS == KEEP_AT_LEAST
    with pytest.raises(ValueError, match="TIPSTREAM_KEEP_VERSIONS"):
        Settings(keep_versions=KEEP_AT_LEAST - 1)
    assert Settings(keep_versions=0).keep_versions == 0
