"""What a failed command tells its operator: one line naming the service that could not be
reached (or refused us), its address, the cause and the setting to change.

Used by the entry point (:func:`streams.cli.main.guarded`) and by ``models promote`` to say why
its announcement failed. Errors are recognised by type (asyncpg's login and catalogue errors,
aiokafka's errors) and, for a bare ``OSError``, by the library it was raised in: a refused
socket in asyncpg is the database, in aiokafka the broker, anywhere else not ours to explain.
"""

from __future__ import annotations

import errno
import socket
import traceback
from collections.abc import Iterator

import aiokafka.errors
import asyncpg

from streams.settings import Settings
from streams.topics import TopicCreationError, TopicMismatchError

_CONNECTION_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
}


def describe_failure(error: BaseException, settings: Settings) -> str | None:
    """One line for an error that means PostgreSQL or Kafka is unreachable or refuses us (the
    service, its address, the cause and the setting to change), or that the deployment's
    topics cannot be used as configured; None for anything else."""
    for candidate in _causes(error):
        if isinstance(candidate, TopicMismatchError | TopicCreationError):
            return str(candidate)  # the deployment's topics, named with both values
        database = f"PostgreSQL at {settings.database_address()}"
        check_database = "check TIPSTREAM_DATABASE_URL"
        kafka = f"Kafka at {settings.kafka_bootstrap}"
        check_kafka = "check TIPSTREAM_KAFKA_URL"
        # A wrong password (InvalidPasswordError) or an unknown role.
        if isinstance(candidate, asyncpg.InvalidAuthorizationSpecificationError):
            return f"{database} refused the login ({candidate}); {check_database}"
        if isinstance(candidate, asyncpg.InvalidCatalogNameError):
            return (
                f"{database} has no such database ({candidate}); {check_database} "
                "(or create it and run `tipstream db migrate`)"
            )
        if isinstance(candidate, asyncpg.UndefinedTableError):
            return (
                f"{database} lacks the service's tables ({candidate}); run `tipstream db "
                f"migrate`, or {check_database}"
            )
        if isinstance(candidate, asyncpg.CannotConnectNowError):
            return f"cannot reach {database} ({candidate}); {check_database}"
        if isinstance(candidate, aiokafka.errors.KafkaConnectionError):
            return f"cannot reach {kafka} (no broker answered); {check_kafka}"
        if isinstance(candidate, aiokafka.errors.KafkaTimeoutError):
            return f"cannot reach {kafka} (timed out); {check_kafka}"
        if isinstance(candidate, aiokafka.errors.KafkaError):
            return f"{kafka} failed the request ({_text(candidate)}); {check_kafka}"
        if isinstance(candidate, OSError) and _is_connection_error(candidate):
            where = _library_of(candidate)
            if where == "asyncpg":
                return f"cannot reach {database} ({_os_cause(candidate)}); {check_database}"
            if where == "aiokafka":
                return f"cannot reach {kafka} ({_os_cause(candidate)}); {check_kafka}"
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, what it was raised from or during, and an exception group's members."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _is_connection_error(error: OSError) -> bool:
    return isinstance(error, ConnectionError | TimeoutError | socket.gaierror) or (
        error.errno in _CONNECTION_ERRNOS
    )


def _os_cause(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError) or error.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(error, TimeoutError) or error.errno == errno.ETIMEDOUT:
        return "timed out"
    if isinstance(error, socket.gaierror):
        return f"host name not resolved: {error.strerror}"
    return error.strerror or _text(error)


def _library_of(error: BaseException) -> str | None:
    """Which client library the error was raised under (asyncpg or aiokafka), by its frames."""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        for library in ("asyncpg", "aiokafka"):
            if module == library or module.startswith(library + "."):
                return library
    return None


def _text(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return first or type(error).__name__
