"""Settings read from the environment: the event loop choice, the registry keys."""

from __future__ import annotations

import asyncio
import os

import pytest

from models.serialization import key_id_for
from streams.cli.main import main
from streams.settings import DEV_REGISTRY_KEY, ENV_VARS, Settings, use_event_loop


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


def test_no_registry_key_is_a_refusal_naming_the_setting_outside_dev_mode() -> None:
    """Without TIPSTREAM_REGISTRY_KEY there is no default key: asking for the keys fails with a
    message that names the variable, the minimum length and the development switch."""
    assert ENV_VARS["TIPSTREAM_REGISTRY_KEY"] == ""
    with pytest.raises(ValueError, match=r"TIPSTREAM_REGISTRY_KEY is not set.*32 bytes.*DEV_MODE"):
        Settings.from_env({}).registry_keys()


def test_a_short_registry_key_is_refused_even_in_dev_mode() -> None:
    """A key under 32 bytes (the old public default among them) is refused, dev mode or not."""
    for env in ({}, {"TIPSTREAM_DEV_MODE": "1"}):
        settings = Settings.from_env(
            env | {"TIPSTREAM_REGISTRY_KEY": "tipstream-dev-key-change-me"}
        )
        with pytest.raises(ValueError, match="TIPSTREAM_REGISTRY_KEY must be at least 32 bytes"):
            settings.registry_keys()


def test_dev_mode_signs_with_the_public_development_key_and_says_so() -> None:
    """TIPSTREAM_DEV_MODE=1 without a key uses the fixed development key (uses_dev_key is what
    the command line warns about); a key that is set always wins."""
    dev = Settings.from_env({"TIPSTREAM_DEV_MODE": "1"})
    assert dev.uses_dev_key
    assert dev.registry_keys().key == DEV_REGISTRY_KEY
    keyed = Settings.from_env({"TIPSTREAM_DEV_MODE": "1", "TIPSTREAM_REGISTRY_KEY": "k" * 32})
    assert not keyed.uses_dev_key
    assert keyed.registry_keys().key == b"k" * 32


def test_key_id_and_verification_keys_for_rotation() -> None:
    """The key id defaults to the key's SHA-256 prefix or is set; TIPSTREAM_REGISTRY_VERIFY_KEYS
    adds id=key pairs accepted for verification; malformed lists are refused."""
    new, old = "n" * 32, "o=" + "x" * 32  # a key may contain "="
    settings = Settings.from_env(
        {
            "TIPSTREAM_REGISTRY_KEY": new,
            "TIPSTREAM_REGISTRY_KEY_ID": "2025-06",
            "TIPSTREAM_REGISTRY_VERIFY_KEYS": f"2025-01={old}, 2024-06={'y' * 40}",
        }
    )
    keys = settings.registry_keys()
    assert keys.key_id == "2025-06"
    assert keys.accepted_ids == ("2025-06", "2025-01", "2024-06")
    assert keys.key_for("2025-01") == old.encode()
    assert Settings(registry_key=new).registry_keys().key_id == key_id_for(new.encode())
    for bad in ("nokey", f"a={'x' * 32},a={'y' * 32}", "a=short"):
        with pytest.raises(ValueError, match=r"REGISTRY_VERIFY_KEYS|verification key"):
            Settings(registry_key=new, registry_verify_keys=bad).registry_keys()


@pytest.mark.parametrize(
    "argv",
    [
        ["worker"],
        ["train", "--data", "matches.csv", "--until", "2024-01-01"],
        ["models", "list"],
        ["models", "resign"],
    ],
)
def test_keyed_commands_refuse_to_start_without_a_registry_key(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tipstream worker`, `train` and `models` exit with status 2 before doing anything when
    no registry key is set, and say which variable to set."""
    for name in list(os.environ):
        if name.startswith("TIPSTREAM_"):
            monkeypatch.delenv(name)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"tipstream {argv[0]}: TIPSTREAM_REGISTRY_KEY is not set" in error
