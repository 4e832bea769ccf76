"""Idempotency keys: a re-delivered event reproduces the same ids, so it changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from agents.monitor_rules import Decision, alert_id
from agents.reconciler import reconcile_batch
from agents.reconciler_rules import (
    MatchLedger,
    apply_features,
    apply_prediction,
    apply_result,
    evaluation_id,
    feed,
    prediction_id,
)
from agents.registry import RegisteredModel
from agents.runtime import Output
from agents.scorer_rules import predict, predict_many
from agents.testing import Event, InMemoryRuntime, MemoryTable
from models import catalog
from schemas.events import Evaluation, MatchFeatures, MatchResult, Odds, Prediction
from streams.settings import Settings
from streams.topics import Topics

NOW = datetime(2024, 1, 1, tzinfo=UTC)
KICKOFF = datetime(2023, 12, 30, 15, 0, tzinfo=UTC)


def features(match: int = 0) -> MatchFeatures:
    return MatchFeatures(
        match_id=f"england-premier-league:2023-12-30:home-{match}:away-{match}",
        league="england-premier-league",
        season="2023-2024",
        kickoff=KICKOFF + timedelta(minutes=match),
        home_team=f"Home {match}",
        away_team=f"Away {match}",
        odds_open=Odds(home=2.0 + match / 10, draw=3.4, away=4.0),
        features={"elo_diff": 35.0 + match},
    )


def result(f: MatchFeatures, home: int = 2, away: int = 1) -> MatchResult:
    outcome = "H" if home > away else "A" if away > home else "D"
    return MatchResult(
        match_id=f.match_id,
        league=f.league,
        kickoff=f.kickoff,
        home_goals=home,
        away_goals=away,
        outcome=outcome,
    )


def models(version: int = 1) -> list[RegisteredModel]:
    out = []
    for model_id, status in (("online-logreg", "champion"), ("market-open", "reference")):
        model = catalog.create(model_id)
        out.append(RegisteredModel(model_id, model.kind, status, None, version, model))
    return out


def reconcile(
    ledger: MatchLedger, events: list[MatchFeatures | Prediction | MatchResult]
) -> list[Evaluation]:
    """Apply events as the reconciler does; the evaluations that were fed to the learner."""
    fed: list[Evaluation] = []
    for event in events:
        if isinstance(event, MatchFeatures):
            apply_features(ledger, event)
            reconciled = []
        elif isinstance(event, Prediction):
            reconciled = apply_prediction(ledger, event, now=NOW).evaluations
        else:
            reconciled = apply_result(ledger, event, now=NOW).evaluations
        fed.extend(item.evaluation for item in feed(ledger, reconciled))
    return fed


def test_scoring_the_same_features_again_gives_the_same_prediction_ids() -> None:
    """A re-delivered features event scored by the same model versions yields predictions with
    the ids of the first scoring, one by one and in batches alike."""
    batch = [features(i) for i in range(5)]
    first = [p.prediction_id for f in batch for p in predict(f, models(), now=NOW)]
    again = [p.prediction_id for f in batch for p in predict(f, models(), now=NOW + timedelta(1))]
    batched = [p.prediction_id for p in predict_many(batch, models(), now=NOW)]
    assert first == again == batched
    assert len(set(first)) == len(first)
    assert first[0] == prediction_id(batch[0].match_id, "online-logreg", 1)


def test_a_replayed_match_reproduces_the_same_evaluation_ids() -> None:
    """A reconciler that lost its ledger (crash before the changelog) and replays the match's
    events evaluates to the very same ids: the database upserts change nothing."""
    f = features()
    events = [f, *predict(f, models(), now=NOW), result(f)]
    first = reconcile(MatchLedger(), events)
    replayed = reconcile(MatchLedger(), events)
    assert [e.evaluation_id for e in first] == [e.evaluation_id for e in replayed]
    assert len(first) == 2
    assert first[0].evaluation_id == evaluation_id(first[0].prediction_id, 2, 1)


def test_redelivering_any_event_to_the_ledger_creates_nothing() -> None:
    """Once a match is reconciled, its features, predictions and result delivered again make
    no new evaluation and feed the learner nothing."""
    f = features()
    events = [result(f), *predict(f, models(), now=NOW), f]  # a backfill: result first
    ledger = MatchLedger()
    assert len(reconcile(ledger, events)) == 2
    assert reconcile(ledger, events) == []
    assert reconcile(ledger, list(reversed(events))) == []


def test_a_newer_version_scoring_the_match_again_is_not_evaluated_twice() -> None:
    """A second replay scores the match with newer model versions (new prediction ids): the
    model's first prediction stays the one evaluated, once."""
    f = features()
    ledger = MatchLedger()
    assert len(reconcile(ledger, [f, *predict(f, models(1), now=NOW), result(f)])) == 2
    assert reconcile(ledger, [f, *predict(f, models(7), now=NOW), result(f)]) == []
    assert len(ledger.evaluated) == 2


def test_a_corrected_result_gets_new_ids_the_same_result_does_not() -> None:
    """Only another score is new information: it gets new evaluation ids once."""
    f = features()
    ledger = MatchLedger()
    first = reconcile(ledger, [f, *predict(f, models(), now=NOW), result(f)])
    corrected = reconcile(ledger, [result(f, 2, 2)])
    assert [e.supersedes for e in corrected] == [e.evaluation_id for e in first]
    assert not {e.evaluation_id for e in corrected} & {e.evaluation_id for e in first}
    assert reconcile(ledger, [result(f, 2, 2)]) == []


def test_alert_ids_are_deterministic() -> None:
    """Re-deriving an alert from the same evaluations (a monitor rebuilt after a restart)
    gives the same alert id, so the alert is stored and published once."""
    decision = Decision("decay", "firing", "log_loss", "window", 300, 0.98, 1.08, 0.05, "a", "b")
    same = Decision("decay", "firing", "log_loss", "window", 300, 0.98, 1.08, 0.05, "a", "b")
    later = Decision("decay", "firing", "log_loss", "window", 300, 0.98, 1.08, 0.05, "a", "c")
    assert alert_id("m1", "all", decision) == alert_id("m1", "all", same)
    assert alert_id("m1", "all", decision) != alert_id("m1", "all", later)
    assert alert_id("m1", "all", decision) != alert_id("m1", "league:x", decision)


def _runtime() -> InMemoryRuntime:
    """An in-memory runtime whose registry holds every model version asked about."""
    settings = Settings()
    runtime = InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))
    runtime.db.answer(
        "FROM model_versions",
        lambda args: [{"model_id": m, "version": v} for m, v in zip(*args, strict=True)],
    )
    return runtime


def _events(
    runtime: InMemoryRuntime, *records: MatchFeatures | Prediction | MatchResult
) -> list[Event]:
    topic = {
        MatchFeatures: runtime.topics.features,
        Prediction: runtime.topics.predictions,
        MatchResult: runtime.topics.results,
    }
    return runtime.events(*((topic[type(r)], r) for r in records))


async def test_reconciler_leaves_ledgers_alone_on_re_delivery_and_feeds_late_features() -> None:
    """A re-delivered batch writes no ledger and publishes nothing; features that arrive after
    the result still release the evaluations held back for them."""
    f = features()
    p = predict(f, models()[:1], now=NOW)[0]
    runtime, ledgers = _runtime(), MemoryTable()
    await reconcile_batch(runtime, ledgers, _events(runtime, p, result(f)))
    assert ledgers.writes == 1
    assert [t for t, _, _ in runtime.published] == [runtime.topics.evaluations]
    await reconcile_batch(runtime, ledgers, _events(runtime, p, result(f)))
    assert ledgers.writes == 1
    assert len(runtime.published) == 1
    await reconcile_batch(runtime, ledgers, _events(runtime, f))
    assert ledgers.writes == 2
    assert [t for t, _, _ in runtime.published][1:] == [runtime.topics.model_feed]
    await reconcile_batch(runtime, ledgers, _events(runtime, f, p, result(f)))
    assert ledgers.writes == 2
    assert len(runtime.published) == 2
    assert len(runtime.db.rows("evaluations")) == 1
    assert len(runtime.db.rows("predictions")) == 1
    assert len(runtime.db.rows("match_features")) == 1


async def test_the_reconciler_publishes_before_it_writes_the_log() -> None:
    """The evaluations and the model feed are on the topics before the batch's transaction:
    a ledger rebuilt from the log after a crash publishes nothing again, so a batch logged and
    never published would be lost to the learners and monitors."""
    f = features()
    p = predict(f, models()[:1], now=NOW)[0]
    runtime, ledgers = _runtime(), MemoryTable()
    committed_at_publish: list[int] = []
    publish = runtime.publish_all

    async def recording(items: Iterable[Output]) -> None:
        committed_at_publish.append(len(runtime.db.committed))
        await publish(items)

    runtime.publish_all = recording  # type: ignore[method-assign]
    await reconcile_batch(runtime, ledgers, _events(runtime, f, p, result(f)))
    assert [t for t, _, _ in runtime.published] == [
        runtime.topics.evaluations,
        runtime.topics.model_feed,
    ]
    assert committed_at_publish == [0]
    assert len(runtime.db.rows("evaluations")) == 1
