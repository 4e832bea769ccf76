"""Read football-data.co.uk-style CSV files into typed, validated rows.

The format is the one of ``data/football/*.csv`` (see data/README.md): one match per line,
kickoff ``YYYY-MM-DD HH:MM:SS``, teams, full-time and half-time goals, and average opening and
closing 1X2 odds. Other markets (over/under 2.5, both teams to score) may be absent or empty:
tipstream does not read them.

The source gives kickoff in its local time without a zone. We read it as UTC: the offset is
unknown (and differs by league and by daylight saving), while UTC keeps every timestamp aware,
comparable and stable across machines. Same-kickoff grouping and match ids use this value.

A bad row never crashes the reader: :func:`parse_file` (or :func:`parse_lines` for text already
in memory) yields a :class:`RowError` in its place, and :func:`read_rows` (or
:func:`collect_rows`) lets the caller ``stop`` at the first one or ``skip`` them all. Whatever
the bytes (invalid UTF-8, a field beyond the csv module's limit, digits of other scripts), the
result is a row error with file and line. A file that cannot be read at all (missing, UTF-16 or
UTF-32, binary) is one :class:`FileError` at line 1, fatal even when rows are skipped. Numbers
are ASCII only (``str.isdigit`` also takes ``"²"`` and Arabic-Indic digits; ``float`` takes
``"2_0.64"``), a header naming a column twice is refused, and team names obey
:func:`schemas.events.name_problem`, the rule of the events they become.

>>> row = parse_line({
...     "Date": "2009-08-15 13:45:00", "country": "england", "league": "premier-league",
...     "Season": "2009-2010", "HomeTeam": "Chelsea", "AwayTeam": "Hull City",
...     "FTHG": "2", "FTAG": "1", "HTHG": "1", "HTAG": "1",
...     "home_open": "1.19", "draw_open": "6.64", "away_open": "18.47",
...     "home_close": "1.17", "draw_close": "6.91", "away_close": "20.64"}, "epl.csv", 2)
>>> row.match_id
'england-premier-league:2009-08-15:chelsea:hull-city'
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from schemas.events import (
    EARLIEST_KICKOFF,
    Odds,
    Outcome,
    name_problem,
    normalised_name,
    outcome_of,
)

REQUIRED_COLUMNS = (
    "Date",
    "country",
    "league",
    "Season",
    "HomeTeam",
    "AwayTeam",
    "FTHG",
    "FTAG",
    "home_open",
    "draw_open",
    "away_open",
    "home_close",
    "draw_close",
    "away_close",
)
"""Columns a file must have; ``HTHG``/``HTAG`` and the other markets are optional."""

DATA_DIR_ENV = "TIPSTREAM_DATA_DIR"
"""Folder of the CSV history; by default the repository's ``data/football``."""

MAX_GOALS = 99
MAX_ODDS = 1000.0  # the same bound as ``schemas.events.DecimalOdds``
MAX_NAME_LENGTH = 120  # the same bound as ``schemas.events.Name``
MAX_ID_LENGTH = 200  # the same bound as ``schemas.events.Identifier``

# ASCII digits only, and whole values (fullmatch): Python's \\d takes any script's digits.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_SEASON = re.compile(r"([0-9]{4})-([0-9]{4})")
_GOALS = re.compile(r"[0-9]{1,2}")  # at most MAX_GOALS = 99
# Decimal odds as the data writes them (1.17, 20.64, 3): float() would also take 2_0.64, 1e2,
# " nan" or full-width digits.
_ODDS = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,12})?")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Byte order marks of encodings that are not UTF-8; longest first (UTF-32-LE starts as UTF-16-LE).
_OTHER_ENCODINGS = (
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
)
_UTF8_BOM = b"\xef\xbb\xbf"

OnError = Literal["skip", "stop"]


class RowError(ValueError):
    """Why one CSV row cannot become a match: where it is, which field, its value, the rule."""

    def __init__(self, path: str, line: int, field: str, value: str | None, rule: str) -> None:
        super().__init__(f"{path}:{line}: {field}={value!r}: {rule}")
        self.path = path
        self.line = line
        self.field = field
        self.value = value
        self.rule = rule


class FileError(RowError):
    """A file that cannot be read at all: missing, unreadable, or not UTF-8 text.

    Fatal even when bad rows are skipped (:func:`collect_rows` raises it): skipping it would
    silently drop every match of a league. It is a :class:`RowError` at line 1, the header's
    line, so callers that report a header problem as "the whole file is unusable" do so here.
    """

    def __init__(self, path: str, rule: str, line: int = 1) -> None:
        super().__init__(path, line, "file", None, rule)


@dataclass(frozen=True, slots=True)
class FootballRow:
    """One validated match of a CSV file; ``line`` is the 1-based line number in ``source``."""

    source: str
    line: int
    match_id: str
    kickoff: datetime
    league: str
    season: str
    home_team: str
    away_team: str
    home_goals: int
    away_goals: int
    half_time_home_goals: int | None
    half_time_away_goals: int | None
    odds_open: Odds
    odds_close: Odds

    @property
    def outcome(self) -> Outcome:
        """The 1X2 outcome of the full-time score."""
        return outcome_of(self.home_goals, self.away_goals)


class RowsRead(NamedTuple):
    """Rows sorted by kickoff (stable: file order, then line) and the errors that were skipped."""

    rows: list[FootballRow]
    errors: list[RowError]


@lru_cache(maxsize=4096)  # a few hundred team and league names repeat over thousands of rows
def slug(text: str) -> str:
    """Lowercase ASCII with ``-`` between words: ``"Dep. La Coruña"`` -> ``"dep-la-coruna"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")


def make_match_id(league: str, kickoff: datetime, home_team: str, away_team: str) -> str:
    """Deterministic id: ``<league>:<kickoff date>:<home slug>:<away slug>``."""
    return f"{league}:{kickoff.date().isoformat()}:{slug(home_team)}:{slug(away_team)}"


def data_dir() -> Path:
    """The folder of the match history: ``$TIPSTREAM_DATA_DIR``, or the repository's
    ``data/football`` (27,700 real matches ship with the project)."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get(DATA_DIR_ENV) or repo / "data" / "football")


def league_file(league: str) -> Path:
    """The CSV file of one league in :func:`data_dir`, e.g. ``england-premier-league``."""
    return data_dir() / f"{league}.csv"


def default_data_files() -> list[Path]:
    """Every CSV file of :func:`data_dir`."""
    return sorted(data_dir().glob("*.csv"))


def read_rows(paths: Iterable[str | Path], *, on_error: OnError = "stop") -> RowsRead:
    """All matches of the files in kickoff order; raise the first :class:`RowError` or skip it."""
    return collect_rows(chain.from_iterable(parse_file(path) for path in paths), on_error=on_error)


def collect_rows(
    items: Iterable[FootballRow | RowError], *, on_error: OnError = "stop"
) -> RowsRead:
    """Parsed rows sorted by kickoff (stable), raising the first error or skipping them all
    (but a :class:`FileError` is always raised).

    A second row with an already seen match id is an error too: replays and learning treat the
    match id as the identity of a match, so a duplicate would count one match twice.
    """
    rows: list[FootballRow] = []
    errors: list[RowError] = []
    seen: dict[str, FootballRow] = {}
    for item in items:
        if isinstance(item, FootballRow) and item.match_id in seen:
            first = seen[item.match_id]
            item = RowError(
                item.source, item.line, "match_id", item.match_id,
                f"duplicate of {first.source}:{first.line}",
            )  # fmt: skip
        if isinstance(item, RowError):
            if on_error == "stop" or isinstance(item, FileError):
                raise item
            errors.append(item)
            continue
        seen[item.match_id] = item
        rows.append(item)
    rows.sort(key=lambda row: row.kickoff)
    return RowsRead(rows, errors)


def parse_file(path: str | Path) -> Iterator[FootballRow | RowError]:
    """Each data row of one file in file order, parsed, or the :class:`RowError` saying why not.

    Never raises: a file that cannot be opened or read, or is not UTF-8 text, is one
    :class:`FileError`, and a line that is not valid UTF-8 is a row error of its own.
    """
    source = str(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; open may fail alone)
    except OSError as error:
        yield FileError(source, f"cannot open the file: {error.strerror or error}")
        return
    with handle:
        bad_lines: dict[int, str] = {}
        lines = _utf8_lines(handle, source, bad_lines)
        try:
            yield from _parse(lines, source, bad_lines)
        except FileError as error:
            yield error
        except OSError as error:
            yield FileError(source, f"cannot read the file: {error.strerror or error}")


def parse_lines(lines: Iterable[str], source: str) -> Iterator[FootballRow | RowError]:
    """Each data row of CSV text (header first) parsed, or the :class:`RowError` saying why not.

    Text without a header, without a required column or with a column named twice yields a
    single error for line 1.
    """
    return _parse(lines, source, {})


def _utf8_lines(handle: BinaryIO, source: str, bad_lines: dict[int, str]) -> Iterator[str]:
    """The lines of a binary file as text; a line that is not UTF-8 is noted in ``bad_lines``
    (and decoded with replacement characters, so the CSV reader stays in step)."""
    for number, raw in enumerate(handle, start=1):
        line = raw
        if number == 1:
            for mark, encoding in _OTHER_ENCODINGS:
                if raw.startswith(mark):
                    raise FileError(source, f"the file is {encoding} text; save it as UTF-8")
            line = raw.removeprefix(_UTF8_BOM)
            if b"\x00" in line:
                raise FileError(
                    source, "the header has NUL bytes: not UTF-8 text (UTF-16 or UTF-32?)"
                )
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = line[error.start : error.end].hex(" ")
            bad_lines[number] = f"not UTF-8: {error.reason} (bytes {bad} at byte {error.start})"
            yield line.decode("utf-8", "replace")


def _parse(
    lines: Iterable[str], source: str, bad_lines: Mapping[int, str]
) -> Iterator[FootballRow | RowError]:
    reader = csv.DictReader(lines)
    try:
        header = reader.fieldnames
    except csv.Error as error:
        yield RowError(source, 1, "header", None, f"not readable as CSV: {error}")
        return
    if not header:
        yield RowError(source, 1, "header", None, "file has no header row")
        return
    if 1 in bad_lines:
        yield RowError(source, 1, "header", None, bad_lines[1])
        return
    repeated = [column for index, column in enumerate(header) if column in header[:index]]
    if repeated:
        # DictReader would keep the last one silently: which of the two is meant is unknown.
        yield RowError(source, 1, repeated[0], None, "column is named twice in the header")
        return
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        yield RowError(source, 1, missing[0], None, "required column is missing")
        return
    last_line = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:  # e.g. a field beyond csv.field_size_limit()
            # DictReader updates its own line_num only after a good row: ask its reader.
            last_line = reader.reader.line_num
            yield RowError(source, last_line, "row", None, f"not readable as CSV: {error}")
            continue
        first_line, last_line = last_line + 1, reader.line_num
        if bad_lines:
            problem = next(
                (bad_lines[n] for n in range(first_line, last_line + 1) if n in bad_lines), None
            )
            if problem is not None:
                yield RowError(source, last_line, "row", None, problem)
                continue
        try:
            yield parse_line(record, source, last_line)
        except RowError as error:
            yield error


def parse_line(record: Mapping[str | None, object], source: str, line: int) -> FootballRow:
    """One CSV record (as ``csv.DictReader`` gives it) as a row, or raise :class:`RowError`."""
    fields = _Fields(record, source, line)
    if None in record:
        raise RowError(source, line, "row", None, "more fields than the header has")
    kickoff = fields.kickoff("Date")
    league = f"{fields.slug('country')}-{fields.slug('league')}"
    home_team, away_team = fields.name("HomeTeam"), fields.name("AwayTeam")
    if slug(home_team) == slug(away_team) or (
        normalised_name(home_team) == normalised_name(away_team)
    ):
        raise RowError(source, line, "AwayTeam", away_team, "must differ from HomeTeam")
    match_id = make_match_id(league, kickoff, home_team, away_team)
    if len(match_id) > MAX_ID_LENGTH:
        rule = f"longer than {MAX_ID_LENGTH} characters"
        raise RowError(source, line, "match_id", match_id, rule)
    home_goals, away_goals = fields.goals("FTHG"), fields.goals("FTAG")
    return FootballRow(
        source=source,
        line=line,
        match_id=match_id,
        kickoff=kickoff,
        league=league,
        season=fields.season("Season"),
        home_team=home_team,
        away_team=away_team,
        home_goals=home_goals,
        away_goals=away_goals,
        half_time_home_goals=fields.half_time("HTHG", home_goals),
        half_time_away_goals=fields.half_time("HTAG", away_goals),
        odds_open=fields.odds("open"),
        odds_close=fields.odds("close"),
    )


class _Fields:
    """Typed access to the fields of one record; each reader raises ``RowError`` on a bad value."""

    def __init__(self, record: Mapping[str | None, object], source: str, line: int) -> None:
        self._record = record
        self._source = source
        self._line = line

    def _fail(self, field: str, value: str | None, rule: str) -> RowError:
        return RowError(self._source, self._line, field, value, rule)

    def text(self, field: str) -> str:
        value = self._record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(field, None, "value is missing")
        return value.strip()

    def optional(self, field: str) -> str | None:
        value = self._record.get(field)
        if not isinstance(value, str):
            return None
        return value.strip() or None

    def kickoff(self, field: str) -> datetime:
        value = self.text(field)
        if not _DATE.fullmatch(value):
            raise self._fail(field, value, "expected a date as YYYY-MM-DD HH:MM:SS")
        try:
            kickoff = datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError as error:
            raise self._fail(field, value, f"not a valid date: {error}") from error
        if kickoff < EARLIEST_KICKOFF:
            raise self._fail(field, value, f"kickoff before {EARLIEST_KICKOFF.year}")
        return kickoff

    def slug(self, field: str) -> str:
        value = self.text(field)
        result = slug(value)
        if not result:
            raise self._fail(field, value, "must contain a letter or a digit")
        return result

    def name(self, field: str) -> str:
        value = self.text(field)
        if len(value) > MAX_NAME_LENGTH or not slug(value):
            raise self._fail(
                field, value, f"must have 1 to {MAX_NAME_LENGTH} characters, a letter or a digit"
            )
        problem = name_problem(value)  # e.g. NUL, which PostgreSQL would refuse later
        if problem is not None:
            raise self._fail(field, value, problem)
        return value

    def season(self, field: str) -> str:
        value = self.text(field)
        found = _SEASON.fullmatch(value)
        if not found or int(found.group(2)) != int(found.group(1)) + 1:
            raise self._fail(field, value, "expected consecutive years as YYYY-YYYY")
        return value

    def goals(self, field: str) -> int:
        return self._goals(field, self.text(field))

    def _goals(self, field: str, value: str) -> int:
        if not _GOALS.fullmatch(value) or int(value) > MAX_GOALS:
            raise self._fail(field, value, f"goals must be a whole number from 0 to {MAX_GOALS}")
        return int(value)

    def half_time(self, field: str, full_time: int) -> int | None:
        value = self.optional(field)
        if value is None:
            return None
        goals = self._goals(field, value)
        if goals > full_time:
            raise self._fail(field, value, f"half-time goals exceed full-time goals ({full_time})")
        return goals

    def odds(self, snapshot: str) -> Odds:
        home, draw, away = (self._price(f"{side}_{snapshot}") for side in ("home", "draw", "away"))
        return Odds(home=home, draw=draw, away=away)

    def _price(self, field: str) -> float:
        value = self.text(field)
        if not _ODDS.fullmatch(value):
            rule = "odds must be a number: ASCII digits, optionally a point and more (2.05)"
            raise self._fail(field, value, rule)
        price = float(value)
        if not 1.0 < price <= MAX_ODDS:
            raise self._fail(field, value, f"decimal odds must be > 1 and <= {MAX_ODDS:g}")
        return price
