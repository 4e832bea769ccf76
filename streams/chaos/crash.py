"""Named crash points: a worker SIGKILLs itself when it reaches one, for ``make chaos``.

A kill from outside lands anywhere; the scenario "killed between a learn step and its
snapshot" needs a kill at one exact place. ``TIPSTREAM_CHAOS_CRASH=<point>:<n>`` makes the
worker kill itself the n-th time it passes ``<point>``. Unset (every real deployment), a crash
point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "TIPSTREAM_CHAOS_CRASH"


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "")
    point, _, count = spec.partition(":")
    if not point:
        return None
    return point, int(count or "1")


_ARMED = _armed()
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL (no cleanup, no flush) if the point ``name`` is armed."""
    if _ARMED is None or _ARMED[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
