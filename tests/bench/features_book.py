"""The features agent's league books, in-process: ``python -m tests.bench.features_book``.

Feeds one league's fixtures and results (default the Premier League, 5,782 matches) through
``agents.features_rules.apply_input`` as the router delivers them in a replay: event-time
order, each fact on the partition its match id hashes to (two partitions). Between batches of
``--batch`` facts the book is encoded and decoded again, as a worker did before it kept its
decoded books (``--keep``: the book stays in memory, as the worker does now). ``--lag N`` reads
partition 1 ``N`` facts behind partition 0 in fetches of 100 (the uneven reads of a fast
backfill, where each late result re-issues every open fixture after it). Prints one
``FEATURES`` line: facts, features issued, CPU microseconds per fact (``time.process_time``).
"""

from __future__ import annotations

import argparse
import time
import zlib
from datetime import UTC, datetime

from agents.features_rules import (
    LeagueBook,
    apply_input,
    decode_book,
    encode_book,
    league_input,
    router_sources,
    source_of,
)
from models.features import RESULT_DELAY, fixture_of, result_event
from models.timeline import FIXTURE_LEAD
from schemas.events import Fixture, MatchResult
from schemas.football_csv import league_file, read_rows

FETCH = 100

Timed = tuple[datetime, int, Fixture | MatchResult]


def replay_order(league: str) -> list[Timed]:
    """Every fact of the league with its event time and partition, in event-time order."""
    timed: list[tuple[tuple[datetime, int, str], Timed]] = []
    for row in read_rows([league_file(league)]).rows:
        partition = zlib.crc32(row.match_id.encode()) % 2
        fixture_at = row.kickoff - FIXTURE_LEAD
        result_at = row.kickoff + RESULT_DELAY
        timed.append(((fixture_at, 1, row.match_id), (fixture_at, partition, fixture_of(row))))
        timed.append(((result_at, 0, row.match_id), (result_at, partition, result_event(row))))
    timed.sort(key=lambda item: item[0])
    return [fact for _, fact in timed]


def lagging(facts: list[Timed], lag: int) -> list[Timed]:
    """Partition 1 read ``lag`` facts behind partition 0, a fetch of 100 at a time."""
    first = [fact for fact in facts if fact[1] == 0]
    second = [fact for fact in facts if fact[1] == 1]
    out: list[Timed] = []
    i = j = 0
    while i < len(first) or j < len(second):
        if i < len(first) and (i < j + lag or j >= len(second)):
            out.extend(first[i : i + FETCH])
            i += FETCH
        else:
            out.extend(second[j : j + FETCH])
            j += FETCH
    return out


def run(facts: list[Timed], league: str, batch: int, keep: bool) -> tuple[int, float]:
    """Features issued and CPU seconds for feeding ``facts`` to one book."""
    sources = router_sources(2)
    now = datetime.now(UTC)
    book = LeagueBook.new(league)
    issued = 0
    started = time.process_time()
    for step, (at, partition, fact) in enumerate(facts):
        if not keep and step % batch == 0:
            book = decode_book(encode_book(book))
        item = league_input(fact, at, source_of(isinstance(fact, Fixture), partition))
        issued += len(apply_input(book, item, now=now, sources=sources).features)
    return issued, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--league", default="england-premier-league")
    parser.add_argument("--batch", type=int, default=50, help="facts between decodes")
    parser.add_argument("--keep", action="store_true", help="never decode: the kept book")
    parser.add_argument("--lag", type=int, default=0, help="partition 1's lag, in facts")
    args = parser.parse_args()
    facts = replay_order(args.league)
    if args.lag:
        facts = lagging(facts, args.lag)
    issued, cpu = run(facts, args.league, args.batch, args.keep)
    print(
        f"FEATURES facts={len(facts)} features={issued} batch={args.batch} keep={args.keep} "
        f"lag={args.lag} cpu_us_per_fact={cpu / len(facts) * 1e6:.1f}"
    )


if __name__ == "__main__":
    main()
