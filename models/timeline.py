"""The event-time line of historical matches: what a replay publishes, in the order it happened.

A match's features are an event at its kickoff, its result an event ``RESULT_DELAY`` later (the
final whistle). Sorting all events on that line puts a match's result after its own features
and a later match's features after the earlier results they were built from. The replay tool,
``tipstream train`` and the harnesses all take their events from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from models.features import RESULT_DELAY, build_events, fixture_of, result_event
from schemas.events import Fixture, LeagueInput, MatchFeatures, MatchResult
from schemas.football_csv import FootballRow

Kind = Literal["features", "fixture", "result", "warm_up"]
_ORDER: dict[str, int] = {"result": 0, "features": 1, "fixture": 1, "warm_up": 1}
"""At equal times a result is known before features are built (as in ``build_events``)."""
FIXTURE_LEAD = timedelta(minutes=1)
"""How long before kickoff a replay publishes a fixture (its event time): just before, so
a replay keeps the order of the history (a live producer publishes days ahead, and the
service re-issues the features as results come in)."""


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """One event on the replay time line; ``origin`` says where it came from (file:line)."""

    at: datetime
    kind: Kind
    record: MatchFeatures | Fixture | MatchResult | LeagueInput
    origin: str = ""
    # Sorts before other kinds at the same time (a warm-up result, as results do).
    first: bool = False

    @property
    def key(self) -> str:
        return self.record.match_id

    @property
    def sort_key(self) -> tuple[datetime, int, str]:
        return self.at, 0 if self.first else _ORDER[self.kind], self.key


@dataclass(frozen=True)
class Filters:
    """Which matches to replay."""

    leagues: frozenset[str] = frozenset()
    start: date | None = None
    end: date | None = None

    def keep(self, league: str, kickoff: datetime) -> bool:
        return (
            (not self.leagues or league in self.leagues)
            and (self.start is None or kickoff.date() >= self.start)
            and (self.end is None or kickoff.date() <= self.end)
        )


def timeline(rows: Sequence[FootballRow], filters: Filters = Filters()) -> list[TimedEvent]:
    """Every event of the rows in event-time order; features built from earlier results only.

    Features come from ``build_events``, the builder ``tipstream evaluate`` uses, so a replay
    shows the stream exactly the inputs the offline evaluation scored. All rows feed the
    ratings (history before ``--from`` still shapes the features); only matches the filters
    keep are on the returned time line.
    """
    origins = {row.match_id: f"{row.source}:{row.line}" for row in rows}
    events: list[TimedEvent] = []
    for features, result in build_events(rows):
        if filters.keep(features.league, features.kickoff):
            origin = origins[features.match_id]
            events.append(TimedEvent(features.kickoff, "features", features, origin))
            events.append(TimedEvent(result.kickoff + RESULT_DELAY, "result", result, origin))
    events.sort(key=lambda event: event.sort_key)
    return events


def fact_timeline(rows: Sequence[FootballRow], filters: Filters = Filters()) -> list[TimedEvent]:
    """What a live producer publishes, in event-time order: each kept match's fixture
    :data:`FIXTURE_LEAD` before its kickoff and its result at the final whistle. The service's
    features agent computes the features from them (``tipstream replay``).

    With a start date, the kept leagues' matches before it come first as warm-up facts
    (:func:`warm_up`): they build the ratings and are never scored, so, as in :func:`timeline`,
    history before ``--from`` still shapes the features.
    """
    events: list[TimedEvent] = []
    for row in rows:
        if filters.keep(row.league, row.kickoff):
            origin = f"{row.source}:{row.line}"
            events.append(
                TimedEvent(row.kickoff - FIXTURE_LEAD, "fixture", fixture_of(row), origin)
            )
            events.append(
                TimedEvent(row.kickoff + RESULT_DELAY, "result", result_event(row), origin)
            )
    events.sort(key=lambda event: event.sort_key)
    return warm_up(rows, filters) + events


def warm_up(rows: Sequence[FootballRow], filters: Filters) -> list[TimedEvent]:
    """The kept leagues' matches before ``filters.start`` as league inputs marked warm-up,
    in event-time order: the features agent learns them and issues no features."""
    if filters.start is None:
        return []
    start = filters.start
    events: list[TimedEvent] = []
    for row in rows:
        if (not filters.leagues or row.league in filters.leagues) and row.kickoff.date() < start:
            origin = f"{row.source}:{row.line}"
            fixture_at, result_at = row.kickoff - FIXTURE_LEAD, row.kickoff + RESULT_DELAY
            fixture = LeagueInput(fixture=fixture_of(row), event_time=fixture_at, warm_up=True)
            result = LeagueInput(result=result_event(row), event_time=result_at, warm_up=True)
            events.append(TimedEvent(fixture_at, "warm_up", fixture, origin))
            events.append(TimedEvent(result_at, "warm_up", result, origin, first=True))
    events.sort(key=lambda event: event.sort_key)
    return events
