"""The chaos checker: it must see every loss, duplicate and foreign effect it is shown."""

from __future__ import annotations

import base64
import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from agents.features_rules import EVENT_TIME_HEADER
from models.features import RESULT_DELAY
from models.timeline import FIXTURE_LEAD, TimedEvent
from schemas.codec import encode
from schemas.events import (
    DeadLetter,
    Fixture,
    LeagueInput,
    MatchResult,
    Odds,
    ValidationIssue,
)
from streams.topics import Topics
from tests.chaos.checker import (
    EvaluationRow,
    Position,
    RunData,
    SentEvent,
    Verdict,
    check_dead_letters,
    check_evaluations,
    check_features,
    check_learned,
    check_predictions,
)
from tests.chaos.harness import Outgoing, valid_outgoing
from tests.chaos.scenarios import metric_total, mix

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def row(match: str, model: str = "online-logreg", eid: str | None = None) -> EvaluationRow:
    return EvaluationRow(eid or f"{match}-{model}", match, model, "H", 1, 0)


def letter(position: Position, value: bytes | None, key: bytes | None = b"k") -> DeadLetter:
    return DeadLetter(
        source_topic=position.topic,
        partition=position.partition,
        offset=position.offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        payload_b64=base64.b64encode(value or b"").decode(),
        error=ValidationIssue(field="$", value=None, rule="not valid JSON"),
        agent="scorer",
        failed_at=NOW,
    )


def test_missing_extra_and_foreign_evaluations_are_counted() -> None:
    """Per (match, model) current evaluation: a missing one is lost, a second one a duplicate,
    one of a pair the reference never had (or with another score) unexpected."""
    reference = RunData([row("m1"), row("m2"), row("m3"), row("m4", eid="e4")])
    observed = RunData(
        [
            row("m1"),
            row("m1", eid="m1-again"),
            row("m3"),
            row("m9"),
            EvaluationRow("e4", "m4", "online-logreg", "A", 0, 1),
        ]
    )
    verdict = Verdict()
    check_evaluations(reference, observed, verdict)
    assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (1, 1, 2)
    assert not verdict.passed


def test_ids_may_differ_but_a_market_reference_must_give_the_same_numbers() -> None:
    """The ids of the counted prediction and its evaluation depend on the model version and
    on how often the features were re-issued (arrival order): only the pair matters. A
    market reference's probabilities and log loss depend on the odds only: they must match."""
    market = EvaluationRow(
        "r1", "m1", "market-open", "H", 1, 0, "p1", log_loss=0.5, probabilities=(0.6, 0.25, 0.15)
    )
    reference = RunData([row("m1", eid="v3"), market])
    same = dataclasses.replace(market, evaluation_id="r2", prediction_id="p2")
    verdict = Verdict()
    check_evaluations(reference, RunData([row("m1", eid="v4"), same]), verdict)
    assert verdict.passed
    off = dataclasses.replace(same, probabilities=(0.6, 0.2, 0.2))
    verdict = Verdict()
    check_evaluations(reference, RunData([row("m1", eid="v4"), off]), verdict)
    assert verdict.unexpected == 1


def test_superseded_evaluations_are_history_but_a_prediction_evaluated_twice_is_not() -> None:
    """A re-issue of the features replaces a model's counted prediction and supersedes its
    evaluation (not current: not compared); evaluating one prediction twice is a duplicate."""
    reference = RunData([row("m1")])
    old = dataclasses.replace(row("m1", eid="old"), prediction_id="p0", current=False)
    new = dataclasses.replace(row("m1", eid="new"), prediction_id="p1")
    verdict = Verdict()
    check_evaluations(reference, RunData([old, new]), verdict)
    assert verdict.passed
    twice = dataclasses.replace(old, evaluation_id="again", prediction_id="p1")
    verdict = Verdict()
    check_evaluations(reference, RunData([twice, new]), verdict)
    assert verdict.duplicated == 1


def test_features_are_compared_without_their_stamp() -> None:
    """issued_at and revision say which issue a payload is; the rest must match (to 1e-9)."""
    want = {"m1": {"match_id": "m1", "revision": 0, "issued_at": "a", "features": {"elo": 1.5}}}
    restamped = {"m1": {**want["m1"], "revision": 2, "issued_at": "b"}}
    verdict = Verdict()
    check_features(want, restamped, verdict)
    assert verdict.passed
    other = {"m1": {**want["m1"], "features": {"elo": 1.5 + 1e-6}}}
    missing: dict[str, dict[str, object]] = {}
    for observed, problem in (
        (other, "unexpected: 1 features rows differ (e.g. m1)"),
        (missing, "lost: 1 features rows"),
    ):
        verdict = Verdict()
        check_features(want, observed, verdict)
        assert verdict.problems == [problem]


def test_predictions_need_every_pair_and_one_row_per_revision() -> None:
    """More revisions than the reference are fine; a pair without a prediction is lost, two
    rows of one (match, model, revision) a duplicate."""
    reference = RunData([], predictions=Counter({("m1", "a", 0): 1, ("m2", "a", 0): 1}))
    verdict = Verdict()
    more = Counter({("m1", "a", 0): 1, ("m1", "a", 1): 1, ("m2", "a", 0): 1})
    check_predictions(reference, RunData([], predictions=more), verdict)
    assert verdict.passed
    verdict = Verdict()
    bad = Counter({("m1", "a", 0): 2, ("m3", "a", 0): 1})
    check_predictions(reference, RunData([], predictions=bad), verdict)
    assert verdict.problems == [
        "lost: 1 (match, model) pairs without a prediction",
        "unexpected: 1 (match, model) pairs predicted",
        "duplicate: 1 prediction rows of one features revision",
    ]


def test_learning_more_or_less_than_the_reference_is_a_problem() -> None:
    """A model that learned a result twice, or missed one, fails the scenario."""
    verdict = Verdict()
    check_learned(
        RunData([], learned={"a": 10, "b": 10}), RunData([], learned={"a": 11, "b": 9}), verdict
    )
    assert verdict.problems == [
        "duplicate: a learned 1 results twice",
        "lost: b learned 1 results fewer",
    ]


def test_dead_letters_are_checked_per_source_position() -> None:
    """Each malformed event needs exactly one faithful letter; letters of valid events and
    letters with other bytes are reported."""
    p = [Position("t", 0, offset) for offset in range(5)]
    sent = [
        SentEvent(p[0], b"k", b"bad0", "random_bytes"),
        SentEvent(p[1], b"k", b"bad1", "nan"),
        SentEvent(p[2], b"k", b"bad2", "empty"),
        SentEvent(p[3], b"k", b"bad3", "nan"),
        SentEvent(p[4], b"k", b"valid", None),
    ]
    letters = [
        letter(p[0], b"bad0"),
        letter(p[1], b"bad1"),
        letter(p[1], b"bad1"),
        letter(p[3], b"changed"),
        letter(p[4], b"valid"),
    ]
    verdict = Verdict()
    check_dead_letters(sent, letters, verdict)
    assert (verdict.malformed_sent, verdict.deadlettered) == (4, 5)
    assert verdict.problems == [
        "lost: 1 dead letters",
        "duplicate: 1 dead letters",
        "unexpected: 1 dead letters",
        "unfaithful: 1 dead letters",
    ]


def test_mixing_keeps_the_valid_order_and_every_extra_event() -> None:
    """Malformed events go anywhere; the valid stream's order is untouched."""
    valid = [Outgoing("t", str(i).encode(), b"v") for i in range(50)]
    extra = [Outgoing("t", None, f"x{i}".encode(), "nan") for i in range(30)]
    mixed = mix(valid, extra, random.Random(3))
    assert [e for e in mixed if e.malformed is None] == valid
    assert sorted(e.value or b"" for e in mixed if e.malformed) == sorted(
        e.value or b"" for e in extra
    )


def test_metric_totals_sum_a_counter_over_its_labels() -> None:
    """The runner reads tipstream_dead_letters_total from the worker's Prometheus text."""
    text = (
        "# TYPE tipstream_dead_letters_total counter\n"
        'tipstream_dead_letters_total{name="a"} 3\n'
        'tipstream_dead_letters_total{name="b"} 4\n'
        "tipstream_scored_total 9\n"
    )
    assert metric_total(text, "tipstream_dead_letters_total") == 7


def test_the_harness_publishes_facts_as_the_replay_does() -> None:
    """Fixtures and results keyed by match id, warm-up history to the league inputs keyed by
    league (unpaced), each with its event time in the header the league router reads."""
    kickoff = datetime(2019, 3, 2, 15, 0, tzinfo=UTC)
    fixture = Fixture(
        match_id="e:2019-03-02:a:b",
        league="e",
        season="2018-2019",
        kickoff=kickoff,
        home_team="A",
        away_team="B",
        odds_open=Odds(home=2.0, draw=3.4, away=3.9),
    )
    result = MatchResult(
        match_id=fixture.match_id,
        league="e",
        kickoff=kickoff,
        home_goals=1,
        away_goals=1,
        outcome="D",
    )
    earlier = kickoff - timedelta(days=300)
    warm = LeagueInput(fixture=fixture, event_time=earlier, warm_up=True)
    events = [
        TimedEvent(earlier, "warm_up", warm),
        TimedEvent(kickoff - FIXTURE_LEAD, "fixture", fixture),
        TimedEvent(kickoff + RESULT_DELAY, "result", result),
    ]
    topics = Topics(prefix="c", partitions=2)
    out = valid_outgoing(topics, events)
    assert [(o.topic, o.key, o.paced) for o in out] == [
        (topics.league_inputs, b"e", False),
        (topics.fixtures, fixture.match_id.encode(), True),
        (topics.results, fixture.match_id.encode(), True),
    ]
    assert [o.headers for o in out] == [
        [(EVENT_TIME_HEADER, e.at.isoformat().encode())] for e in events
    ]
    assert [o.value for o in out] == [encode(e.record) for e in events]
