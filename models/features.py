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

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from itertools import groupby
from typing import TypeVar

import msgspec

from models.metrics import normalised_implied
from schemas.events import Fixture, MatchFeatures, MatchResult
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
Game = tuple[float, float, float]  # points, goals for, goals against
ResultKey = tuple[datetime, str]  # final whistle, match id: the order results are learned in


def result_key(kickoff: datetime, match_id: str) -> ResultKey:
    """Where a match's result sits in the order every league state learns results: by final
    whistle (:data:`RESULT_DELAY` after kickoff), ties by match id. It depends on the match
    alone (not on other matches' kickoffs, nor on other leagues), so a state built by a stream
    that sees one league and the offline builder that sees all of them learn alike."""
    return kickoff + RESULT_DELAY, match_id


class TeamState(msgspec.Struct, kw_only=True):
    """What one team's earlier results say about it, within one league."""

    elo: float
    pi_home: float
    pi_away: float
    log_attack: float
    log_defence: float
    last_season: str
    last_kickoff: datetime | None = None
    # The last FORM_WINDOW games, oldest first.
    form: list[Game] = []
    home_form: list[Game] = []
    away_form: list[Game] = []

    def new_season(self) -> None:
        """Pull ratings towards average: squads change over the summer."""
        keep = 1.0 - SEASON_REGRESSION
        self.elo = ELO_BASE + keep * (self.elo - ELO_BASE)
        self.pi_home *= keep
        self.pi_away *= keep
        self.log_attack *= keep
        self.log_defence *= keep


def _average_team(season: str) -> TeamState:
    return TeamState(
        elo=ELO_BASE, pi_home=0.0, pi_away=0.0, log_attack=0.0, log_defence=0.0, last_season=season
    )


def _promoted_team(season: str) -> TeamState:
    strength = PROMOTED_LOG_STRENGTH
    return TeamState(
        elo=PROMOTED_ELO,
        pi_home=PROMOTED_PI,
        pi_away=PROMOTED_PI,
        log_attack=-strength,
        log_defence=strength,
        last_season=season,
    )


class LeagueState(msgspec.Struct, kw_only=True):
    """Team state of one league, the one implementation of the feature rules.

    :meth:`apply_result` learns one result, in :func:`result_key` order (it refuses any other);
    :meth:`features_for` reads the state and never changes it. The offline builder
    (:func:`build_events`) and the features agent (``agents.features_rules``) call exactly
    these two, in the same order, so their features are equal by construction. A msgspec
    struct: it is stored as JSON in the agent's table (floats round-trip exactly).
    """

    league: str
    season: str | None = None
    previous_season: str | None = None
    teams: dict[str, TeamState] = {}
    home_goals: float = LEAGUE_HOME_GOALS
    away_goals: float = LEAGUE_AWAY_GOALS
    applied: int = 0
    # The key of the last result learned: a result must come after it.
    last_result: ResultKey | None = None

    def enter_season(self, season: str) -> None:
        """Start a later season once: regress the teams that played the one that ended."""
        if self.season is None:
            self.season = season
            return
        if season <= self.season:
            return
        for team in self.teams.values():
            if team.last_season == self.season:
                team.new_season()
        self.previous_season, self.season = self.season, season

    def team(self, name: str) -> TeamState:
        """A team's state, stored; a fresh one if it played neither this season nor the last."""
        team = self._current(name)
        if team is None:
            team = self.teams[name] = self._fresh()
        return team

    def _current(self, name: str) -> TeamState | None:
        team = self.teams.get(name)
        if team is None or team.last_season not in (self.season, self.previous_season):
            return None
        return team

    def _fresh(self) -> TeamState:
        assert self.season is not None
        first_season = self.previous_season is None
        return (_average_team if first_season else _promoted_team)(self.season)

    def copy(self) -> LeagueState:
        """An independent copy (the agent computes a fixture's features on one)."""
        return _STATE_DECODER.decode(_COPY_ENCODER.encode(self))

    def apply_result(self, fixture: Fixture, result: MatchResult) -> None:
        """Learn a match's result (its teams and season come from its fixture).

        Raises ``ValueError`` if the result is not after every result learned so far in
        :func:`result_key` order, or does not belong to the fixture: the state never depends
        on the order results arrive in.
        """
        if fixture.match_id != result.match_id or fixture.league != self.league:
            raise ValueError(f"result {result.match_id!r} does not belong to {fixture.match_id!r}")
        key = result_key(fixture.kickoff, fixture.match_id)
        if self.last_result is not None and key <= self.last_result:
            raise ValueError(
                f"result {result.match_id!r} (final whistle {key[0].isoformat()}) is not after "
                f"the last result learned ({self.last_result[1]!r})"
            )
        self.enter_season(fixture.season)
        home, away = self.team(fixture.home_team), self.team(fixture.away_team)
        _learn(self, home, away, fixture.kickoff, result.home_goals, result.away_goals)
        self.last_result = key
        self.applied += 1

    def features_for(self, fixture: Fixture) -> MatchFeatures:
        """The match's features from the results learned so far (the state is not changed).

        The caller has learned exactly the results whose final whistle is at or before the
        kickoff; a fixture of a season not started yet reads the teams as that season will
        start them (regressed, promoted teams fresh).
        """
        view = self
        if self.season is None or fixture.season > self.season:
            view = self.copy()
            view.enter_season(fixture.season)
        home = view._current(fixture.home_team) or view._fresh()
        away = view._current(fixture.away_team) or view._fresh()
        return MatchFeatures(
            match_id=fixture.match_id,
            league=fixture.league,
            season=fixture.season,
            kickoff=fixture.kickoff,
            home_team=fixture.home_team,
            away_team=fixture.away_team,
            odds_open=fixture.odds_open,
            odds_close=fixture.odds_close,
            features=_features(fixture, home, away, view),
        )


_COPY_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(LeagueState)


def fixture_of(row: FootballRow) -> Fixture:
    """The fixture event of a CSV row (what a producer publishes before kickoff)."""
    return Fixture(
        match_id=row.match_id,
        league=row.league,
        season=row.season,
        kickoff=row.kickoff,
        home_team=row.home_team,
        away_team=row.away_team,
        odds_open=row.odds_open,
        odds_close=row.odds_close,
    )


class FeatureBuilder:
    """League states of every league, read before a match and updated after it.

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
        self.leagues: dict[str, LeagueState] = {}
        self._pending: dict[str, FootballRow] = {}
        self._learned: set[str] = set()

    def features_for(self, row: FootballRow) -> MatchFeatures:
        """The match's features from state left by earlier results only."""
        self._pending[row.match_id] = row
        return self._league(row.league).features_for(fixture_of(row))

    def learn_result(self, result: FootballRow | MatchResult) -> bool:
        """Update ratings and form after a match; False (and no change) if already learned.

        A ``MatchResult`` carries no team names, so it needs ``features_for`` of its match first.
        Results of a league must come in :func:`result_key` order.
        """
        if result.match_id in self._learned:
            return False
        row = self._pending.pop(result.match_id, None)
        if isinstance(result, FootballRow):
            row = result
        elif row is None:
            raise ValueError(f"no features were built for match {result.match_id!r}")
        event = result if isinstance(result, MatchResult) else result_event(row)
        self._league(row.league).apply_result(fixture_of(row), event)
        self._learned.add(result.match_id)
        return True

    def _league(self, league: str) -> LeagueState:
        state = self.leagues.get(league)
        if state is None:
            state = self.leagues[league] = LeagueState(league=league)
        return state


def _features(
    fixture: Fixture, home: TeamState, away: TeamState, league: LeagueState
) -> dict[str, float]:
    elo_p_home = _elo_expected(home.elo, away.elo)
    goals_home, goals_away = _expected_goals(league, home, away)
    implied = normalised_implied(fixture.odds_open)
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
        _rest_days(home, fixture.kickoff),
        _rest_days(away, fixture.kickoff),
        implied.probabilities["H"],
        implied.probabilities["D"],
        implied.probabilities["A"],
        implied.margin,
    ]
    return dict(zip(FEATURE_NAMES, values, strict=True))


def _elo_expected(home_elo: float, away_elo: float) -> float:
    return 1.0 / (1.0 + math.pow(10.0, (away_elo - home_elo - ELO_HOME_ADVANTAGE) / 400.0))


def _expected_goals(league: LeagueState, home: TeamState, away: TeamState) -> tuple[float, float]:
    return (
        league.home_goals * math.exp(home.log_attack + away.log_defence),
        league.away_goals * math.exp(away.log_attack + home.log_defence),
    )


def _pi_goal_difference(rating: float) -> float:
    return math.copysign(math.pow(10.0, abs(rating) / PI_SCALE) - 1.0, rating)


def _form(games: list[Game], default: Game) -> Game:
    if not games:
        return default
    n = len(games)
    points, goals_for, goals_against = zip(*games, strict=True)
    return sum(points) / n, sum(goals_for) / n, sum(goals_against) / n


def _rest_days(team: TeamState, kickoff: datetime) -> float:
    if team.last_kickoff is None:
        return REST_CAP_DAYS
    return min((kickoff - team.last_kickoff).total_seconds() / 86400.0, REST_CAP_DAYS)


def _learn(
    league: LeagueState,
    home: TeamState,
    away: TeamState,
    kickoff: datetime,
    home_goals: int,
    away_goals: int,
) -> None:
    _learn_elo(home, away, home_goals, away_goals)
    _learn_pi(home, away, home_goals - away_goals)
    _learn_goals(league, home, away, home_goals, away_goals)
    home_points = 3.0 if home_goals > away_goals else 1.0 if home_goals == away_goals else 0.0
    away_points = 3.0 if away_goals > home_goals else 1.0 if home_goals == away_goals else 0.0
    home_game = (home_points, float(home_goals), float(away_goals))
    away_game = (away_points, float(away_goals), float(home_goals))
    for games, game in (
        (home.form, home_game),
        (home.home_form, home_game),
        (away.form, away_game),
        (away.away_form, away_game),
    ):
        games.append(game)
        del games[:-FORM_WINDOW]
    assert league.season is not None  # entered by apply_result
    for team in (home, away):
        team.last_kickoff = kickoff
        team.last_season = league.season


def _learn_elo(home: TeamState, away: TeamState, home_goals: int, away_goals: int) -> None:
    margin = abs(home_goals - away_goals)
    # World Football Elo: a 3-goal win counts 1.75 times a 1-goal win.
    multiplier = 1.0 if margin <= 1 else 1.5 if margin == 2 else (11.0 + margin) / 8.0
    score = 1.0 if home_goals > away_goals else 0.5 if home_goals == away_goals else 0.0
    delta = ELO_K * multiplier * (score - _elo_expected(home.elo, away.elo))
    home.elo += delta
    away.elo -= delta


def _learn_pi(home: TeamState, away: TeamState, goal_difference: int) -> None:
    expected = _pi_goal_difference(home.pi_home) - _pi_goal_difference(away.pi_away)
    error = goal_difference - expected
    step = math.copysign(PI_SCALE * math.log10(1.0 + abs(error)), error) * PI_LEARNING_RATE
    home.pi_home += step
    home.pi_away += step * PI_CROSS_RATE
    away.pi_away -= step
    away.pi_home -= step * PI_CROSS_RATE


def _learn_goals(
    league: LeagueState, home: TeamState, away: TeamState, home_goals: int, away_goals: int
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

    Before each match, every result whose final whistle (:data:`RESULT_DELAY` after kickoff)
    is at or before its kickoff is learned, in :func:`result_key` order (final whistle, then
    match id): matches at the same or overlapping times never see each other, and the state
    depends neither on the order of the input rows nor on other leagues. The features agent
    learns in the same order (``agents.features_rules``), so both produce the same features.
    """
    builder = FeatureBuilder() if builder is None else builder
    running: list[tuple[ResultKey, int, FootballRow]] = []
    for seq, row in enumerate(sorted(rows, key=_kickoff)):
        while running and running[0][0][0] <= row.kickoff:
            builder.learn_result(heapq.heappop(running)[2])
        yield builder.features_for(row), result_event(row)
        heapq.heappush(running, (result_key(row.kickoff, row.match_id), seq, row))
    while running:
        builder.learn_result(heapq.heappop(running)[2])


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
