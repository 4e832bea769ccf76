"""The reconciler's learn feed (docs/BACKFILL.md, section 3): one learn item per backfill
match and model as soon as features and result are both known, and a forwarded mark that
never claims an item not yet sent."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backfill_rules import marks_key
from agents.learn_feed_rules import (
    LearnMarks,
    decode_marks,
    encode_marks,
    features_sources,
    learn_item_id,
    learn_items,
    pairing,
)
from agents.reconciler import reconcile_batch
from agents.reconciler_rules import MatchLedger
from agents.testing import InMemoryRuntime, MemoryTable
from models.features import RESULT_DELAY, model_input
from schemas.events import LearnItem, MatchFeatures, MatchResult, Odds, Record, Tick
from streams.settings import Settings
from streams.topics import Topics
from tests.unit.examples import PREDICTION

BACKFILL = "feedc0ffee123456"
MODELS = ("online-logreg", "online-rating")
START = datetime(2023, 8, 12, 12, 0, tzinfo=UTC)


def _features(n: int, kickoff: datetime, *, backfill: str | None = BACKFILL) -> MatchFeatures:
    return MatchFeatures(
        match_id=f"england-premier-league:{kickoff:%Y-%m-%d}:home-{n}:away-{n}",
        league="england-premier-league",
        season="2023-2024",
        kickoff=kickoff,
        home_team=f"Home {n}",
        away_team=f"Away {n}",
        odds_open=Odds(home=2.0, draw=3.4, away=4.0),
        features={"elo_diff": float(n)},
        issued_at=kickoff - timedelta(hours=1),
        backfill=backfill,
    )


def _result(f: MatchFeatures, home: int = 2, away: int = 1) -> MatchResult:
    outcome = "H" if home > away else "A" if away > home else "D"
    return MatchResult(
        match_id=f.match_id,
        league=f.league,
        kickoff=f.kickoff,
        home_goals=home,
        away_goals=away,
        outcome=outcome,
    )


def _runtime(partitions: int = 2) -> InMemoryRuntime:
    settings = Settings(partitions=partitions)
    rt = InMemoryRuntime(settings=settings, topics=Topics.from_settings(settings))
    rt.db.answer("FROM models WHERE status", [{"model_id": m} for m in MODELS])
    return rt


def test_a_backfill_ledger_owes_one_item_per_model_once_both_halves_are_known() -> None:
    """Features alone, a result alone or a live match owe nothing; both owe one item per
    model with the match's inputs, its final whistle and the replay id; the same pairing
    again owes nothing, a corrected score owes items with new ids."""
    f = _features(1, START)
    assert learn_items(MatchLedger(features=f), MODELS, before=None) == []
    assert learn_items(MatchLedger(result=_result(f)), MODELS, before=None) == []
    live = MatchLedger(features=_features(1, START, backfill=None), result=_result(f))
    assert pairing(live) is None
    assert learn_items(live, MODELS, before=None) == []
    ledger = MatchLedger(features=f, result=_result(f))
    items = learn_items(ledger, reversed(MODELS), before=None)
    assert [i.model_id for i in items] == sorted(MODELS)
    first = items[0]
    assert first.final_whistle == START + RESULT_DELAY
    assert first.inputs == model_input(f)
    assert (first.backfill, first.outcome, first.home_goals, first.away_goals) == (
        BACKFILL,
        "H",
        2,
        1,
    )
    assert first.item_id == learn_item_id(first.model_id, f.match_id, 2, 1)
    assert learn_items(ledger, MODELS, before=(2, 1)) == []
    corrected = MatchLedger(features=f, result=_result(f, 1, 1))
    again = learn_items(corrected, MODELS, before=(2, 1))
    assert {i.item_id for i in again}.isdisjoint(i.item_id for i in items)
    assert {i.outcome for i in again} == {"D"}


def test_learn_item_ids_are_deterministic_and_distinct() -> None:
    a = learn_item_id("m", "x", 1, 0)
    assert a == learn_item_id("m", "x", 1, 0)
    assert len({a, learn_item_id("m", "x", 0, 1), learn_item_id("n", "x", 1, 0)}) == 3


def test_a_learn_item_refuses_a_whistle_before_its_kickoff() -> None:
    item = learn_items(
        MatchLedger(features=_features(1, START), result=_result(_features(1, START))),
        MODELS[:1],
        before=None,
    )[0]
    raw = msgspec.json.encode(item)
    bad = raw.replace(msgspec.json.encode(item.final_whistle), msgspec.json.encode(item.kickoff), 1)
    with pytest.raises(msgspec.ValidationError, match="final_whistle"):
        msgspec.json.decode(bad, type=LearnItem)


def test_the_mark_is_the_results_mark_or_the_features_mark_plus_a_match() -> None:
    """Unknown until the results and every features source have spoken; then the minimum of
    the results mark and the features mark plus ``RESULT_DELAY``; an older tick lowers
    nothing, an unknown source is refused; the marks survive their encoding."""
    sources = features_sources(2)
    marks = LearnMarks()
    assert marks.through(BACKFILL, sources) is None
    assert marks.observe_results(BACKFILL, START + timedelta(hours=5))
    assert marks.observe_features(BACKFILL, "league-inputs:0", START, sources)
    assert marks.through(BACKFILL, sources) is None  # league-inputs:1 has not spoken
    assert not marks.observe_features(BACKFILL, "league-inputs:7", START, sources)
    assert marks.observe_features(BACKFILL, "league-inputs:1", START + timedelta(days=1), sources)
    assert marks.through(BACKFILL, sources) == START + RESULT_DELAY
    assert marks.observe_features(BACKFILL, "league-inputs:0", START + timedelta(days=1), sources)
    assert marks.through(BACKFILL, sources) == START + timedelta(hours=5)
    assert not marks.observe_results(BACKFILL, START)
    assert marks.through("another-replay", sources) is None
    assert decode_marks(encode_marks(marks)) == marks


async def test_the_reconciler_sends_learn_items_and_forwards_its_mark() -> None:
    """Through the agent: features and result of a backfill match send one item per model
    (read from the registry) keyed by model id; the ticks of the batch raise the partition's
    stored marks and one tick goes to the learn feed as ``reconciler:0``; a repeated batch
    sends nothing more; a tick on predictions is refused, counted, never dead-lettered."""
    rt, table = _runtime(partitions=1), MemoryTable()
    topics = rt.topics
    f = _features(1, START)
    whistle = START + RESULT_DELAY
    events = rt.events(
        (topics.features, f),
        (
            topics.features,
            Tick(
                event_time=START + timedelta(hours=1), backfill=BACKFILL, source="league-inputs:0"
            ),
        ),
        (topics.results, _result(f)),
        (topics.results, Tick(event_time=whistle + timedelta(minutes=1), backfill=BACKFILL)),
        (topics.predictions, Tick(event_time=whistle, backfill=BACKFILL)),
    )
    await rt.drive("reconciler", lambda b: reconcile_batch(rt, table, b), events)
    sent = [(k, r) for t, k, r in rt.published if t == topics.learn_feed]
    assert [k for k, _ in sent] == sorted(MODELS)
    assert all(isinstance(r, LearnItem) and r.match_id == f.match_id for _, r in sent)
    assert rt.counters["learn_items"] == len(MODELS)
    assert rt.ticks == [
        (
            topics.learn_feed,
            Tick(
                event_time=whistle + timedelta(minutes=1), backfill=BACKFILL, source="reconciler:0"
            ),
        )
    ]
    assert rt.counters["ticks_refused:reconciler"] == 1
    assert rt.dead_letters == []
    assert marks_key(0, rt.partition_for) in table
    again = _runtime(partitions=1)
    await again.drive("reconciler", lambda b: reconcile_batch(again, table, b), events)
    assert again.on(topics.learn_feed) == []


def _timeline(
    kickoffs: list[int], sources: list[int], dropped: list[bool]
) -> list[tuple[int, MatchFeatures, bool]]:
    out = []
    for n, (minutes, source, drop) in enumerate(zip(kickoffs, sources, dropped, strict=True)):
        out.append((source, _features(n, START + timedelta(minutes=5 * minutes)), drop))
    return out


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    kickoffs=st.lists(st.integers(0, 400), min_size=1, max_size=14),
    partitions=st.integers(1, 2),
)
async def test_a_forwarded_mark_never_claims_an_item_not_yet_sent(
    data: st.DataObject, kickoffs: list[int], partitions: int
) -> None:
    """The features of each league-inputs source (in kickoff order, each source's tick
    after the features it vouches for), the results (in whistle order, the replay's ticks
    after them) and any interleaving of the streams, in batches of any size: whenever the
    reconciler forwards a mark M, every match whose features were issued and whose final
    whistle is before M has its items sent, each exactly once; a fixture that never got
    features (dead-lettered upstream) gets none and holds nothing back."""
    n = len(kickoffs)
    sources = data.draw(st.lists(st.integers(0, partitions - 1), min_size=n, max_size=n))
    dropped = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    matches = _timeline(kickoffs, sources, dropped)
    rt, table = _runtime(partitions), MemoryTable()
    topics = rt.topics
    streams: list[list[tuple[str, Record]]] = []
    for source in range(partitions):
        mine = sorted(
            (f for s, f, drop in matches if s == source and not drop), key=lambda f: f.kickoff
        )
        stream: list[tuple[str, Record]] = []
        for i, f in enumerate(mine):
            stream.append((topics.features, f))
            if data.draw(st.booleans()):
                # everything of this source kicking off before the next one has been issued
                until = mine[i + 1].kickoff if i + 1 < len(mine) else f.kickoff + timedelta(days=9)
                stream.append(
                    (
                        topics.features,
                        Tick(event_time=until, backfill=BACKFILL, source=f"league-inputs:{source}"),
                    )
                )
        stream.append(
            (
                topics.features,
                Tick(
                    event_time=START + timedelta(days=30),
                    backfill=BACKFILL,
                    source=f"league-inputs:{source}",
                ),
            )
        )
        streams.append(stream)
    results = sorted((_result(f) for _, f, _ in matches), key=lambda r: (r.kickoff, r.match_id))
    stream = []
    for i, r in enumerate(results):
        stream.append((topics.results, r))
        if data.draw(st.booleans()):
            nxt = results[i + 1].kickoff if i + 1 < len(results) else r.kickoff + timedelta(days=9)
            stream.append((topics.results, Tick(event_time=nxt + RESULT_DELAY, backfill=BACKFILL)))
    stream.append((topics.results, Tick(event_time=START + timedelta(days=30), backfill=BACKFILL)))
    streams.append(stream)
    merged: list[tuple[str, Record]] = []
    while any(streams):
        pick = data.draw(st.sampled_from([i for i, s in enumerate(streams) if s]))
        merged.append(streams[pick].pop(0))
    issued = {f.match_id: f for _, f, drop in matches if not drop}
    sent: Counter[tuple[str, str]] = Counter()
    while merged:
        size = data.draw(st.integers(1, len(merged)))
        batch, merged = merged[:size], merged[size:]
        before = len(rt.ticks)
        await rt.drive("reconciler", lambda b: reconcile_batch(rt, table, b), rt.events(*batch))
        for item in rt.on(topics.learn_feed)[sum(sent.values()) :]:
            assert isinstance(item, LearnItem)
            sent[(item.model_id, item.match_id)] += 1
        for _, tick in rt.ticks[before:]:
            owed = {m for m, f in issued.items() if f.kickoff + RESULT_DELAY < tick.event_time}
            assert owed <= {match for (_, match) in sent}, "a mark passed an unsent item"
    assert sent == Counter({(m, match): 1 for m in MODELS for match in issued})
    assert rt.ticks[-1][1].event_time == START + timedelta(days=30)
    assert rt.dead_letters == []


async def test_a_ledger_rebuilt_from_the_log_owes_nothing() -> None:
    """A match whose ledger is not in the table but in the evaluation log (retired, or the
    batch logged before a crash) had its items sent before the log was written: a late
    prediction or the result again sends none."""
    f = _features(1, START)
    r = _result(f)
    late = msgspec.structs.replace(
        PREDICTION, match_id=f.match_id, league=f.league, kickoff=f.kickoff
    )
    for event in (late, r):
        rt = _runtime(partitions=1)
        rt.db.answer("FROM match_features", [{"match_id": f.match_id, "payload": _json(f)}])
        rt.db.answer("FROM results WHERE", [{"match_id": f.match_id, "payload": _json(r)}])
        topic = rt.topics.predictions if event is late else rt.topics.results
        await rt.drive(
            "reconciler",
            lambda b, rt=rt: reconcile_batch(rt, MemoryTable(), b),
            rt.events((topic, event)),
        )
        assert rt.counters["ledgers_rebuilt"] == 1
        assert rt.on(rt.topics.learn_feed) == [], event


def _json(record: Record) -> str:
    return msgspec.json.encode(record).decode()
