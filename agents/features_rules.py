"""Rules of the features agent: a league's book of facts, and the features it gives a fixture.

A :class:`LeagueBook` is everything the agent keeps of one league: a ``checkpoint``
(``models.features.LeagueState`` with the results up to ``settled_until`` learned) and the raw
facts (fixtures and results) of the matches after it, ``open``. A fixture's features are always
computed the same way: a copy of the checkpoint learns the open results whose final whistle is
at or before the fixture's kickoff, in ``result_key`` order, then ``features_for`` reads it.
That is the order ``models.features.build_events`` learns in, so the agent's features equal the
offline builder's whatever order the facts arrived in, and no fixture ever sees a result from
after its kickoff (leak-free by construction, not by arrival order).

Open facts are folded into the checkpoint once they are :data:`HISTORY` behind the league's
latest final whistle, which bounds the book (and the table record). What that means:

- **A late fixture** (kickoff at or after ``settled_until``) is computed as of its kickoff,
  exactly. One whose kickoff is before ``settled_until`` is refused to dead letters: the
  checkpoint may hold results from after its kickoff and no longer keeps what it would need to
  compute it without them. Refusing, not approximating: a prediction from leaked or
  half-recomputed ratings would be evaluated as if it had been honest, and a fixture published
  four weeks after its kickoff is a producer fault worth seeing.
- **A corrected result** (same match, another score) of an open match replaces the first score;
  every later feature is computed from the checkpoint with only the corrected score learned, so
  the ratings are exactly as if only it had been played. A correction of a settled match is
  not learned (the ratings keep the first score: the documented approximation, for matches
  more than four weeks old), counted and logged with the reason; it is not dead-lettered, since
  the reconciler, which owns the results topic, accepts it and re-evaluates the predictions.
  The same for a result older than the kept history, and for a result whose final whistle is
  still ahead of the wall clock (never learned: it cannot be true yet). The same result again
  is a duplicate: nothing.
- **A result without its fixture** waits in ``open`` (it needs the teams); it counts from the
  moment its fixture arrives. Facts never completed by the time they settle are dropped.
- **Settling follows the slowest input**: the horizon is :data:`HISTORY` behind the earlier
  of the latest final whistle and the league's *low watermark*, the least of the latest event
  times seen from each source partition of the router's input (every partition of
  ``fixtures`` and ``match-results``; each delivers its facts in event-time order). In a fast
  backfill the router reads partitions unevenly (a fetch hands over thousands of one
  partition's records before the next's), so one partition runs weeks behind another; the
  facts of the slowest can then never be behind the horizon, and no fixture is refused as
  late because of the way the broker was read. Until every source has been seen, nothing
  settles (warm-up history counts for every source: it precedes them all).
- **An idle source is left out**: one that delivered no fact of the league (or never one)
  while others delivered for ``idle`` of wall-clock time (:data:`IDLE`,
  ``TIPSTREAM_FEATURES_IDLE_SECONDS``). A producer that keys by league, or a small league on
  many partitions, leaves some partitions without any of its facts: without this rule the
  book would never settle and would grow until its table record is refused. Silence counts
  from the worker's start at the earliest (:class:`Idleness`), so a restarted worker does not
  find every source but the first to deliver idle; once an idle source delivers again it
  counts again (a fact of it now behind the kept history is refused as late, as any).

**A backfill's fixtures are held** (``tipstream replay --backfill``, docs/BACKFILL.md): a
fixture whose input carries a backfill id is recorded but not issued; :class:`BackfillMarks`
follows, per ``league-inputs`` partition and backfill, how far in event time every router
source (each partition of ``fixtures`` and ``match-results``) has delivered, from the
backfill's facts and ticks; once that mark is past the fixture's kickoff, no result it must
learn is still to come, and :func:`release_held` issues it once, as of its kickoff. It is never
re-issued, so a backfill costs one issue per match instead of one per earlier result (the
unsynced replay's 14,739 issues for 380 matches). Settling never passes a held kickoff.

**Fresh features for fixtures published early.** Every issue of a fixture's features carries
its event time (``issued_at``: the fact's event time, see :class:`schemas.events.LeagueInput`)
and a ``revision`` (0, 1, ... per match). A result whose final whistle is at or before the
kickoff of an open fixture changes that fixture's features: it is re-issued with the next
revision and scored again. The reconciler counts each model's prediction from the highest
revision made before kickoff in event time, and keeps the latest revision as the match's
features.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import msgspec

from agents.backfill_rules import Watermarks, is_marks_key
from agents.tick_rules import Headers, header
from models.features import RESULT_DELAY, LeagueState, ResultKey, TeamState, result_key
from schemas.events import Fixture, LeagueInput, MatchFeatures, MatchResult, ValidationIssue

HISTORY = timedelta(days=28)
"""How far behind the league's latest final whistle raw facts are kept: late fixtures and
corrections within it are exact. Corrections and late fixtures come within days; four weeks
keep a book at ~100 matches (a fixture's features fold at most ~40 open results, <1 ms)."""
IDLE = timedelta(minutes=5)
"""How long a source may deliver nothing of a league while others deliver before settling
stops waiting for it (see the module docstring). A backfill reads every partition within
seconds of the others; a live league's facts come hours apart, and arrive in order."""
WARM_UP = "warm-up"
"""The key of warm-up history in :attr:`LeagueBook.seen_at` (it stands in for every source)."""
CLOCK_SLACK = timedelta(minutes=5)
"""A result may claim a final whistle at most this far after the wall clock (clock skew)."""
DIRECT = "direct"
"""The source of a league input without one (written straight to the features agent)."""
EVENT_TIME_HEADER = "tipstream-event-time"
"""Kafka header a producer sets to publish history (a backfill): when the fact happened, ISO
8601 with an offset. Without it a fact happens when the router takes it (live traffic).
A header, not the record timestamp: Kafka rolls and deletes segments by record timestamps, so
years-old timestamps would roll a segment per batch and expire the topic at once."""


class OpenMatch(msgspec.Struct, kw_only=True):
    """The facts known of one match not folded into the checkpoint yet."""

    fixture: Fixture | None = None
    result: MatchResult | None = None
    # Issues of the fixture's features so far (the next one's revision) and the event time
    # of the latest (a re-issue is never stamped earlier than the issue it replaces).
    issues: int = 0
    issued_at: datetime | None = None
    # Warm-up history (see :class:`schemas.events.LeagueInput`): learned, never issued.
    warm_up: bool = False
    # A backfill's fixture (its replay id): held until the backfill's marks pass its kickoff
    # (``held_at``, the fixture's event time, set until then), issued once, never re-issued.
    backfill: str | None = None
    held_at: datetime | None = None

    def key(self) -> ResultKey:
        fact = self.fixture if self.fixture is not None else self.result
        assert fact is not None
        return result_key(fact.kickoff, fact.match_id)


class SettledScore(msgspec.Struct, array_like=True):
    """The score a settled match was learned with (to tell a duplicate from a correction)."""

    season: str
    home_goals: int
    away_goals: int


class LeagueBook(msgspec.Struct, kw_only=True, dict=True):
    """What the features agent keeps of one league (the value of its table, as JSON).

    ``dict=True`` lets a book carry in-memory state that is never encoded (see
    :class:`PlayedState`)."""

    league: str
    checkpoint: LeagueState
    open: dict[str, OpenMatch] = {}
    # Scores of settled matches of the checkpoint's current and previous seasons.
    settled: dict[str, SettledScore] = {}
    # Latest final whistle of a result accepted: the league's event-time clock.
    clock: datetime | None = None
    # Latest event time seen from each source partition of the router (settling waits for
    # the slowest), and of warm-up history (which precedes every source).
    watermarks: dict[str, datetime] = {}
    warm_up_clock: datetime | None = None
    # Wall-clock time of the book's first fact and of each source's latest (warm-up history
    # under WARM_UP): a source silent for ``idle`` while others deliver is left out.
    opened_at: datetime | None = None
    seen_at: dict[str, datetime] = {}
    # Facts with a final whistle at or before this are in the checkpoint (or dropped).
    settled_until: datetime | None = None

    @classmethod
    def new(cls, league: str) -> LeagueBook:
        return cls(league=league, checkpoint=LeagueState(league=league))


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(LeagueBook)
_PLAYED = "_played"
PLAYED_STATES = 4
"""How many played states a book keeps in memory (see :class:`PlayedState`): one per stream
of fixtures in kickoff order the router may interleave (a partition read weeks behind
another in a backfill), and one for re-issues."""


@dataclass(slots=True)
class PlayedState:
    """In memory only, on the book: a copy of the checkpoint that learned every open whole
    match whose final whistle is at or before ``through``, in ``result_key`` order.

    Fixtures mostly come in kickoff order (a replay's always), so a fixture's features learn
    the results since the previous fixture's kickoff instead of every open one (~40) from a
    fresh copy of the checkpoint. Dropped when a whole match at or before ``through`` changes
    or settling passes it: the features are the same bit for bit (the property test)."""

    through: datetime
    state: LeagueState


def played_states(book: LeagueBook) -> list[PlayedState]:
    """The book's played states, least recently used first (none after decoding)."""
    return cast(list[PlayedState], book.__dict__.setdefault(_PLAYED, []))


def _changed_at(book: LeagueBook, whistle: datetime) -> None:
    """An open match with this final whistle changed: the states that learned it are stale."""
    states = played_states(book)
    states[:] = [played for played in states if played.through < whistle]


def _played_through(
    book: LeagueBook,
    until: datetime,
    played: Sequence[tuple[ResultKey, Fixture, MatchResult]] | None = None,
) -> LeagueState:
    """A state that learned exactly the open whole matches whose final whistle is at or
    before ``until``: the latest played state not past it, moved on, or a fresh copy of the
    checkpoint (kept, the least recently used dropped). ``played``: the open whole matches in
    order, when the caller has them (else found here)."""
    states = played_states(book)
    usable = [p for p in states if p.through <= until]
    current = max(usable, key=lambda p: p.through) if usable else None
    since = current.through if current is not None else None
    if played is None:
        due = _played(book, since, until)
    else:
        low = 0 if since is None else bisect_right(played, since, key=lambda m: m[0][0])
        due = list(played[low : bisect_right(played, until, key=lambda m: m[0][0])])
    if current is None:
        current = PlayedState(through=until, state=book.checkpoint.copy())
    else:
        states.remove(current)
    for _, fixture, result in due:
        current.state.apply_result(fixture, result)
    current.through = until
    states.append(current)
    del states[:-PLAYED_STATES]
    return current.state


def encode_book(book: LeagueBook) -> bytes:
    """Table value of a book (JSON: floats and datetimes round-trip exactly)."""
    return _ENCODER.encode(book)


def decode_book(raw: bytes) -> LeagueBook:
    return _DECODER.decode(raw)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one fact did: features to publish, a reason to dead-letter it, a changed book."""

    features: tuple[MatchFeatures, ...] = ()
    issue: ValidationIssue | None = None
    changed: bool = False
    kind: str = "unchanged"
    # Why a valid fact was not learned (a result is never dead-lettered here: the reconciler,
    # its owner, accepts it; the agent counts and logs it instead).
    note: str | None = None


UNCHANGED = Outcome()


@dataclass(frozen=True, slots=True)
class Idleness:
    """When a silent source stops holding a league's settling back: once the book has had
    facts from others for ``after`` of wall-clock time without one from it, silence counted
    from ``since`` at the earliest (the worker's start: a restart gives every source a fresh
    grace instead of finding all but the first to deliver idle)."""

    after: timedelta = IDLE
    since: datetime | None = None


def _refuse(field: str, value: object, rule: str) -> Outcome:
    return Outcome(issue=ValidationIssue(field=field, value=str(value), rule=rule), kind="refused")


def _ignore(kind: str, note: str) -> Outcome:
    return Outcome(kind=kind, note=note)


def league_input(
    fact: Fixture | MatchResult,
    event_time: datetime,
    source: str | None = None,
    *,
    backfill: str | None = None,
) -> LeagueInput:
    """The league-keyed envelope of a fixture or a result (what the router publishes)."""
    if isinstance(fact, Fixture):
        return LeagueInput(fixture=fact, event_time=event_time, source=source, backfill=backfill)
    return LeagueInput(result=fact, event_time=event_time, source=source, backfill=backfill)


def event_time(headers: Headers, *, now: datetime) -> datetime | ValidationIssue:
    """A fact's event time: its :data:`EVENT_TIME_HEADER`, else ``now``; or why the header is
    refused (not an ISO 8601 time with an offset, or ahead of the wall clock)."""
    raw = header(headers, EVENT_TIME_HEADER)
    if raw is None:
        return now
    text = raw.decode("utf-8", "replace")
    field = f"header {EVENT_TIME_HEADER}"
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return ValidationIssue(field=field, value=text[:200], rule="not an ISO 8601 time")
    if at.tzinfo is None:
        return ValidationIssue(field=field, value=text, rule="needs a UTC offset (e.g. +00:00)")
    if at > now + CLOCK_SLACK:
        return ValidationIssue(
            field=field, value=text, rule=f"ahead of the wall clock ({now.isoformat()})"
        )
    return at


def apply_input(
    book: LeagueBook,
    item: LeagueInput,
    *,
    now: datetime,
    sources: frozenset[str] = frozenset({DIRECT}),
    idle: Idleness = Idleness(),
) -> Outcome:
    """Apply one routed fact to its league's book; ``now`` is the wall clock, and the fact's
    event time when the router gave it none; ``sources`` the router's input partitions (see
    :func:`router_sources`), left out of settling once ``idle``."""
    at = item.event_time or now
    _observe(book, item, at, now)
    if item.fixture is not None:
        return add_fixture(book, item.fixture, at=at, warm_up=item.warm_up, backfill=item.backfill)
    assert item.result is not None
    return add_result(book, item.result, now=now, at=at, sources=sources, idle=idle)


class BackfillMarks(msgspec.Struct, kw_only=True):
    """How far each backfill has delivered everything on one ``league-inputs`` partition: per
    backfill id, the latest event time each router source (a partition of ``fixtures`` or
    ``match-results``) delivered there, by a fact or a tick; the mark is their minimum
    (:class:`agents.backfill_rules.Watermarks`), unknown until every source has spoken.

    Per partition, not per league: a tick reaches every partition, and one source's records on
    one partition come in event-time order whatever league they are of. Per backfill: another
    replay's marks (later, or of earlier history) say nothing of this one's. Stored in the
    partition's own record of the ``league-books`` table
    (:func:`agents.backfill_rules.marks_key`), with the books, before the ack: a restart must
    not need every source to speak again (a source whose last tick was taken before it never
    would)."""

    marks: dict[str, dict[str, datetime]] = {}

    def observe(self, backfill: str, source: str, at: datetime, sources: frozenset[str]) -> bool:
        """A fact or tick of ``source`` at ``at``: whether it raised the mark's inputs (False
        for an older one, and for a source the router does not have, such as a tick from a
        deployment with another partition count)."""
        if source not in sources:
            return False
        seen = self.marks.setdefault(backfill, {})
        held = seen.get(source)
        if held is not None and at <= held:
            return False
        seen[source] = at
        return True

    def through(self, backfill: str, sources: frozenset[str]) -> datetime | None:
        """The mark of ``backfill``: every source has delivered everything before it."""
        marks = Watermarks(sources)
        through = None
        for source, at in self.marks.get(backfill, {}).items():
            if source in sources:
                through = marks.observe(source, at)
        return through


_MARKS_DECODER = msgspec.json.Decoder(BackfillMarks)


def is_book_key(key: bytes) -> bool:
    """Whether a ``league-books`` key is a league's (not a partition's marks)."""
    return not is_marks_key(key)


def encode_marks(marks: BackfillMarks) -> bytes:
    return _ENCODER.encode(marks)


def decode_marks(raw: bytes | None) -> BackfillMarks:
    return BackfillMarks() if raw is None else _MARKS_DECODER.decode(raw)


def router_sources(partitions: int) -> frozenset[str]:
    """The names of the router's input partitions, as :func:`source_of` gives them."""
    return frozenset(f"{kind}:{p}" for kind in ("fixtures", "results") for p in range(partitions))


def source_of(is_fixture: bool, partition: int) -> str:
    """The source name of a fact the router read from ``partition`` of its topic."""
    return f"{'fixtures' if is_fixture else 'results'}:{partition}"


def add_fixture(
    book: LeagueBook,
    fixture: Fixture,
    *,
    at: datetime,
    warm_up: bool = False,
    backfill: str | None = None,
) -> Outcome:
    """Record a fixture and compute its features as of its kickoff, issued at event time
    ``at`` (see the module docstring for the fixture that comes too late); a warm-up fixture
    is only recorded, to learn its match; a backfill's fixture is held (:func:`release_held`
    issues it)."""
    entry = book.open.get(fixture.match_id)
    if entry is not None and entry.fixture == fixture:
        # Re-delivered (a replay run twice): its features were issued already. Checked first:
        # an open match can kick off before ``settled_until`` (a horizon of final whistles),
        # and the same fixture again must not be refused as late.
        return UNCHANGED
    if book.settled_until is not None and fixture.kickoff < book.settled_until:
        if fixture.match_id in book.settled:
            return Outcome(kind="duplicate")  # a settled match again (a replay run twice)
        if warm_up:
            return Outcome(kind="late_warm_up")  # history the book is already past
        return _refuse(
            "kickoff",
            fixture.kickoff.isoformat(),
            f"the league's state already holds results up to {book.settled_until.isoformat()}, "
            f"after this kickoff, and keeps raw facts only {HISTORY.days} days behind its "
            "latest result: it cannot compute these features as of kickoff",
        )
    if entry is not None and entry.result is not None and entry.result.kickoff != fixture.kickoff:
        return _refuse(
            "kickoff",
            fixture.kickoff.isoformat(),
            f"disagrees with the match's result (kickoff {entry.result.kickoff.isoformat()})",
        )
    if entry is not None and entry.backfill is not None and entry.held_at is None:
        return _ignore(
            "backfill_final",
            "a backfill fixture's features are issued once; this other fixture of the match "
            "came after they were",
        )
    if entry is None:
        entry = book.open[fixture.match_id] = OpenMatch()
    kind = "issued" if entry.fixture is None else "updated"
    entry.fixture = fixture
    if entry.result is not None:
        _changed_at(book, entry.key()[0])
    if warm_up:
        entry.warm_up = True
        return Outcome(changed=True, kind="warm_up")
    # A result that came before its fixture is learned from now on: the fixtures after it
    # change too (after this fixture's own features, which learn only results before it).
    whole = entry.result is not None
    if backfill is not None:
        entry.backfill, entry.held_at = backfill, at
        reissued = reissue_affected(book, entry.key()[0], at) if whole else ()
        return Outcome(features=reissued, changed=True, kind="held")
    features = _issue(entry, features_as_of(book, fixture), at)
    reissued = reissue_affected(book, entry.key()[0], at) if whole else ()
    return Outcome(features=(features, *reissued), changed=True, kind=kind)


def release_held(book: LeagueBook, backfill: str, through: datetime) -> tuple[MatchFeatures, ...]:
    """Issue the held fixtures of ``backfill`` that kick off before ``through`` (its mark: every
    source of the league's partition has delivered everything before it), in kickoff order,
    each as of its kickoff, stamped with its own event time (so its predictions count as made
    before kickoff) and the backfill's id. Each is issued once: it is no longer held, and
    :func:`reissue_affected` never touches a backfill fixture.

    Strictly before: a source at ``through`` may still deliver a result whose final whistle is
    ``through``, which a fixture kicking off then must learn."""
    due = sorted(
        (entry.fixture.kickoff, entry.fixture.match_id, entry)
        for entry in book.open.values()
        if entry.fixture is not None
        and entry.held_at is not None
        and entry.backfill == backfill
        and entry.fixture.kickoff < through
    )
    out = []
    for kickoff, _, entry in due:
        assert entry.fixture is not None
        assert entry.held_at is not None
        features = _played_through(book, kickoff).features_for(entry.fixture)
        out.append(_issue(entry, features, entry.held_at))
        entry.held_at = None
    return tuple(out)


def _earliest_held(book: LeagueBook) -> datetime | None:
    """The earliest kickoff of a held fixture (settling never passes it), or None."""
    kickoffs = [
        entry.fixture.kickoff
        for entry in book.open.values()
        if entry.held_at is not None and entry.fixture is not None
    ]
    return min(kickoffs, default=None)


def _issue(entry: OpenMatch, features: MatchFeatures, at: datetime) -> MatchFeatures:
    """Stamp the next issue of an open match's features: its revision, event time and
    backfill."""
    issued_at = at if entry.issued_at is None or at > entry.issued_at else entry.issued_at
    stamped = msgspec.structs.replace(
        features, issued_at=issued_at, revision=entry.issues, backfill=entry.backfill
    )
    entry.issues += 1
    entry.issued_at = issued_at
    return stamped


def add_result(
    book: LeagueBook,
    result: MatchResult,
    *,
    now: datetime,
    at: datetime,
    sources: frozenset[str] = frozenset({DIRECT}),
    idle: Idleness = Idleness(),
) -> Outcome:
    """Record a result (a correction replaces the open score), re-issue the features of the
    open fixtures it changes, then settle what is old."""
    whistle, _ = result_key(result.kickoff, result.match_id)
    if whistle > now + CLOCK_SLACK:
        return _ignore(
            "early_result",
            f"a result cannot be known before its final whistle ({whistle.isoformat()}, "
            f"kickoff + {RESULT_DELAY.total_seconds() // 60:.0f} min); it is {now.isoformat()}",
        )
    settled = book.settled.get(result.match_id)
    if settled is not None:
        if (settled.home_goals, settled.away_goals) == (result.home_goals, result.away_goals):
            return Outcome(kind="duplicate")
        return _ignore(
            "late_correction",
            f"{result.home_goals}-{result.away_goals} corrects a match the league's state "
            f"learned as {settled.home_goals}-"
            f"{settled.away_goals} more than {HISTORY.days} days before its latest result; "
            "the ratings keep the first score",
        )
    if book.settled_until is not None and whistle <= book.settled_until:
        return _ignore(
            "late_result",
            f"the result of a match older than the league's kept history (settled up to "
            f"{book.settled_until.isoformat()}); the ratings do not include it",
        )
    entry = book.open.get(result.match_id)
    if entry is not None and entry.fixture is not None and entry.fixture.kickoff != result.kickoff:
        return _ignore(
            "result_kickoff_mismatch",
            f"result kickoff {result.kickoff.isoformat()} disagrees with the match's fixture "
            f"(kickoff {entry.fixture.kickoff.isoformat()})",
        )
    if entry is None:
        entry = book.open[result.match_id] = OpenMatch()
    if entry.result == result:
        return Outcome(kind="duplicate")
    kind = "result" if entry.result is None else "corrected"
    entry.result = result
    _changed_at(book, whistle)
    if book.clock is None or whistle > book.clock:
        book.clock = whistle
    reissued = reissue_affected(book, whistle, at) if entry.fixture is not None else ()
    settle(book, sources, idle)
    return Outcome(features=reissued, changed=True, kind=kind)


def reissue_affected(
    book: LeagueBook, whistle: datetime, at: datetime
) -> tuple[MatchFeatures, ...]:
    """New features, issued at event time ``at``, for every open fixture a result with final
    whistle ``whistle`` changes: those kicking off at or after it.

    Never a backfill's fixture: it is issued once, by :func:`release_held`. Played matches
    and matches past kickoff too: the latest issue is what the reconciler
    keeps as the match's features, so it must be exact (in a fast backfill the router reads a
    late partition's result after the matches it changes). Their new predictions count only
    if made before kickoff in event time, which decides the reconciler.

    One played state learns the open results in order while the fixtures are read in kickoff
    order, so re-issuing n fixtures costs one pass, not n."""
    pending = sorted(
        (entry.fixture.kickoff, entry.fixture.match_id, entry)
        for entry in book.open.values()
        if entry.fixture is not None
        and not entry.warm_up
        and entry.backfill is None
        and entry.fixture.kickoff >= whistle
    )
    if not pending:
        return ()
    played = _played(book)
    out = []
    for kickoff, _, entry in pending:
        assert entry.fixture is not None
        state = _played_through(book, kickoff, played)
        out.append(_issue(entry, state.features_for(entry.fixture), at))
    return tuple(out)


def low_watermark(
    book: LeagueBook, sources: frozenset[str], idle: Idleness = Idleness()
) -> datetime | None:
    """The least latest event time over the sources that are not idle (None until each has
    been seen or gone idle, warm-up history standing in for every source; the league's clock
    once all are idle)."""
    low: datetime | None = None
    for source in sources:
        if is_idle(book, source, idle):
            continue
        seen = book.watermarks.get(source)
        if book.warm_up_clock is not None and (seen is None or book.warm_up_clock > seen):
            seen = book.warm_up_clock
        if seen is None:
            return None
        if low is None or seen < low:
            low = seen
    return book.clock if low is None else low


def is_idle(book: LeagueBook, source: str, idle: Idleness = Idleness()) -> bool:
    """Whether ``source`` delivered nothing of the league (since the book's first fact, if
    never; since ``idle.since``, if later) while the book went on receiving facts for more
    than ``idle.after`` of wall-clock time."""
    last = book.seen_at.get(source, book.opened_at)
    latest = max(book.seen_at.values(), default=None)
    if last is None or latest is None:
        return False
    if idle.since is not None and idle.since > last:
        last = idle.since
    return latest - last > idle.after


def _observe(book: LeagueBook, item: LeagueInput, at: datetime, now: datetime) -> None:
    """Move the watermark of the fact's source to its event time, and note when (wall clock)
    the source delivered."""
    if book.opened_at is None:
        book.opened_at = now
    source = WARM_UP if item.warm_up else item.source or DIRECT
    delivered = book.seen_at.get(source)
    if delivered is None or now > delivered:
        book.seen_at[source] = now
    if item.warm_up:
        if book.warm_up_clock is None or at > book.warm_up_clock:
            book.warm_up_clock = at
        return
    seen = book.watermarks.get(source)
    if seen is None or at > seen:
        book.watermarks[source] = at


def settle(
    book: LeagueBook,
    sources: frozenset[str] = frozenset({DIRECT}),
    idle: Idleness = Idleness(),
) -> None:
    """Fold the open matches :data:`HISTORY` behind the clock into the checkpoint, in
    ``result_key`` order; drop the facts that never became a whole match."""
    low = low_watermark(book, sources, idle)
    if book.clock is None or low is None:
        return
    horizon = min(book.clock, low) - HISTORY
    held = _earliest_held(book)
    if held is not None and held < horizon:
        # A held fixture's features learn only results up to its kickoff: the checkpoint
        # must not take a later one before it is issued.
        horizon = held
    if book.settled_until is not None and horizon <= book.settled_until:
        return  # never back: a source that was idle may deliver again from behind
    due = sorted(
        (key, match_id)
        for match_id, entry in book.open.items()
        if (key := entry.key())[0] <= horizon
    )
    seasons = (book.checkpoint.season, book.checkpoint.previous_season)
    stale = False
    for _, match_id in due:
        entry = book.open.pop(match_id)
        if entry.fixture is not None and entry.result is not None:
            book.checkpoint.apply_result(entry.fixture, entry.result)
            book.settled[match_id] = SettledScore(
                entry.fixture.season, entry.result.home_goals, entry.result.away_goals
            )
            stale = stale or entry.fixture.season not in seasons
    book.settled_until = horizon
    states = played_states(book)  # the checkpoint learned matches these have not:
    states[:] = [played for played in states if played.through >= horizon]
    # Keep the scores of two seasons: prune once a season starts (or an older one settles).
    now_seasons = (book.checkpoint.season, book.checkpoint.previous_season)
    if stale or now_seasons != seasons:
        book.settled = {k: s for k, s in book.settled.items() if s.season in now_seasons}


def _played(
    book: LeagueBook, since: datetime | None = None, until: datetime | None = None
) -> list[tuple[ResultKey, Fixture, MatchResult]]:
    """The open whole matches in ``result_key`` order, with a final whistle after ``since``
    and at or before ``until`` (either None: unbounded)."""
    played = []
    for entry in book.open.values():
        if entry.fixture is None or entry.result is None:
            continue
        key = entry.key()
        if (since is None or key[0] > since) and (until is None or key[0] <= until):
            played.append((key, entry.fixture, entry.result))
    played.sort()
    return played


def features_as_of(book: LeagueBook, fixture: Fixture) -> MatchFeatures:
    """The fixture's features from the results whose final whistle is at or before its
    kickoff."""
    return _played_through(book, fixture.kickoff).features_for(fixture)


def current_state(book: LeagueBook) -> LeagueState:
    """The league's state with every result the book knows learned (the operator's view)."""
    state = book.checkpoint.copy()
    for _, fixture, result in _played(book):
        state.apply_result(fixture, result)
    return state


def current_teams(state: LeagueState) -> dict[str, TeamState]:
    """The teams of the current or previous season (others start afresh when they return)."""
    seasons = (state.season, state.previous_season)
    return {name: team for name, team in state.teams.items() if team.last_season in seasons}
