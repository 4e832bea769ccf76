"""The demo's report: the ``SUMMARY`` line, a Markdown table and a PNG, from the evaluation log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from agents import reconciler_store
from models import betting, catalog
from streams.cli.demo import Incident
from streams.db import connect
from streams.settings import Settings

ROLLING = 500
"""Evaluations per point of the rolling log loss: about six weeks of the five leagues. The
standard error of a mean log loss over 500 matches is ~0.01, the size of the gaps between
models, so a shorter window draws mostly noise."""
SEASON_BREAK = timedelta(days=30)
"""A gap in kickoffs longer than this (the summer) breaks the lines instead of bridging it."""
ALERT_KINDS = {
    "decay": ("tab:red", "o"),
    "recovery": ("tab:green", "o"),
    "drift": ("tab:orange", "s"),
    "promotion": ("tab:purple", "^"),
    "estimate": ("tab:brown", "D"),
}
"""Colour and marker of each alert kind (estimates small, so a decay or a recovery on the same
day stays visible)."""


@dataclass
class Report:
    """What the report shows, read from the database in one go."""

    counts: dict[str, int]
    per_model: list[Any]
    champion_logloss: float | None
    series: list[Any]
    alerts: list[Any]
    bets: list[Any]
    """Per current evaluation: model, kickoff, outcome, its prediction and the match's odds."""
    incident: Incident | None = None
    incident_rows: list[Any] = field(default_factory=list)
    """The incident model's current evaluations in kickoff order, each with the learned count
    of the version that made its prediction (what decides whether it was broken)."""

    def story(self) -> IncidentStory | None:
        return None if self.incident is None else incident_story(self)

    def mean(self, model_id: str) -> float | None:
        row = next((r for r in self.per_model if r["model_id"] == model_id), None)
        return None if row is None else float(row["log_loss"])

    def summary(self) -> str:
        """The ``SUMMARY`` line (its format is fixed: scripts parse it)."""
        c = self.counts
        return (
            f"SUMMARY matches={c['matches']} predictions={c['predictions']} "
            f"evaluations={c['evaluations']} alerts={c['alerts']} "
            f"alerts_decay={c['alerts_decay']} alerts_recovery={c['alerts_recovery']} "
            f"alerts_drift={c['alerts_drift']} models={c['models']} "
            f"champion_logloss={_fmt(self.champion_logloss)} "
            f"online_logloss={_fmt(self.mean(catalog.DEFAULT_MODEL_ID))} "
            f"market_open_logloss={_fmt(self.mean('market-open'))} "
            f"market_close_logloss={_fmt(self.mean('market-close'))}"
        )


@dataclass(frozen=True)
class ScopeStory:
    """The incident in one monitor scope: the first decay alert after it broke and the first
    recovery after that, each with how many of the scope's evaluations it took."""

    scope: str
    broken: int
    decay: datetime | None
    decay_after: int | None
    """Broken evaluations of the scope up to the decay alert's last one, that one included."""
    recovery: datetime | None
    recovery_after: int | None
    """Healthy evaluations of the scope after its last broken one, up to the recovery's last."""


@dataclass(frozen=True)
class IncidentStory:
    """When the incident model broke and mended (kickoffs of its evaluations), per scope."""

    broke: datetime | None
    mended: datetime | None
    broken: int
    scopes: list[ScopeStory]
    others: list[Any]
    """The incident model's alerts the table does not show (drift, estimates...)."""


def incident_story(report: Report) -> IncidentStory:
    """Read the incident back from the evaluation log: an evaluation is broken when the version
    that predicted it had learned a count in the incident's range (``models.incident``)."""
    assert report.incident is not None
    first, last = report.incident.first, report.incident.last
    rows = report.incident_rows
    broken = [r["learned"] is not None and first <= r["learned"] < last for r in rows]
    hit = [i for i, b in enumerate(broken) if b]
    mine = [a for a in report.alerts if a["model_id"] == catalog.INCIDENT_MODEL_ID]
    shown: list[Any] = []
    scopes = []
    for scope in ["all", *sorted({f"league:{r['league']}" for r in rows})]:
        inside = [
            i for i, r in enumerate(rows) if scope == "all" or scope == f"league:{r['league']}"
        ]
        # By match: an alert's last evaluation may have been superseded since (a re-issued
        # fixture's prediction replaced the one the monitor was fed, which is never fed
        # again), and the model has one current evaluation per match.
        position = {rows[i]["match_id"]: n for n, i in enumerate(inside)}
        flags = [broken[i] for i in inside]
        if True not in flags:
            continue
        b0 = flags.index(True)
        b1 = len(flags) - 1 - flags[::-1].index(True)
        decay = next(
            (a for a in mine if a["scope"] == scope and a["kind"] == "decay"
             and position.get(a["match_id"], -1) >= b0),
            None,
        )  # fmt: skip
        recovery = None
        if decay is not None:
            after = position[decay["match_id"]]
            recovery = next(
                (a for a in mine if a["scope"] == scope and a["kind"] == "recovery"
                 and position.get(a["match_id"], -1) > after),
                None,
            )  # fmt: skip
        shown += [a for a in (decay, recovery) if a is not None]
        scopes.append(
            ScopeStory(
                scope=scope,
                broken=sum(flags),
                decay=None if decay is None else decay["kickoff"],
                decay_after=None if decay is None else position[decay["match_id"]] - b0 + 1,
                recovery=None if recovery is None else recovery["kickoff"],
                recovery_after=(None if recovery is None else position[recovery["match_id"]] - b1),
            )
        )
    mended = hit[-1] + 1 if hit and hit[-1] + 1 < len(rows) else None
    return IncidentStory(
        broke=rows[hit[0]]["kickoff"] if hit else None,
        mended=None if mended is None else rows[mended]["kickoff"],
        broken=len(hit),
        scopes=scopes,
        others=[a for a in mine if not any(a is b for b in shown)],
    )


async def collect(settings: Settings, incident: Incident | None = None) -> Report:
    """Every figure from the database the workers wrote: the line reports what the evaluation
    log holds, not what the demo expected."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            counts = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM results) AS matches,
                          (SELECT count(DISTINCT (match_id, model_id)) FROM predictions)
                              AS predictions,
                          (SELECT count(*) FROM evaluations WHERE superseded_by IS NULL)
                              AS evaluations,
                          (SELECT count(*) FROM alerts) AS alerts,
                          (SELECT count(*) FROM alerts WHERE kind = 'decay') AS alerts_decay,
                          (SELECT count(*) FROM alerts WHERE kind = 'recovery')
                              AS alerts_recovery,
                          (SELECT count(*) FROM alerts WHERE kind = 'drift') AS alerts_drift,
                          (SELECT count(*) FROM models WHERE status <> 'retired') AS models"""
            )
            per_model = await conn.fetch(
                """SELECT e.model_id, m.status, count(*) AS n, avg(log_loss) AS log_loss,
                          avg(rps) AS rps, avg(brier) AS brier, avg(hit::int) AS accuracy
                   FROM evaluations e LEFT JOIN models m USING (model_id)
                   WHERE superseded_by IS NULL
                   GROUP BY e.model_id, m.status ORDER BY avg(log_loss)"""
            )
            champion = await conn.fetchval(
                "SELECT avg(log_loss) FROM evaluations WHERE superseded_by IS NULL AND is_champion"
            )
            series = await conn.fetch(
                """SELECT model_id, match_id, kickoff, log_loss FROM evaluations
                   WHERE superseded_by IS NULL ORDER BY kickoff, match_id"""
            )
            # An alert's event time: the kickoff of the evaluation that raised it; for those
            # raised by a periodic check (promotion), of the last evaluation made before it.
            alerts = await conn.fetch(
                """SELECT a.kind, a.model_id, a.scope, a.metric, a.state, a.message,
                          COALESCE(e.kickoff, (SELECT max(kickoff) FROM evaluations
                                               WHERE evaluated_at <= a.created_at)) AS kickoff,
                          a.last_evaluation_id, e.match_id
                   FROM alerts a LEFT JOIN evaluations e
                        ON e.evaluation_id = a.last_evaluation_id
                   ORDER BY 7 NULLS LAST, a.alert_id"""
            )
            bets = await reconciler_store.bet_rows(conn)
            incident_rows = await conn.fetch(
                """SELECT e.evaluation_id, e.match_id, e.league, e.kickoff, v.learned
                   FROM evaluations e LEFT JOIN model_versions v
                        ON v.model_id = e.model_id AND v.version = e.model_version
                   WHERE e.model_id = $1 AND e.superseded_by IS NULL
                   ORDER BY e.kickoff, e.match_id""",
                catalog.INCIDENT_MODEL_ID,
            )
    finally:
        await pool.close()
    return Report(
        dict(counts),
        list(per_model),
        champion,
        list(series),
        list(alerts),
        list(bets),
        incident,
        list(incident_rows) if incident is not None else [],
    )


async def summarise(
    settings: Settings, out: Path, incident: Incident | None = None
) -> tuple[str, Path]:
    """Build the report folder; return the SUMMARY line and the folder."""
    report = await collect(settings, incident)
    write(report, out)
    return report.summary(), out


def write(report: Report, out: Path) -> None:
    """``rolling_logloss.png`` and ``summary.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    story = report.story()
    plot(
        report.series,
        report.alerts,
        out / "rolling_logloss.png",
        {r["model_id"]: r["status"] for r in report.per_model},
        span=None if story is None or story.broke is None else (story.broke, story.mended),
    )
    (out / "summary.md").write_text(markdown(report))


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def markdown(report: Report) -> str:
    lines = [
        "# tipstream demo",
        "",
        "```",
        report.summary(),
        "```",
        "",
        "Prequential: every prediction was made before its match's result was published, "
        "by the model version current at that moment.",
        "",
        "| model | status | evaluations | log loss | RPS | Brier | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model_id']} | {r['status']} | {r['n']} | {r['log_loss']:.4f} | "
        f"{r['rps']:.4f} | {r['brier']:.4f} | {r['accuracy']:.3f} |"
        for r in report.per_model
    ]
    lines += ["", "## Betting at the opening odds", ""]
    lines += [
        f"Flat one-unit value bets where p * opening odds - 1 > {betting.DEFAULT_THRESHOLD}; "
        f"Kelly growth at {betting.DEFAULT_KELLY} Kelly; ROI interval: 95% bootstrap over "
        "match days; CLV against the normalised closing line (models.betting). "
        "market-open-favourite backs the opening favourite every match.",
        "",
        "| model | bets | ROI | ROI 95% | Kelly growth | CLV |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {model_id} | {s.bets} | {s.roi:.4f} | {s.roi_lo:.4f} .. {s.roi_hi:.4f} | "
        f"{s.kelly_growth:.4f} | {s.clv:.4f} |"
        for model_id, s in betting.table(betting.BetLog.from_rows(report.bets))
    ]
    lines += incident_markdown(report)
    lines += ["", f"## Alerts ({len(report.alerts)})", ""]
    lines += [
        f"- {a['kickoff']:%Y-%m-%d} {a['kind']} ({a['state']}): {a['message']}"
        if a["kickoff"]
        else f"- {a['kind']} ({a['state']}): {a['message']}"
        for a in report.alerts
    ]
    lines += ["", "![rolling log loss](rolling_logloss.png)", ""]
    return "\n".join(lines)


def _day(value: datetime | None) -> str:
    return "none" if value is None else f"{value:%Y-%m-%d}"


def incident_markdown(report: Report) -> list[str]:
    """The "Incident" section: when it broke, when each scope's decay fired and after how many
    evaluations, when the recovery came; nothing when the demo ran with ``--no-incident``."""
    story = report.story()
    if story is None or report.incident is None:
        return []
    lines = [
        "",
        "## Incident",
        "",
        f"Scripted (`--incident {report.incident.start}:{report.incident.end}`; "
        f"`--no-incident` leaves it out): {report.incident.describe()}. "
        f"Read back from the evaluation log: {story.broken} broken evaluations, kickoffs from "
        f"{_day(story.broke)}; healthy again from {_day(story.mended)} (a prediction is made by "
        "the version the scorer holds, a few learned examples behind the learner). It learns "
        "every result from the right inputs; only its predictions read them the wrong way round, "
        "so outside the incident it is the champion's model.",
        "",
        "The monitor's alerts on it, per scope (the paired test against the opening line fires "
        "within a few broken evaluations; a recovery needs a full window of healthy ones):",
        "",
        "| scope | broken evaluations | decay fired | after broken evaluations | recovery | "
        "after healthy evaluations |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.scope} | {s.broken} | {_day(s.decay)} | {_count(s.decay_after)} | "
        f"{_day(s.recovery)} | {_count(s.recovery_after)} |"
        for s in story.scopes
    ]
    if story.others:
        lines += ["", f"Its other alerts ({len(story.others)}):", ""]
        lines += [f"- {_day(a['kickoff'])} {a['kind']}: {a['message']}" for a in story.others]
    return lines


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing means over ``window`` values (one per value from the ``window``-th on)."""
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _broken(times: list[datetime], values: np.ndarray) -> tuple[list[datetime], np.ndarray]:
    """The series with a gap (NaN) inserted at each summer break, so no line bridges it."""
    out_t: list[datetime] = []
    out_v: list[float] = []
    for index, (t, v) in enumerate(zip(times, values, strict=True)):
        if index and t - times[index - 1] > SEASON_BREAK:
            out_t.append(times[index - 1] + (t - times[index - 1]) / 2)
            out_v.append(float("nan"))
        out_t.append(t)
        out_v.append(float(v))
    return out_t, np.array(out_v)


def by_match(series: list[Any]) -> tuple[list[datetime], dict[str, np.ndarray]]:
    """Log loss per model on the matches every model was evaluated on, in kickoff order."""
    losses: dict[str, dict[str, float]] = {}
    kickoffs: dict[str, datetime] = {}
    for row in series:
        losses.setdefault(row["model_id"], {})[row["match_id"]] = row["log_loss"]
        kickoffs[row["match_id"]] = row["kickoff"]
    shared = set.intersection(*(set(v) for v in losses.values())) if losses else set()
    matches = sorted(shared, key=lambda m: (kickoffs[m], m))
    return (
        [kickoffs[m] for m in matches],
        {model: np.array([v[m] for m in matches]) for model, v in losses.items()},
    )


FEATURES_ROW = "input features"
"""The alerts row of the feature drift monitor, whose alerts are about no model."""


def _style(model_id: str) -> dict[str, Any]:
    market = {"market-open": "0.5", "market-close": "black"}
    if model_id in market:
        return {"linestyle": "--", "linewidth": 1.8, "color": market[model_id]}
    return {"linestyle": "-", "linewidth": 1.3}


def plot(
    series: list[Any],
    alerts: list[Any],
    path: Path,
    status: dict[str, str] | None = None,
    *,
    span: tuple[datetime, datetime | None] | None = None,
) -> None:
    """Rolling log loss per model and its gap to the opening line; alerts on the same axis;
    ``span`` (broke, mended) shaded on every panel: the scripted incident."""
    status = status or {}
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(12, 10), sharex=True, gridspec_kw={"height_ratios": [3, 2.2, 1.3]}
    )
    times, losses = by_match(series)
    models = sorted(losses, key=lambda m: (m.startswith("market"), m))
    window = min(ROLLING, len(times))
    if window >= 2:
        shown = times[window - 1 :]
        baseline = losses.get("market-open")
        for model_id in models:
            label = f"{model_id} ({status[model_id]})" if model_id in status else model_id
            top.plot(
                *_broken(shown, rolling(losses[model_id], window)), label=label, **_style(model_id)
            )
            if baseline is not None:
                middle.plot(
                    *_broken(shown, rolling(losses[model_id] - baseline, window)),
                    **_style(model_id),
                )
        # The whole replay on the axis: the first weeks are blank while the window fills.
        top.set_xlim(times[0], times[-1])
    top.set_title(
        f"Prequential log loss per model against the bookmakers' lines: mean over "
        f"the last {window} matches (lower is better)",
        fontsize=11,
    )
    top.set_ylabel("log loss")
    low, high = top.get_ylim()
    top.set_ylim(low, high + 0.3 * (high - low))  # room for the legend above the lines
    middle.axhline(0.0, color="0.5", linewidth=0.8)
    middle.set_title(
        "The same, minus the opening line's log loss on the same matches "
        "(below 0: better than the market when the prediction was made)",
        fontsize=10,
    )
    middle.set_ylabel("log loss - opening line")
    # Alerts about no model (the feature drift monitor's) get a row of their own.
    labels = [*models, FEATURES_ROW] if any(a["model_id"] is None for a in alerts) else models
    rows_of: dict[str | None, int] = {model_id: index for index, model_id in enumerate(models)}
    if len(labels) > len(models):
        rows_of[None] = len(models)
    for kind, (colour, marker) in ALERT_KINDS.items():
        hits = [
            a for a in alerts if a["kind"] == kind and a["kickoff"] and a["model_id"] in rows_of
        ]
        bottom.scatter(
            [a["kickoff"] for a in hits],
            [rows_of[a["model_id"]] for a in hits],
            color=colour,
            marker=marker,
            s=12 if kind == "estimate" else 28,
            zorder=3 if kind == "estimate" else 2,
            label=f"{kind} ({len(hits)})",
        )
    bottom.set_yticks(range(len(labels)), labels, fontsize=8)
    bottom.set_ylim(-0.7, len(labels) - 0.3)
    bottom.set_title(
        "Alerts per model (and the feature drift monitor's), at the replay's event time when "
        "they were raised",
        fontsize=10,
    )
    bottom.legend(loc="upper left", fontsize=8, ncol=len(ALERT_KINDS), bbox_to_anchor=(0, -0.28))
    bottom.set_xlabel("kickoff")
    for axis in (top, middle, bottom):
        axis.grid(alpha=0.3)
        if span is not None:
            axis.axvspan(
                span[0],
                span[1] or times[-1],
                color="tab:red",
                alpha=0.12,
                label=f"incident: {catalog.INCIDENT_MODEL_ID}'s inputs mirrored"
                if axis is top
                else None,
            )
    top.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
