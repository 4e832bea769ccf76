"""``tipstream dead-letters list|show|redrive``: look at rejected events, fix and re-publish them.

The letters are read from the ``<prefix>.dead-letters`` topic with a throwaway consumer (no
group, nothing committed), from the beginning to the end offsets taken at start. A letter's id
is its position there, ``PARTITION:OFFSET`` (see :mod:`streams.cli.dead_letter_view`).

``redrive`` re-publishes the letter's original bytes (or a corrected payload) to its source
topic with its original key, so the same partitioner puts it where the original went. It
refuses a payload the consuming agent would reject again (same decoder, same message), and a
letter already redriven unless ``--force``: redrives are recorded in PostgreSQL
(``dead_letter_redrives``, migration 006), not as markers on the topic, because the database
gives an atomic check-and-record under a lock (two operators redriving the same letter at once
publish it once) and keeps the dead-letter topic to one event type. The record is written in
the transaction that holds the lock, after the broker acknowledged the event; if that commit
failed the event would be out but not recorded, which the pipeline absorbs (every write is an
upsert on a deterministic id).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import InvalidEvent, decode
from schemas.events import DeadLetter
from streams.cli import dead_letter_view as view
from streams.cli.alerts import positive, terminal_width
from streams.cli.output import fields, table, to_json
from streams.db import session
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import Topics

READ_TIMEOUT_S = 60.0
"""Longest a read of the dead-letter topic may take before the command gives up saying so."""
LIST_COLUMNS = ("id", "failed_at", "topic", "source", "key", "agent", "redriven", "reason")
HEADERS = {"failed_at": "failed (UTC)", "source": "partition:offset"}
LOCK_NAMESPACE = 724_190_332
"""Advisory lock class of a redrive (beside the migrations' lock, 724_190_331)."""


class Refused(Exception):
    """A dead-letter command that cannot do what was asked, with the reason (exit code 1)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``dead-letters`` subcommands."""
    letters = subparsers.add_parser(
        "dead-letters", help="list, inspect and redrive rejected events"
    )
    commands = letters.add_subparsers(dest="dead_letters_command", required=True)
    listing = commands.add_parser("list", help="dead letters, oldest first")
    listing.add_argument("--topic", help="only from this source topic (name or suffix)")
    listing.add_argument("--reason", help="only with this text in the field or the rule")
    listing.add_argument("--limit", type=positive, default=100, help="the newest N (default 100)")
    show = commands.add_parser("show", help="every field of one dead letter, with its payload")
    show.add_argument("letter_id", help="PARTITION:OFFSET on the dead-letter topic, as listed")
    redrive = commands.add_parser(
        "redrive", help="re-publish a dead letter (or a corrected payload) to its source topic"
    )
    redrive.add_argument("letter_id", help="PARTITION:OFFSET on the dead-letter topic")
    redrive.add_argument(
        "--payload",
        metavar="FILE",
        help="publish this corrected payload instead of the original bytes ('-': stdin)",
    )
    redrive.add_argument("--force", action="store_true", help="redrive again")
    redrive.add_argument("--by", default=None, help="who (default: the login name)")
    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", help="machine-readable output")
    letters.set_defaults(func=_dead_letters)


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except (Refused, ValueError) as error:
        print(f"tipstream dead-letters {args.dead_letters_command}: {error}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    topics = Topics.from_settings(settings)
    command = args.dead_letters_command
    if command == "list":
        letters = [
            (letter_id, letter)
            for letter_id, letter in sorted(
                await read_letters(settings),
                key=lambda item: (item[1].failed_at, item[0].partition, item[0].offset),
            )
            if (args.topic is None or view.topic_matches(topics, letter.source_topic, args.topic))
            and (args.reason is None or view.reason_matches(letter, args.reason))
        ][-args.limit :]
        counts = await _redrive_counts(settings, topics.dead_letters)
        rows = [
            view.letter_row(i, letter, counts.get(str(i), 0), prefix=topics.prefix)
            for i, letter in letters
        ]
        if args.json:
            print(to_json(rows))
        else:
            width = terminal_width()
            print(table(rows, LIST_COLUMNS, headers=HEADERS, width=width) if rows else "none")
        return 0
    letter_id = view.parse_letter_id(args.letter_id)
    letter = await read_letter(settings, letter_id)
    if command == "show":
        async with session(settings.database_url) as conn:
            redrives = await _redrives(conn, topics, letter_id)
        detail = view.letter_detail(letter_id, letter, redrives, prefix=topics.prefix)
        if args.json:
            print(to_json(detail))
        else:
            redrive_lines = detail.pop("redrives")
            if detail["payload"] is not None:  # the text says it all; --json keeps base64
                del detail["payload_b64"]
            print(fields(detail | {"redrives": len(redrive_lines)}))
            for r in redrive_lines:
                flags = "".join(f" ({flag})" for flag in ("corrected", "forced") if r[flag])
                print(
                    f"  redriven {r['redriven_at']:%Y-%m-%d %H:%M:%S} by {r['redriven_by']} to "
                    f"{r['published_partition']}:{r['published_offset']}{flags}"
                )
        return 0
    payload = _payload(args.payload) if args.payload else view.original_bytes(letter)
    done = await redrive(
        settings,
        letter_id,
        letter,
        payload,
        corrected=args.payload is not None,
        force=args.force,
        by=args.by or _login(),
    )
    if args.json:
        print(to_json(done))
    else:
        print(
            f"redriven dead letter {letter_id} ({done['source_topic']} "
            f"{letter.partition}:{letter.offset}) to {done['source_topic']} "
            f"{done['published_partition']}:{done['published_offset']}"
            f"{' with the corrected payload' if done['corrected'] else ''}"
        )
    return 0


def _payload(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise Refused(f"cannot read --payload {path}: {error.strerror}") from None


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@asynccontextmanager
async def _reader(settings: Settings) -> AsyncIterator[tuple[AIOKafkaConsumer, list[Any]]]:
    """A consumer of no group assigned every partition of the dead-letter topic."""
    topic = Topics.from_settings(settings).dead_letters
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            raise Refused(f"no topic {topic} (run `tipstream topics create`)")
        # Metadata of a topic is kept only once asked for (a subscription would ask too).
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()  # also after a failed start: no "unclosed consumer" warning


async def read_letters(
    settings: Settings, *, last: int | None = None
) -> list[tuple[view.LetterId, DeadLetter]]:
    """Every letter on the topic (with ``last``, the last N of each partition: the console's
    latest letters), in (partition, offset) order, up to the end offsets at start. A record
    that is not a dead letter is reported and skipped, never fatal."""
    out: list[tuple[view.LetterId, DeadLetter]] = []
    async with _reader(settings) as (consumer, partitions):
        if not partitions:
            return out
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        if last is not None:
            begins = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(begins[tp], ends[tp] - last))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT_S
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise Refused(f"reading the dead letters took more than {READ_TIMEOUT_S:.0f} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        letter = _decoded(tp.partition, record)
                        if letter is not None:
                            out.append((view.LetterId(tp.partition, record.offset), letter))
    return sorted(out, key=lambda item: (item[0].partition, item[0].offset))


async def read_letter(settings: Settings, letter_id: view.LetterId) -> DeadLetter:
    """The one letter at ``letter_id`` (seeks to it: no scan)."""
    async with _reader(settings) as (consumer, partitions):
        wanted = next((tp for tp in partitions if tp.partition == letter_id.partition), None)
        if wanted is None:
            raise Refused(
                f"no dead letter {letter_id}: the topic has no partition {letter_id.partition}"
            )
        start = (await consumer.beginning_offsets([wanted]))[wanted]
        end = (await consumer.end_offsets([wanted]))[wanted]
        if not start <= letter_id.offset < end:
            raise Refused(
                f"no dead letter {letter_id}: partition {wanted.partition} holds offsets "
                f"{start} to {end - 1}"
                if end > start
                else f"no dead letter {letter_id}: partition {wanted.partition} is empty"
            )
        consumer.seek(wanted, letter_id.offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT_S
        while loop.time() < deadline:
            for record in (await consumer.getmany(wanted, timeout_ms=500)).get(wanted, []):
                if record.offset == letter_id.offset:
                    letter = _decoded(wanted.partition, record)
                    if letter is None:
                        raise Refused(f"the record at {letter_id} is not a dead letter")
                    return letter
                if record.offset > letter_id.offset:  # compacted away or a transaction marker
                    raise Refused(f"no dead letter at {letter_id}")
        raise Refused(f"reading dead letter {letter_id} took more than {READ_TIMEOUT_S:.0f} s")


def _decoded(partition: int, record: Any) -> DeadLetter | None:
    try:
        return decode(record.value, DeadLetter)
    except InvalidEvent as error:
        print(
            f"tipstream dead-letters: skipped {partition}:{record.offset}, not a dead letter "
            f"({view.issue_text(error.issue)})",
            file=sys.stderr,
        )
        return None


async def _redrive_counts(settings: Settings, dead_letter_topic: str) -> dict[str, int]:
    async with session(settings.database_url) as conn:
        rows = await conn.fetch(
            """SELECT letter_partition, letter_offset, count(*) AS n FROM dead_letter_redrives
               WHERE dead_letter_topic = $1 GROUP BY letter_partition, letter_offset""",
            dead_letter_topic,
        )
    return {f"{r['letter_partition']}:{r['letter_offset']}": r["n"] for r in rows}


async def _redrives(conn: Any, topics: Topics, letter_id: view.LetterId) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT * FROM dead_letter_redrives
           WHERE dead_letter_topic = $1 AND letter_partition = $2 AND letter_offset = $3
           ORDER BY id""",
        topics.dead_letters,
        letter_id.partition,
        letter_id.offset,
    )
    return [dict(r) for r in rows]


async def redrive(
    settings: Settings,
    letter_id: view.LetterId,
    letter: DeadLetter,
    payload: bytes,
    *,
    corrected: bool,
    force: bool,
    by: str,
) -> dict[str, Any]:
    """Publish ``payload`` to the letter's source topic under its original key and record it;
    the recorded row. Refused (nothing published) for a topic not of this deployment, a
    payload the agent would reject again, or a letter redriven before without ``force``."""
    topics = Topics.from_settings(settings)
    record_type = view.record_type_of(topics, letter.source_topic)
    if record_type is None:
        raise Refused(
            f"dead letter {letter_id} came from {letter.source_topic}, not a topic this "
            f"deployment ({topics.prefix}) consumes"
        )
    issue = view.still_invalid(payload, record_type)
    if issue is not None:
        which = "corrected payload" if corrected else "original payload"
        raise Refused(
            f"the {which} is still invalid, {view.issue_text(issue)} (the {letter.agent} would "
            f"dead-letter it again); give a corrected one with --payload FILE"
        )
    mismatch = view.key_mismatch(payload, record_type, view.original_key_bytes(letter))
    if mismatch is not None:
        raise Refused(f"the payload cannot be redriven under its original key: {mismatch}")
    async with session(settings.database_url) as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            LOCK_NAMESPACE,
            f"{topics.dead_letters}:{letter_id}",
        )
        before = await _redrives(conn, topics, letter_id)
        if before and not force:
            last = before[-1]
            raise Refused(
                f"dead letter {letter_id} was already redriven at "
                f"{last['redriven_at']:%Y-%m-%d %H:%M:%S} by {last['redriven_by']} (to "
                f"{last['published_partition']}:{last['published_offset']}); --force "
                "redrives it again"
            )
        published = await _publish(
            settings, letter.source_topic, view.original_key_bytes(letter), payload
        )
        row = await conn.fetchrow(
            """INSERT INTO dead_letter_redrives (dead_letter_topic, letter_partition,
                   letter_offset, source_topic, source_partition, source_offset, corrected,
                   payload_sha256, published_partition, published_offset, forced, redriven_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *""",
            topics.dead_letters,
            letter_id.partition,
            letter_id.offset,
            letter.source_topic,
            letter.partition,
            letter.offset,
            corrected,
            hashlib.sha256(payload).hexdigest(),
            published.partition,
            published.offset,
            bool(before),
            by,
        )
        return dict(row) | {"letter_id": str(letter_id)}


async def _publish(settings: Settings, topic: str, key: bytes | None, payload: bytes) -> Any:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    try:
        await producer.start()
        return await producer.send_and_wait(topic, payload, key=key)
    finally:
        await producer.stop()  # also after a failed start: no "unclosed producer" warning
