"""The chaos checker: it must see every loss, duplicate and foreign effect it is shown."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime

from schemas.events import DeadLetter, ValidationIssue
from tests.chaos.checker import (
    EvaluationRow,
    Position,
    RunData,
    SentEvent,
    Verdict,
    check_dead_letters,
    check_evaluations,
    check_learned,
)
from tests.chaos.harness import Outgoing
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
    """Per (match, model): a missing row is lost, a second row a duplicate, a row of a pair
    the reference never had (or with another score) unexpected."""
    reference = RunData([row("m1"), row("m2"), row("m3"), row("m4", "market-open", "e4")])
    observed = RunData(
        [
            row("m1"),
            row("m1", eid="m1-again"),
            row("m3"),
            row("m9"),
            row("m4", "market-open", "other-id"),
        ]
    )
    verdict = Verdict()
    check_evaluations(reference, observed, verdict)
    assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (1, 1, 2)
    assert not verdict.passed


def test_online_model_versions_may_differ_but_references_may_not() -> None:
    """An online model's evaluation id depends on its version at scoring time, which timing
    decides: only the pair matters. A market reference's id must be identical."""
    reference = RunData([row("m1", eid="v3"), row("m1", "market-open", "r1")])
    observed = RunData([row("m1", eid="v4"), row("m1", "market-open", "r1")])
    verdict = Verdict()
    check_evaluations(reference, observed, verdict)
    assert verdict.passed


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
