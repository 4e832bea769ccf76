"""The demo's scripted incident: the wrapper model (``models.incident``), the demo's options for
it and the report's reading of it (``streams.cli.demo``, ``streams.cli.demo_report``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.registry import version_context
from models import catalog
from models.features import FEATURE_NAMES
from models.incident import IncidentModel, mirrored
from models.market import MarketModel
from models.online import OrderedLogit
from models.serialization import Keyring, sign, verify
from streams.cli import demo
from streams.cli.demo_report import Report, incident_markdown
from tests.unit.synthetic_matches import stream

KEYS = Keyring.single(b"a-registry-key-of-at-least-32-bytes!")


def _pair(start: int, end: int) -> tuple[IncidentModel, Any]:
    """The incident model and a twin of the model it wraps, fresh."""
    return catalog.incident(start, end), catalog.create(catalog.INCIDENT_WRAPS)


def test_mirroring_twice_gives_the_fixture_back() -> None:
    """Home and away exchanged twice is the fixture as it was, for every feature."""
    x = {name: value for name, value in stream(1)[0][0].items() if name in FEATURE_NAMES}
    assert len(x) == len(FEATURE_NAMES)
    twice = mirrored(mirrored(x))
    assert twice.keys() == x.keys()
    assert twice == pytest.approx(x, abs=1e-12)
    once = mirrored(x)
    assert once["elo_home"] == x["elo_away"]
    assert once["open_p_A"] == x["open_p_H"]
    assert once["form_home_at_home_ppg"] == x["form_away_at_away_ppg"]
    assert once["elo_diff"] == -x["elo_diff"]


def test_outside_the_range_it_is_the_wrapped_model_and_inside_it_reads_mirrored_inputs() -> None:
    """Learned 0..29: the wrapped model's predictions; 30..49: its predictions of the mirrored
    fixture; from 50 on: its own again (it learned every example from the right inputs)."""
    model, twin = _pair(30, 50)
    probe = [x for x, _ in stream(12, seed=3)]
    for n, (x, y) in enumerate(stream(70)):
        assert model.broken == (30 <= n < 50)
        expected = twin.predict_proba_many([mirrored(p) for p in probe] if model.broken else probe)
        np.testing.assert_allclose(model.predict_proba_many(probe), expected, atol=1e-12)
        model.learn_one(x, y)
        twin.learn_one(x, y)
    assert model.learned == 70


def test_only_learned_examples_count() -> None:
    """A skipped example (weight 0) or one only observed does not move the stream position."""
    model, _ = _pair(1, 2)
    x, y = stream(1)[0]
    model.learn_one(x, y, weight=0.0)
    model.observe_one(x)
    assert (model.learned, model.broken) == (0, False)
    model.learn_one(x, y)
    assert (model.learned, model.broken) == (1, True)


def test_a_signed_snapshot_restores_mid_incident() -> None:
    """Through the registry's signing and the catalog's restore, a version stored while broken
    restores broken, with its range and count, and learns on to the mend as the original."""
    model, _ = _pair(10, 20)
    for x, y in stream(15):
        model.learn_one(x, y)
    model.version = 3
    context = version_context(model.model_id, model.kind, model.version)
    data = verify(sign(model.snapshot(), KEYS, context), KEYS, context)
    clone = catalog.restore(model.kind, data)
    assert isinstance(clone, IncidentModel)
    assert (clone.start, clone.end, clone.learned, clone.version) == (10, 20, 15, 3)
    assert clone.broken
    for x, y in stream(10, seed=5):
        model.learn_one(x, y)
        clone.learn_one(x, y)
    probe = [x for x, _ in stream(8, seed=6)]
    assert not clone.broken
    np.testing.assert_array_equal(clone.predict_proba_many(probe), model.predict_proba_many(probe))


def test_a_refused_step_does_not_count() -> None:
    """A step the wrapped model refuses leaves the count (and the state) as they were."""
    model, _ = _pair(0, 5)
    x, y = stream(1)[0]
    model.learn_one(x, y)

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("refused")

    model.inner.learn_one = refuse  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="refused"):
        model.learn_one(x, y)
    assert model.learned == 1


def test_bad_configurations_are_refused() -> None:
    """A static model, a range backwards, or inputs whose mirror the model does not read."""
    with pytest.raises(ValueError, match="learns online"):
        IncidentModel("i", MarketModel.opening(), start=0, end=1)
    with pytest.raises(ValueError, match="start <= end"):
        catalog.incident(5, 4)
    with pytest.raises(ValueError, match="elo_away"):
        IncidentModel("i", OrderedLogit("o", ("elo_home",)), start=0, end=1)


def test_the_catalog_entry_is_the_default_demo_window() -> None:
    """``demo-incident`` from the catalog wraps the champion's model over the default window's
    range; ``evaluate --models all`` leaves it out (it is no model to deploy)."""
    model = catalog.create(catalog.INCIDENT_MODEL_ID)
    assert isinstance(model, IncidentModel)
    assert (model.start, model.end) == catalog.DEMO_INCIDENT
    assert model.inner.model_id == catalog.DEFAULT_MODEL_ID == catalog.INCIDENT_WRAPS


def test_demo_options() -> None:
    """The default incident is inside the default window; --no-incident drops it; an incident
    outside the window or backwards is refused with the way out."""
    assert demo.parse_args([]).incident == demo.DEFAULT_INCIDENT
    assert demo.parse_args(["--no-incident"]).incident is None
    assert demo.parse_args(["--incident", "2022-01-01:2022-01-08"]).incident == (
        date(2022, 1, 1),
        date(2022, 1, 8),
    )
    with pytest.raises(SystemExit):
        demo.parse_args(["--from", "2023-07-01"])  # the default incident is before it
    demo.parse_args(["--from", "2023-07-01", "--no-incident"])
    for bad in ("2022-01-08:2022-01-01", "2022-01-01", "x:y"):
        with pytest.raises(argparse.ArgumentTypeError):
            demo.date_range(bad)


def _report(alerts: list[dict[str, Any]]) -> Report:
    """Ten evaluations a day apart in two leagues, made by versions that had learned 0..9:
    broken where learned is 4..6."""
    day = datetime(2022, 10, 1, 15, tzinfo=UTC)
    rows = [
        {"evaluation_id": f"e{i}", "match_id": f"m{i}", "league": "a" if i % 2 else "b",
         "kickoff": day + timedelta(days=i), "learned": i}
        for i in range(10)
    ]  # fmt: skip
    incident = demo.Incident(date(2022, 10, 5), date(2022, 10, 8), 4, 7)
    return Report({}, [], None, [], alerts, [], incident, rows)


def _alert(kind: str, scope: str, evaluation: int, *, superseded: bool = False) -> dict[str, Any]:
    """An alert of the incident model whose last evaluation is the match's ``evaluation``-th
    (``superseded``: an earlier evaluation of that match, no longer current)."""
    return {
        "kind": kind, "scope": scope, "model_id": catalog.INCIDENT_MODEL_ID, "state": "firing",
        "message": f"{kind} {scope}",
        "last_evaluation_id": f"old{evaluation}" if superseded else f"e{evaluation}",
        "match_id": f"m{evaluation}",
        "kickoff": datetime(2022, 10, 1, 15, tzinfo=UTC) + timedelta(days=evaluation),
    }  # fmt: skip


def test_the_report_reads_the_incident_back_from_the_versions() -> None:
    """Broken from the first evaluation of a version in the range to the last; per scope, the
    decay counted in broken evaluations and the recovery in healthy ones after the last broken;
    other alerts of the model listed apart; nothing without an incident."""
    alerts = [
        _alert("decay", "all", 5),
        _alert("drift", "all", 6),
        _alert("recovery", "all", 9),
        _alert("decay", "league:b", 6),
    ]
    story = _report(alerts).story()
    assert story is not None
    assert (story.broken, f"{story.broke:%d}", f"{story.mended:%d}") == (3, "05", "08")
    by_scope = {s.scope: s for s in story.scopes}
    assert (by_scope["all"].decay_after, by_scope["all"].recovery_after) == (2, 3)
    assert (by_scope["league:b"].decay_after, by_scope["league:b"].recovery) == (2, None)
    assert by_scope["league:a"].decay is None
    assert [a["kind"] for a in story.others] == ["drift"]
    text = "\n".join(incident_markdown(_report(alerts)))
    assert "## Incident" in text
    assert "| all | 3 | 2022-10-06 | 2 | 2022-10-10 | 3 |" in text
    plain = _report(alerts)
    plain.incident = None
    assert plain.story() is None
    assert incident_markdown(plain) == []


def test_an_alert_on_a_since_superseded_evaluation_is_placed_by_its_match() -> None:
    """The monitor is fed a match's first evaluation; a re-issued fixture's prediction may
    supersede it afterwards (never fed again). The recovery alert naming it still is the
    scope's recovery, not one of the model's other alerts (a flaky tests/integration/
    test_demo.py: "recovery: none" with the recovery listed apart)."""
    alerts = [_alert("decay", "all", 5), _alert("recovery", "all", 9, superseded=True)]
    story = _report(alerts).story()
    assert story is not None
    by_scope = {s.scope: s for s in story.scopes}
    assert (by_scope["all"].decay_after, by_scope["all"].recovery_after) == (2, 3)
    assert story.others == []


def test_a_worker_that_exits_stops_the_demo_with_its_code_and_log(tmp_path: Path) -> None:
    """The demo watches its workers while the replay and the reconciliation wait on them: one
    that has exited is named with its exit code and the last lines of its log."""
    (tmp_path / "worker-1.log").write_text("starting\nsettings refused: bad port\n")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        exited.wait(timeout=30)
        assert demo.dead_worker([running], tmp_path) is None
        problem = demo.dead_worker([running, exited], tmp_path)
        assert problem is not None
        assert problem.startswith("worker 1 exited with code 3")
        assert "settings refused: bad port" in problem
    finally:
        running.kill()
        running.wait()
