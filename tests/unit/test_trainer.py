"""The trainer's wiring: off unless configured, its settings validated at start, and a
registered refit (only a registered one) recorded with the experiment tracker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agents import trainer
from agents.testing import InMemoryRuntime
from agents.trainer_rules import (
    FitRequest,
    ModelOutcome,
    RefitPlan,
    RunOutcome,
    fit_candidate,
    training_set,
)
from streams.settings import Settings
from streams.topics import Topics
from tests.unit.test_trainer_rules import stored


class RecordingApp:
    """The two Faust declarations the trainer makes, recorded."""

    def __init__(self) -> None:
        self.timers: list[dict[str, Any]] = []
        self.agents: list[str] = []

    def timer(self, **options: Any) -> Callable[[Any], Any]:
        self.timers.append(options)
        return lambda function: function

    def topic(self, name: str, **options: Any) -> str:
        return name

    def agent(self, topic: str, *, name: str) -> Callable[[Any], Any]:
        self.agents.append(name)
        return lambda function: function


def declared(**changes: Any) -> RecordingApp:
    settings = Settings(dev_mode=True).replace(**changes)
    app = RecordingApp()
    trainer.register(app, InMemoryRuntime(settings, Topics.from_settings(settings)))  # type: ignore[arg-type]
    return app


def test_off_by_default() -> None:
    app = declared()
    assert (app.timers, app.agents) == ([], [])


def test_the_schedule_is_a_leader_only_timer() -> None:
    app = declared(retrain_interval_seconds=3600.0)
    assert [t["on_leader"] for t in app.timers] == [True]
    assert app.agents == []  # no alert listener without retrain_on_decay


def test_decay_triggering_adds_the_alert_listener() -> None:
    app = declared(retrain_on_decay=True)
    assert len(app.timers) == 1
    assert app.agents == [trainer.AGENT]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retrain_interval_seconds", 0.5),
        ("retrain_interval_seconds", float("nan")),
        ("retrain_models", "online-logreg"),
        ("retrain_models", ""),
        ("retrain_min_matches", 5),
        ("retrain_folds", 1),
        ("retrain_decay_cooldown_seconds", -1.0),
    ],
)
def test_settings_refuse_what_cannot_work(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"TIPSTREAM_{name.upper()}"):
        Settings(dev_mode=True, **{name: value})


class ScriptedPool(trainer.FitPool):
    """A fit pool that returns a prepared outcome instead of fitting in a process."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__()
        self.outcome = outcome

    async def run(self, plan: RefitPlan) -> RunOutcome:
        return self.outcome


def refit_runtime() -> InMemoryRuntime:
    settings = Settings(dev_mode=True).replace(
        retrain_interval_seconds=3600.0, retrain_models="batch-logreg"
    )
    rt = InMemoryRuntime(settings, Topics.from_settings(settings))
    rt.db.answer("FROM match_features f JOIN results r", [("[]",)])
    rt.db.answer(
        "FROM models m JOIN model_versions v",
        [
            {
                "status": "challenger",
                "version": 0,
                "parent_version": None,
                "kind": "batch-logreg",
                "learned": 0,
                "last_evaluation_id": None,
                "state_sha256": "0" * 64,
                "learned_from": None,
                "learned_until": None,
                "complete_through": None,
            }
        ],
    )
    return rt


async def test_a_registered_refit_is_recorded_with_its_version_and_cv_metrics() -> None:
    request = FitRequest("batch-logreg", "batch-logreg", 3)
    result = fit_candidate(request, training_set(stored(300)).examples)
    rt = refit_runtime()
    pool = ScriptedPool(RunOutcome(300, {}, (ModelOutcome(request, result=result),)))
    done = await trainer.execute(rt, pool, {"run_id": 7, "trigger": "schedule"})
    assert done["outcome"] == "registered"
    [fit] = rt.fits
    assert fit.model.model_id == "batch-logreg"
    assert fit.version == done["detail"][0]["version"] == fit.model.version
    assert fit.metrics == result.metrics
    assert fit.params["run"] == 7
    assert fit.params["trigger"] == "schedule"
    assert fit.params["folds"] == 3


@pytest.mark.parametrize(
    "outcome",
    [{"skipped": "too few results"}, {"error": "ValueError: one class only"}],
)
async def test_a_skipped_or_failed_refit_is_not_recorded(outcome: dict[str, str]) -> None:
    request = FitRequest("batch-logreg", "batch-logreg", 3)
    rt = refit_runtime()
    pool = ScriptedPool(RunOutcome(0, {}, (ModelOutcome(request, **outcome),)))
    done = await trainer.execute(rt, pool, {"run_id": 8, "trigger": "decay"})
    assert done["outcome"] in {"skipped", "failed"}
    assert rt.fits == []
