"""Leak-free pre-match features from earlier results: ratings, form, rest, opening odds.

:class:`FeatureBuilder` holds per-league team state. ``features_for(row)`` reads that state and
never changes it with anything about the match itself; ``learn_result(...)`` updates it after
the final whistle. :func:`build_events` drives both in event-time order and learns a result only
once its final whistle is before the next kickoff, so simultaneous (or overlapping) matches never
see each other. The closing odds are known only at kickoff: they travel in
``MatchFeatures.odds_close`` and reach reference models through :func:`model_input`, never
through ``features``.

Features (all finite floats; names in :data:`FEATURE_NAMES`):

- ``elo_home``, ``elo_away``: Elo ratings (1500 = league average at the start); updated with
  K=15, a home advantage of 60 points and the World Football Elo goal-difference multiplier.
- ``elo_diff``: ``elo_home - elo_away`` (without the home advantage).
- ``elo_p_home``: Elo expected score of the home team, home advantage included (0..1).
- ``pi_home``, ``pi_away``: pi-ratings (Constantinou & Fenton, 2013) of the home team at home
  and of the away team away, in goal-difference units on a log scale.
- ``pi_exp_gd``: the goal difference the pi-ratings expect (home minus away).
- ``goals_exp_home``, ``goals_exp_away``: expected goals of each side from exponentially
  weighted attack and defence strengths (an online Poisson model) and the league's venue means.
- ``form_home_ppg``, ``form_home_gf``, ``form_home_ga``: the home team's points per game, goals
  for and goals against per game over its last 5 matches (any venue); ``form_away_*`` likewise
  for the away team.
- ``form_home_at_home_*``: the same over the home team's last 5 home matches;
  ``form_away_at_away_*`` over the away team's last 5 away matches.
- ``rest_home``, ``rest_away``: days since the team's previous match in this league, capped at
  30; 30 before its first one (only league matches are known, not cups).
- ``open_p_H``, ``open_p_D``, ``open_p_A``: normalised implied probabilities of the opening
  odds; ``open_margin``: their bookmaker margin (sum of ``1/odds`` minus one).

Ratings carry over seasons, regressed a tenth of the way to the league average at each new
season. A team that did not play the league's previous season (promoted) starts from a weaker
default. Team state is per league: the same name in two leagues is two teams.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import TypeVar

from models.metrics import normalised_implied
from schemas.events import MatchFeatures, MatchResult
from schemas.football_csv import FootballRow

FEATURE_NAMES: tuple[str, ...] = (
    "elo_home",
    "elo_away",
    "elo_diff",
    "elo_p_home",
    "pi_home",
    "pi_away",
    "pi_exp_gd",
    "goals_exp_home",
    "goals_exp_away",
    "form_home_ppg",
    "form_home_gf",
    "form_home_ga",
    "form_away_ppg",
    "form_away_gf",
    "form_away_ga",
    "form_home_at_home_ppg",
    "form_home_at_home_gf",
    "form_home_at_home_ga",
    "form_away_at_away_ppg",
    "form_away_at_away_gf",
    "form_away_at_away_ga",
    "rest_home",
    "rest_away",
    "open_p_H",
    "open_p_D",
    "open_p_A",
    "open_margin",
)
"""Keys of ``MatchFeatures.features``, in a stable order (documented in the module docstring)."""

CLOSE_INPUTS: tuple[str, str, str] = ("close_p_H", "close_p_D", "close_p_A")
"""Closing-odds inputs that :func:`model_input` adds for reference models only."""

# Rates below were picked on seasons 2010-11 to 2016-17 (log loss of a multinomial logit on the
# features); nearby values change that loss by less than 0.002, so they are not fragile.
ELO_BASE = 1500.0
ELO_K = 15.0
ELO_HOME_ADVANTAGE = 60.0
SEASON_REGRESSION = 0.1  # share of the way back to the league average at a new season
# Promoted teams are relegated teams' replacements: roughly the level the relegated teams end at.
PROMOTED_ELO = ELO_BASE - 100.0
PROMOTED_PI = -0.3
PROMOTED_LOG_STRENGTH = 0.15  # ~15% fewer goals scored and more conceded than average

PI_LEARNING_RATE = 0.035  # lambda of the pi-ratings paper
PI_CROSS_RATE = 0.7  # gamma: how much a home result moves the away rating and vice versa
PI_SCALE = 3.0  # c: a rating r expects 10**(|r|/c) - 1 goals of difference

GOALS_LEARNING_RATE = 0.02  # step of the online Poisson attack/defence update
LEAGUE_GOALS_RATE = 0.01  # EWMA weight of one match in the league's venue goal means
LEAGUE_HOME_GOALS = 1.5  # starting venue means, close to the five leagues' averages
LEAGUE_AWAY_GOALS = 1.15

RESULT_DELAY = timedelta(minutes=115)
"""Kickoff to final whistle (90 minutes, half-time, stoppage): when a result becomes known."""

FORM_WINDOW = 5
REST_CAP_DAYS = 30.0
# Form of a team without matches yet: the five leagues' averages (points, goals for, against).
DEFAULT_FORM = (1.37, 1.35, 1.35)
DEFAULT_HOME_FORM = (1.61, 1.5, 1.2)
DEFAULT_AWAY_FORM = (1.16, 1.2, 1.5)

T = TypeVar("T")
_Game = tuple[float, float, float]  # points, goals for, goals against


@dataclass(slots=True)
class _Team:
    """What one team's earlier results say about it, within one league."""

    elo: float
    pi_home: float
    pi_away: float
    log_attack: float
    log_defence: float
    last_season: str
    last_kickoff: datetime | None = None
    form: deque[_Game] = field(default_factory=lambda: deque(maxlen=FORM_WINDOW))
    home_form: deque[_Game] = field(default_factory=lambda: deque(maxlen=FORM_WINDOW))
    away_form: deque[_Game] = field(default_factory=lambda: deque(maxlen=FORM_WINDOW))

    def new_season(self) -> None:
        """Pull ratings towards average: squads change over the summer."""
        keep = 1.0 - SEASON_REGRESSION
        self.elo = ELO_BASE + keep * (self.elo - ELO_BASE)
        self.pi_home *= keep
        self.pi_away *= keep
        self.log_attack *= keep
        self.log_defence *= keep


def _average_team(season: str) -> _Team:
    return _Team(ELO_BASE, 0.0, 0.0, 0.0, 0.0, season)


def _promoted_team(season: str) -> _Team:
    strength = PROMOTED_LOG_STRENGTH
    return _Team(PROMOTED_ELO, PROMOTED_PI, PROMOTED_PI, -strength, strength, season)


@dataclass(slots=True)
class _League:
    """Teams of one league and its venue goal means."""

    season: str
    previous_season: str | None = None
    teams: dict[str, _Team] = field(default_factory=dict)
    home_goals: float = LEAGUE_HOME_GOALS
    away_goals: float = LEAGUE_AWAY_GOALS

    def enter_season(self, season: str) -> None:
        """Start a later season once: regress the teams that played the one that ended."""
        if season <= self.season:
            return
        for team in self.teams.values():
            if team.last_season == self.season:
                team.new_season()
        self.previous_season, self.season = self.season, season

    def team(self, name: str) -> _Team:
        """A team's state; a fresh one if it did not play this season or the previous one."""
        team = self.teams.get(name)
        if team is None or team.last_season not in (self.season, self.previous_season):
            first_season = self.previous_season is None
            team = (_average_team if first_season else _promoted_team)(self.season)
            self.teams[name] = team
        return team


class FeatureBuilder:
    """Team ratings and form per league, read before a match and updated after it.

    >>> from schemas.football_csv import parse_line
    >>> row = parse_line({
    ...     "Date": "2009-08-15 13:45:00", "country": "england", "league": "premier-league",
    ...     "Season": "2009-2010", "HomeTeam": "Chelsea", "AwayTeam": "Hull City",
    ...     "FTHG": "2", "FTAG": "1", "home_open": "1.19", "draw_open": "6.64",
    ...     "away_open": "18.47", "home_close": "1.17", "draw_close": "6.91",
    ...     "away_close": "20.64"}, "epl.csv", 2)
    >>> builder = FeatureBuilder()
    >>> builder.features_for(row).features["elo_diff"]
    0.0
    >>> builder.learn_result(row)
    True
    """

    def __init__(self) -> None:
        self._leagues: dict[str, _League] = {}
        self._pending: dict[str, FootballRow] = {}
        self._learned: set[str] = set()

    def features_for(self, row: FootballRow) -> MatchFeatures:
        """The match's features from state left by earlier results only."""
        home, away, league = self._sides(row)
        self._pending[row.match_id] = row
        return MatchFeatures(
            match_id=row.match_id,
            league=row.league,
            season=row.season,
            kickoff=row.kickoff,
            home_team=row.home_team,
            away_team=row.away_team,
            odds_open=row.odds_open,
            odds_close=row.odds_close,
            features=_features(row, home, away, league),
        )

    def learn_result(self, result: FootballRow | MatchResult) -> bool:
        """Update ratings and form after a match; False (and no change) if already learned.

        A ``MatchResult`` carries no team names, so it needs ``features_for`` of its match first.
        """
        if result.match_id in self._learned:
            return False
        row = self._pending.pop(result.match_id, None)
        if isinstance(result, FootballRow):
            row = result
        elif row is None:
            raise ValueError(f"no features were built for match {result.match_id!r}")
        home, away, league = self._sides(row)
        _learn(league, home, away, row.kickoff, result.home_goals, result.away_goals)
        self._learned.add(result.match_id)
        return True

    def _sides(self, row: FootballRow) -> tuple[_Team, _Team, _League]:
        league = self._leagues.get(row.league)
        if league is None:
            league = self._leagues[row.league] = _League(row.season)
        league.enter_season(row.season)
        return league.team(row.home_team), league.team(row.away_team), league


def _features(row: FootballRow, home: _Team, away: _Team, league: _League) -> dict[str, float]:
    elo_p_home = _elo_expected(home.elo, away.elo)
    goals_home, goals_away = _expected_goals(league, home, away)
    implied = normalised_implied(row.odds_open)
    values = [
        home.elo,
        away.elo,
        home.elo - away.elo,
        elo_p_home,
        home.pi_home,
        away.pi_away,
        _pi_goal_difference(home.pi_home) - _pi_goal_difference(away.pi_away),
        goals_home,
        goals_away,
        *_form(home.form, DEFAULT_FORM),
        *_form(away.form, DEFAULT_FORM),
        *_form(home.home_form, DEFAULT_HOME_FORM),
        *_form(away.away_form, DEFAULT_AWAY_FORM),
        _rest_days(home, row.kickoff),
        _rest_days(away, row.kickoff),
        implied.probabilities["H"],
        implied.probabilities["D"],
        implied.probabilities["A"],
        implied.margin,
    ]
    return dict(zip(FEATURE_NAMES, values, strict=True))


def _elo_expected(home_elo: float, away_elo: float) -> float:
    return 1.0 / (1.0 + math.pow(10.0, (away_elo - home_elo - ELO_HOME_ADVANTAGE) / 400.0))


def _expected_goals(league: _League, home: _Team, away: _Team) -> tuple[float, float]:
    return (
        league.home_goals * math.exp(home.log_attack + away.log_defence),
        league.away_goals * math.exp(away.log_attack + home.log_defence),
    )


def _pi_goal_difference(rating: float) -> float:
    return math.copysign(math.pow(10.0, abs(rating) / PI_SCALE) - 1.0, rating)


def _form(games: deque[_Game], default: _Game) -> _Game:
    if not games:
        return default
    n = len(games)
    points, goals_for, goals_against = zip(*games, strict=True)
    return sum(points) / n, sum(goals_for) / n, sum(goals_against) / n


def _rest_days(team: _Team, kickoff: datetime) -> float:
    if team.last_kickoff is None:
        return REST_CAP_DAYS
    return min((kickoff - team.last_kickoff).total_seconds() / 86400.0, REST_CAP_DAYS)


def _learn(
    league: _League, home: _Team, away: _Team, kickoff: datetime, home_goals: int, away_goals: int
) -> None:
    _learn_elo(home, away, home_goals, away_goals)
    _learn_pi(home, away, home_goals - away_goals)
    _learn_goals(league, home, away, home_goals, away_goals)
    home_points = 3.0 if home_goals > away_goals else 1.0 if home_goals == away_goals else 0.0
    away_points = 3.0 if away_goals > home_goals else 1.0 if home_goals == away_goals else 0.0
    home_game = (home_points, float(home_goals), float(away_goals))
    away_game = (away_points, float(away_goals), float(home_goals))
    home.form.append(home_game)
    home.home_form.append(home_game)
    away.form.append(away_game)
    away.away_form.append(away_game)
    for team in (home, away):
        team.last_kickoff = kickoff
        team.last_season = league.season


def _learn_elo(home: _Team, away: _Team, home_goals: int, away_goals: int) -> None:
    margin = abs(home_goals - away_goals)
    # World Football Elo: a 3-goal win counts 1.75 times a 1-goal win.
    multiplier = 1.0 if margin <= 1 else 1.5 if margin == 2 else (11.0 + margin) / 8.0
    score = 1.0 if home_goals > away_goals else 0.5 if home_goals == away_goals else 0.0
    delta = ELO_K * multiplier * (score - _elo_expected(home.elo, away.elo))
    home.elo += delta
    away.elo -= delta


def _learn_pi(home: _Team, away: _Team, goal_difference: int) -> None:
    expected = _pi_goal_difference(home.pi_home) - _pi_goal_difference(away.pi_away)
    error = goal_difference - expected
    step = math.copysign(PI_SCALE * math.log10(1.0 + abs(error)), error) * PI_LEARNING_RATE
    home.pi_home += step
    home.pi_away += step * PI_CROSS_RATE
    away.pi_away -= step
    away.pi_home -= step * PI_CROSS_RATE


def _learn_goals(
    league: _League, home: _Team, away: _Team, home_goals: int, away_goals: int
) -> None:
    # One gradient step of the Poisson log-likelihood in the log-rates: observed minus expected.
    expected_home, expected_away = _expected_goals(league, home, away)
    home_error = GOALS_LEARNING_RATE * (home_goals - expected_home)
    away_error = GOALS_LEARNING_RATE * (away_goals - expected_away)
    home.log_attack += home_error
    away.log_defence += home_error
    away.log_attack += away_error
    home.log_defence += away_error
    league.home_goals += LEAGUE_GOALS_RATE * (home_goals - league.home_goals)
    league.away_goals += LEAGUE_GOALS_RATE * (away_goals - league.away_goals)


def result_event(row: FootballRow) -> MatchResult:
    """The result event of a CSV row (known only after the match)."""
    return MatchResult(
        match_id=row.match_id,
        league=row.league,
        kickoff=row.kickoff,
        home_goals=row.home_goals,
        away_goals=row.away_goals,
        outcome=row.outcome,
        half_time_home_goals=row.half_time_home_goals,
        half_time_away_goals=row.half_time_away_goals,
    )


def build_events(
    rows: Iterable[FootballRow], builder: FeatureBuilder | None = None
) -> Iterator[tuple[MatchFeatures, MatchResult]]:
    """Features and result of every row in kickoff order (stable for equal kickoffs).

    A result is learned only once its final whistle (:data:`RESULT_DELAY` after kickoff) is
    before the next kickoff, so matches at the same or overlapping times never see each other;
    results known at the same moment are learned in match id order, so the state does not
    depend on the order of the input rows.
    """
    builder = FeatureBuilder() if builder is None else builder
    for finished, starting in prequential_steps(sorted(rows, key=_kickoff), _kickoff):
        for row in sorted(finished, key=_match_id):
            builder.learn_result(row)
        events = [(builder.features_for(row), result_event(row)) for row in starting]
        yield from events


def prequential_steps(
    items: Iterable[T], kickoff: Callable[[T], datetime]
) -> Iterator[tuple[list[T], list[T]]]:
    """``(finished, starting)`` per kickoff time of ``items`` (in kickoff order).

    ``finished`` are the earlier matches whose results became known (:data:`RESULT_DELAY` after
    their kickoff) by the time ``starting``, all the matches of one kickoff time, begin: learn
    the first, then predict the second. A last step finishes the matches still running.
    """
    running: deque[tuple[datetime, list[T]]] = deque()
    for time, group in groupby(items, key=kickoff):
        if running and time <= running[-1][0]:
            raise ValueError(f"items must be in kickoff order; {time} came after {running[-1][0]}")
        finished: list[T] = []
        while running and running[0][0] + RESULT_DELAY <= time:
            finished.extend(running.popleft()[1])
        starting = list(group)
        yield finished, starting
        running.append((time, starting))
    yield [item for _, group in running for item in group], []


def _kickoff(row: FootballRow) -> datetime:
    return row.kickoff


def _match_id(row: FootballRow) -> str:
    return row.match_id


def model_input(event: MatchFeatures) -> dict[str, float]:
    """A model's input: the features, plus closing implied probabilities when known.

    ``close_*`` are for reference (market) models; learnable models must pick their inputs from
    an allowlist that leaves them out, since closing odds are not known when predictions are made.
    """
    x = dict(event.features)
    if event.odds_close is not None:
        implied = normalised_implied(event.odds_close).probabilities
        x.update(zip(CLOSE_INPUTS, (implied["H"], implied["D"], implied["A"]), strict=True))
    return x
