"""The trainer's wiring: off unless configured, and its settings validated at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agents import trainer
from agents.testing import InMemoryRuntime
from streams.settings import Settings
from streams.topics import Topics


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
