"""Learning policies: weights, parsing, round-trips and clear errors."""

from __future__ import annotations

import pytest

from models.policy import LearningPolicy, parse

CONFIDENT_HOME = {"H": 0.75, "D": 0.15, "A": 0.10}
UNSURE_HOME = {"H": 0.40, "D": 0.35, "A": 0.25}


def test_errors_learns_only_from_mispredictions() -> None:
    """`errors` gives weight 1 to a miss and 0 to a hit, whatever the confidence."""
    policy = parse("errors")
    assert policy.weight(CONFIDENT_HOME, "H") == 0.0
    assert policy.weight(CONFIDENT_HOME, "D") == 1.0
    assert policy.weight(UNSURE_HOME, "A") == 1.0


def test_errors_threshold_skips_unconfident_misses() -> None:
    """`errors:0.7` learns a miss only if its top probability was at least 0.7."""
    policy = parse("errors:0.7")
    assert policy.weight(CONFIDENT_HOME, "A") == 1.0
    assert policy.weight(UNSURE_HOME, "A") == 0.0
    assert policy.weight(CONFIDENT_HOME, "H") == 0.0
    assert policy.weight({"H": 0.7, "D": 0.2, "A": 0.1}, "D") == 1.0


def test_all_learns_everything_with_weight_one() -> None:
    """`all` gives weight 1 to every result, hit or miss."""
    policy = parse("all")
    assert {policy.weight(CONFIDENT_HOME, y) for y in ("H", "D", "A")} == {1.0}


def test_weighted_is_one_minus_the_probability_of_the_outcome() -> None:
    """`weighted` learns surprises more than expected results, and never skips a result it
    gave less than certainty."""
    policy = parse("weighted")
    assert policy.weight(CONFIDENT_HOME, "H") == pytest.approx(0.25)
    assert policy.weight(CONFIDENT_HOME, "A") == pytest.approx(0.90)
    assert policy.weight({"H": 1.0, "D": 0.0, "A": 0.0}, "H") == 0.0


@pytest.mark.parametrize(
    "text", ["errors", "errors:0.7", "errors:0.55", "errors:0.123456789", "all", "weighted"]
)
def test_text_form_round_trips(text: str) -> None:
    """str(parse(text)) is text, and parsing it again gives an equal policy."""
    policy = parse(text)
    assert str(policy) == text
    assert parse(str(policy)) == policy


def test_zero_threshold_is_plain_errors() -> None:
    """`errors:0` is the same policy as `errors` and prints as it."""
    assert parse("errors:0") == parse("errors") == LearningPolicy()
    assert str(parse("errors:0.0")) == "errors"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "unknown learning policy"),
        ("", "unknown learning policy"),
        ("errors:high", "must be a number"),
        ("errors:1.5", r"must be in \[0, 1\)"),
        ("errors:-0.1", r"must be in \[0, 1\)"),
        ("errors:nan", r"must be in \[0, 1\)"),
        ("all:0.7", "takes no argument"),
        ("weighted:2", "takes no argument"),
    ],
)
def test_bad_text_is_a_clear_error(text: str, message: str) -> None:
    """Every malformed policy raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_policy_is_frozen_and_validated() -> None:
    """A policy cannot change after creation, nor be built with an unknown mode."""
    policy = parse("errors:0.7")
    with pytest.raises(AttributeError):
        policy.min_confidence = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown learning policy"):
        LearningPolicy("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="applies to `errors` only"):
        LearningPolicy("all", 0.5)
