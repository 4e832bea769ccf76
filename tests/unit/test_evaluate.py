"""The offline prequential evaluator: predict before learning, burn-in, determinism, output."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import numpy as np
import pytest

from models import catalog, evaluate
from models.base import BaseModel, FloatArray
from models.evaluate import Entrant, parse_model_specs, run_prequential, select_leagues
from models.features import build_events, model_input
from models.metrics import MetricSummary, normalised_implied
from models.policy import LearningPolicy
from models.policy import parse as parse_policy
from schemas.events import MatchFeatures, MatchResult, Odds, Outcome
from schemas.football_csv import default_data_files, read_rows

START = datetime(2019, 8, 10, 15, 0, tzinfo=UTC)
FIXED = {"H": 0.5, "D": 0.3, "A": 0.2}
QUALITY = re.compile(
    r"QUALITY model=[\w.:\-]+ policy=[\w.:]+ matches=\d+ logloss=\d+\.\d{4} rps=\d+\.\d{4} "
    r"brier=\d+\.\d{4} accuracy=\d+\.\d{4} market_open_logloss=\d+\.\d{4} "
    r"market_close_logloss=\d+\.\d{4}"
)


class Spy(BaseModel):
    """Predicts fixed probabilities and records every call, keyed by the input ``n``."""

    kind = "spy"
    learns_online = True

    def __init__(self, model_id: str = "spy", inputs: tuple[str, ...] = ("n",)) -> None:
        super().__init__(model_id, inputs)
        self.calls: list[tuple[str, int]] = []
        self.learned: set[int] = set()
        self.scored_after_learning: list[int] = []

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[str, float]:
        n = int(x["n"])
        self.calls.append(("predict", n))
        if n in self.learned:
            self.scored_after_learning.append(n)
        return dict(FIXED)

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        self.calls.append(("learn", int(x["n"])))
        self.learned.add(int(x["n"]))

    def _proba(self, matrix: FloatArray) -> FloatArray:
        return np.tile(np.array(list(FIXED.values())), (len(matrix), 1))

    def _state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_state(cls, model_id: str, inputs: tuple[str, ...], state: dict[str, Any]) -> Self:
        return cls(model_id, inputs)


class Frequencies(Spy):
    """Learns the outcome frequencies it is taught: a deterministic learner for replays."""

    def __init__(self, model_id: str = "freq", inputs: tuple[str, ...] = ("n",)) -> None:
        super().__init__(model_id, inputs)
        self.counts = {"H": 1.0, "D": 1.0, "A": 1.0}

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[str, float]:
        total = sum(self.counts.values())
        return {k: v / total for k, v in self.counts.items()}

    def learn_one(self, x: Mapping[str, float], y: Outcome, weight: float = 1.0) -> None:
        self.counts[y] += weight


class BatchSpy(Spy):
    """A batch model: never learns online, records the matches each refit was given."""

    learns_online = False

    def __init__(self, model_id: str = "batch", inputs: tuple[str, ...] = ("n",)) -> None:
        super().__init__(model_id, inputs)
        self.fits: list[list[int]] = []

    def refit(self, rows: Sequence[Mapping[str, float]], outcomes: Sequence[Outcome]) -> None:
        self.fits.append([int(x["n"]) for x in rows])


def _event(
    n: int, league: str, season: str, hours: int, goals: tuple[int, int]
) -> tuple[MatchFeatures, MatchResult]:
    kickoff = START + timedelta(hours=hours)
    match_id = f"{league}:m{n}"
    home_goals, away_goals = goals
    outcome: Outcome = "H" if home_goals > away_goals else "A" if away_goals > home_goals else "D"
    features = MatchFeatures(
        match_id=match_id, league=league, season=season, kickoff=kickoff,
        home_team=f"home{n}", away_team=f"away{n}",
        odds_open=Odds(home=2.0, draw=3.5, away=4.0), odds_close=Odds(home=1.8, draw=3.6, away=5.0),
        features={"n": float(n)},
    )  # fmt: skip
    result = MatchResult(
        match_id=match_id, league=league, kickoff=kickoff,
        home_goals=home_goals, away_goals=away_goals, outcome=outcome,
    )  # fmt: skip
    return features, result


def _season_events() -> list[tuple[MatchFeatures, MatchResult]]:
    """League a: 4 burn-in matches then 4 scored; league b starts a season later (2 + 2).
    Matches come in pairs sharing a kickoff."""
    plan = [
        ("a", "2019-2020", 0, (1, 0)), ("a", "2019-2020", 0, (0, 0)),
        ("a", "2019-2020", 2, (0, 2)), ("a", "2019-2020", 2, (3, 1)),
        ("a", "2020-2021", 8000, (1, 1)), ("b", "2020-2021", 8000, (2, 0)),
        ("a", "2020-2021", 8002, (0, 1)), ("b", "2020-2021", 8002, (1, 0)),
        ("a", "2020-2021", 8004, (2, 2)), ("a", "2020-2021", 8004, (4, 0)),
        ("b", "2021-2022", 17000, (0, 3)), ("b", "2021-2022", 17000, (1, 2)),
    ]  # fmt: skip
    return [
        _event(n, league, season, hours, goals)
        for n, (league, season, hours, goals) in enumerate(plan)
    ]


def test_never_scored_on_a_learned_match_and_same_kickoff_predicted_first() -> None:
    """Each match is predicted before it is learned, and every match of a kickoff time is
    predicted before any of them is learned."""
    spy = Spy()
    run_prequential(_season_events(), [Entrant(spy, LearningPolicy("all"))])
    assert spy.scored_after_learning == []
    assert spy.calls == [
        (verb, n) for pair in range(0, 12, 2) for verb in ("predict", "learn")
        for n in (pair, pair + 1)
    ]  # fmt: skip


def test_results_are_learned_only_after_the_final_whistle() -> None:
    """A match kicking off while another is running is predicted before that one is learned."""
    spy = Spy()
    events = [
        _event(0, "a", "2019-2020", 0, (1, 0)),
        _event(1, "a", "2019-2020", 1, (0, 0)),  # kicks off an hour into match 0
        _event(2, "a", "2019-2020", 3, (0, 2)),  # after both final whistles
    ]
    run_prequential(events, [Entrant(spy, LearningPolicy("all"))])
    assert spy.calls == [
        ("predict", 0),
        ("predict", 1),
        ("learn", 0),
        ("learn", 1),
        ("predict", 2),
        ("learn", 2),
    ]


def test_first_season_of_each_league_is_burn_in_but_still_learned() -> None:
    """Only matches after each league's first season are scored (market too); the burn-in
    matches are still learned."""
    spy = Spy()
    report = run_prequential(_season_events(), [Entrant(spy, LearningPolicy("all"))])
    entrant = report.entrants[0]
    # league a: matches 4, 6, 8, 9 scored (its first season 2019-20); league b: 10 and 11.
    assert entrant.summary.count == 6
    assert report.market_open.count == report.market_close.count == 6
    assert spy.learned == set(range(12))


def test_batch_models_are_refitted_on_known_results_at_each_new_season(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch model never learns one result at a time; it is refitted on every finished
    result when a new season starts, and shows the season-refit policy."""
    monkeypatch.setattr(evaluate, "MIN_REFIT_ROWS", 1)
    batch = BatchSpy()
    report = run_prequential(_season_events(), [Entrant(batch, LearningPolicy("all"))])
    assert batch.learned == set()
    assert batch.fits == [list(range(4)), list(range(10))]
    assert report.entrants[0].policy_name == "season-refit"


def test_market_figures_cover_exactly_the_scored_matches() -> None:
    """The market summaries equal the normalised odds scored on the scored matches only."""
    events = _season_events()
    report = run_prequential(events, [Entrant(Spy(), LearningPolicy("all"))])
    expected = MetricSummary()
    for n in (4, 6, 8, 9, 10, 11):
        features, result = events[n]
        assert features.odds_close is not None
        expected.add(normalised_implied(features.odds_close).probabilities, result.outcome)
    assert report.market_close == expected


def test_policy_decides_what_is_learned() -> None:
    """The errors policy teaches only misses; a model that does not learn online learns nothing."""
    errors_spy, frozen = Spy(), Spy("frozen")
    frozen.learns_online = False
    report = run_prequential(
        _season_events(),
        [Entrant(errors_spy, LearningPolicy("errors")), Entrant(frozen, LearningPolicy("all"))],
    )
    home_wins = {0, 3, 5, 7, 9}  # FIXED predicts H: these are the hits
    assert errors_spy.learned == set(range(12)) - home_wins
    assert frozen.learned == set()
    assert [e.policy_name for e in report.entrants] == ["errors", "none"]


def test_quality_lines_have_the_exact_format() -> None:
    """One QUALITY line per model, in the documented format with four decimals."""
    report = run_prequential(
        _season_events(),
        [
            Entrant(Spy(), LearningPolicy("all")),
            Entrant(Frequencies(), LearningPolicy("errors", 0.4)),
        ],
    )
    lines = report.quality_lines()
    assert len(lines) == 2
    assert all(QUALITY.fullmatch(line) for line in lines)
    assert lines[1].startswith("QUALITY model=freq policy=errors:0.4 matches=6 ")


def test_evaluation_is_deterministic_on_shared_data() -> None:
    """Two runs over the same rows print identical QUALITY lines."""
    rows = [r for r in read_rows(default_data_files()).rows if r.league == "france-ligue-1"]

    def run() -> list[str]:
        entrants = [Entrant(Frequencies(inputs=("elo_diff",)), LearningPolicy("all"))]
        return run_prequential(build_events(rows[:1200]), entrants).quality_lines()

    first = run()
    assert first == run()
    scored = sum(row.season != rows[0].season for row in rows[:1200])
    assert f" matches={scored} " in first[0]


def test_model_specs_parse_ids_and_policies() -> None:
    """``id[:policy],...`` gives each model its policy, the catalog default when none."""
    specs = parse_model_specs("a, b:all,c:errors:0.7")
    assert [model_id for model_id, _ in specs] == ["a", "b", "c"]
    assert [str(policy) for _, policy in specs] == [catalog.DEFAULT_POLICY, "all", "errors:0.7"]
    with pytest.raises(ValueError, match="empty model id"):
        parse_model_specs("a,,b")


def test_events_out_of_kickoff_order_are_refused() -> None:
    """A stream whose kickoffs go backwards is an error, not a silently leaky evaluation."""
    events = _season_events()
    with pytest.raises(ValueError, match="kickoff order"):
        run_prequential([events[4], events[0]], [Entrant(Spy(), LearningPolicy("all"))])


def test_league_filter_keeps_known_leagues_and_refuses_unknown_ones() -> None:
    """``--leagues`` keeps only the named leagues; a name not in the data is an error."""
    rows = read_rows(default_data_files()).rows
    kept = select_leagues(rows, "spain-laliga, italy-serie-a")
    assert {row.league for row in kept} == {"spain-laliga", "italy-serie-a"}
    assert select_leagues(rows, None) is rows
    with pytest.raises(ValueError, match="unknown league premier-league"):
        select_leagues(rows, "premier-league")


def test_static_models_are_scored_on_their_own_per_match_predictions() -> None:
    """Predictions of models that do not learn online, made in bulk once per season, equal
    what ``predict_proba_one`` gives match by match."""
    rows = [r for r in read_rows(default_data_files()).rows if r.league == "france-ligue-1"]
    events = list(build_events(rows[:800]))
    report = run_prequential(events, [Entrant(catalog.create("market-close"), LearningPolicy())])
    model = catalog.create("market-close")
    scored = [(f, r) for f, r in events if f.season != rows[0].season]
    assert len(report.entrants[0].scored) == len(scored)
    for (p, outcome), (features, result) in zip(report.entrants[0].scored, scored, strict=True):
        assert outcome == result.outcome
        assert p == pytest.approx(model.predict_proba_one(model_input(features)), abs=1e-12)


def test_all_expands_to_every_model_with_the_default_last() -> None:
    """``all`` lists every catalog model once but the demo's incident, the service's default
    model last; with no ``--models`` the default model alone is evaluated, under the default
    policy."""
    specs = parse_model_specs("all")
    deployable = set(catalog.MODEL_IDS) - set(catalog.DEMO_MODEL_IDS)
    assert sorted(model_id for model_id, _ in specs) == sorted(deployable)
    assert specs[-1] == (catalog.DEFAULT_MODEL_ID, parse_policy(catalog.DEFAULT_POLICY))
    extra = parse_model_specs(f"{catalog.DEFAULT_MODEL_ID}:errors,all")
    assert [str(p) for _, p in extra[:1]] == ["errors"]
    assert extra[-1] == specs[-1]
    assert parse_model_specs(evaluate.DEFAULT_MODELS) == [specs[-1]]


def test_league_lines_split_the_scored_matches_by_league() -> None:
    """One LEAGUE line per league and model; their match counts add up to the total."""
    report = run_prequential(_season_events(), [Entrant(Spy(), LearningPolicy("all"))])
    lines = report.league_lines()
    assert [line.split()[1] for line in lines] == ["league=a", "league=b"]
    assert " matches=4 " in lines[0]
    assert " matches=2 " in lines[1]
