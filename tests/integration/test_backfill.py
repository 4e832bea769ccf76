"""`tipstream replay --backfill` through a real worker: each match's features are issued once,
held until the partitions' marks pass their kickoff, with the offline builder's values (no
result from after the kickoff leaks in), the ticks are skipped by the scorer and forwarded by
the reconciler with a learn item per match and model, and a worker killed between releasing and
storing issues the same features again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from agents.tick_rules import is_tick
from models.features import RESULT_DELAY, build_events, model_input
from schemas.codec import decode
from schemas.events import LearnItem, MatchFeatures, Tick
from schemas.football_csv import read_rows
from streams.settings import Settings
from streams.topics import Topics
from tests.deployment import environment
from tests.integration.conftest import REPO, Worker, read_topic, wait_for
from tests.integration.test_metrics import answered, total, value
from tests.integration.test_replay import (
    EPL,
    SEEDED_MODELS,
    WINDOW,
    WINDOW_MATCHES,
    counts_of,
    evaluated,
    replay,
)

pytestmark = pytest.mark.integration

CHUNK = 20
"""Events per chunk (and round of ticks): 132 window facts and the warm-up in many chunks."""


def offline_features() -> dict[str, MatchFeatures]:
    """What ``tipstream evaluate`` computes for every match up to the window's end."""
    end = datetime(2015, 10, 1, tzinfo=UTC)
    rows = [r for r in read_rows([EPL]).rows if r.kickoff < end]
    return {f.match_id: f for f, _ in build_events(rows)}


def crashing_worker(settings: Settings, log_path: Path, crash: str) -> subprocess.Popen[bytes]:
    """A worker (``tests.chaos.worker``) that SIGKILLs itself at the armed probe."""
    env = environment(settings, TIPSTREAM_CHAOS_CRASH=crash, TIPSTREAM_COMMIT_INTERVAL="0.1")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_a_backfill_issues_each_match_once_as_of_kickoff_and_ticks_are_skipped(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """Two months of one league replayed with ``--backfill`` at full speed into a worker: every
    match's features are on match-features exactly once (revision 0, flagged with the replay
    id), equal to the offline builder's (to 1e-9), and every model's prediction of it is
    evaluated; the features agent held every fixture and released each once; the ticks reach
    match-features from each league-inputs partition, the scorer and the drift router skip them
    and the reconciler forwards them: counted, none refused, no dead letter, no traceback."""
    worker = start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    done = replay(
        settings, "--data", str(EPL), *WINDOW, "--backfill", "--checkpoint-every", str(CHUNK)
    )
    assert done.returncode == 0, done.stderr
    assert counts_of(done)["published"] == 2 * WINDOW_MATCHES
    await wait_for(
        lambda: evaluated(settings.database_url, WINDOW_MATCHES * SEEDED_MODELS),
        timeout=180,
        what="every match evaluated by every model",
    )
    topics = Topics.from_settings(settings)
    messages = await read_topic(topics.features, expect=WINDOW_MATCHES)
    features = [decode(m.value, MatchFeatures) for m in messages if not is_tick(m)]
    ticks = [decode(m.value, Tick) for m in messages if is_tick(m)]
    assert sorted(f.match_id for f in features) == sorted({f.match_id for f in features})
    assert len(features) == WINDOW_MATCHES
    replay_ids = {f.backfill for f in features}
    assert len(replay_ids) == 1
    assert None not in replay_ids
    assert all(f.revision == 0 for f in features)
    offline = offline_features()
    for got in features:
        want = offline[got.match_id]
        assert got.features == pytest.approx(want.features, abs=1e-9), got.match_id
        assert got.issued_at is not None
        assert got.issued_at < got.kickoff  # its predictions count
    partitions = settings.partitions
    assert {t.source for t in ticks} == {f"league-inputs:{p}" for p in range(partitions)}
    assert {t.backfill for t in ticks} == replay_ids

    samples = await wait_for(lambda: answered(settings), timeout=60, what="/metrics/")
    inputs = "tipstream_feature_inputs_total"
    assert value(samples, inputs, outcome="held") == WINDOW_MATCHES
    assert value(samples, inputs, outcome="released") == WINDOW_MATCHES
    for agent in ("league-router", "features", "scorer", "reconciler", "drift-router"):
        assert value(samples, "tipstream_ticks_total", agent=agent) > 0, agent
    assert total(samples, "tipstream_ticks_refused_total") == 0
    assert await read_topic(topics.dead_letters) == []
    assert "Traceback" not in worker.log_text()


async def test_a_backfill_sends_each_result_once_to_every_model_on_the_learn_feed(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """The same backfill: the reconciler sends each match's result once to every model the
    registry does not list as retired or a reference, keyed by model id, with the offline
    builder's inputs and the final whistle, and forwards from each of its partitions a mark
    that ends at the replay's closing tick on match-results, past every item's final whistle;
    nothing refused."""
    start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    done = replay(
        settings, "--data", str(EPL), *WINDOW, "--backfill", "--checkpoint-every", str(CHUNK)
    )
    assert done.returncode == 0, done.stderr
    await wait_for(
        lambda: evaluated(settings.database_url, WINDOW_MATCHES * SEEDED_MODELS),
        timeout=180,
        what="every match evaluated by every model",
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT model_id, status FROM models")
    finally:
        await conn.close()
    candidates = {r["model_id"] for r in rows if r["status"] not in ("retired", "reference")}
    assert candidates
    assert len(candidates) < len(rows)  # the market reference learns nothing
    topics = Topics.from_settings(settings)
    expected = WINDOW_MATCHES * len(candidates)
    messages = await read_topic(topics.learn_feed, expect=expected, timeout=180)
    items = [(m.key, decode(m.value, LearnItem)) for m in messages if not is_tick(m)]
    marks = [decode(m.value, Tick) for m in messages if is_tick(m)]
    assert len(items) == expected
    assert {key for key, _ in items} == {model.encode() for model in candidates}
    assert all(key == item.model_id.encode() for key, item in items)
    offline = offline_features()
    by_match = defaultdict(set)
    for _, item in items:
        by_match[item.match_id].add(item.model_id)
        assert item.inputs == pytest.approx(model_input(offline[item.match_id]), abs=1e-9)
        assert item.final_whistle == item.kickoff + RESULT_DELAY
    assert len(by_match) == WINDOW_MATCHES
    assert all(models == candidates for models in by_match.values())
    results = await read_topic(topics.results, expect=WINDOW_MATCHES)
    last_tick = max(decode(m.value, Tick).event_time for m in results if is_tick(m))
    # The closing tick passes the last final whistle: the final marks vouch for every item.
    assert all(item.final_whistle < last_tick for _, item in items)
    ends = {f"reconciler:{p}": last_tick for p in range(settings.partitions)}

    async def final_marks() -> dict[str | None, datetime] | None:
        final: dict[str | None, datetime] = {}
        for m in await read_topic(topics.learn_feed, expect=expected + len(marks)):
            if is_tick(m):
                mark = decode(m.value, Tick)
                final[mark.source] = max(mark.event_time, final.get(mark.source, mark.event_time))
        return final if final == ends else None

    assert await wait_for(final_marks, timeout=60, what="the marks of the replay's last tick")
    samples = await wait_for(lambda: answered(settings), timeout=60, what="/metrics/")
    assert value(samples, "tipstream_learn_items_total") == expected
    assert total(samples, "tipstream_ticks_refused_total") == 0


async def test_a_worker_killed_after_releasing_issues_the_same_features_again(
    settings: Settings, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """A worker SIGKILLed after publishing released features and before storing its books
    (the ``features.released`` probe, second pass) takes the batch again after the restart
    from the books and marks it had stored: every match's features on the topic are one
    payload (a re-delivered release gives the same bytes), all 66 matches are issued, with
    the offline builder's values, and every model's prediction is evaluated."""
    crashing = crashing_worker(settings, tmp_path / "crashing.log", "features.released:2")
    try:
        done = replay(
            settings, "--data", str(EPL), *WINDOW, "--backfill", "--checkpoint-every", str(CHUNK)
        )
        assert done.returncode == 0, done.stderr
        assert await asyncio.to_thread(crashing.wait, 180) == -signal.SIGKILL
    finally:
        if crashing.poll() is None:
            crashing.kill()
            crashing.wait()
    start_worker(TIPSTREAM_COMMIT_INTERVAL="0.1")
    await wait_for(
        lambda: evaluated(settings.database_url, WINDOW_MATCHES * SEEDED_MODELS),
        timeout=180,
        what="every match evaluated by every model after the restart",
    )
    messages = await read_topic(Topics.from_settings(settings).features, expect=WINDOW_MATCHES)
    payloads: dict[str, set[bytes]] = defaultdict(set)
    for message in messages:
        if not is_tick(message):
            payloads[decode(message.value, MatchFeatures).match_id].add(message.value)
    assert len(payloads) == WINDOW_MATCHES
    assert all(len(distinct) == 1 for distinct in payloads.values())
    offline = offline_features()
    for match_id, (payload,) in payloads.items():
        got = decode(payload, MatchFeatures)
        assert got.features == pytest.approx(offline[match_id].features, abs=1e-9), match_id
