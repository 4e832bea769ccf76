"""The dead-letter envelope: what a rejected event becomes, and who publishes it."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents import features as features_agent
from agents.dead_letters import (
    DEAD_LETTER_PAYLOAD_MAX,
    dead_letter,
    dead_letter_owners,
    owned,
    processing_failure,
)
from agents.testing import Message
from schemas.codec import InvalidEvent, decode, encode
from schemas.events import DeadLetter, Fixture, MatchFeatures, MatchResult, Odds, ValidationIssue
from streams.topics import Topics
from streams.worker.metrics import WorkerMetrics
from tests.chaos import malformed

NOW = datetime(2024, 5, 19, 18, 0, tzinfo=UTC)
KICKOFF = datetime(2024, 5, 19, 15, 0, tzinfo=UTC)
FEATURES = MatchFeatures(
    match_id="england-premier-league:2024-05-19:arsenal:everton",
    league="england-premier-league",
    season="2023-2024",
    kickoff=KICKOFF,
    home_team="Arsenal",
    away_team="Everton",
    odds_open=Odds(home=1.2, draw=7.0, away=13.0),
    features={"elo_home": 1850.0},
)
FIXTURE = Fixture(
    match_id=FEATURES.match_id,
    league=FEATURES.league,
    season=FEATURES.season,
    kickoff=KICKOFF,
    home_team=FEATURES.home_team,
    away_team=FEATURES.away_team,
    odds_open=FEATURES.odds_open,
)
RESULT = MatchResult(
    match_id=FEATURES.match_id,
    league=FEATURES.league,
    kickoff=KICKOFF,
    home_goals=2,
    away_goals=1,
    outcome="H",
)


def rejected(value: bytes | None, key: bytes | None = b"k1", offset: int = 41) -> DeadLetter:
    message = Message("t.match-results", 3, offset, key, value)
    try:
        decode(value, MatchResult)
    except InvalidEvent as error:
        return dead_letter(message, error.issue, "reconciler", now=NOW)
    raise AssertionError("expected an invalid event")


def test_envelope_keeps_the_original_bytes_key_and_position() -> None:
    """A rejected event's letter holds its exact bytes and key (base64), its source topic,
    partition and offset, the agent and an aware timestamp."""
    raw = b'{"match_id": "m1", "home_goals": -1'
    letter = rejected(raw, key=b"\xffnot-utf8")
    assert base64.b64decode(letter.payload_b64) == raw
    assert letter.key_b64 is not None
    assert base64.b64decode(letter.key_b64) == b"\xffnot-utf8"
    assert (letter.source_topic, letter.partition, letter.offset) == ("t.match-results", 3, 41)
    assert letter.agent == "reconciler"
    assert letter.failed_at == NOW
    assert letter.failed_at.tzinfo is not None


def test_envelope_names_field_value_and_rule() -> None:
    """The reason is machine-readable: the JSON path of the field, its value and the rule."""
    document = encode(RESULT).replace(b'"home_goals":2', b'"home_goals":-2')
    letter = rejected(document)
    assert letter.error.field == "$.home_goals"
    assert letter.error.value == "-2"
    assert ">= 0" in letter.error.rule


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (b"", "payload is empty"),
        (None, "payload is empty"),
        (b"\x00\x9f\x92\x96garbage", "not valid JSON"),
        (encode(RESULT)[:20], "not valid JSON"),
        (
            encode(RESULT).replace(b'"schema_version":1', b'"schema_version":2'),
            "unsupported schema_version 2",
        ),
        (encode(RESULT).replace(b'"home_goals":2', b'"home_goals":NaN'), "NaN and Infinity"),
        (b'{"home_goals":1,' + encode(RESULT)[1:], "duplicate key"),
        (encode(RESULT) + b" " * 70_000, "payload exceeds"),
    ],
)
def test_every_kind_of_bad_payload_has_its_rule(value: bytes | None, rule: str) -> None:
    """Empty, not JSON, truncated, unknown version, NaN, duplicate key, oversize: each is
    rejected with a rule that says which."""
    letter = rejected(value)
    assert rule in letter.error.rule
    assert base64.b64decode(letter.payload_b64) == (value or b"")


def test_every_generated_malformed_event_becomes_a_complete_letter() -> None:
    """Every kind the chaos generator makes is rejected with a field and a rule, and its
    letter round-trips through the codec with the bytes intact."""
    events = malformed.generate([FIXTURE], [RESULT], 4 * len(malformed.KINDS), huge=1)
    assert {e.kind for e in events} == set(malformed.KINDS)
    for index, event in enumerate(events):
        message = Message(f"t.{event.topic}", 0, index, event.key, event.value)
        record_type = Fixture if event.topic == "fixture" else MatchResult
        with pytest.raises(InvalidEvent) as caught:
            decode(event.value, record_type)
        letter = dead_letter(message, caught.value.issue, "scorer", now=NOW)
        assert letter.error.field.startswith("$"), event.kind
        assert letter.error.rule, event.kind
        wire = encode(letter)
        again = decode(wire, DeadLetter, max_bytes=len(wire))
        assert base64.b64decode(again.payload_b64) == (event.value or b"")[:DEAD_LETTER_PAYLOAD_MAX]


def test_a_payload_too_large_for_the_topic_keeps_its_head_size_and_digest() -> None:
    """Beyond DEAD_LETTER_PAYLOAD_MAX the letter keeps the first bytes and names the full size
    and SHA-256, so it still fits a 1 MiB Kafka record."""
    raw = b'{"padding": "' + b"x" * 900_000 + b'"}'
    letter = rejected(raw)
    kept = base64.b64decode(letter.payload_b64)
    assert kept == raw[:DEAD_LETTER_PAYLOAD_MAX]
    assert letter.error.value is not None
    assert f"of {len(raw)} bytes" in letter.error.value
    assert hashlib.sha256(raw).hexdigest() in letter.error.value
    assert len(encode(letter)) < 1_000_000


def test_processing_failure_letter_keeps_the_event_and_the_error() -> None:
    """A valid event that failed in an agent is dead-lettered with its bytes and the error."""
    message = Message("t.match-features", 1, 7, b"m1", encode(FEATURES))
    letter = processing_failure(message, RuntimeError("boom"), "reconciler")
    assert letter.error.field == "$"
    assert letter.error.rule == "processing failed: RuntimeError('boom')"
    assert base64.b64decode(letter.payload_b64) == encode(FEATURES)


def test_an_event_two_agents_read_is_dead_lettered_by_its_owner_only() -> None:
    """The scorer and the reconciler both reject a bad feature event; one letter remains."""
    issue = ValidationIssue(field="$", value=None, rule="payload is empty")
    message = Message("t.match-features", 0, 5, b"m1", b"")
    letters = [
        dead_letter(message, issue, "scorer", now=NOW),
        dead_letter(message, issue, "reconciler", now=NOW),
        dead_letter(Message("t.match-results", 0, 6, b"m1", b""), issue, "reconciler", now=NOW),
    ]
    kept = owned(letters, {"t.match-features": "scorer"})
    assert [(dl.agent, dl.source_topic) for dl in kept] == [
        ("scorer", "t.match-features"),
        ("reconciler", "t.match-results"),
    ]


def test_every_input_topic_has_one_dead_letter_owner() -> None:
    """The fixtures are dead-lettered by the league router (their only reader), the results by
    the reconciler (the router reads them too), the features by the scorer: one letter each."""
    topics = Topics(prefix="t", partitions=2)
    owners = dead_letter_owners(topics)
    assert owners[topics.fixtures] == features_agent.ROUTER
    assert owners[topics.results] == "reconciler"
    assert owners[topics.features] == "scorer"
    issue = ValidationIssue(field="$", value=None, rule="payload is empty")
    message = Message(topics.fixtures, 0, 3, b"m1", b"")
    letters = [dead_letter(message, issue, agent, now=NOW) for agent in ("league-router", "x")]
    assert [dl.agent for dl in owned(letters, owners)] == ["league-router"]


def test_dead_letters_are_a_prometheus_counter_per_source_topic_and_reason() -> None:
    """The worker's /metrics view counts dead letters as tipstream_dead_letters_total, by the
    topic they came from and the reason they were rejected."""
    metrics = WorkerMetrics({}, lambda: None)
    issue = ValidationIssue(field="$", value="x", rule="not valid JSON: x")
    for topic, offset in [("t.match-features", 5), ("t.match-features", 6), ("t.results", 7)]:
        metrics.dead_lettered(dead_letter(Message(topic, 0, offset, b"m1", b"x"), issue, "scorer"))
    families = {f.name: f for f in text_string_to_metric_families(metrics.text().decode())}
    counted = {
        (s.labels["topic"], s.labels["reason"]): s.value
        for s in families["tipstream_dead_letters"].samples
        if s.name == "tipstream_dead_letters_total"
    }
    assert families["tipstream_dead_letters"].type == "counter"
    assert counted == {("t.match-features", "malformed"): 2, ("t.results", "malformed"): 1}
