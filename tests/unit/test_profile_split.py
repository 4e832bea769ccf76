"""py-spy's collapsed stacks summed by agent (tests.bench.profile_split)."""

from __future__ import annotations

from tests.bench.profile_split import split

LINES = [
    "thread (1): MainThread;<module> (w.py:1);handle_batch (agents/loop.py:170);"
    "reconcile_batch (agents/reconciler.py:119);decode_ledger (agents/reconciler_codec.py:9) 7",
    "thread (1): MainThread;<module> (w.py:1);score_batch (agents/scorer.py:98) 3",
    "thread (1): MainThread;<module> (w.py:1);Fetcher._fetcher (aiokafka/fetcher.py:1) 2",
    "thread (2): Thread-1;WorkerThread.run (mode/threads.py:62) 5",
    "",
]


def test_samples_count_for_the_agent_whose_batch_they_run_in() -> None:
    parts = split(LINES)
    assert parts["reconciler"] == 7
    assert parts["scorer"] == 3
    assert parts["event loop, no agent's batch: Faust, aiokafka, asyncio"] == 2
    assert parts["other threads: Faust's consumer thread (fetching, unpacking records)"] == 5
    assert sum(parts.values()) == 17
