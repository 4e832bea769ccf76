"""Named points in an agent's work that a harness can hook, e.g. to kill the worker there.

A kill from outside lands anywhere; a fault scenario such as "killed between a learn step and
its checkpoint" needs one exact place. The agents call :func:`reach` at such places; nothing
happens unless a harness installed a hook (``tests/chaos/crash.py`` does, in its own worker
entry point). Without a hook, a probe costs one empty-tuple check.
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[str], None]

_hooks: tuple[Hook, ...] = ()


def install(hook: Hook) -> None:
    """Call ``hook(point)`` at every probe from now on (in this process)."""
    global _hooks
    _hooks = (*_hooks, hook)


def uninstall(hook: Hook) -> None:
    """Remove a hook installed earlier."""
    global _hooks
    _hooks = tuple(h for h in _hooks if h is not hook)


def reach(point: str) -> None:
    """The agent has reached ``point``: run the installed hooks."""
    for hook in _hooks:
        hook(point)
