"""``tipstream features show --league L [--team T]``: a league's ratings as the service holds them.

Read from the features agent's table changelog (``<app id>-league-books-changelog``), not from
a PostgreSQL snapshot: the changelog *is* the state the worker restores on start, so what this
prints is what the next fixture will be computed from, with no second write path (and no
snapshot lagging or disagreeing with it). The latest record of the league's key wins; the
ratings shown have every result the book knows learned (the settled checkpoint plus the open
results).
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.features import TABLE
from agents.features_rules import LeagueBook, current_state, current_teams, decode_book
from models.features import FORM_WINDOW, TeamState
from streams.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``features`` subcommand."""
    features = subparsers.add_parser("features", help="the team state the features agent holds")
    commands = features.add_subparsers(dest="features_command", required=True)
    show = commands.add_parser("show", help="current ratings of a league (or one team)")
    show.add_argument("--league", required=True)
    show.add_argument("--team", help="only this team (exact name)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    features.set_defaults(func=_features)


def changelog_topic(settings: Settings) -> str:
    """Faust's changelog topic of the league-book table."""
    return f"{settings.group_id}-{TABLE}-changelog"


async def read_book(settings: Settings, league: str, *, timeout: float = 30.0) -> LeagueBook | None:
    """The latest book of ``league`` on the changelog (None if the service never held one)."""
    topic = changelog_topic(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return None
        # Metadata of a topic is kept only once asked for (a subscription would ask too).
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return None
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        key = league.encode()
        latest: bytes | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took more than {timeout:.0f} s")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key == key:
                        latest = record.value  # None: a deleted key
        return decode_book(latest) if latest is not None else None
    finally:
        await consumer.stop()


def render(book: LeagueBook, team: str | None = None) -> list[dict[str, object]]:
    """One row per team of the league's current state, best Elo first."""
    state = current_state(book)
    teams = current_teams(state)
    if team is not None:
        teams = {name: t for name, t in teams.items() if name == team}
    return [_row(name, t) for name, t in sorted(teams.items(), key=lambda kv: -kv[1].elo)]


def _row(name: str, team: TeamState) -> dict[str, object]:
    games = team.form
    ppg = sum(g[0] for g in games) / len(games) if games else None
    return {
        "team": name,
        "elo": round(team.elo, 1),
        "pi_home": round(team.pi_home, 3),
        "pi_away": round(team.pi_away, 3),
        "attack": round(team.log_attack, 3),
        "defence": round(team.log_defence, 3),
        f"ppg_last_{FORM_WINDOW}": None if ppg is None else round(ppg, 2),
        "last_match": team.last_kickoff.isoformat() if team.last_kickoff else None,
        "season": team.last_season,
    }


def _features(args: argparse.Namespace, settings: Settings) -> int:
    book = asyncio.run(read_book(settings, args.league))
    if book is None:
        print(f"tipstream: no state for league {args.league!r} on {changelog_topic(settings)}")
        return 1
    rows = render(book, args.team)
    if args.team is not None and not rows:
        print(f"tipstream: no team {args.team!r} in the current state of {args.league!r}")
        return 1
    state = current_state(book)
    if args.json:
        settled = book.settled_until.isoformat() if book.settled_until else None
        summary = {
            "league": args.league,
            "season": state.season,
            "results": state.applied,
            "settled_until": settled,
        }
        print(json.dumps(summary | {"teams": rows}, indent=2))
        return 0
    print(
        f"{args.league}: season {state.season}, {state.applied} results learned, "
        f"settled up to {book.settled_until.isoformat() if book.settled_until else '-'}"
    )
    print(
        f"{'team':24} {'elo':>7} {'pi_home':>8} {'pi_away':>8} {'attack':>7} {'defence':>8} "
        f"{'ppg':>5}  last match"
    )
    for row in rows:
        ppg = row[f"ppg_last_{FORM_WINDOW}"]
        print(
            f"{row['team']!s:24} {row['elo']:>7} {row['pi_home']:>8} {row['pi_away']:>8} "
            f"{row['attack']:>7} {row['defence']:>8} {'-' if ppg is None else ppg:>5}  "
            f"{row['last_match'] or '-'}"
        )
    return 0
