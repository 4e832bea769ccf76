"""docker-compose.yml and the Dockerfile agree with the settings the project actually reads."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROJECT_CONTAINERS = ("migrate", "worker")
# Settings every tipstream container must be given explicitly (no default fits a container).
REQUIRED_SETTINGS = {
    "TIPSTREAM_KAFKA_URL",
    "TIPSTREAM_DATABASE_URL",
    "TIPSTREAM_TOPIC_PREFIX",
    "TIPSTREAM_PARTITIONS",
    "TIPSTREAM_LOG_FORMAT",
    "TIPSTREAM_REGISTRY_KEY",
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any) -> str:
    """A compose value as compose would see it with an empty shell environment (a required
    variable, ``${VAR:?message}``, as empty: compose itself would refuse to start)."""
    return _INTERPOLATION.sub(
        lambda match: (match.group(3) or "") if match.group(2) == "-" else "", str(value)
    )


def environment(service: str) -> dict[str, str]:
    """A service's environment as a dict (compose allows a mapping or a KEY=VALUE list)."""
    raw = SERVICES[service].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(value) for key, value in raw.items()}


def published_ports(service: str) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    result = []
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            host_ip = entry.get("host_ip", "0.0.0.0")
            result.append((host_ip, int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 3:
            result.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            result.append(("0.0.0.0", int(parts[0]), int(parts[1])))
    return result


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka ``NAME://host:port,...`` as {name: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        result[name] = (host, int(port))
    return result


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def test_compose_defines_kafka_postgres_migrate_and_worker() -> None:
    """The four services exist, on the images the project supports."""
    assert {"kafka", "postgres", "migrate", "worker"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"] == "apache/kafka:4.1.1"
    assert SERVICES["postgres"]["image"] == "postgres:15"


def test_kafka_is_a_single_node_kraft_broker_and_controller() -> None:
    """Kafka runs in KRaft mode, one node acting as broker and controller, its own only voter."""
    env = environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, voter_address = voters[0].split("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert int(voter_address.rsplit(":", 1)[1]) == listeners(env["KAFKA_LISTENERS"])[controller][1]
    # Internal topics cannot have more replicas than there are brokers.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_host_reaches_kafka_at_the_project_default_address() -> None:
    """The default TIPSTREAM_KAFKA_URL (127.0.0.1:9092) is published to the host and is what
    the broker advertises on that port, so host tools and tests need no configuration."""
    default = urlsplit(ENV_VARS["TIPSTREAM_KAFKA_URL"])
    assert (default.hostname, default.port) == ("127.0.0.1", 9092)
    env = environment("kafka")
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(env["KAFKA_LISTENERS"])
    [host_listener] = [
        name for name, address in advertised.items() if address == ("127.0.0.1", 9092)
    ]
    container_port = bound[host_listener][1]
    assert ("127.0.0.1", 9092, container_port) in published_ports("kafka")


def test_worker_reaches_kafka_through_an_advertised_in_network_listener() -> None:
    """The containers' TIPSTREAM_KAFKA_URL is kafka:9092, a listener the broker both binds
    and advertises under that name."""
    for service in PROJECT_CONTAINERS:
        url = urlsplit(environment(service)["TIPSTREAM_KAFKA_URL"])
        assert (url.scheme, url.hostname, url.port) == ("kafka", "kafka", 9092)
    env = environment("kafka")
    [internal] = [
        name
        for name, address in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items()
        if address == ("kafka", 9092)
    ]
    assert listeners(env["KAFKA_LISTENERS"])[internal][1] == 9092


def test_host_reaches_postgres_at_the_project_default_address() -> None:
    """PostgreSQL is published on the default TIPSTREAM_DATABASE_URL's host and port (5432)."""
    default = urlsplit(ENV_VARS["TIPSTREAM_DATABASE_URL"])
    assert (default.hostname, default.port) == ("127.0.0.1", 5432)
    assert ("127.0.0.1", 5432, 5432) in published_ports("postgres")


@pytest.mark.parametrize("service", PROJECT_CONTAINERS)
def test_container_environment_names_are_exactly_settings_the_project_reads(
    service: str,
) -> None:
    """Every TIPSTREAM_* variable given to a tipstream container is a setting of
    streams/settings.py (a typo would be silently ignored), the required ones are all given,
    and together they parse as Settings."""
    env = environment(service)
    unknown = sorted(set(env) - set(ENV_VARS))
    assert not unknown, f"{service} sets variables the project never reads: {unknown}"
    assert set(env) >= REQUIRED_SETTINGS
    settings = Settings.from_env(env)
    assert settings.partitions == int(ENV_VARS["TIPSTREAM_PARTITIONS"])
    assert settings.log_format in {"json", "console", "auto"}
    assert not settings.dev_mode


@pytest.mark.parametrize("service", PROJECT_CONTAINERS)
def test_containers_get_no_fallback_registry_key(service: str) -> None:
    """The registry key is a required variable in compose (``${VAR:?...}``): no public
    default to fall back on, and no development mode in the containers."""
    raw = SERVICES[service]["environment"]["TIPSTREAM_REGISTRY_KEY"]
    assert re.fullmatch(r"\$\{TIPSTREAM_REGISTRY_KEY:\?[^}]+\}", raw)
    assert "TIPSTREAM_DEV_MODE" not in environment(service)


def test_compose_database_credentials_agree_with_the_worker_url() -> None:
    """The worker's TIPSTREAM_DATABASE_URL names the postgres service with the user, password
    and database that service creates; the host default URL uses the same credentials."""
    postgres = environment("postgres")
    expected = (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    for service in PROJECT_CONTAINERS:
        url = urlsplit(environment(service)["TIPSTREAM_DATABASE_URL"])
        assert url.scheme in {"postgresql", "postgres"}
        assert (url.hostname, url.port or 5432) == ("postgres", 5432)
        assert (url.username, url.password, url.path.lstrip("/")) == expected
    default = urlsplit(ENV_VARS["TIPSTREAM_DATABASE_URL"])
    assert (default.username, default.password, default.path.lstrip("/")) == expected
    assert expected == ("tipstream", "tipstream", "tipstream")


def test_kafka_and_postgres_have_healthchecks() -> None:
    """Both backing services declare a healthcheck that runs a real command."""
    for service in ("kafka", "postgres"):
        check = SERVICES[service]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
        assert len(check["test"]) > 1
        assert not check.get("disable", False)


def test_worker_starts_after_healthy_services_and_a_completed_migration() -> None:
    """The worker waits for a healthy broker and database and for `tipstream db migrate` to
    exit successfully; the migration itself waits for a healthy database."""
    assert SERVICES["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert SERVICES["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert SERVICES["migrate"]["command"] == ["tipstream", "db", "migrate"]
    assert SERVICES["migrate"].get("restart", "no") == "no"
    assert SERVICES["worker"]["command"] == ["tipstream", "worker"]


@pytest.mark.parametrize("service", PROJECT_CONTAINERS)
def test_tipstream_containers_are_built_from_the_dockerfile(service: str) -> None:
    """The worker and migration images are built from the repository's Dockerfile."""
    build = SERVICES[service]["build"]
    if isinstance(build, str):
        build = {"context": build}
    context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The image's final user is neither root nor uid 0, and it is set before the command."""
    instructions = dockerfile_instructions()
    users = [
        (index, args) for index, (keyword, args) in enumerate(instructions) if keyword == "USER"
    ]
    assert users, "the Dockerfile never switches away from root"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in {"root", "0"}
    [cmd_index] = [index for index, (keyword, _) in enumerate(instructions) if keyword == "CMD"]
    assert last_index < cmd_index


def test_dockerfile_installs_the_project_from_pyproject() -> None:
    """The image is python:3.11-slim, copies pyproject.toml and every package it declares, runs
    `pip install .`, and defaults to `tipstream worker` (a console script pyproject defines)."""
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied = " ".join(args for keyword, args in instructions if keyword == "COPY")
    assert "pyproject.toml" in copied.split()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert any(word.rstrip("/") == package for word in copied.split()), package
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"\bpip install \.(\s|$)", run) for run in runs)
    [cmd] = [args for keyword, args in instructions if keyword == "CMD"]
    assert json.loads(cmd) == ["tipstream", "worker"]
    assert "tipstream" in pyproject["project"]["scripts"]


def test_worker_web_endpoints_are_reachable_from_outside_the_container() -> None:
    """The settings default binds loopback (safe on a laptop); the image and the compose worker
    bind 0.0.0.0, so Prometheus and the orchestrator can reach the web port."""
    assert ENV_VARS["TIPSTREAM_WEB_HOST"] == "127.0.0.1"
    assert environment("worker")["TIPSTREAM_WEB_HOST"] == "0.0.0.0"
    env_lines = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "ENV")
    assert "TIPSTREAM_WEB_HOST=0.0.0.0" in env_lines.split()


def test_worker_healthchecks_probe_the_web_endpoints() -> None:
    """The image's HEALTHCHECK asks /health (liveness) on the configured web port; the compose
    worker's healthcheck asks /ready (readiness) on the default port it runs with."""
    [check] = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    assert "/health" in check
    assert "TIPSTREAM_WEB_PORT" in check
    command = " ".join(SERVICES["worker"]["healthcheck"]["test"])
    port = environment("worker").get("TIPSTREAM_WEB_PORT", ENV_VARS["TIPSTREAM_WEB_PORT"])
    assert f"127.0.0.1:{port}/ready" in command
    assert SERVICES["worker"]["healthcheck"]["test"][0] == "CMD"
