"""Settings read from the environment: the event loop choice."""

from __future__ import annotations

import asyncio

import pytest

from streams.settings import ENV_VARS, Settings, use_event_loop


def test_event_loop_defaults_to_uvloop_and_is_listed() -> None:
    assert Settings().event_loop == "uvloop"
    assert ENV_VARS["TIPSTREAM_EVENT_LOOP"] == "uvloop"
    assert Settings.from_env({"TIPSTREAM_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_asyncio_event_loop_leaves_the_policy_alone() -> None:
    policy = asyncio.get_event_loop_policy()
    use_event_loop(Settings(event_loop="asyncio"))
    assert asyncio.get_event_loop_policy() is policy


def test_unknown_event_loop_is_rejected() -> None:
    with pytest.raises(ValueError, match="TIPSTREAM_EVENT_LOOP must be one of uvloop, asyncio"):
        use_event_loop(Settings.from_env({"TIPSTREAM_EVENT_LOOP": "trio"}))
