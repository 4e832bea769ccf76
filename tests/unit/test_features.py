"""The feature builder: leak-free, simultaneous matches isolated, valid events, deterministic."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta
from functools import cache

import msgspec
import pytest

from models.features import (
    CLOSE_INPUTS,
    FEATURE_NAMES,
    PROMOTED_ELO,
    RESULT_DELAY,
    FeatureBuilder,
    build_events,
    model_input,
    result_event,
)
from schemas.codec import decode, encode
from schemas.events import MatchFeatures, MatchResult, Odds
from schemas.football_csv import FootballRow, default_data_files, make_match_id, read_rows

START = datetime(2020, 8, 1, 15, 0, tzinfo=UTC)


@cache
def _shared_rows() -> tuple[FootballRow, ...]:
    return tuple(read_rows(default_data_files()).rows)


def _row(
    day: int, home: str, away: str, goals: tuple[int, int] = (1, 0), season: str = "2020-2021"
) -> FootballRow:
    kickoff = START + timedelta(days=day)
    return FootballRow(
        source="test",
        line=day + 2,
        match_id=make_match_id("test-league", kickoff, home, away),
        kickoff=kickoff,
        league="test-league",
        season=season,
        home_team=home,
        away_team=away,
        home_goals=goals[0],
        away_goals=goals[1],
        half_time_home_goals=None,
        half_time_away_goals=None,
        odds_open=Odds(home=2.0, draw=3.4, away=3.8),
        odds_close=Odds(home=1.9, draw=3.5, away=4.0),
    )


def _altered(row: FootballRow) -> FootballRow:
    """The same match with another score (home and away goals swapped, home given two more)."""
    return dataclasses.replace(
        row,
        home_goals=row.away_goals + 2,
        away_goals=row.home_goals,
        half_time_home_goals=None,
        half_time_away_goals=None,
    )


def _features(rows: list[FootballRow]) -> list[dict[str, float]]:
    return [features.features for features, _ in build_events(rows)]


@pytest.mark.parametrize("k", [0, 1, 379, 380, 381, 2000, 5000])
def test_features_ignore_results_of_the_match_and_later(k: int) -> None:
    """Features of match k (and earlier) are unchanged when results of k, k+1, ... change."""
    rows = [row for row in _shared_rows() if row.league == "england-premier-league"]
    altered = rows[:k] + [_altered(row) for row in rows[k:]]
    baseline, changed = _features(rows), _features(altered)
    assert changed[: k + 1] == baseline[: k + 1]
    assert changed[k + 1 :] != baseline[k + 1 :]  # the alteration does reach later matches


def test_same_kickoff_matches_do_not_see_each_other() -> None:
    """A match's features do not depend on the result of another match at the same kickoff."""
    history = [_row(0, "A", "B"), _row(0, "C", "D"), _row(7, "B", "C")]
    same_time = [_row(14, "A", "C", (5, 0)), _row(14, "B", "D")]
    seen = _features(history + same_time)
    with_other_result = _features([*history, _altered(same_time[0]), same_time[1]])
    assert seen[-1] == with_other_result[-1]
    later = _row(21, "D", "A")
    assert (
        _features([*history, *same_time, later])[-1]
        != _features([*history, _altered(same_time[0]), same_time[1], later])[-1]
    )


def test_a_running_match_is_not_seen_by_a_later_kickoff() -> None:
    """A match kicking off before another's final whistle does not see that result; one
    kicking off after it does."""
    first = _row(0, "A", "B", (5, 0))
    overlapping = dataclasses.replace(
        _row(0, "C", "D"), kickoff=first.kickoff + RESULT_DELAY - timedelta(minutes=1)
    )
    after = dataclasses.replace(_row(0, "E", "F"), kickoff=first.kickoff + RESULT_DELAY)
    assert _features([first, overlapping])[-1] == _features([_altered(first), overlapping])[-1]
    assert _features([first, after])[-1] != _features([_altered(first), after])[-1]


def test_same_kickoff_in_shared_data_is_isolated() -> None:
    """In real data, every match of a kickoff group keeps its features when the group's results
    (and all later ones) change."""
    rows = [row for row in _shared_rows() if row.league == "germany-bundesliga"][:2000]
    start = next(i for i in range(1000, len(rows)) if rows[i].kickoff == rows[i + 1].kickoff)
    end = max(i for i, row in enumerate(rows) if row.kickoff == rows[start].kickoff)
    altered = rows[:start] + [_altered(row) for row in rows[start:]]
    assert end > start
    assert _features(altered)[: end + 1] == _features(rows)[: end + 1]


def test_every_shared_row_becomes_valid_events() -> None:
    """All 27,700 rows become MatchFeatures and MatchResult that survive encode/decode, with
    every feature named, finite and free of closing odds (the builder's speed is measured by
    the benchmarks, not asserted)."""
    rows = _shared_rows()
    events = list(build_events(rows))
    assert len(events) == 27_700
    for features, result in events:
        assert tuple(features.features) == FEATURE_NAMES
        assert all(math.isfinite(value) for value in features.features.values())
        assert decode(encode(features), MatchFeatures) == features
        assert decode(encode(result), MatchResult) == result
        assert features.match_id == result.match_id


def test_build_is_deterministic() -> None:
    """Two builds over the same rows produce byte-identical events, and shuffled input rows
    give every match the same events (state does not depend on the input order)."""
    rows = [row for row in _shared_rows() if row.league == "italy-serie-a"][:1500]
    first = [encode(f) + encode(r) for f, r in build_events(rows)]
    assert first == [encode(f) + encode(r) for f, r in build_events(rows)]
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    by_match = {f.match_id: encode(f) + encode(r) for f, r in build_events(shuffled)}
    assert sorted(first) == sorted(by_match.values())


def test_model_input_adds_closing_odds_for_references_only() -> None:
    """model_input is the features plus normalised closing probabilities, which the features
    themselves never carry."""
    features, _ = next(build_events([_row(0, "A", "B")]))
    x = model_input(features)
    assert not set(CLOSE_INPUTS) & set(features.features)
    assert {k: x[k] for k in FEATURE_NAMES} == features.features
    total = 1 / 1.9 + 1 / 3.5 + 1 / 4.0
    assert x["close_p_H"] == pytest.approx((1 / 1.9) / total)
    assert sum(x[k] for k in CLOSE_INPUTS) == pytest.approx(1.0)
    assert "close_p_H" not in model_input(msgspec.structs.replace(features, odds_close=None))


def test_learning_from_a_result_event_equals_learning_from_the_row() -> None:
    """A MatchResult teaches what its row would; learning the same match twice is ignored."""
    first, later = _row(0, "A", "B", (3, 0)), _row(7, "B", "A")
    from_row, from_event = FeatureBuilder(), FeatureBuilder()
    from_row.features_for(first)
    assert from_row.learn_result(first)
    from_event.features_for(first)
    assert from_event.learn_result(result_event(first))
    assert not from_event.learn_result(result_event(first))
    assert not from_event.learn_result(first)
    assert from_row.features_for(later) == from_event.features_for(later)


def test_result_without_features_is_refused() -> None:
    """A MatchResult for a match the builder never saw cannot be learned (no team names)."""
    with pytest.raises(ValueError, match="no features were built"):
        FeatureBuilder().learn_result(result_event(_row(0, "A", "B")))


def test_ratings_carry_over_and_promoted_teams_start_lower() -> None:
    """A new season keeps earlier ratings (regressed); a team new to the league starts at the
    promoted default."""
    first = [_row(0, "A", "B", (4, 0)), _row(7, "B", "A", (0, 3))]
    second = [_row(400, "A", "New", season="2021-2022")]
    features = _features(first + second)[-1]
    assert features["elo_home"] > 1500.0
    assert features["elo_away"] == PROMOTED_ELO
    assert features["rest_home"] == 30.0
    assert features["form_home_ppg"] == 3.0
