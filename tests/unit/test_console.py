"""The console's pure pieces: lag arithmetic, the processing rate, the action guard (operator
token, CSRF, session) and the escaping of what the panels render."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.console import page, rules
from streams.console.data import dead_letters_by_reason


def test_lag_is_end_minus_committed_and_whole_partition_when_nothing_committed() -> None:
    parts = rules.lags({("b", 0): 4, ("a", 1): 10, ("a", 0): 3}, {("a", 1): 6, ("a", 0): 5})
    assert [(p.topic, p.partition, p.lag) for p in parts] == [("a", 0, 0), ("a", 1, 4), ("b", 0, 4)]
    assert rules.committed_total(parts) == 11


def test_rate_never_negative_and_none_without_elapsed_time() -> None:
    assert rules.rate((1.0, 50), (3.0, 10)) == 0.0
    assert rules.rate((3.0, 10), (3.0, 20)) is None


def test_an_action_needs_token_csrf_and_session() -> None:
    token = "t" * 32
    csrf = rules.new_csrf_token()
    session = rules.session_value(token, csrf)
    allowed = {"operator_token": token, "csrf_cookie": csrf, "csrf_form": csrf, "session": session}
    assert rules.refusal(**allowed) is None
    assert rules.refusal(**(allowed | {"operator_token": ""})) is not None
    assert rules.refusal(**(allowed | {"csrf_form": ""})) is not None
    assert rules.refusal(**(allowed | {"csrf_cookie": "", "csrf_form": ""})) is not None
    assert rules.refusal(**(allowed | {"session": None})) is not None
    # A session of another browser (another CSRF token) or another token does not carry over.
    assert rules.refusal(**(allowed | {"session": rules.session_value(token, "other")})) is not None
    assert rules.refusal(**(allowed | {"session": rules.session_value("u" * 32, csrf)})) is not None
    assert rules.token_matches(token, token)
    assert not rules.token_matches(token, "t" * 31)
    assert not rules.token_matches("", "")


def snapshot(message: str) -> dict[str, Any]:
    return {
        "pipeline": {"error": "Kafka: <down>"},
        "workers": [{"url": "http://w:1", "error": "refused"}],
        "models": {"models": [], "changes": [], "learning_policy": "all"},
        "quality": {"window": 2, "models": []},
        "betting": "OSError: <down>",
        "alerts": [
            {
                "alert_id": "a1",
                "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                "status": "open",
                "kind": "decay",
                "model_id": "m",
                "message": message,
            }
        ],
    }


def test_panels_escape_what_they_show_and_offer_actions_only_with_a_token() -> None:
    hostile = "<script>alert(1)</script>"
    readonly = page.panels(snapshot(hostile), csrf="c", actions=False)
    assert hostile not in readonly["alerts"]
    assert "&lt;script&gt;" in readonly["alerts"]
    assert "<form" not in readonly["alerts"]
    assert "&lt;down&gt;" in readonly["pipeline"]
    assert "&lt;down&gt;" in readonly["betting"]
    operator = page.panels(snapshot("fine"), csrf="c", actions=True)
    assert 'name="csrf" value="c"' in operator["alerts"]


def test_dead_letters_by_reason_from_the_metrics_text() -> None:
    text = (
        "# TYPE tipstream_dead_letters counter\n"
        'tipstream_dead_letters_total{topic="fixtures",reason="malformed"} 2.0\n'
        'tipstream_dead_letters_total{topic="results",reason="schema"} 1.0\n'
    )
    assert dead_letters_by_reason(text) == {("fixtures", "malformed"): 2, ("results", "schema"): 1}


def test_rolling_forgets_what_left_the_window_and_bands_hold_the_mean() -> None:
    values = [10.0, 0.0, 1.0, 1.0, 1.0]
    bands = rules.rolling(values, 3)
    assert [b.mean for b in bands] == pytest.approx([10.0, 5.0, 11 / 3, 2 / 3, 1.0])
    # three equal values: no spread
    assert (bands[-1].low, bands[-1].high) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert all(b.low <= b.mean <= b.high for b in bands)


def test_quality_summary_and_plot_from_evaluations() -> None:
    from streams.console import quality

    rows = [
        {
            "kickoff": datetime(2026, 1, d, tzinfo=UTC),
            "log_loss": 1.0 + d / 100,
            "rps": 0.2,
            "hit": d % 2 == 0,
        }
        for d in range(1, 9)
    ]
    (item,) = quality.summary({"online-logreg": rows}, window=4)
    assert item["matches"] == 4
    assert item["accuracy"].mean == 0.5
    assert quality.svg({"online-logreg": rows}, 4).lstrip().startswith(b"<?xml")


def bet_row(model_id: str, day: int, p: tuple[float, float, float], outcome: str) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "match_id": f"m{day}",
        "kickoff": datetime(2026, 1, day, tzinfo=UTC),
        "outcome": outcome,
        "p_home": p[0],
        "p_draw": p[1],
        "p_away": p[2],
        "open_home": 2.0,
        "open_draw": 3.5,
        "open_away": 4.0,
        "close_home": 1.8,
        "close_draw": 3.6,
        "close_away": 4.6,
    }


def test_betting_panel_shows_each_model_the_references_and_the_margin() -> None:
    """A model that sees value on H bets every match; the line never bets and its favourite
    is backed every match; the page says what the margin costs a model level with the line.
    Rows without opening odds are left out, not an error."""
    line = (1 / 2.0, 1 / 3.5, 1 / 4.0)
    total = sum(line)
    level = (line[0] / total, line[1] / total, line[2] / total)
    rows = []
    for day, outcome in enumerate("HAHDH", start=1):
        rows += [
            bet_row("m", day, (0.6, 0.2, 0.2), outcome),
            bet_row("market-open", day, level, outcome),
        ]
    rows.append(bet_row("m", 9, (0.6, 0.2, 0.2), "H") | {"open_home": None})
    figures = rules.betting_figures(rows)
    table = dict(figures.models)
    assert list(table) == ["m", "market-open", "market-open-favourite"]
    assert table["m"].bets == 5
    assert table["m"].roi == pytest.approx((3 * 1.0 - 2) / 5)
    assert table["m"].roi_lo <= table["m"].roi <= table["m"].roi_hi
    assert table["m"].clv == pytest.approx(2.0 * (1 / 1.8) / (1 / 1.8 + 1 / 3.6 + 1 / 4.6) - 1)
    assert table["market-open"].bets == 0
    assert table["market-open-favourite"].bets == 5
    assert figures.matches == 5
    assert figures.margin == pytest.approx(total - 1)

    html = page.betting_panel({"betting": figures})
    assert 'data-model="market-open-favourite"' in html
    assert "<td>+0.2000</td>" in html  # m's ROI
    assert f"margin of {total - 1:.1%}" in html
    assert f"expects to lose {1 - 1 / total:.1%}" in html
    as_json = rules.betting_json(figures)
    assert isinstance(as_json, dict)
    assert json.loads(json.dumps(as_json, allow_nan=False))["models"][1]["roi"] is None
    assert page.betting_panel({"betting": None}).count("computing") == 1
    empty = page.betting_panel({"betting": rules.betting_figures([])})
    assert "no evaluated match" in empty
    assert "Plainly" not in empty
