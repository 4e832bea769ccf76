"""Operator paths against the real services (issue 13, item 7): one-line errors when a service
is unreachable, ``promote`` when only the announcement fails, Faust's own pages off."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from agents import registry
from streams.settings import Settings
from streams.worker.app import seed_registry
from tests.deployment import run_cli
from tests.integration.conftest import BASE, Worker, wait_for

pytestmark = pytest.mark.integration

CLOSED_DATABASE = "postgresql://tipstream:s3cr3t-Pa55@127.0.0.1:1/tipstream"
CLOSED_KAFKA = "kafka://127.0.0.1:1"


def tipstream(settings: Settings, *args: str, timeout: float = 60.0) -> tuple[int, str, str, float]:
    """Run ``python -m streams.cli`` with ``settings``: exit code, stdout, stderr, seconds."""
    started = time.monotonic()
    done = run_cli(settings, *args, timeout=timeout)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_models_list_with_the_database_down_prints_one_line() -> None:
    """PostgreSQL unreachable: one line on stderr naming the address, the cause and the
    variable, exit code 2 (not ~19 s of silent retries and a 70-line traceback);
    the password appears nowhere."""
    code, out, err, _ = tipstream(
        BASE.replace(database_url=CLOSED_DATABASE, log_format="json"), "models", "list"
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "tipstream: cannot reach PostgreSQL at 127.0.0.1:1 (connection refused); "
        "check TIPSTREAM_DATABASE_URL"
    ]
    assert "s3cr3t" not in err


def test_verbose_adds_the_traceback_and_keeps_the_line() -> None:
    """``--verbose`` prints the traceback (masked) and still ends with the one line."""
    code, _, err, _ = tipstream(
        BASE.replace(database_url=CLOSED_DATABASE, log_format="json"),
        "--verbose",
        "models",
        "list",
    )
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "ConnectionRefusedError" in err
    assert err.splitlines()[-1].startswith("tipstream: cannot reach PostgreSQL at 127.0.0.1:1")
    assert "s3cr3t" not in err


def test_wrong_password_is_one_line_without_the_password() -> None:
    """A refused login names the server and the variable, never the password given."""
    parts = urlsplit(BASE.database_url)
    netloc = f"{parts.username}:not-the-Pa55word@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=netloc))
    code, _, err, _ = tipstream(BASE.replace(database_url=url, log_format="json"), "models", "list")
    if code == 0:
        pytest.skip("this PostgreSQL trusts local logins: no password is checked")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "refused the login (password authentication failed" in err
    assert "not-the-Pa55word" not in err


def test_topics_create_with_kafka_down_prints_one_line() -> None:
    """Kafka unreachable: one line naming the broker address and TIPSTREAM_KAFKA_URL (no
    aiokafka error lines before it), exit code 2."""
    code, out, err, _ = tipstream(
        BASE.replace(kafka_url=CLOSED_KAFKA, log_format="json"), "topics", "create"
    )
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "tipstream: cannot reach Kafka at 127.0.0.1:1 (no broker answered); "
        "check TIPSTREAM_KAFKA_URL"
    ]


async def test_promote_with_kafka_down_says_the_change_happened(
    settings: Settings, db: asyncpg.Pool
) -> None:
    """The registry change commits, the announcement fails: the command says both, exit code
    3, no traceback; the registry holds the new champion."""
    async with db.acquire() as conn:
        await seed_registry(conn, settings)
        assert await registry.champion_id(conn) == "online-logreg"
    code, out, err, _ = tipstream(
        settings.replace(kafka_url=CLOSED_KAFKA), "models", "promote", "online-rating"
    )
    assert code == 3, err
    assert out.splitlines() == [
        "champion: online-logreg -> online-rating (changed in the registry; announcement on "
        "the snapshot topic failed: cannot reach Kafka at 127.0.0.1:1 (no broker answered); "
        "check TIPSTREAM_KAFKA_URL; running scorers pick it up within 10 s by polling)"
    ]
    assert "Traceback" not in err
    async with db.acquire() as conn:
        assert await registry.champion_id(conn) == "online-rating"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


async def test_faust_table_and_router_pages_are_off(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """A running worker serves /status/ and /metrics/, but Faust's /table/ (the reconciler's
    ledgers), /router/ and statistics pages answer 404."""
    worker = start_worker()
    base = f"http://127.0.0.1:{settings.web_port}"

    async def status_up() -> bool:
        assert worker.process is not None
        assert worker.process.poll() is None, worker.log_text()[-3000:]
        try:
            return _get(f"{base}/status/") == 200
        except OSError:
            return False

    await wait_for(status_up, timeout=120, what="the worker's /status/")
    assert _get(f"{base}/metrics/") == 200
    for page in ("/table/", "/table/ledgers/", "/router/", "/assignment/", "/graph/"):
        assert _get(base + page) == 404, page
