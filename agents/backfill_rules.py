"""Event-time ordering for as-of-correct backfills (prototype; docs/BACKFILL.md).

A backfill is exact when every match is scored by a model version that has learned exactly the
results known at its kickoff: those whose final whistle is at or before it, the rule of
:func:`models.features.prequential_steps` and of ``tipstream evaluate``. Instead of the replay
waiting for consumer-group commits (``tipstream replay --sync``), each stage announces how far
in event time it is complete, and the scorer chooses (or waits for) the version that covers a
fixture. Three pure pieces, no I/O:

- :class:`Watermarks`: how far in event time a stage has everything, the minimum over the
  source partitions it reads, advanced by records and by explicit ticks (an idle partition
  otherwise holds it back for ever);
- :class:`Coverage` and :func:`choose_version`: what a version has learned in event time, and
  which version a fixture is scored with, or whether it waits; :func:`rebuild_coverages`, a
  model's coverages as the registry holds them (some versions pruned, some stored by live
  learning), made safe for :func:`choose_version`;
- :func:`barriers`: the points of a replay's time line where a result becomes known before a
  later kickoff, the only points where the order between learning and scoring matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from schemas.events import check_coverage


def known_at(final_whistle: datetime, kickoff: datetime) -> bool:
    """Whether a result is known at a kickoff: its final whistle is at or before it."""
    return final_whistle <= kickoff


MARKS_PREFIX = "~backfill-marks:"
"""Keys of a partition's backfill marks in an agent's table (the features agent's
``league-books``, the reconciler's ``ledgers``): ``~`` is in no league or match id."""


def marks_key(partition: int, partition_for: Callable[[bytes], int]) -> bytes:
    """The table key of a partition's marks: the first ``~backfill-marks:<n>`` that the
    partitioner routes to it (the changelog record then lives in the partition's own
    changelog partition, restored to whoever owns its inputs)."""
    for n in range(1_000_000):
        key = f"{MARKS_PREFIX}{n}".encode()
        if partition_for(key) == partition:
            return key
    raise ValueError(f"no marks key routes to partition {partition}")


def is_marks_key(key: bytes) -> bool:
    """Whether a table key is a partition's marks (not a league's book or a match's ledger)."""
    return key.startswith(MARKS_PREFIX.encode())


class Watermarks:
    """The event time through which a stage has every record of its sources.

    Each source (a partition the stage reads, ``"match-results:3"``) has the latest event time
    it delivered, or announced by a tick; the stage's watermark is the minimum over all the
    expected sources, and None until each has said something. Records of one source arrive in
    event-time order (one producer per partition publishing in order, as the replay does); one
    that goes back in time does not lower its source's mark.

    >>> marks = Watermarks(["r:0", "r:1"])
    >>> marks.observe("r:0", datetime(2024, 1, 1)) is None
    True
    >>> marks.observe("r:1", datetime(2024, 1, 2))
    datetime.datetime(2024, 1, 1, 0, 0)
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self.sources = frozenset(sources)
        if not self.sources:
            raise ValueError("a watermark needs at least one source")
        self.marks: dict[str, datetime] = {}

    def observe(self, source: str, moment: datetime) -> datetime | None:
        """A record or tick of ``source`` at ``moment``; the stage's watermark after it."""
        if source not in self.sources:
            raise ValueError(f"unknown source {source!r}; expected one of {sorted(self.sources)}")
        held = self.marks.get(source)
        if held is None or moment > held:
            self.marks[source] = moment
        return self.through()

    def through(self) -> datetime | None:
        """The stage's watermark: every source has delivered everything up to it."""
        if len(self.marks) < len(self.sources):
            return None
        return min(self.marks.values())


@dataclass(frozen=True)
class Coverage:
    """What one model version has taken in event time, as its snapshot would announce it.

    The learner takes results (learns them, or sees and skips them by its policy) in
    final-whistle order, and only once its watermark has passed them. ``learned_from`` and
    ``learned_until`` are the first and latest final whistle it took into this version since
    the previous one (None for a version that took none, such as v0); ``complete_through`` is
    its watermark when it announced the version (again, as the watermark moves on). Under
    those two rules a version holds every result before the next version's ``learned_from``,
    and none after its own ``learned_until``.
    """

    version: int
    learned_from: datetime | None
    learned_until: datetime | None
    complete_through: datetime | None

    def __post_init__(self) -> None:
        check_coverage(self.learned_from, self.learned_until, self.complete_through)

    def clean_at(self, kickoff: datetime) -> bool:
        """Whether the version has taken no result unknown at ``kickoff``."""
        return self.learned_until is None or known_at(self.learned_until, kickoff)


@dataclass(frozen=True)
class Choice:
    """How a fixture is scored by one learning model: with ``version`` now (``ready``), not yet
    (``wait``: park it until a snapshot covers its kickoff), or never exactly (``missed``: the
    learner took a result known at the kickoff and one unknown at it into the same version;
    ``version`` is the latest that has taken nothing unknown, to score with and count)."""

    outcome: Literal["ready", "wait", "missed"]
    version: int | None = None


def choose_version(versions: Sequence[Coverage], kickoff: datetime) -> Choice:
    """The version that scores a fixture kicking off at ``kickoff``.

    ``versions`` are one model's versions in version order, each with its coverage (the
    whistles only grow with the version). The candidate is the latest version that has taken
    no result unknown at kickoff. It is exact if the next version's first result is after the
    kickoff (nothing known at it is missing), or, being the latest version, if the learner
    has announced it complete through the kickoff; if it is the latest and not yet complete,
    the fixture waits. The learner makes every kickoff exact by storing a version at each
    barrier (:func:`barriers`) that the replay announces to it.

    >>> from datetime import datetime as at
    >>> v = [Coverage(0, None, None, at(2024, 1, 1)),
    ...      Coverage(1, at(2024, 1, 2), at(2024, 1, 3), at(2024, 1, 4))]
    >>> choose_version(v, at(2024, 1, 1)), choose_version(v, at(2024, 1, 4))
    (Choice(outcome='ready', version=0), Choice(outcome='ready', version=1))
    >>> choose_version(v, at(2024, 1, 5))
    Choice(outcome='wait', version=None)
    """
    clean = 0
    while clean < len(versions) and versions[clean].clean_at(kickoff):
        clean += 1
    if clean == 0:
        return Choice("missed")
    candidate = versions[clean - 1]
    if clean < len(versions):
        following = versions[clean].learned_from
        if following is not None and not known_at(following, kickoff):
            return Choice("ready", candidate.version)
        return Choice("missed", candidate.version)
    if candidate.complete_through is not None and candidate.complete_through >= kickoff:
        return Choice("ready", candidate.version)
    return Choice("wait")


UNKNOWN_FROM = datetime.min.replace(tzinfo=UTC)
UNKNOWN_UNTIL = datetime.max.replace(tzinfo=UTC)


def unknown(version: int) -> Coverage:
    """A version whose coverage nothing vouches for: it may hold any result. It is clean at no
    kickoff, and as the version after a candidate it makes that candidate ``missed``; every
    version after it is out of :func:`choose_version`'s reach (it scans a clean prefix)."""
    return Coverage(version, UNKNOWN_FROM, UNKNOWN_UNTIL, None)


def rebuild_coverages(stored: Iterable[Coverage]) -> list[Coverage]:
    """One model's coverages as :func:`choose_version` may trust them, from its stored versions
    in version order (the registry's ``model_versions`` rows: a scorer restarting mid-backfill
    rebuilds its lists from them).

    Versions without coverage before the first one with coverage are the bases a backfill's
    time line starts from (a trained v0, a retrained v1): taken as having taken nothing, so
    the latest of them scores the kickoffs before the first result the learner took. From the
    first version with coverage on, the time line, what the registry can hold that would make
    a ``ready`` choice inexact is made :func:`unknown` (``missed``, never a wrong ``ready``,
    for every later kickoff: the scorer counts them):

    - **a version with no coverage** (live learning, a rollback in time, a refit): it may hold
      any result;
    - **pruned versions** (a gap in the numbers): what they took is gone, and so is whether
      one of them was such a version;
    - **a time line that goes back** (a version's first whistle or watermark before a whistle an
      earlier version took: another backfill over the same model);

    and every version after an unknown one is unknown too. Only the stored versions say where
    the time line begins: with all of its covered versions before one without coverage pruned,
    that one would pass for a base. Retention must therefore keep a running backfill's
    versions (today's does, short of ``tipstream models prune --older-than-days`` below the
    backfill's age: it keeps versions younger than ``TIPSTREAM_LEDGER_RETENTION_DAYS``).
    Versions pruned between the bases and the time line may have been bases or its first
    versions, so the first covered version after such a gap is widened back to the earliest
    time: the base before it then scores no kickoff as ``ready``.

    >>> from datetime import datetime as at, UTC
    >>> day = lambda d: at(2024, 1, d, tzinfo=UTC)
    >>> stored = [Coverage(0, None, None, None), Coverage(1, day(2), day(3), day(4)),
    ...           Coverage(3, day(6), day(7), day(8))]
    >>> choose_version(stored, day(5))  # as if v2, pruned, had taken nothing
    Choice(outcome='ready', version=1)
    >>> choose_version(rebuild_coverages(stored), day(5))  # v2 may have taken days 4 and 5
    Choice(outcome='missed', version=1)
    """
    rebuilt: list[Coverage] = []
    latest: datetime | None = None  # the latest final whistle an earlier version took
    started = False  # a version with coverage was seen: the time line has begun
    for row in stored:
        previous = rebuilt[-1].version if rebuilt else None
        if previous is not None and row.version <= previous:
            raise ValueError(f"versions out of order: v{row.version} after v{previous}")
        bare = row.learned_until is None and row.complete_through is None
        if bare and not started:
            coverage = row
        else:
            coverage = _vouched(row, previous, latest, started)
            started = True
        if coverage.learned_until is not None:
            latest = coverage.learned_until
        rebuilt.append(coverage)
    return rebuilt


def _vouched(
    row: Coverage, previous: int | None, latest: datetime | None, started: bool
) -> Coverage:
    """``row`` as the time line can vouch for it: after version ``previous`` (None: the first
    stored), whose versions took whistles up to ``latest``; ``started``: a covered version
    came before."""
    if row.learned_until is None and row.complete_through is None:
        return unknown(row.version)
    if latest is not None:
        for moment in (row.learned_from, row.complete_through):
            if moment is not None and moment < latest:
                return unknown(row.version)
    if previous is None or row.version == previous + 1:
        return row
    if started:
        return unknown(row.version)
    ceiling = row.learned_until if row.learned_until is not None else row.complete_through
    assert ceiling is not None  # both None returned above
    return Coverage(row.version, UNKNOWN_FROM, ceiling, row.complete_through)


def barriers(timeline: Sequence[tuple[Literal["fixture", "result"], datetime]]) -> list[int]:
    """Positions of a replay's time line (fixtures and results in event order, each with its
    event time: a result's is its final whistle) before which a result became known: the
    first fixture after one or more results. Between two barriers the order of learning and
    scoring does not matter; at each, the fixture must wait for the models to have learned
    the results before it. ``tipstream replay --sync`` waits once per match day instead, so
    a result known before a later kickoff of the same day is not learned in time.

    >>> from datetime import datetime as at
    >>> barriers([("fixture", at(2024, 1, 1, 12)), ("result", at(2024, 1, 1, 14)),
    ...           ("fixture", at(2024, 1, 1, 17)), ("fixture", at(2024, 1, 1, 17))])
    [2]
    """
    points: list[int] = []
    pending = False
    for position, (kind, _) in enumerate(timeline):
        if kind == "result":
            pending = True
        elif pending:
            points.append(position)
            pending = False
    return points
