"""Crash points for ``make chaos``: a worker SIGKILLs itself when it reaches an armed probe.

``TIPSTREAM_CHAOS_CRASH=<point>:<n>`` makes the worker kill itself the n-th time it passes the
probe ``<point>`` (see :mod:`agents.probes`). The hook is installed by the harness's own worker
entry point (``python -m tests.chaos.worker``), never by the product.
"""

from __future__ import annotations

import os
import signal

from agents import probes

ENV = "TIPSTREAM_CHAOS_CRASH"


def armed(spec: str) -> tuple[str, int] | None:
    """The point and pass count of a ``<point>:<n>`` spec; None when empty."""
    point, _, count = spec.partition(":")
    if not point:
        return None
    return point, int(count or "1")


def install_from_env() -> None:
    """Arm the probe named in ``TIPSTREAM_CHAOS_CRASH``, if any."""
    target = armed(os.environ.get(ENV, ""))
    if target is None:
        return
    name, times = target
    passes = 0

    def crash(point: str) -> None:
        nonlocal passes
        if point != name:
            return
        passes += 1
        if passes >= times:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real crash

    probes.install(crash)
