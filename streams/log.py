"""structlog, configured once: JSON lines in production, readable colours on a terminal.

Every log line passes :func:`mask_secrets`: a password in a URL (``postgresql://user:pw@host``)
or a ``password=`` pair is replaced by ``***`` wherever it appears, exception text included,
because a DSN ends up in error messages and settings dumps no matter how careful the caller is.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

MASK = "***"
"""What a password is replaced by."""

_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<password>[^@\s'\"]*)@"
)
_PAIR_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<password>[^\s&;,'\"]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with every password of a ``scheme://user:password@host`` URL and every
    ``password=...`` pair masked.

    >>> redact("postgresql://tipstream:s3cret@db:5432/tipstream")
    'postgresql://tipstream:***@db:5432/tipstream'
    """
    if "@" not in text and "=" not in text:
        return text  # the common case: nothing that could hold a password
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _PAIR_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(item) for item in value]
    # An exception or any other object: masked only when its text holds a password, so the
    # renderer still sees the object itself otherwise.
    text = str(value)
    masked = redact(text)
    return value if masked == text else masked


def mask_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: passwords masked in every value of the event (see :func:`redact`).

    Runs after exceptions are formatted, so a traceback's text is masked too.
    """
    for key, value in event_dict.items():
        if key.startswith("_"):
            continue  # ProcessorFormatter's own entries (the stdlib record, the logger)
        event_dict[key] = _masked(value)
    return event_dict


class _DropClientConnectErrors(logging.Filter):
    """Drops aiokafka's "Unable connect to ..." lines: a one-shot command raises the error
    right after and reports it in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("aiokafka") and str(record.msg).startswith("Unable connect")
        )


def configure_logging(
    log_format: str = "auto", level: str = "info", *, quiet_connect_errors: bool = False
) -> None:
    """Configure structlog and the stdlib root logger (Faust, aiokafka) in one place.

    ``auto`` picks the console renderer when stderr is a terminal and JSON otherwise, so a
    developer reads colours and a log shipper reads one JSON object per line.
    ``quiet_connect_errors`` drops aiokafka's log line per refused connection (for commands
    that report the failure themselves).
    """
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            mask_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Faust's and aiokafka's records: their traceback becomes text here, so it is
                # masked like ours before it is rendered.
                structlog.processors.format_exc_info,
                mask_secrets,
                renderer,
            ],
        )
    )
    if quiet_connect_errors:
        handler.addFilter(_DropClientConnectErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every metadata retry at INFO/WARNING while topics are being created.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A named structlog logger."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
