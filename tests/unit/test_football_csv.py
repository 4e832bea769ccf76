"""Reading football-data.co.uk-style CSV files: typed rows, clear errors, any row order."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from schemas.events import Odds
from schemas.football_csv import (
    REQUIRED_COLUMNS,
    FootballRow,
    OnError,
    RowError,
    RowsRead,
    collect_rows,
    default_data_files,
    parse_lines,
    read_rows,
    slug,
)

HEADER = (
    "Date,country,league,Season,HomeTeam,AwayTeam,FTHG,FTAG,HTHG,HTAG,home_close,home_open,"
    "draw_close,draw_open,away_close,away_open,over_2.5_close,over_2.5_open,under_2.5_close,"
    "under_2.5_open,bts_yes_close,bts_yes_open,bts_no_close,bts_no_open"
)
GOOD = (
    "2009-08-15 13:45:00,england,premier-league,2009-2010,Chelsea,Hull City,2,1,1,1,"
    "1.17,1.19,6.91,6.64,20.64,18.47,1.58,1.62,2.3,2.23,,,,"
)
COLUMNS = HEADER.split(",")


SOURCE = "matches.csv"


def _parse(*lines: str, header: str = HEADER) -> list[FootballRow | RowError]:
    return list(parse_lines([header, *lines], SOURCE))


def _read(*lines: str, on_error: OnError = "stop") -> RowsRead:
    return collect_rows(parse_lines([HEADER, *lines], SOURCE), on_error=on_error)


def _with(column: str, value: str, line: str = GOOD) -> str:
    fields = line.split(",")
    fields[COLUMNS.index(column)] = value
    return ",".join(fields)


def test_good_row_becomes_typed_row() -> None:
    """A well-formed line becomes a FootballRow with every field typed and the UTC kickoff."""
    [row] = _read(GOOD).rows
    assert row == FootballRow(
        source=SOURCE,
        line=2,
        match_id="england-premier-league:2009-08-15:chelsea:hull-city",
        kickoff=datetime(2009, 8, 15, 13, 45, tzinfo=UTC),
        league="england-premier-league",
        season="2009-2010",
        home_team="Chelsea",
        away_team="Hull City",
        home_goals=2,
        away_goals=1,
        half_time_home_goals=1,
        half_time_away_goals=1,
        odds_open=Odds(home=1.19, draw=6.64, away=18.47),
        odds_close=Odds(home=1.17, draw=6.91, away=20.64),
    )
    assert row.outcome == "H"


def test_optional_columns_may_be_absent() -> None:
    """A file with only the required columns (no half-time, over/under, bts) still parses."""
    values = dict(zip(COLUMNS, GOOD.split(","), strict=True))
    line = ",".join(values[c] for c in REQUIRED_COLUMNS)
    [row] = _parse(line, header=",".join(REQUIRED_COLUMNS))
    assert isinstance(row, FootballRow)
    assert row.half_time_home_goals is None
    assert row.half_time_away_goals is None


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("Date", "15/08/2009", "expected a date as YYYY-MM-DD HH:MM:SS"),
        ("Date", "2009-02-30 13:45:00", "not a valid date"),
        ("Date", "", "value is missing"),
        ("FTHG", "-1", "goals must be a whole number from 0 to 99"),
        ("FTAG", "1.5", "goals must be a whole number from 0 to 99"),
        ("HTHG", "3", "half-time goals exceed full-time goals"),
        ("home_open", "1.0", "decimal odds must be > 1"),
        ("draw_close", "0.5", "decimal odds must be > 1"),
        ("away_open", "nan", "odds must be a number"),
        ("away_close", "inf", "odds must be a number"),
        ("home_close", "abc", "odds must be a number"),
        ("AwayTeam", "Chelsea", "must differ from HomeTeam"),
        ("AwayTeam", "chelsea ", "must differ from HomeTeam"),
        ("HomeTeam", "", "value is missing"),
        ("Season", "2009-2011", "expected consecutive years as YYYY-YYYY"),
        ("country", "???", "must contain a letter or a digit"),
    ],
)
def test_malformed_row_is_rejected_with_its_reason(column: str, value: str, rule: str) -> None:
    """Each malformed field yields a RowError naming the file, line, field, value and rule."""
    good, error = _parse(GOOD, _with(column, value))
    assert isinstance(good, FootballRow)
    assert isinstance(error, RowError)
    assert (error.path, error.line, error.field, error.value) == (
        SOURCE,
        3,
        column,
        value.strip() or None,
    )
    assert error.rule.startswith(rule)
    assert str(error).startswith(f"{SOURCE}:3: {column}=")


def test_match_id_too_long_for_an_event_is_rejected() -> None:
    """Team names that make the match id longer than an event identifier allows are refused."""
    long_name = "x" * 100
    [error] = _parse(_with("HomeTeam", long_name, _with("AwayTeam", "y" * 100)))
    assert isinstance(error, RowError)
    assert (error.field, error.rule) == ("match_id", "longer than 200 characters")


def test_missing_required_column_is_one_error_for_the_header() -> None:
    """A file without a required column yields one RowError at line 1 naming that column."""
    header = HEADER.replace("draw_open,", "")
    line = ",".join(v for c, v in zip(COLUMNS, GOOD.split(","), strict=True) if c != "draw_open")
    [error] = _parse(line, line, header=header)
    assert isinstance(error, RowError)
    assert (error.line, error.field, error.rule) == (1, "draw_open", "required column is missing")


def test_empty_text_has_no_header() -> None:
    """Text without even a header line yields one RowError saying so."""
    [error] = list(parse_lines([], SOURCE))
    assert isinstance(error, RowError)
    assert (error.line, error.rule) == (1, "file has no header row")


def test_row_with_extra_fields_is_rejected() -> None:
    """A line with more fields than the header is an error, not silently truncated."""
    [error] = _parse(GOOD + ",1.5")
    assert isinstance(error, RowError)
    assert error.field == "row"


def test_stop_raises_first_error_and_skip_collects_them() -> None:
    """``stop`` raises the first bad row; ``skip`` keeps the good rows and returns the errors."""
    lines = (_with("FTHG", "-2"), GOOD, _with("home_open", "nan"))
    with pytest.raises(RowError, match=re.escape(f"{SOURCE}:2: FTHG='-2'")):
        _read(*lines)
    rows, errors = _read(*lines, on_error="skip")
    assert [row.line for row in rows] == [3]
    assert [(e.line, e.field) for e in errors] == [(2, "FTHG"), (4, "home_open")]


def test_duplicate_match_is_an_error() -> None:
    """The same match twice (same league, date and teams) is rejected at its second line."""
    rows, errors = _read(GOOD, _with("Date", "2009-08-15 16:00:00"), on_error="skip")
    assert len(rows) == 1
    assert (errors[0].line, errors[0].field) == (3, "match_id")
    assert errors[0].rule == f"duplicate of {rows[0].source}:2"


def test_rows_in_any_order_come_out_by_kickoff_then_stable() -> None:
    """Rows out of kickoff order are sorted by kickoff; equal kickoffs keep their file order."""
    late = _with("Date", "2009-08-22 15:00:00", _with("HomeTeam", "Arsenal"))
    same_a = _with("HomeTeam", "Wigan", _with("AwayTeam", "Aston Villa"))
    same_b = _with("HomeTeam", "Everton", _with("AwayTeam", "Stoke"))
    early = _with("Date", "2009-08-01 12:00:00", _with("HomeTeam", "Fulham"))
    rows = _read(late, same_a, GOOD, same_b, early).rows
    assert [row.line for row in rows] == [6, 3, 4, 5, 2]


def test_match_id_is_a_valid_identifier_slug() -> None:
    """Team and league names become lowercase ASCII slugs valid as event identifiers."""
    assert slug("Dep. La Coruña") == "dep-la-coruna"
    assert slug("  Paris SG ") == "paris-sg"
    assert slug("Ath Bilbao") == "ath-bilbao"


def test_every_shared_row_parses_with_a_valid_match_id() -> None:
    """All 27,700 shared rows parse, in kickoff order, with unique ids of the event pattern."""
    rows, errors = read_rows(default_data_files(), on_error="skip")
    assert errors == []
    assert len(rows) == 27_700
    assert len({row.match_id for row in rows}) == len(rows)
    assert all(re.fullmatch(r"[a-z0-9:\-]+", row.match_id) for row in rows)
    assert all(a.kickoff <= b.kickoff for a, b in pairwise(rows))
    assert {row.league for row in rows} == {
        "england-premier-league", "spain-laliga", "italy-serie-a",
        "germany-bundesliga", "france-ligue-1",
    }  # fmt: skip
