"""The replay's time line, sync points, bad-row handling and replay id (pure, no I/O but files)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest

from models.features import RESULT_DELAY, build_events
from models.timeline import Filters, TimedEvent, timeline
from schemas.codec import encode
from schemas.events import MatchResult, Odds
from schemas.football_csv import FootballRow, league_file, make_match_id, read_rows
from streams.cli.replay import (
    ReplayCounts,
    encode_all,
    read_csv,
    replay_id,
    sync_points,
)

REPO = Path(__file__).resolve().parents[2]
EPL = league_file("england-premier-league")
START = datetime(2020, 8, 1, 12, 30, tzinfo=UTC)
HEADER = (
    "Date,country,league,Season,HomeTeam,AwayTeam,FTHG,FTAG,HTHG,HTAG,"
    "home_open,draw_open,away_open,home_close,draw_close,away_close"
)


@cache
def _epl_rows() -> tuple[FootballRow, ...]:
    rows = read_rows([EPL]).rows
    return tuple(r for r in rows if date(2014, 7, 1) <= r.kickoff.date() <= date(2016, 6, 30))


def _row(minutes: int, home: str, away: str, goals: tuple[int, int] = (1, 0)) -> FootballRow:
    kickoff = START + timedelta(minutes=minutes)
    return FootballRow(
        source="test.csv", line=minutes + 2,
        match_id=make_match_id("test-league", kickoff, home, away), kickoff=kickoff,
        league="test-league", season="2020-2021", home_team=home, away_team=away,
        home_goals=goals[0], away_goals=goals[1], half_time_home_goals=None,
        half_time_away_goals=None, odds_open=Odds(home=2.0, draw=3.4, away=3.8),
        odds_close=Odds(home=1.9, draw=3.5, away=4.0),
    )  # fmt: skip


def _positions(events: list[TimedEvent]) -> dict[tuple[str, str], int]:
    return {(e.kind, e.key): i for i, e in enumerate(events)}


def test_a_result_comes_after_its_own_features() -> None:
    """Every match's result is published after its features, at kickoff + RESULT_DELAY."""
    events = timeline(list(_epl_rows()))
    at = _positions(events)
    for event in events:
        if event.kind == "result":
            assert at[("features", event.key)] < at[("result", event.key)]
            assert event.at == event.record.kickoff + RESULT_DELAY


def test_features_come_after_every_result_known_at_kickoff() -> None:
    """A match's features follow every result whose final whistle is at or before its kickoff,
    and precede every result not known yet: what the stream shows is what was known."""
    events = timeline(list(_epl_rows()))
    results_seen = 0
    for index, event in enumerate(events):
        if event.kind == "result":
            results_seen += 1
            continue
        known = sum(1 for e in events if e.kind == "result" and e.at <= event.at)
        assert results_seen == known, f"features at position {index}"


def test_time_line_is_sorted_and_equal_times_put_results_first() -> None:
    """Events are in time order; a result at the same instant as a kickoff comes before it."""
    first = _row(0, "A", "B")
    second = _row(int(RESULT_DELAY.total_seconds() // 60), "A", "C")
    events = timeline([second, first])
    assert [(e.kind, e.key) for e in events] == [
        ("features", first.match_id),
        ("result", first.match_id),
        ("features", second.match_id),
        ("result", second.match_id),
    ]
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))


def test_features_are_unaffected_by_the_matchs_own_result() -> None:
    """Changing a match's score leaves its own features as they were and changes the features
    of the team's next match (the result is learned, but only afterwards)."""
    rows = [_row(0, "A", "B"), _row(3 * 24 * 60, "A", "C")]
    changed = [dataclasses.replace(rows[0], home_goals=0, away_goals=4), rows[1]]
    before, after = timeline(rows), timeline(changed)
    own = [e.record for e in before if e.kind == "features" and e.key == rows[0].match_id]
    own_after = [e.record for e in after if e.kind == "features" and e.key == rows[0].match_id]
    assert own == own_after
    nxt = [e.record for e in before if e.kind == "features" and e.key == rows[1].match_id]
    nxt_after = [e.record for e in after if e.kind == "features" and e.key == rows[1].match_id]
    assert nxt != nxt_after


def test_features_equal_those_of_the_offline_evaluation() -> None:
    """The replay publishes exactly the features `tipstream evaluate` scores (build_events)."""
    rows = list(_epl_rows())
    offline = {features.match_id: features for features, _ in build_events(rows)}
    replayed = [e.record for e in timeline(rows) if e.kind == "features"]
    assert len(replayed) == len(offline)
    assert all(record == offline[record.match_id] for record in replayed)


def test_filters_keep_history_in_the_features() -> None:
    """Matches before --from are not published but still shape the features of later ones."""
    rows = list(_epl_rows())
    window = Filters(start=date(2015, 7, 1))
    filtered = timeline(rows, window)
    full = {(e.kind, e.key): e.record for e in timeline(rows)}
    assert filtered
    assert all(e.record.kickoff.date() >= date(2015, 7, 1) for e in filtered)
    assert all(full[(e.kind, e.key)] == e.record for e in filtered)
    assert not timeline(rows, Filters(leagues=frozenset({"spain-laliga"})))


def test_time_line_does_not_depend_on_input_order() -> None:
    """Shuffled input rows give the same events in the same order, byte for byte."""
    rows = list(_epl_rows())[:400]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert [encode(e.record) for e in timeline(rows)] == [
        encode(e.record) for e in timeline(shuffled)
    ]


def _event(day: int, hour: int, kind: str, key: str) -> TimedEvent:
    at = datetime(2021, 8, day, hour, tzinfo=UTC)
    record = MatchResult(
        match_id=key, league="l", kickoff=at, home_goals=1, away_goals=0, outcome="H"
    )
    return TimedEvent(at, kind, record)  # type: ignore[arg-type]


def test_sync_points_are_the_first_features_of_a_day_after_results() -> None:
    """--sync waits before the first features published after results on each later day; not
    before the first day, not twice a day, not when no result came since the last wait."""
    events = [
        _event(1, 12, "features", "a"),
        _event(1, 15, "features", "b"),  # 0, 1: nothing learned
        _event(1, 14, "result", "a"),
        _event(1, 17, "result", "b"),  # 2, 3
        _event(2, 12, "features", "c"),  # 4: a new day after results -> wait
        _event(2, 14, "result", "c"),  # 5
        _event(2, 16, "features", "d"),  # 6: same day, already waited -> no wait
        _event(3, 12, "features", "e"),  # 7: a result (5) since the last wait -> wait
        _event(4, 12, "features", "f"),  # 8: no result since the wait at 7 -> no wait
    ]
    assert sync_points(events) == {4, 7}
    assert sync_points([]) == set()
    assert sync_points([e for e in events if e.kind == "features"]) == set()


def _csv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "matches.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


GOOD = [
    "2020-09-12 15:00:00,england,premier-league,2020-2021,Arsenal,Fulham,3,0,1,0,"
    "1.3,5.5,9.0,1.28,5.8,10.0",
    "2020-09-12 17:30:00,england,premier-league,2020-2021,Liverpool,Leeds,4,3,3,2,"
    "1.25,6.0,11.0,1.22,6.5,12.0",
]


def test_bad_rows_are_reported_with_file_and_line_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --on-error skip every bad row is named (file:line and why), counted and left out:
    rows = valid + rejected, and only the good rows remain."""
    path = _csv(
        tmp_path,
        [
            GOOD[0],
            "2020-09-13 14:00:00,england,premier-league,2020-2021,Spurs,Everton,x,1,0,0,"
            "2.0,3.5,3.6,2.1,3.4,3.5",  # line 3: goals
            GOOD[1],
            GOOD[0],  # line 5: duplicate of line 2
            "2020-09-14 20:00:00,england,premier-league,2020-2021,Brighton,Chelsea,1,3,0,1,"
            "0.9,3.5,2.0,4.0,3.6,2.0",  # line 6: odds not above 1
        ],
    )
    counts = ReplayCounts()
    rows = read_csv([path], "skip", counts)
    assert [r.line for r in rows] == [2, 4]
    assert (counts.rows, counts.valid, counts.rejected) == (5, 2, 3)
    err = capsys.readouterr().err
    for line, why in ((3, "FTHG"), (5, "duplicate of"), (6, "home_open")):
        assert f"{path}:{line}:" in err
        assert why in err


def test_stop_ends_at_the_first_bad_row(tmp_path: Path) -> None:
    """With --on-error stop the first bad row ends the run, naming its file and line."""
    path = _csv(tmp_path, [GOOD[0], GOOD[0], "not,a,row"])
    counts = ReplayCounts()
    with pytest.raises(SystemExit, match=rf"{path}:3:"):
        read_csv([path], "stop", counts)
    assert (counts.rows, counts.valid, counts.rejected) == (2, 1, 1)


def test_a_file_without_a_required_column_is_refused(tmp_path: Path) -> None:
    """A header without a required column makes every row unusable: the run stops either way."""
    path = tmp_path / "broken.csv"
    path.write_text("Date,HomeTeam\n2020-09-12 15:00:00,Arsenal\n")
    with pytest.raises(SystemExit, match=rf"{path}:1:"):
        read_csv([path], "skip", ReplayCounts())


def test_events_the_workers_would_reject_drop_their_whole_match(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An event failing the workers' decoder is a rejected row: both events of the match go."""
    rows = [_row(0, "A", "B"), _row(60, "C", "D")]
    events = timeline(rows)
    bad = next(e for e in events if e.kind == "result" and e.key == rows[1].match_id)
    # 150 goals: the constructor accepts it, the decoder's range check does not.
    broken = dataclasses.replace(
        bad,
        record=MatchResult(
            match_id=bad.key,
            league="test-league",
            kickoff=bad.record.kickoff,
            home_goals=150,
            away_goals=0,
            outcome="H",
        ),
    )
    events = [broken if e is bad else e for e in events]
    counts = ReplayCounts(rows=2, valid=2)
    kept, payloads = encode_all(events, "skip", counts)
    assert {e.key for e in kept} == {rows[0].match_id}
    assert len(payloads) == len(kept) == 2
    assert (counts.valid, counts.rejected) == (1, 1)
    assert "test.csv:62" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        encode_all(events, "stop", ReplayCounts(rows=2, valid=2))


def test_replay_id_names_exactly_these_events_in_this_deployment() -> None:
    """The same events give the same id; one changed byte or another topic prefix does not."""
    events = timeline([_row(0, "A", "B"), _row(60, "C", "D")])
    payloads = [encode(e.record) for e in events]
    same = replay_id("p", events, payloads)
    assert same == replay_id("p", events, [encode(e.record) for e in events])
    assert replay_id("q", events, payloads) != same
    assert replay_id("p", events, [*payloads[:-1], payloads[-1] + b" "]) != same
    assert replay_id("p", events[:-1], payloads[:-1]) != same
