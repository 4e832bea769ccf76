"""An in-memory runtime for agent tests: drive an agent with events, then assert what it
published, persisted and dead-lettered. No Kafka, no PostgreSQL.

In the spirit of ``structlog.testing`` (test helpers shipped as public API) and Quix Streams'
``StreamingDataFrame.test()``: the agents' own batch functions run unchanged against
:class:`InMemoryRuntime`, which implements :class:`agents.runtime.AgentRuntime`. Database
statements are recorded, not executed; reads are answered from scripted rows; a commit can be
made to fail, to test what a retried transaction leaves behind.

>>> import asyncio
>>> from agents.testing import MemoryDatabase
>>> db = MemoryDatabase()
>>> async def write() -> None:
...     async with db.connect() as conn, conn.transaction():
...         await conn.execute("INSERT INTO alerts (alert_id) VALUES ($1)", "a1")
>>> asyncio.run(write())
>>> db.rows("alerts")
[('a1',)]
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents.dead_letters import dead_letter_owners, decode_or_letter, owned
from agents.loop import Handler, handle_batch
from agents.runtime import AgentSettings, Output, TopicNames
from agents.tick_rules import TICK_HEADERS
from models.base import Model
from models.serialization import Keyring
from schemas.codec import encode
from schemas.events import DeadLetter, Record, Tick

R = TypeVar("R", bound=Record)
T = TypeVar("T")

TEST_REGISTRY_KEY = b"tipstream-test-key-0123456789abcdef"
"""A 35-byte signing key for model state in tests (never a deployment's)."""
TEST_REGISTRY_KEYS = Keyring.single(TEST_REGISTRY_KEY)
"""The keyring of :data:`TEST_REGISTRY_KEY` (id derived from the key)."""
RETRIES_AT_MOST = 100
"""A transient failure that persists this long is a broken test, not an outage."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One recorded SQL statement with its arguments (one per row of an ``executemany``)."""

    sql: str
    args: tuple[Any, ...]

    def writes(self, table: str) -> bool:
        """True for an INSERT into, or UPDATE of, ``table``."""
        text = " ".join(self.sql.split())
        return text.startswith((f"INSERT INTO {table} ", f"UPDATE {table} "))


class MemoryDatabase:
    """What an agent's connection did: committed statements, and scripted answers to reads."""

    def __init__(self) -> None:
        self.committed: list[Statement] = []
        self.rolled_back: list[Statement] = []
        self._answers: list[tuple[str, Callable[[tuple[Any, ...]], list[Any]]]] = []
        self.failing_commits = 0

    def answer(
        self, fragment: str, rows: list[Any] | Callable[[tuple[Any, ...]], list[Any]]
    ) -> None:
        """Reads whose SQL contains ``fragment`` return ``rows`` (or ``rows(args)``); the
        latest matching answer wins. Unanswered reads return no rows."""
        self._answers.append((fragment, rows if callable(rows) else (lambda _args: rows)))

    def fail_next_commits(self, count: int = 1) -> None:
        """The next ``count`` commits fail with a transient error (connection reset)."""
        self.failing_commits = count

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """Arguments of every committed write to ``table``, in order."""
        return [s.args for s in self.committed if s.writes(table)]

    def read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        for fragment, rows in reversed(self._answers):
            if fragment in sql:
                answered: list[Any] = rows(args)
                return answered
        return []

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MemoryConnection]:
        yield MemoryConnection(self)


class MemoryConnection:
    """asyncpg's ``Connection`` API as the agents use it, recording into a
    :class:`MemoryDatabase`. Statements outside a transaction commit at once."""

    def __init__(self, db: MemoryDatabase) -> None:
        self.db = db
        self._pending: list[Statement] | None = None

    def _record(self, statement: Statement) -> None:
        if self._pending is None:
            self.db.committed.append(statement)
        else:
            self._pending.append(statement)

    async def execute(self, sql: str, *args: Any) -> str:
        self._record(Statement(sql, args))
        return "OK"

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self._record(Statement(sql, tuple(row)))

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return self.db.read(sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        rows = self.db.read(sql, args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        if row is None:
            return None
        return next(iter(row.values())) if isinstance(row, dict) else row[0]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        outer = self._pending
        pending: list[Statement] = []
        self._pending = pending
        try:
            yield
            if self.db.failing_commits:
                self.db.failing_commits -= 1
                raise ConnectionResetError("commit failed (injected by MemoryDatabase)")
        except BaseException:
            self.db.rolled_back.extend(pending)
            raise
        finally:
            self._pending = outer
        if outer is None:
            self.db.committed.extend(pending)
        else:
            outer.extend(pending)


class MemoryTable(dict[bytes, bytes]):
    """A Faust table as agents use it (bytes keys and values; ``del`` is a tombstone), counting
    the writes that would go to its changelog."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.deletes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.deletes += 1
        super().__delitem__(key)


@dataclass(frozen=True, slots=True)
class Message:
    """A consumed Kafka message as agents read it (Faust's ``event.message``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """A Faust event as the batch loop hands it to an agent."""

    message: Message


@dataclass(frozen=True, slots=True)
class RecordedFit:
    """One :meth:`InMemoryRuntime.record_fit` call."""

    model: Model
    version: int
    params: dict[str, Any]
    metrics: dict[str, float]


class _Notices:
    def __init__(self, runtime: InMemoryRuntime, topic: str) -> None:
        self._runtime, self._topic = runtime, topic
        self._seen = len(runtime.on(topic))

    async def wait(self, timeout: float) -> int:
        await asyncio.sleep(0)
        now = len(self._runtime.on(self._topic))
        count, self._seen = now - self._seen, now
        return count


@dataclass
class InMemoryRuntime:
    """:class:`agents.runtime.AgentRuntime` in memory; see the module docstring."""

    settings: AgentSettings
    topics: TopicNames
    registry_keys: Keyring = TEST_REGISTRY_KEYS
    db: MemoryDatabase = field(default_factory=MemoryDatabase)
    counters: Counter[str] = field(default_factory=Counter)
    shutdown_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    published: list[Output] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Ticks published (to every partition of their topic), in order.
    ticks: list[tuple[str, Tick]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    observations: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    fits: list[RecordedFit] = field(default_factory=list)
    _offsets: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def connection(self) -> Any:
        return self.db.connect()

    def partition_for(self, key: bytes) -> int:
        return 0  # every event of :meth:`events` is on partition 0

    def decode(self, message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
        return decode_or_letter(message, record_type, agent)

    async def publish_all(self, items: Iterable[Output]) -> None:
        for topic, key, record in items:
            encode(record)  # what the worker would put on the wire must encode
            self.published.append((topic, key, record))
            self.counters[f"produced:{topic}"] += 1

    async def publish_dead_letters(
        self, letters: list[DeadLetter], *, invalid: bool = True
    ) -> None:
        if invalid:
            letters = owned(letters, dead_letter_owners(self.topics))
        self.dead_letters.extend(letters)
        for letter in letters:
            self.counters[f"dead_letters:{letter.source_topic}"] += 1

    async def publish_ticks(self, topic: str, ticks: Iterable[Tick]) -> None:
        for tick in ticks:
            encode(tick)
            self.ticks.append((topic, tick))
            self.counters[f"produced:{topic}"] += self.settings.partitions

    async def retry_transient(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        for _ in range(RETRIES_AT_MOST):
            try:
                return await action()
            except (OSError, TimeoutError):
                self.retries[what] += 1
                self.counters[f"retries:{what}"] += 1
        raise RuntimeError(f"{what}: still failing after {RETRIES_AT_MOST} retries")

    def observe(self, metric: str, value: float, label: str = "") -> None:
        """Kept in ``observations`` under ``metric:label`` (``metric`` without a label)."""
        self.observations[f"{metric}:{label}" if label else metric].append(value)

    @asynccontextmanager
    async def follow(self, topic: str) -> AsyncIterator[_Notices]:
        yield _Notices(self, topic)

    async def record_fit(
        self,
        model: Model,
        *,
        version: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
    ) -> None:
        """Kept in ``fits``, in order (the worker logs them to MLflow where configured)."""
        self.fits.append(RecordedFit(model, version, dict(params), dict(metrics)))

    def on(self, topic: str) -> list[Record]:
        """The records published to ``topic``, in order."""
        return [record for t, _, record in self.published if t == topic]

    def events(
        self,
        *items: tuple[str, Record | bytes | None],
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> list[Event]:
        """Consumed events of (topic, record or raw bytes), keyed by match or model id where
        the record has one, at consecutive offsets of partition 0; a :class:`Tick` with the
        tick header, every other one with ``headers``."""
        out = []
        for topic, item in items:
            raw = encode(item) if isinstance(item, Record) else item
            key = getattr(item, "match_id", None) or getattr(item, "model_id", None)
            offset = self._offsets[topic]
            self._offsets[topic] += 1
            kept = TICK_HEADERS if isinstance(item, Tick) else headers
            message = Message(topic, 0, offset, key.encode() if key else None, raw, kept)
            out.append(Event(message))
        return out

    async def drive(self, agent: str, handle: Handler, events: Sequence[Any]) -> None:
        """Hand ``events`` to an agent's batch function as its batch loop would: one batch,
        retried event by event (dead-lettering what still fails) if it raises."""
        await handle_batch(self, agent, handle, events)
