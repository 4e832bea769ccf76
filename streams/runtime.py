"""What every agent of one worker shares: settings, topic names, the database pool, the
producer, and the dead-letter route. Agents receive a :class:`Runtime`; they never build
their own connections.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import faust

from schemas.codec import InvalidEvent, decode, encode
from schemas.events import DeadLetter, Record
from streams.log import get_logger
from streams.settings import Settings
from streams.topics import Topics

log = get_logger(__name__)
R = TypeVar("R", bound=Record)
T = TypeVar("T")

# Errors worth waiting out (database restarting, connection reset): retried, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


class Runtime:
    """Shared services of one worker process."""

    def __init__(self, settings: Settings, app: faust.App) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.app = app
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.counters: Counter[str] = Counter()
        self.registry_key = settings.registry_key.encode()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; the pool is opened on first use, in the worker's own loop."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    from streams.db import connect

                    self._pool = await connect(self.settings.database_url, min_size=1, max_size=6)
        async with self._pool.acquire() as conn:
            yield conn

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def publish(self, topic: str, key: str | None, record: Record) -> Awaitable[Any]:
        """Hand one record to the producer; await the returned future for its delivery."""
        future: Awaitable[Any] = await self.app.producer.send(
            topic, key.encode() if key is not None else None, encode(record), None, None, None
        )
        self.counters[f"produced:{topic}"] += 1
        return future

    async def publish_all(self, items: Iterable[tuple[str, str | None, Record]]) -> None:
        """Publish many records and wait until the broker has acknowledged every one."""
        futures = [await self.publish(topic, key, record) for topic, key, record in items]
        if futures:
            await asyncio.gather(*futures)

    def decode(self, message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
        """Decode one consumed message, or return the dead letter that explains why not."""
        try:
            return decode(message.value, record_type)
        except InvalidEvent as error:
            return self._dead_letter(message, error, agent)

    def _dead_letter(self, message: Any, error: InvalidEvent, agent: str) -> DeadLetter:
        self.counters[f"dead_letters:{message.topic}"] += 1
        log.warning(
            "event dead-lettered",
            agent=agent,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            field=error.issue.field,
            rule=error.issue.rule,
        )
        raw = message.value if message.value is not None else b""
        return DeadLetter(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key_b64=base64.b64encode(message.key).decode() if message.key is not None else None,
            payload_b64=base64.b64encode(raw).decode(),
            error=error.issue,
            agent=agent,
            failed_at=datetime.now(UTC),
        )

    async def publish_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Publish dead letters and wait for the broker, before the batch is acked."""
        await self.publish_all(
            (self.topics.dead_letters, _original_key(letter), letter) for letter in letters
        )

    async def retry_transient(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` until it succeeds, backing off on transient failures.

        The calling agent does not ack its batch while this waits, so the stream stops moving
        (backpressure) instead of dropping or dead-lettering events during an outage.
        """
        delay = 0.1
        while True:
            try:
                return await action()
            except TRANSIENT_ERRORS as error:
                self.counters[f"retries:{what}"] += 1
                log.warning(
                    "transient failure, retrying",
                    what=what,
                    error=repr(error),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _original_key(letter: DeadLetter) -> str | None:
    if letter.key_b64 is None:
        return None
    return base64.b64decode(letter.key_b64).decode("utf-8", "replace")
