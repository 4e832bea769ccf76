"""The learner's pure rules: what it holds per model, and one learn step under a policy."""

from __future__ import annotations

from dataclasses import dataclass

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
