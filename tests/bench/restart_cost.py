"""What a restart costs after a replay: worker memory and start-to-ready, and the ledgers
changelog a restarted worker reads back (docs/DEPLOYMENT.md, "What a restart costs").

    python -m tests.bench.restart_cost --from 2022-01-15            # ~5,000 matches
    python -m tests.bench.restart_cost                              # all 27,700
    python -m tests.bench.restart_cost --from 2022-01-15 --retention-days 36500  # no retirement
    python -m tests.bench.restart_cost --store rocksdb                 # RocksDB table store
    python -m tests.bench.restart_cost --from 2022-01-15 --profile /tmp/e2e.txt  # + py-spy

A deployment of its own (prefix, app id, database, web port) on the running services: one
worker, a replay of the shipped matches from ``--from`` (no ``--sync``: as fast as the worker
goes), a wait until every match is evaluated by every seeded model, then the worker's RSS,
a SIGTERM and a restart timed until ``/ready`` answers 200, and the RSS then. With
``--store rocksdb`` the worker keeps its tables on disk (a directory of its own under
``--log-dir``): the size of that directory is reported, and a second restart with it removed
(``cold``: a worker that starts on another machine) is timed too. Prints one JSON line;
removes the deployment (and the table directory) afterwards. ``--profile FILE`` samples the
worker with py-spy from the replay's start until every match is evaluated (collapsed stacks,
one line per stack and thread: ``python -m tests.bench.profile_split FILE`` sums them by agent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import TABLE_STORES, Settings
from streams.worker.app import table_data_dir
from tests.deployment import REPO, base_settings, create, environment, isolated, remove

MODELS = 4  # seeded: champion, challenger, two market references


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def disk_mb(path: Path) -> float:
    """Bytes of the files under ``path``, in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


def ready(settings: Settings) -> bool:
    try:
        url = f"http://127.0.0.1:{settings.web_port}/ready"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=REPO, env=environment(settings), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` 50 times a second into ``output`` until it gets SIGINT."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
         "--format", "raw", "--threads", "--rate", "50", "--output", output],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_ready(settings: Settings, worker: subprocess.Popen[bytes], limit: float) -> float:
    """Seconds from now until /ready answers 200."""
    started = time.monotonic()
    while not ready(settings):
        if worker.poll() is not None:
            raise RuntimeError("the worker exited")
        if time.monotonic() - started > limit:
            raise TimeoutError("the worker did not get ready")
        time.sleep(0.05)
    return time.monotonic() - started


def recovery(log: Path, since: int) -> dict[str, float]:
    """What the worker whose log starts at byte ``since`` read back: the changelog offsets
    between where its recovery started reading and the highwater (Faust's two tables of
    partitions; a compacted changelog has gaps, so this is an upper bound on records), and the
    seconds from the first table to "Recovery complete"."""
    started = done = None
    reading: dict[tuple[str, int], int] = {}
    highwater: dict[tuple[str, int], int] = {}
    with log.open("rb") as source:
        source.seek(since)
        for line in source:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            event = str(entry.get("event", "")) if isinstance(entry, dict) else ""
            into = None
            if "active offsets at start of reading" in event and not reading:
                into = reading
            elif "Highwater for active changelog partitions" in event and not highwater:
                into = highwater
            elif "Recovery complete" in event and done is None:
                done = entry["timestamp"]
            if into is not None:
                started = started or entry["timestamp"]
                topic = ""
                for row in event.splitlines():
                    cells = [c.strip() for c in row.strip("|").split("|")]
                    if len(cells) == 3 and cells[1].isdigit():
                        topic = topic if cells[0] == "\u3003" else cells[0]
                        into[(topic, int(cells[1]))] = int(cells[2])
    span = sum(max(0, end - reading.get(tp, -1)) for tp, end in highwater.items())
    seconds = (
        (datetime.fromisoformat(done) - datetime.fromisoformat(started)).total_seconds()
        if started and done
        else float("nan")
    )
    return {"changelog_offsets_read": span, "recovery_s": round(seconds, 2)}


async def evaluations(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        value: int = await conn.fetchval("SELECT count(*) FROM evaluations")
        return value
    finally:
        await conn.close()


async def changelog(settings: Settings) -> dict[str, float]:
    """Records and bytes of the ledgers changelog, and the ledgers left once compacted."""
    topic = f"{settings.group_id}-ledgers-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    latest: dict[bytes, bool] = {}
    records = size = tombstones = 0
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for m in batch:
                    records += 1
                    size += len(m.value or b"") + len(m.key or b"")
                    tombstones += m.value is None
                    latest[m.key] = m.value is not None
    finally:
        await consumer.stop()
    return {
        "changelog_records": records,
        "changelog_mb": round(size / 1e6, 1),
        "tombstones": tombstones,
        "ledgers_live": sum(latest.values()),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base = base_settings()
    tag = f"rc-{uuid.uuid4().hex[:8]}"
    settings = isolated(
        base, tag, database=f"tipstream_{tag.replace('-', '_')}", log_format="json",
        ledger_retention_days=args.retention_days, ledger_segment_seconds=args.segment_seconds,
        table_store=args.store, table_dir=str(Path(args.log_dir) / f"{tag}-tables"),
    )  # fmt: skip
    log = Path(args.log_dir) / f"{tag}.log"
    await create(settings, base)
    worker = start_worker(settings, log)
    try:
        wait_ready(settings, worker, 120)
        replay_args = ["--data", *map(str, sorted((REPO / "data/football").glob("*.csv")))]
        if args.start:
            replay_args += ["--from", args.start]
        spy = start_profiler(worker.pid, args.profile) if args.profile else None
        t0 = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streams.cli", "replay", *replay_args, "--progress", "log"],
            cwd=REPO, env=environment(settings), capture_output=True, text=True, check=True,
        )  # fmt: skip
        published = int(done.stdout.strip().splitlines()[-1].split("published=")[1].split()[0])
        matches = published // 2
        while await evaluations(settings) < matches * MODELS:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {log}")
            await asyncio.sleep(1.0)
        processed_s = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(60)
        await asyncio.sleep(3.0)  # the last batch's changelog writes and offsets
        rss_after_replay = rss_mb(worker.pid)
        stop_worker(worker)
        await asyncio.sleep(args.settle)  # time for the broker's log cleaner, if asked
        figures = await changelog(settings)
        since = log.stat().st_size
        worker = start_worker(settings, log)
        to_ready = wait_ready(settings, worker, 600)
        read_back = recovery(log, since)
        rss_ready = rss_mb(worker.pid)
        local: dict[str, float] = {}
        if args.store == "rocksdb":
            await asyncio.sleep(3.0)
            stop_worker(worker)
            local["table_dir_mb"] = round(disk_mb(table_data_dir(settings)), 1)
            shutil.rmtree(table_data_dir(settings))
            since = log.stat().st_size
            worker = start_worker(settings, log)
            local["cold_restart_to_ready_s"] = round(wait_ready(settings, worker, 600), 2)
            cold = recovery(log, since)
            local["cold_changelog_offsets_read"] = cold["changelog_offsets_read"]
            local["cold_recovery_s"] = cold["recovery_s"]
            local["rss_at_cold_ready_mb"] = round(rss_mb(worker.pid))
        return {
            "store": args.store,
            "matches": matches,
            "evaluations_per_s": round(matches * MODELS / processed_s, 1),
            "retention_days": args.retention_days,
            "segment_seconds": args.segment_seconds,
            "settle_s": args.settle,
            "replay_and_processing_s": round(processed_s, 1),
            "rss_after_replay_mb": round(rss_after_replay),
            "restart_to_ready_s": round(to_ready, 2),
            **read_back,
            "rss_at_ready_mb": round(rss_ready),
            **figures,
            **local,
        }
    finally:
        if worker.poll() is None:
            stop_worker(worker)
        if not args.keep:
            await remove(settings, base)
            shutil.rmtree(settings.table_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="start", help="first kickoff date of the replay")
    parser.add_argument("--retention-days", type=int, default=30)
    parser.add_argument("--segment-seconds", type=int, default=3600)
    parser.add_argument("--settle", type=float, default=0.0, help="seconds before the restart")
    parser.add_argument("--store", choices=TABLE_STORES, default="memory", help="table store")
    parser.add_argument("--log-dir", default="/tmp")
    parser.add_argument("--keep", action="store_true", help="leave the deployment in place")
    parser.add_argument("--profile", help="py-spy's collapsed stacks of the worker, to this file")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
