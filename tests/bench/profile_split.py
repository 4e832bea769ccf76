"""Where a worker's time went, by agent: ``python -m tests.bench.profile_split FILE``.

``FILE`` holds py-spy's collapsed stacks (``py-spy record --format raw --threads``, as
``tests.bench.restart_cost --profile`` records them): one line per distinct stack, its frames
separated by ``;`` and its sample count last. A stack counts for the first agent whose batch
function it runs through (the agents share one event loop, so the rest of the loop's thread is
Faust, aiokafka and asyncio themselves); other threads (Faust's consumer thread fetching and
unpacking records, the producer's) are counted apart. Prints one line per part, largest first.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

AGENTS = {
    "route_batch": "features router",
    "features_batch": "features",
    "score_batch": "scorer",
    "reconcile_batch": "reconciler",
    "learn_batch": "learner",
    "monitor_batch": "monitor",
    "check ": "champion check",
}
"""Batch function (as py-spy names the frame, ``name (file:line)``) -> part."""
LOOP_MARKERS = ("run_forever", "_run_once")


def part_of(stack: str) -> str:
    """The part of the worker one collapsed stack belongs to."""
    frames = stack.split(";")
    for frame in frames:
        for function, agent in AGENTS.items():
            if frame.startswith(function if function.endswith(" ") else f"{function} ("):
                return agent
    if any(frame.startswith(LOOP_MARKERS) for frame in frames):
        return "event loop: Faust, aiokafka, asyncio (no agent's batch)"
    return "other threads (Faust's consumer thread, producer, ...)"


def split(lines: list[str]) -> Counter[str]:
    """Samples per part."""
    parts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            parts[part_of(stack)] += int(count)
    return parts


def main(argv: list[str]) -> int:
    parts = split(Path(argv[0]).read_text().splitlines())
    total = sum(parts.values()) or 1
    for part, samples in parts.most_common():
        print(f"{samples / total:6.1%}  {samples:7d}  {part}")
    print(f"{1:6.1%}  {total:7d}  samples")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
