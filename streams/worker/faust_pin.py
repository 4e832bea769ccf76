"""The faust-streaming release the patches in :mod:`streams.worker.faust_fixes` and
:mod:`streams.worker.faust_speedups` were written against, and what holds them to it.

Each patch is a copy or a wrapper of one Faust function, so it is right only for the source it
was read from: the worker refuses another faust-streaming release (:func:`check_faust_version`),
and every :class:`Patch` records the sha256 of that source, which a unit test compares with
the installed one (the tripwire for a change the version alone would not show, e.g. in
mode-streaming, which Faust does not pin and which ``Service.wait_first`` comes from).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

FAUST_VERSION = "0.15.3"
"""The one faust-streaming release the patches fit; pinned exactly in ``pyproject.toml``."""


class FaustVersionError(RuntimeError):
    """The installed faust-streaming is not the release the patches were written against."""


def check_faust_version() -> None:
    """Refuse to patch a Faust other than the pinned one: its source may differ from what the
    patches copy or wrap, and a wrong patch loses or re-delivers records silently."""
    try:
        installed = importlib.metadata.version("faust-streaming")
    except importlib.metadata.PackageNotFoundError:
        installed = "not installed"
    if installed != FAUST_VERSION:
        raise FaustVersionError(
            f"faust-streaming {installed} is installed, but tipstream's Faust patches are "
            f"written against {FAUST_VERSION}: install faust-streaming=={FAUST_VERSION} "
            "(pip install -e .), or re-check each patch in streams/worker/faust_fixes.py and "
            "faust_speedups.py against the new source before moving the pin"
        )


def source_sha256(function: Callable[..., Any]) -> str:
    """The sha256 of a function's source (``inspect.getsource``, decorators unwrapped)."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


@dataclass(frozen=True)
class Patch:
    """One patch: the attribute it sets, its replacement, and the Faust source it was read from.

    ``original`` is taken when the patch is declared, at import, before any install: the
    tripwire hashes that, never what is installed.
    """

    module: str
    """The module of the class patched, e.g. ``faust.transport.consumer``."""
    qualname: str
    """``Class.attribute`` in that module (the original may be inherited, e.g. from mode)."""
    sha256: str
    """Of ``inspect.getsource`` of the original in the pinned release."""
    replacement: Callable[..., Any]
    original: Callable[..., Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner, name = self.location()
        original = getattr(owner, name)
        if getattr(original, "__module__", None) == self.replacement.__module__:
            # Declared after an install (a module reload): the tripwire would hash the patch.
            raise RuntimeError(f"{self.target}: patched before its original was recorded")
        object.__setattr__(self, "original", original)

    @property
    def target(self) -> str:
        return f"{self.module}.{self.qualname}"

    def location(self) -> tuple[Any, str]:
        """The class the attribute is set on, and the attribute's name."""
        *path, name = self.qualname.split(".")
        owner: Any = importlib.import_module(self.module)
        for part in path:
            owner = getattr(owner, part)
        return owner, name

    def current(self) -> Callable[..., Any]:
        """What the class holds now: the original, or the replacement once installed."""
        owner, name = self.location()
        current: Callable[..., Any] = getattr(owner, name)
        return current

    def apply(self) -> None:
        """Set the replacement (setting it again changes nothing)."""
        owner, name = self.location()
        setattr(owner, name, self.replacement)


def install(patches: Iterable[Patch]) -> None:
    """Check the Faust release, then apply the patches (idempotent)."""
    check_faust_version()
    for patch in patches:
        patch.apply()
