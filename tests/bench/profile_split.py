"""Where a worker's time went, by agent: ``python -m tests.bench.profile_split FILE``.

``FILE`` holds py-spy's collapsed stacks (``py-spy record --format raw --threads``, as
``tests.bench.restart_cost --profile`` records them): one line per distinct stack, its frames
separated by ``;`` (the first names the thread) and its sample count last. A stack counts for
the first agent whose batch function it runs through; the rest of the main thread (the event
loop all agents share) is Faust, aiokafka and asyncio themselves, and the other threads
(Faust's consumer thread fetching and unpacking records) are counted apart. Prints one line
per part, largest first.
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


def part_of(stack: str) -> str:
    """The part of the worker one collapsed stack belongs to."""
    frames = stack.split(";")
    for frame in frames:
        for function, agent in AGENTS.items():
            if frame.startswith(function if function.endswith(" ") else f"{function} ("):
                return agent
    if frames[0].endswith("MainThread"):  # py-spy's first frame names the thread
        return "event loop, no agent's batch: Faust, aiokafka, asyncio"
    return "other threads: Faust's consumer thread (fetching, unpacking records)"


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
