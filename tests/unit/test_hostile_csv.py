"""Hostile and broken CSV files (issue 13): a row error with file and line, or one FileError.

Every finding of the issue has a test that failed before the fix (a traceback, or a value read
silently wrong); the property test feeds arbitrary bytes; the last set are inputs of the same
classes that the issue does not list.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.football_csv import FileError, FootballRow, RowError, parse_file, read_rows

HEADER = (
    "Date,country,league,Season,HomeTeam,AwayTeam,FTHG,FTAG,HTHG,HTAG,home_close,home_open,"
    "draw_close,draw_open,away_close,away_open"
)
COLUMNS = HEADER.split(",")
GOOD = "2009-08-15 13:45:00,england,premier-league,2009-2010,Chelsea,Hull City,2,1,1,1,1.17,1.19,6.91,6.64,20.64,18.47"  # noqa: E501
OTHER = GOOD.replace("13:45:00", "16:00:00").replace("Chelsea", "Arsenal")


def _with(column: str, value: str, line: str = GOOD) -> str:
    fields = line.split(",")
    fields[COLUMNS.index(column)] = value
    return ",".join(fields)


def _write(tmp_path: Path, data: bytes, name: str = "matches.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _lines(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def _only_error(path: Path) -> RowError:
    """The file's single row error between two good rows, which still parse."""
    items = list(parse_file(path))
    errors = [item for item in items if isinstance(item, RowError)]
    assert len(errors) == 1, items
    assert [item.line for item in items if isinstance(item, FootballRow)] == [2, 4]
    return errors[0]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("FTHG", "\u00b2"),  # superscript two: str.isdigit() accepted it, int() crashed
        ("FTAG", "9" * 5000),  # int() of 5,000 digits crashed
        ("HTHG", "\u0661"),  # Arabic-Indic one: read as 1 goal
        ("FTHG", "\u0662"),  # Arabic-Indic two
    ],
    ids=["superscript", "5000-digits", "arabic-indic-half-time", "arabic-indic"],
)
def test_goals_are_ascii_digits_only(tmp_path: Path, column: str, value: str) -> None:
    """A goal value must be ASCII digits: ², 5,000 digits or Arabic-Indic digits are row errors
    with file and line (before: a traceback, or read as goals)."""
    path = _write(tmp_path, _lines(GOOD.replace("Hull City", "Wigan"), _with(column, value), OTHER))
    error = _only_error(path)
    assert (error.path, error.line, error.field) == (str(path), 3, column)
    assert "goals must be a whole number" in error.rule


def test_field_over_the_csv_limit_is_a_row_error(tmp_path: Path) -> None:
    """A field over 131,072 characters is a row error at its line and the next rows parse
    (before: csv.Error escaped even with --on-error skip)."""
    huge = _with("HomeTeam", "x" * 140_000)
    path = _write(tmp_path, _lines(GOOD, huge, OTHER))
    error = _only_error(path)
    assert (error.line, error.field) == (3, "row")
    assert "field larger than field limit" in error.rule


def test_invalid_utf8_line_is_a_row_error(tmp_path: Path) -> None:
    """A line that is not UTF-8 is a row error naming the bytes; the other lines parse (before:
    UnicodeDecodeError ended the whole read)."""
    data = _lines(GOOD, "@", OTHER).replace(b"@", _with("HomeTeam", "Coru\xf1a").encode("latin-1"))
    error = _only_error(_write(tmp_path, data))
    assert (error.line, error.field) == (3, "row")
    assert "not UTF-8" in error.rule
    assert "f1" in error.rule


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_file_in_another_encoding_is_one_fatal_file_error(tmp_path: Path, encoding: str) -> None:
    """A UTF-16 or UTF-32 file is one FileError at line 1, raised even when bad rows are skipped
    (before: a UnicodeDecodeError traceback)."""
    path = _write(tmp_path, _lines(GOOD).decode().encode(encoding))
    [error] = list(parse_file(path))
    assert isinstance(error, FileError)
    assert (error.path, error.line) == (str(path), 1)
    assert "UTF" in error.rule
    with pytest.raises(FileError):
        read_rows([path], on_error="skip")


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    """A file that cannot be opened is a FileError with the reason, not a traceback."""
    [error] = list(parse_file(tmp_path / "absent.csv"))
    assert isinstance(error, FileError)
    assert "cannot open the file" in error.rule


def test_duplicate_header_column_refuses_the_file(tmp_path: Path) -> None:
    """A header naming a column twice is one error at line 1 (before: the last one was taken
    silently)."""
    header = HEADER.replace("HTAG", "FTHG")
    path = _write(tmp_path, f"{header}\n{GOOD}\n".encode())
    [error] = list(parse_file(path))
    assert isinstance(error, RowError)
    assert (error.line, error.field) == (1, "FTHG")
    assert "named twice" in error.rule


@pytest.mark.parametrize("value", ["2_0.64", "1e2", " nan", "\uff12.5", "\u0662.5", "+2.5", "2."])
def test_odds_have_a_strict_decimal_format(tmp_path: Path, value: str) -> None:
    """Odds are ASCII digits with an optional decimal part: 2_0.64 was read as 20.64."""
    path = _write(
        tmp_path, _lines(GOOD.replace("Hull City", "Wigan"), _with("away_close", value), OTHER)
    )
    error = _only_error(path)
    assert error.field == "away_close"
    assert error.rule.startswith("odds must be a number")


@pytest.mark.parametrize(
    "name", ["Hull\x00City", "Hull\u202eCity", "Hull\u200bCity", "Hull\ufeffCity", "Hull\x7f"]
)
def test_team_name_with_invisible_characters_is_a_row_error(tmp_path: Path, name: str) -> None:
    """NUL, bidirectional overrides, zero-width and BOM characters in a team name are refused
    (before: kept, and PostgreSQL later rejected the NUL)."""
    path = _write(
        tmp_path, _lines(GOOD.replace("Hull City", "Wigan"), _with("AwayTeam", name), OTHER)
    )
    error = _only_error(path)
    assert error.field == "AwayTeam"
    assert "Unicode category" in error.rule


def test_skip_never_crashes_on_a_file_of_every_bad_row(tmp_path: Path) -> None:
    """With skip, a file mixing every bad row of the issue gives rows and errors, no traceback."""
    bad = [
        _with("FTHG", "\u00b2"),
        _with("FTAG", "9" * 5000),
        _with("HomeTeam", "x" * 140_000),
        _with("away_open", "2_0.64"),
        _with("AwayTeam", "Hull\x00City"),
    ]
    data = _lines(*bad, OTHER) + _with("HomeTeam", "Coru\xf1a").encode("latin-1") + b"\n"
    rows, errors = read_rows([_write(tmp_path, data)], on_error="skip")
    assert [row.line for row in rows] == [7]
    assert sorted(error.line for error in errors) == [2, 3, 4, 5, 6, 8]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=600),
    with_header=st.booleans(),
)
def test_arbitrary_bytes_are_rows_or_row_errors(body: bytes, with_header: bool) -> None:
    """Any file content gives FootballRows and RowErrors, and read_rows(skip) raises at most a
    FileError or nothing: never another exception."""
    data = (HEADER.encode() + b"\n" if with_header else b"") + body
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), data)
        items = list(parse_file(path))
        assert all(isinstance(item, FootballRow | RowError) for item in items)
        with contextlib.suppress(FileError):
            read_rows([path], on_error="skip")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    column=st.sampled_from(COLUMNS),
    value=st.text(max_size=40).filter(lambda v: "," not in v and '"' not in v),
)
def test_any_field_value_is_a_row_or_a_row_error(column: str, value: str) -> None:
    """Any unicode in any field gives a row or a row error at that line."""
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), _lines(_with(column, value)))
        items = list(parse_file(path))
        assert all(isinstance(item, FootballRow | RowError) for item in items)


OTHER_HOSTILE = [
    pytest.param("FTHG", "\uff12", id="full-width-goal"),
    pytest.param("FTAG", "\u0967", id="devanagari-goal"),
    pytest.param("HTAG", "\u2460", id="circled-digit-goal"),
    pytest.param("FTHG", "0" * 300 + "1", id="300-digit-goal"),
    pytest.param("home_open", "1e1", id="exponent-odds"),
    pytest.param("draw_open", "\u0661.\u0665", id="arabic-indic-odds"),
    pytest.param("draw_close", "infinity", id="infinity-odds"),
    pytest.param("home_close", "3,5", id="comma-odds"),
    pytest.param("Season", "\u0968\u0966\u0966\u096f-\u0968\u0966\u0967\u0966", id="devanagari"),
    pytest.param("Date", "\u0968009-08-15 13:45:00", id="devanagari-date"),
    pytest.param("AwayTeam", "Hull\u2066City\u2069", id="isolate-name"),
    pytest.param("AwayTeam", "Hull\u2028City", id="line-separator-name"),
    pytest.param("AwayTeam", "Hull\x85City", id="c1-control-name"),
    pytest.param("AwayTeam", "CHELSEA", id="same-team-by-case"),
]


@pytest.mark.parametrize(("column", "value"), OTHER_HOSTILE)
def test_hostile_values_not_in_the_issue_are_row_errors(column: str, value: str) -> None:
    """Values of the issue's classes but other characters (full-width, Devanagari or circled
    digits, exponents, isolates, ...) are row errors at their line too."""
    with tempfile.TemporaryDirectory() as folder:
        path = _write(
            Path(folder), _lines(GOOD.replace("Hull City", "Wigan"), _with(column, value), OTHER)
        )
        error = _only_error(path)
    assert error.line == 3


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_lines(GOOD).decode().encode("utf-32-be"), id="utf32-be-no-bom"),
        pytest.param(b"\xfe\xff" + _lines(GOOD).decode().encode("utf-16-be"), id="utf16-be-bom"),
        pytest.param(_lines(GOOD).decode().encode("utf-16-be"), id="utf16-be-no-bom"),
    ],
)
def test_other_encodings_not_in_the_issue_are_file_errors(data: bytes) -> None:
    """UTF-32-BE and UTF-16-BE files, with or without a BOM, are one FileError too."""
    with tempfile.TemporaryDirectory() as folder:
        [error] = list(parse_file(_write(Path(folder), data)))
    assert isinstance(error, FileError)


def test_header_problems_not_in_the_issue_are_errors_at_line_1(tmp_path: Path) -> None:
    """A header field beyond the csv limit, or a header that is not UTF-8, is one error at line 1;
    a UTF-8 BOM is still fine."""
    for data in (
        b"x" * 140_000 + b"," + HEADER.encode() + b"\n" + GOOD.encode() + b"\n",
        HEADER.encode() + b",caf\xe9\n" + GOOD.encode() + b",1\n",
    ):
        [error] = list(parse_file(_write(tmp_path, data)))
        assert isinstance(error, RowError)
        assert error.line == 1
    [row] = list(parse_file(_write(tmp_path, b"\xef\xbb\xbf" + _lines(GOOD))))
    assert isinstance(row, FootballRow)
