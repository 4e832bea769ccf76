"""The benchmark's worker runs only the agents it measures (``tests/bench/worker.py``)."""

from __future__ import annotations

import ast
import inspect

from streams.worker import app as app_module
from tests.bench import worker


def registered_modules() -> set[str]:
    """The modules ``create_app`` calls ``register`` of (``features.register(app, ...)``)."""
    tree = ast.parse(inspect.getsource(app_module.create_app))
    return {
        node.func.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register"
        and isinstance(node.func.value, ast.Name)
    }


def test_bench_worker_knows_every_agent() -> None:
    # An agent module missing from MODULES would run in every benchmark worker beside the one
    # measured (the drift router did: it reads the features topic the relay and scorer read).
    registered = registered_modules()
    assert {"features", "scorer", "drift", "trainer"} <= registered  # the parse finds them
    assert registered <= set(worker.MODULES)
    for name in registered:
        assert worker.MODULES[name] is getattr(app_module, name)
