"""TIPSTREAM_TABLE_STORE and TIPSTREAM_TABLE_DIR: validated at start, and each worker's RocksDB
directory its own (two workers on one machine never open one database)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from streams.settings import ENV_VARS, TABLE_STORES, Settings
from streams.worker.app import table_data_dir, table_store


def test_the_default_store_is_memory_and_both_settings_are_listed() -> None:
    assert Settings().table_store == "memory"
    assert ENV_VARS["TIPSTREAM_TABLE_STORE"] == "memory"
    assert "TIPSTREAM_TABLE_DIR" in ENV_VARS
    assert TABLE_STORES == ("memory", "rocksdb")
    assert Settings.from_env({"TIPSTREAM_TABLE_STORE": "rocksdb"}).table_store == "rocksdb"


@pytest.mark.parametrize("value", ["rocksdict", "RocksDB", "", "redis"])
def test_an_unknown_store_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="TIPSTREAM_TABLE_STORE must be one of memory, rocksdb"):
        Settings.from_env({"TIPSTREAM_TABLE_STORE": value})


@pytest.mark.parametrize("value", ["", "   ", "/var/lib/{conf.name}"])
def test_an_empty_table_dir_or_one_faust_would_format_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="TIPSTREAM_TABLE_DIR must be a directory path"):
        Settings.from_env({"TIPSTREAM_TABLE_DIR": value})


def test_the_memory_store_needs_no_directory() -> None:
    assert table_store(Settings()) == {"store": "memory://"}


def test_rocksdb_uses_our_store_in_a_directory_per_deployment_and_worker(tmp_path: Path) -> None:
    """Web port and app id are unique among the workers of a machine: the directory is keyed by
    both, and a restart with the same settings finds the same one."""
    one = Settings(table_store="rocksdb", table_dir=str(tmp_path), web_port=6066)
    chosen = table_store(one)
    assert chosen["store"] == "tipstream-rocksdb://"
    assert chosen["datadir"] == str(tmp_path / "tipstream-6066")
    dirs = {
        table_data_dir(one),
        table_data_dir(one.replace(web_port=6067)),
        table_data_dir(one.replace(topic_prefix="staging")),
    }
    assert len(dirs) == 3
    assert table_data_dir(one.replace()) == table_data_dir(one)


def test_a_relative_table_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust would resolve it against the working directory too, but later: a log line or a
    second worker started elsewhere would name another directory."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(table_store="rocksdb", table_dir="state", web_port=7000)
    assert table_data_dir(settings) == tmp_path / "state" / "tipstream-7000"


def test_rocksdb_without_rocksdict_is_a_refusal_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "rocksdict" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(SystemExit, match=r"needs rocksdict: pip install 'tipstream\[rocksdb\]'"):
        table_store(Settings(table_store="rocksdb"))
