"""The live path equals the offline evaluation (docs/MODELS.md, "The service equals `tipstream
evaluate`"): after ``tipstream replay --sync`` of a history through the features agent,

1. the features the reconciler stored for every match equal ``models.features.build_events``'
   (the builder ``tipstream evaluate`` uses) to 1e-9, and
2. the default model's log loss in the evaluation log equals ``tipstream evaluate``'s on the
   same files, with the same burn-in (each league's first season not scored).

    python -m tests.bench.equivalence                                # all 27,700 matches
    python -m tests.bench.equivalence --leagues england-premier-league

A deployment of its own on the running services (prefix, app id, database, web port), one
worker, the replay, a wait until every match is evaluated by every seeded model, then both
comparisons. Prints one ``EQUIVALENCE`` line last; removes the deployment afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from statistics import fmean

import asyncpg

from models import catalog
from models.evaluate import Entrant, run_prequential, select_leagues
from models.features import build_events
from models.policy import parse as parse_policy
from schemas.codec import decode
from schemas.events import MatchFeatures
from schemas.football_csv import default_data_files, read_rows
from streams.settings import Settings
from tests.deployment import REPO, base_settings, create, environment, isolated, remove

MODELS = 4  # seeded: champion, challenger, two market references
TOLERANCE = 1e-9


def compare_features(
    stored: dict[str, MatchFeatures], offline: dict[str, MatchFeatures]
) -> tuple[float, int]:
    """(largest absolute difference of any feature, matches whose facts or feature names
    differ) between the service's stored features and the offline builder's."""
    worst, mismatched = 0.0, 0
    for match_id, want in offline.items():
        got = stored.get(match_id)
        if got is None or got.features.keys() != want.features.keys():
            mismatched += 1
            continue
        facts = (got.league, got.season, got.kickoff, got.home_team, got.away_team, got.odds_open)
        if facts != (
            want.league,
            want.season,
            want.kickoff,
            want.home_team,
            want.away_team,
            want.odds_open,
        ):
            mismatched += 1
            continue
        worst = max(worst, *(abs(got.features[k] - v) for k, v in want.features.items()))
    return worst, mismatched + len(stored.keys() - offline.keys())


async def reconciled(settings: Settings, matches: int, timeout: float) -> None:
    """Wait until every match has a current evaluation by every seeded model."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(settings.database_url)
    try:
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT count(*) FROM evaluations WHERE superseded_by IS NULL"
            )
            if done >= matches * MODELS:
                return
            await asyncio.sleep(2.0)
    finally:
        await conn.close()
    raise SystemExit(f"equivalence: not every match evaluated within {timeout:.0f} s")


async def service_figures(
    settings: Settings, model_id: str, first_seasons: dict[str, str]
) -> tuple[dict[str, MatchFeatures], float, int]:
    """The stored features, and the model's mean log loss after each league's first season."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = {
            row["match_id"]: decode(row["payload"].encode(), MatchFeatures)
            for row in await conn.fetch(
                "SELECT match_id, payload::text AS payload FROM match_features"
            )
        }
        rows = await conn.fetch(
            """SELECT match_id, league, log_loss FROM evaluations
               WHERE model_id = $1 AND superseded_by IS NULL""",
            model_id,
        )
    finally:
        await conn.close()
    losses = [
        row["log_loss"]
        for row in rows
        if stored[row["match_id"]].season != first_seasons[row["league"]]
    ]
    return stored, fmean(losses), len(losses)


def replay(settings: Settings, data: list[Path], leagues: list[str]) -> float:
    """``tipstream replay --sync`` of the files; its wall time in seconds."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "replay",
            "--data",
            *map(str, data),
            *leagues,
            "--sync",
            "--sync-timeout",
            "600",
        ],
        cwd=REPO,
        env=environment(settings),
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"equivalence: replay failed with exit code {done.returncode}")
    return time.monotonic() - started


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            # Faust writes a data directory into its working directory: keep it out of the repo.
            cwd=log.parent,
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def main(args: argparse.Namespace) -> str:
    base = base_settings()
    tag = f"equiv-{uuid.uuid4().hex[:8]}"
    settings = isolated(
        base, tag, database=f"tipstream_{tag.replace('-', '_')}", commit_interval=0.1
    )
    rows = select_leagues(read_rows(args.data).rows, args.leagues)
    builder_events = list(build_events(rows))
    offline = {features.match_id: features for features, _ in builder_events}
    first_seasons: dict[str, str] = {}
    for features, _ in builder_events:
        known = first_seasons.get(features.league)
        if known is None or features.season < known:
            first_seasons[features.league] = features.season
    model_id = settings.champion_model
    entrant = Entrant(catalog.create(model_id), parse_policy(settings.learning_policy))
    run_prequential(builder_events, [entrant])  # `tipstream evaluate`, the default model
    evaluate_logloss, evaluate_scored = entrant.summary.log_loss, entrant.summary.count

    await create(settings, base)
    worker = start_worker(settings, Path(args.log))
    try:
        leagues = ["--leagues", args.leagues] if args.leagues else []
        seconds = replay(settings, args.data, leagues)
        await reconciled(settings, len(offline), args.timeout)
        stored, service_logloss, service_scored = await service_figures(
            settings, model_id, first_seasons
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        await remove(settings, base)
    worst, mismatched = compare_features(stored, offline)
    return (
        f"EQUIVALENCE matches={len(offline)} features_max_abs_diff={worst:.3g} "
        f"features_mismatched={mismatched} model={model_id} scored={service_scored} "
        f"evaluate_scored={evaluate_scored} service_logloss={service_logloss:.5f} "
        f"evaluate_logloss={evaluate_logloss:.5f} "
        f"logloss_diff={service_logloss - evaluate_logloss:+.5f} replay_s={seconds:.0f} "
        f"replay_eps={2 * len(offline) / seconds:.0f}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.equivalence", description=__doc__)
    parser.add_argument("--data", nargs="+", type=Path, default=default_data_files())
    parser.add_argument("--leagues", help="comma-separated league ids (default: all)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--log", default="reports/equivalence/worker.log")
    return parser.parse_args(argv)


if __name__ == "__main__":
    line = asyncio.run(main(parse_args(sys.argv[1:])))
    print(line, flush=True)
    ok = "features_mismatched=0" in line
    sys.exit(0 if ok else 1)
