"""The rollback-in-time rule the learner follows, and the command's arguments (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from agents.learner_rules import adopts_version
from streams.cli.main import build_parser


@pytest.mark.parametrize(
    ("held", "latest", "adopts"),
    [
        (4, 5, True),  # a rollback registered v5 while the learner held v4
        (4, 9, True),  # several versions it did not produce: the newest is adopted
        (4, 4, False),  # its own latest version
        (5, 4, False),  # its checkpoint is ahead of the registry (learned since v4)
        (0, None, False),  # nothing in the registry: keep what it holds
    ],
)
def test_the_learner_adopts_only_a_newer_registry_version(
    held: int, latest: int | None, adopts: bool
) -> None:
    """A newer version than the learner holds is one it did not produce; it follows it."""
    assert adopts_version(held, latest) is adopts


def test_rollback_without_arguments_is_the_champion_rollback() -> None:
    """Plain `rollback` keeps its meaning: no model, no version, no time."""
    args = build_parser().parse_args(["models", "rollback"])
    assert (args.model_id, args.to_version, args.before) == (None, None, None)


def test_rollback_in_time_takes_a_version_or_a_time() -> None:
    """`--before` without a zone is UTC; with one it is kept."""
    parser = build_parser()
    by_version = parser.parse_args(["models", "rollback", "online-logreg", "--to-version", "3"])
    assert (by_version.model_id, by_version.to_version) == ("online-logreg", 3)
    naive = parser.parse_args(["models", "rollback", "m", "--before", "2026-03-01T12:00"])
    assert naive.before == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    zoned = parser.parse_args(["models", "rollback", "m", "--before", "2026-03-01T12:00+02:00"])
    assert zoned.before == datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "rollback", "m", "--before", "yesterday-ish"],
        ["models", "rollback", "m", "--to-version", "3", "--before", "2026-03-01"],
        ["models", "rollback", "m", "--to-version", "three"],
    ],
)
def test_rollback_in_time_refuses_bad_arguments(argv: list[str]) -> None:
    """A time that is not ISO 8601, both a version and a time, a version that is no number."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
