"""`tipstream models show`: a stored gate report printed as an operator reads it."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.gate_rules import GateSettings, evaluate_gate
from streams.cli.operator import coverage_text, gate_report_lines


def test_a_held_report_names_its_figures_and_every_reason() -> None:
    """Too few matches: the header says hold, each reason is one `hold:` line, and figures the
    gate could not compute print as `-` rather than `nan`."""
    report = evaluate_gate("c", "h", [], GateSettings())
    stored = {
        "challenger": "c",
        "champion": "h",
        "challenger_version": 2,
        "matches": 0,
        "decision": report.decision,
        "action": "held",
        "report": report.as_json(),
        "checked_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    lines = gate_report_lines(stored)
    assert lines[0] == (
        "gate c v2 vs champion h: hold (held) over 0 shared matches, checked 2026-01-02 03:04:05"
    )
    assert "gain per match - (confidence sequence -..-)" in lines[1]
    assert lines[3:] == ["  hold: 0 shared matches, fewer than the 300 required"]


def test_a_backfill_version_line_shows_its_coverage_and_a_live_one_nothing() -> None:
    """A version with coverage in event time prints it (`-` for a part it lacks); a live
    version's line is unchanged."""
    moment = datetime(2012, 8, 18, 16, 55, tzinfo=UTC)
    backfill = {"learned_from": moment, "learned_until": moment, "complete_through": None}
    assert coverage_text(backfill) == (
        " coverage=2012-08-18T16:55..2012-08-18T16:55 complete_through=-"
    )
    assert coverage_text(dict.fromkeys(backfill)) == ""
