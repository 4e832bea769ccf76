"""The learner's pure rules: what it holds per model, one learn step under a policy, and a
backfill's time line of versions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from agents.backfill_rules import Coverage, Watermarks
from agents.registry import RegisteredModel
from models.policy import LearningPolicy
from schemas.events import ModelFeedItem


@dataclass
class Learning:
    """What the learner holds for one online model."""

    entry: RegisteredModel
    policy: LearningPolicy
    learned: int
    learned_since_version: int
    positions: dict[str, int]
    last_version_at: float
    last_evaluation_id: str | None = None


def apply_learning(state: Learning, item: ModelFeedItem) -> bool:
    """One learn step under the model's policy; True when the model learned."""
    evaluation = item.evaluation
    weight = state.policy.weight(evaluation.probabilities.as_dict(), evaluation.outcome)
    if weight <= 0:
        # Not learned, but seen: the model's input ranges cover every match it scored.
        state.entry.model.observe_one(item.inputs)
        return False
    state.entry.model.learn_one(item.inputs, evaluation.outcome, weight)
    state.learned += 1
    state.learned_since_version += 1
    state.last_evaluation_id = evaluation.evaluation_id
    return True


def adopts_version(held_version: int, latest_version: int | None) -> bool:
    """Whether the learner gives up the state it holds for the registry's latest version.

    The learner is the one producer of its model's versions, so a newer one in the registry is
    a version it did not produce: a rollback in time (``tipstream models rollback MODEL
    --to-version V`` registers V's state as latest + 1). The learner restores that version and
    learns on from it, and stores no version of its own over it: its own next version would
    take the same number, and its state is the stretch the operator rolled back. What it had
    learned since is dropped; those results stay in ``learned_evaluations`` and are not
    learned again. An equal or older latest version (the learner's own) changes nothing.
    """
    return latest_version is not None and latest_version > held_version


def record_position(state: Learning, topic: str, partition: int, offset: int) -> None:
    """Remember the furthest offset applied per feed partition.

    An item at or before it is not skipped on that ground: after Faust's partition hole is
    repaired (``streams/worker/watchdog.py``) an earlier offset can follow a later one. The
    evaluation id decides what was learned.
    """
    position = f"{topic}:{partition}"
    state.positions[position] = max(offset, state.positions.get(position, -1))


T = TypeVar("T")


@dataclass(frozen=True)
class Cut(Generic[T]):
    """A version a backfill's learner stores: the items it takes in since the previous cut,
    in learning order, and the coverage the version announces."""

    items: list[T]
    coverage: Coverage


class TimeLine(Generic[T]):
    """One learning model's backfill time line (docs/BACKFILL.md, section 3): learn items are
    held until every source has passed them, then taken one final whistle at a time.

    Sources are the reconciler's partitions; a tick ``mark`` says that every learn item with a
    final whistle *before* it has been sent (strict, as every backfill mark is). Once the
    watermark is past a held item's final whistle W, every item with a whistle at or before W
    is in, and they are taken, in (final whistle, match id) order, one version per distinct
    whistle, each complete through its whistle. A kickoff K is then scored exactly by the
    version of the latest whistle at or before K: it has every result known at K, and the next
    version's first result (the next whistle) is after K, so
    :func:`agents.backfill_rules.choose_version` finds it ``ready``. A version per whistle is
    more than the exact barriers need (two whistles with no kickoff between them could share
    one), but it needs no knowledge of kickoffs the learner has not seen, and the last results
    of a backfill are taken as soon as the closing tick passes them.

    Cuts depend on the items only, never on when ticks arrive: a learner that crashes and
    takes the same items again stores the same versions. An item whose whistle is at or before
    the last cut is late (a source's tick claimed more than it had sent): :meth:`add` refuses
    it, since learning it would make the stored versions inexact.

    >>> from datetime import datetime as at
    >>> line: TimeLine[str] = TimeLine(["r:0"], version=0)
    >>> line.add(at(2024, 1, 1, 14), "m1", "m1's result")
    True
    >>> line.add(at(2024, 1, 1, 19), "m2", "m2's result")
    True
    >>> line.tick("r:0", at(2024, 1, 1, 19))  # strict: m2's whistle not passed
    >>> [(cut.items, cut.coverage.version) for cut in line.cuts()]
    [(["m1's result"], 1)]
    >>> line.add(at(2024, 1, 1, 14), "m3", "too late")
    False
    """

    def __init__(
        self, sources: Iterable[str], *, version: int, cut_through: datetime | None = None
    ) -> None:
        self.marks = Watermarks(sources)
        self.version = version  # the latest version stored (the time line's base at first)
        self.cut_through = cut_through  # the whistle of the latest cut
        self._held: list[tuple[datetime, str, T]] = []

    @property
    def held(self) -> int:
        """Items waiting for the watermark."""
        return len(self._held)

    def add(self, final_whistle: datetime, match_id: str, item: T) -> bool:
        """Hold a learn item; False (not held) if it is behind the last cut."""
        if self.cut_through is not None and final_whistle <= self.cut_through:
            return False
        self._held.append((final_whistle, match_id, item))
        return True

    def tick(self, source: str, mark: datetime) -> None:
        """A source's mark: every item with an earlier final whistle sent."""
        self.marks.observe(source, mark)

    def cuts(self) -> list[Cut[T]]:
        """The versions the watermark allows now, in order; each moves the time line on."""
        through = self.marks.through()
        if through is None or not self._held:
            return []
        self._held.sort(key=lambda held: (held[0], held[1]))
        made: list[Cut[T]] = []
        while self._held and self._held[0][0] < through:
            whistle = self._held[0][0]
            taken = 0
            while taken < len(self._held) and self._held[taken][0] == whistle:
                taken += 1
            items, self._held = self._held[:taken], self._held[taken:]
            self.version += 1
            self.cut_through = whistle
            coverage = Coverage(self.version, whistle, whistle, whistle)
            made.append(Cut([item for _, _, item in items], coverage))
        return made
