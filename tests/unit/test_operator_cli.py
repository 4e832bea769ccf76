"""The pure parts of the operator commands: output formatting, alert filters and lifecycle,
the tail cursor, dead-letter ids, filters and re-validation, and the match view."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from agents.alert_store import AlertFilter, filter_sql, initial_status, next_status
from agents.dead_letters import dead_letter
from agents.testing import Message
from schemas.codec import InvalidEvent, decode, encode
from schemas.events import Alert, DeadLetter, MatchFeatures, MatchResult, Odds
from streams.cli import dead_letter_view as view
from streams.cli.alerts import TailCursor, change_text, list_text, tail_header, tail_line
from streams.cli.main import build_parser
from streams.cli.output import ELLIPSIS, cell, fields, jsonable, parse_since, table, to_json
from streams.cli.predictions import match_text
from streams.topics import Topics

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOPICS = Topics(prefix="acme", partitions=4)
FEATURES = MatchFeatures(
    match_id="england-premier-league:2024-05-19:arsenal:everton",
    league="england-premier-league",
    season="2023-2024",
    kickoff=datetime(2024, 5, 19, 15, 0, tzinfo=UTC),
    home_team="Arsenal",
    away_team="Everton",
    odds_open=Odds(home=1.2, draw=7.0, away=13.0),
    features={"elo_home": 1850.0},
)


def test_table_aligns_columns_numbers_right_and_marks_missing_values() -> None:
    """Columns are as wide as their widest cell, numbers right-aligned, None shown as '-'."""
    rows = [{"a": "x", "n": 5, "m": None}, {"a": "longer", "n": 123, "m": "end"}]
    assert table(rows, ["a", "n", "m"], headers={"n": "num"}).splitlines() == [
        "a       num  m",
        "x         5  -",
        "longer  123  end",
    ]


def test_table_cuts_only_to_a_given_width() -> None:
    """With a terminal width every line fits it, ending in an ellipsis when cut; without one
    nothing is cut."""
    rows = [{"id": "abc", "message": "a long sentence " * 10}]
    cut = table(rows, ["id", "message"], width=40).splitlines()
    assert all(len(line) <= 40 for line in cut)
    assert cut[1].endswith(ELLIPSIS)
    assert table(rows, ["id", "message"]).splitlines()[1].endswith("sentence")


def test_cells_and_fields() -> None:
    """Datetimes print in UTC to the second, floats to four decimals, booleans as yes/no; a
    multi-line field keeps its lines under the value column."""
    assert cell(datetime(2026, 3, 1, 13, 0, 5, 99, tzinfo=UTC)) == "2026-03-01 13:00:05"
    assert (cell(0.123456), cell(True), cell(None), cell("a\nb")) == ("0.1235", "yes", "-", "a b")
    assert fields({"id": "x", "note": "one\ntwo"}).splitlines() == [
        "id    x",
        "note  one",
        "      two",
    ]


def test_json_output_converts_datetimes_and_bytes() -> None:
    """--json gives ISO datetimes and base64 bytes; lines mode is one line per value."""
    value = {"at": NOW, "raw": b"\x00\xff", "items": [1, NOW]}
    assert jsonable(value) == {
        "at": "2026-03-01T12:00:00+00:00",
        "raw": base64.b64encode(b"\x00\xff").decode(),
        "items": [1, "2026-03-01T12:00:00+00:00"],
    }
    assert "\n" not in to_json(value, lines=True)
    assert json.loads(to_json(value)) == json.loads(to_json(value, lines=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-02-01", datetime(2026, 2, 1, tzinfo=UTC)),
        ("2026-02-01T10:00:00+01:00", datetime(2026, 2, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_since_takes_spans_dates_and_datetimes(text: str, expected: datetime) -> None:
    """--since is a span back from now or an ISO date/datetime (UTC unless it says)."""
    assert parse_since(text, NOW) == expected


def test_since_refuses_anything_else() -> None:
    """A --since that is neither says which forms it takes."""
    with pytest.raises(ValueError, match="give a span"):
        parse_since("yesterday", NOW)


def test_alert_filter_numbers_its_parameters() -> None:
    """Only the given filters become clauses, numbered from the first free parameter."""
    assert filter_sql(AlertFilter()) == ("TRUE", [])
    clause, params = filter_sql(AlertFilter(status="open", model_id="m", since=NOW), 2)
    assert clause == "status = $2 AND model_id = $3 AND created_at >= $4"
    assert params == ["open", "m", NOW]


@pytest.mark.parametrize(
    ("status", "action", "expected"),
    [
        ("open", "acknowledge", "acknowledged"),
        ("acknowledged", "acknowledge", None),
        ("resolved", "acknowledge", None),
        ("open", "resolve", "resolved"),
        ("acknowledged", "resolve", "resolved"),
        ("resolved", "resolve", None),
    ],
)
def test_lifecycle_is_idempotent_and_never_reopens(
    status: str, action: str, expected: str | None
) -> None:
    """Repeating an action changes nothing; acknowledging never reopens a resolved alert."""
    assert next_status(status, action) == expected  # type: ignore[arg-type]


def _alert(kind: str, state: str) -> Alert:
    return Alert(
        alert_id="a1",
        kind=kind,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        model_id="m",
        source="monitor",
        scope="all",
        detector="window",
        message="m (all): ...",
        created_at=NOW,
    )


def test_a_recovery_is_stored_resolved_a_decay_open() -> None:
    """An event that says it is resolved needs no operator; a firing one waits for one."""
    assert initial_status(_alert("recovery", "resolved")) == ("resolved", NOW, "monitor")
    assert initial_status(_alert("decay", "firing")) == ("open", None, None)


def _row(alert_id: str, stored_at: datetime, **extra: object) -> dict[str, object]:
    return {
        "alert_id": alert_id,
        "stored_at": stored_at,
        "created_at": stored_at,
        "status": "open",
        "kind": "decay",
        "model_id": "m",
        "scope": "all",
        "metric": "log_loss",
        "message": f"alert {alert_id}",
    } | extra


def test_tail_cursor_prints_each_row_once_and_looks_back() -> None:
    """A row already printed is not printed again when a later poll (looking back by the
    overlap) returns it; one committed late, stamped before the newest seen, still is."""
    cursor = TailCursor(since=NOW, overlap=timedelta(seconds=60))
    a = _row("a", NOW + timedelta(seconds=1))
    b = _row("b", NOW + timedelta(seconds=5))
    assert [r["alert_id"] for r in cursor.take([a, b])] == ["a", "b"]
    late = _row("late", NOW + timedelta(seconds=3))
    assert cursor.poll_from == NOW + timedelta(seconds=5) - timedelta(seconds=60)
    assert [r["alert_id"] for r in cursor.take([a, late, b])] == ["late"]
    assert cursor.take([a, late, b]) == []


def test_tail_cursor_forgets_ids_older_than_the_overlap() -> None:
    """Memory stays bounded: ids stored before the look-back window are dropped."""
    cursor = TailCursor(since=NOW, overlap=timedelta(seconds=60))
    cursor.take([_row("old", NOW), _row("new", NOW + timedelta(minutes=5))])
    assert set(cursor.seen) == {"new"}


def test_listing_and_tail_lines_show_the_short_id_and_the_sentence() -> None:
    """A listing shows the first eight characters of the id (what show/ack take) and the
    alert's plain sentence; a tail line the same, in fixed columns under its header."""
    row = _row("0123456789abcdef", NOW)
    listed = list_text([row], None).splitlines()
    assert listed[0].split()[:3] == ["id", "created", "(UTC)"]
    assert listed[1].startswith("01234567  2026-03-01 12:00:00  open")
    assert listed[1].endswith("alert 0123456789abcdef")
    assert tail_line(row).index("open") == tail_header().index("status")
    assert list_text([], None) == "no alerts"


def test_change_text_says_what_happened_or_why_not() -> None:
    """ack/resolve name who changed the alert, or who had (a recovery alert too)."""
    changed = _row("a1", NOW, status="acknowledged", acknowledged_by="ana")
    assert change_text(changed, "acknowledge", True) == "alert a1: acknowledged by ana"
    by_recovery = _row("a1", NOW, status="resolved", resolved_by="recovery", resolved_by_alert="r9")
    assert change_text(by_recovery, "acknowledge", False) == (
        "alert a1: already resolved by recovery (recovery alert r9); unchanged"
    )


def test_letter_ids_are_partition_and_offset() -> None:
    """The id is PARTITION:OFFSET on the dead-letter topic; anything else says the form."""
    assert view.parse_letter_id("3:17") == view.LetterId(3, 17)
    assert str(view.LetterId(3, 17)) == "3:17"
    for bad in ("17", "a:1", "1:-2", ""):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            view.parse_letter_id(bad)


def test_every_consumed_topic_has_the_type_its_agent_decodes() -> None:
    """A letter from a topic of this deployment is re-validated as the event that topic
    carries; a topic of another deployment has none."""
    assert view.record_type_of(TOPICS, TOPICS.features) is MatchFeatures
    assert view.record_type_of(TOPICS, TOPICS.results) is MatchResult
    assert view.record_type_of(TOPICS, "other.match-features") is None
    assert view.topic_matches(TOPICS, TOPICS.features, "match-features")
    assert view.topic_matches(TOPICS, TOPICS.features, TOPICS.features)
    assert not view.topic_matches(TOPICS, TOPICS.results, "match-features")


def _letter(raw: bytes) -> DeadLetter:
    message = Message(TOPICS.features, 1, 41, FEATURES.match_id.encode(), raw)
    try:
        decode(raw, MatchFeatures)
    except InvalidEvent as error:
        return dead_letter(message, error.issue, "scorer", now=NOW)
    raise AssertionError("expected an invalid event")


def _broken() -> bytes:
    document = json.loads(encode(FEATURES))
    document["home_team"] = " "
    return json.dumps(document).encode()


def test_revalidation_gives_the_agents_own_reason() -> None:
    """Re-validating the original bytes finds the issue the agent recorded; the fixed
    payload passes."""
    letter = _letter(_broken())
    assert view.still_invalid(view.original_bytes(letter), MatchFeatures) == letter.error
    assert view.still_invalid(encode(FEATURES), MatchFeatures) is None
    assert view.original_key_bytes(letter) == FEATURES.match_id.encode()


def test_letter_rows_and_filters() -> None:
    """A listed letter names its source topic by suffix, its position, key, agent and reason;
    --reason matches the field or the rule, case-insensitively."""
    letter = _letter(_broken())
    row = view.letter_row(view.LetterId(0, 7), letter, 1, prefix=TOPICS.prefix)
    assert (row["id"], row["topic"], row["source"], row["key"]) == (
        "0:7",
        "match-features",
        "1:41",
        FEATURES.match_id,
    )
    assert row["reason"] == view.issue_text(letter.error)
    assert row["reason"].startswith("$.home_team=")
    assert view.reason_matches(letter, "MUST NOT BE BLANK")
    assert view.reason_matches(letter, "home_team")
    assert not view.reason_matches(letter, "odds")
    detail = view.letter_detail(view.LetterId(0, 7), letter, [], prefix=TOPICS.prefix)
    assert detail["payload"] == _broken().decode()
    assert detail["redriven"] == 0


def test_non_utf8_payload_is_shown_as_base64_only() -> None:
    """Bytes that are not text have no text form in show; base64 keeps them exactly."""
    letter = _letter(b"\xff\xfe{")
    detail = view.letter_detail(view.LetterId(0, 1), letter, [], prefix=TOPICS.prefix)
    assert detail["payload"] is None
    assert base64.b64decode(detail["payload_b64"]) == b"\xff\xfe{"


def test_match_view_has_a_heading_per_part() -> None:
    """A match prints its features (with the named features), predictions, result and
    evaluations under their headings; missing parts say so."""
    record = {
        "match_id": FEATURES.match_id,
        "features": {
            "league": FEATURES.league,
            "season": FEATURES.season,
            "kickoff": FEATURES.kickoff,
            "home_team": "Arsenal",
            "away_team": "Everton",
            "payload": json.loads(encode(FEATURES)),
        },
        "predictions": [],
        "result": None,
        "evaluations": [],
    }
    text = match_text(record)
    assert "\nfeatures\n" in text
    assert "elo_home" in text
    assert "1.2 / 7.0 / 13.0" in text
    assert "\nresult\n  none yet" in text
    assert "\npredictions\n  none" in text


def test_every_operator_command_takes_json() -> None:
    """One way for scripts: every alerts, dead-letters and predictions command has --json."""
    parser = build_parser()
    for argv in (
        ["alerts", "list"],
        ["alerts", "show", "x"],
        ["alerts", "tail"],
        ["alerts", "ack", "x"],
        ["alerts", "resolve", "x"],
        ["dead-letters", "list"],
        ["dead-letters", "show", "0:1"],
        ["dead-letters", "redrive", "0:1"],
        ["predictions", "show", "m"],
    ):
        assert parser.parse_args([*argv, "--json"]).json is True


def test_a_payload_for_another_match_is_not_redriven_under_the_letters_key() -> None:
    """A corrected payload whose match id is not the original key would land on another
    match's partition: refused with both ids; the same match passes."""
    key = FEATURES.match_id.encode()
    assert view.key_mismatch(encode(FEATURES), MatchFeatures, key) is None
    other = encode(msgspec.structs.replace(FEATURES, match_id="england-premier-league:x"))
    problem = view.key_mismatch(other, MatchFeatures, key)
    assert problem is not None
    assert "'england-premier-league:x'" in problem
    assert FEATURES.match_id in problem
    assert view.key_mismatch(other, MatchFeatures, None) is None
