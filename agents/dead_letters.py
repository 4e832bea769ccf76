"""Dead letters: the envelope of a rejected event, and which agent answers for it.

Pure functions: the runtime publishes what these build.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from schemas.codec import InvalidEvent, decode, undecodable
from schemas.events import DeadLetter, Record, ValidationIssue

R = TypeVar("R", bound=Record)

DEAD_LETTER_PAYLOAD_MAX = 512 * 1024
"""Original bytes a dead letter keeps in full. A letter is one Kafka record: base64 (x4/3) of
512 KiB plus the envelope stays under the broker's default 1 MiB ``message.max.bytes``. The
broker also accepts input records up to 1 MiB; a longer payload keeps its first 512 KiB and the
error value names its full size and SHA-256, so a letter can never be too large to publish (a
letter that cannot be published would stop its agent's partition)."""


def dead_letter(
    message: Any, issue: ValidationIssue, agent: str, *, now: datetime | None = None
) -> DeadLetter:
    """The envelope of a rejected message: its original key and bytes (base64), where it was
    (topic, partition, offset), why (field, value, rule), which agent, and when."""
    raw = message.value if message.value is not None else b""
    if len(raw) > DEAD_LETTER_PAYLOAD_MAX:
        digest = hashlib.sha256(raw).hexdigest()
        kept = f"first {DEAD_LETTER_PAYLOAD_MAX} of {len(raw)} bytes kept, sha256 {digest}"
        issue = ValidationIssue(
            field=issue.field,
            value=f"{issue.value}; {kept}" if issue.value else kept,
            rule=issue.rule,
        )
        raw = raw[:DEAD_LETTER_PAYLOAD_MAX]
    return DeadLetter(
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key_b64=base64.b64encode(message.key).decode() if message.key is not None else None,
        payload_b64=base64.b64encode(raw).decode(),
        error=issue,
        agent=agent,
        failed_at=now or datetime.now(UTC),
    )


def owned(letters: Iterable[DeadLetter], owners: Mapping[str, str]) -> list[DeadLetter]:
    """The letters whose agent answers for their source topic (any agent, for a topic not in
    ``owners``)."""
    return [dl for dl in letters if owners.get(dl.source_topic, dl.agent) == dl.agent]


def original_key(letter: DeadLetter) -> str | None:
    if letter.key_b64 is None:
        return None
    return base64.b64decode(letter.key_b64).decode("utf-8", "replace")


def processing_failure(message: Any, error: Exception, agent: str) -> DeadLetter:
    """A dead letter for an event that was valid but could not be processed."""
    issue = ValidationIssue(field="$", value=None, rule=f"processing failed: {error!r}"[:500])
    return dead_letter(message, issue, agent)


def decode_or_letter(message: Any, record_type: type[R], agent: str) -> R | DeadLetter:
    """Decode one consumed message, or return the dead letter that explains why not.

    Anything the decoder raises besides :class:`InvalidEvent` is still the payload's fault
    (a codec gap, not a processing fault): one dead letter with rule "undecodable", never a
    failed batch retried event by event.
    """
    try:
        return decode(message.value, record_type)
    except InvalidEvent as error:
        return dead_letter(message, error.issue, agent)
    except Exception as error:  # noqa: BLE001 - any decoder failure is the payload's
        return dead_letter(message, undecodable(message.value, error), agent)


class _SharedTopics(Protocol):
    @property
    def fixtures(self) -> str: ...
    @property
    def features(self) -> str: ...
    @property
    def model_feed(self) -> str: ...
    @property
    def results(self) -> str: ...


def dead_letter_owners(topics: _SharedTopics) -> dict[str, str]:
    """Which agent dead-letters the invalid events of a topic that two agents read (the scorer
    and the reconciler read the features, the learner and the decay monitor the model feed,
    the reconciler and the league router the results): one owner each, or an invalid event
    would be on the dead-letter topic twice. The fixtures have one reader, the league router;
    it is named all the same, so a second reader added later cannot double its letters."""
    return {
        topics.fixtures: "league-router",
        topics.features: "scorer",
        topics.model_feed: "learner",
        topics.results: "reconciler",
    }
