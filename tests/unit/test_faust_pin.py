"""The Faust patches are held to the release they were written against: the worker refuses
another faust-streaming, and a tripwire per patch fails when the source it replaces changes."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from agents.loop import FETCH_SINKS
from streams.worker import faust_fixes, faust_speedups, whole_fetch
from streams.worker.faust_pin import (
    FAUST_VERSION,
    FaustVersionError,
    Patch,
    check_faust_version,
    source_sha256,
)

PATCHES = (*faust_fixes.PATCHES, *faust_speedups.PATCHES, *whole_fetch.PATCHES)
MODULES = (faust_fixes, faust_speedups, whole_fetch)


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every patched attribute back to Faust's original for the test, and as it was after it."""
    for patch in PATCHES:
        owner, name = patch.location()
        monkeypatch.setattr(owner, name, patch.original)
    monkeypatch.setattr(FETCH_SINKS, "enabled", FETCH_SINKS.enabled)  # whole_fetch.install sets it


@pytest.mark.parametrize("patch", PATCHES, ids=lambda patch: patch.target)
def test_the_source_each_patch_replaces_is_the_one_it_was_written_against(
    unpatched: None, patch: Patch
) -> None:
    """Fails when Faust (or mode) changes the function a patch copies or wraps: re-read the
    patch against the new source, then record the new hash. Read with the patches installed,
    to show that the hash is taken of the original, never of the patch."""
    faust_fixes.install()
    faust_speedups.install()
    whole_fetch.install()
    assert patch.current() is patch.replacement
    assert patch.original is not patch.replacement
    assert patch.original.__module__.partition(".")[0] in {"faust", "mode"}
    assert source_sha256(patch.original) == patch.sha256, f"{patch.target} changed upstream"


def test_each_attribute_is_patched_once() -> None:
    """No two patches on one attribute, so neither install depends on the other's order."""
    assert len({patch.target for patch in PATCHES}) == len(PATCHES)


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_install_is_idempotent(unpatched: None, module: ModuleType) -> None:
    """A second install changes nothing (no patch wraps itself); the other module's patches
    are left alone."""
    module.install()
    installed = [patch.current() for patch in PATCHES]
    module.install()
    assert [patch.current() for patch in PATCHES] == installed
    for patch in PATCHES:
        expected = patch.replacement if patch in module.PATCHES else patch.original
        assert patch.current() is expected


def test_another_faust_release_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.16.0")
    with pytest.raises(FaustVersionError) as raised:
        check_faust_version()
    message = str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert "\n" not in message
    assert message.startswith("faust-streaming 0.16.0 is installed")
    assert f"written against {FAUST_VERSION}" in message
    assert f"install faust-streaming=={FAUST_VERSION}" in message


def test_a_missing_faust_distribution_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(FaustVersionError, match="faust-streaming not installed"):
        check_faust_version()


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_install_patches_nothing_on_another_release(
    unpatched: None, monkeypatch: pytest.MonkeyPatch, module: ModuleType
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.16.0")
    with pytest.raises(FaustVersionError):
        module.install()
    assert all(patch.current() is patch.original for patch in PATCHES)


def test_the_pinned_release_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def version(name: str) -> str:
        asked.append(name)
        return FAUST_VERSION

    monkeypatch.setattr(importlib.metadata, "version", version)
    check_faust_version()
    assert asked == ["faust-streaming"]


def test_the_installed_release_is_the_pinned_one() -> None:
    check_faust_version()


def test_pyproject_pins_the_release_the_patches_are_written_against() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"faust-streaming=={FAUST_VERSION}" in dependencies
