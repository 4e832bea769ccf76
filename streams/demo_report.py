"""The demo's report: the ``SUMMARY`` line, a Markdown table and a PNG, from the evaluation log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from models import catalog
from streams.db import connect
from streams.settings import Settings

ROLLING = 300
"""Evaluations per point of the rolling log loss: about a season of one league."""


async def summarise(
    settings: Settings, out: Path, matches: int, counts: dict[str, int]
) -> tuple[str, Path]:
    """Build the report folder; return the SUMMARY line and the folder."""
    pool = await connect(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            per_model = await conn.fetch(
                """SELECT model_id, count(*) AS n, avg(log_loss) AS log_loss, avg(rps) AS rps,
                          avg(brier) AS brier, avg(hit::int) AS accuracy
                   FROM evaluations WHERE superseded_by IS NULL
                   GROUP BY model_id ORDER BY avg(log_loss)""")
            champion = await conn.fetchval(
                "SELECT avg(log_loss) FROM evaluations WHERE superseded_by IS NULL "
                "AND is_champion")
            series = await conn.fetch(
                """SELECT model_id, kickoff, log_loss FROM evaluations
                   WHERE superseded_by IS NULL ORDER BY kickoff, match_id""")
            alerts = await conn.fetch(
                """SELECT a.kind, a.model_id, a.scope, a.metric, a.state, a.message,
                          e.kickoff
                   FROM alerts a LEFT JOIN evaluations e
                        ON e.evaluation_id = a.last_evaluation_id
                   ORDER BY e.kickoff NULLS LAST""")
            alert_count = await conn.fetchval("SELECT count(*) FROM alerts")
    finally:
        await pool.close()
    by_model = {row["model_id"]: row for row in per_model}
    summary = (
        f"SUMMARY matches={matches} predictions={counts['predictions']} "
        f"evaluations={counts['evaluations']} alerts={alert_count} models={counts['models']} "
        f"champion_logloss={_fmt(champion)} "
        f"online_logloss={_fmt(_mean(by_model, catalog.DEFAULT_MODEL_ID))} "
        f"market_open_logloss={_fmt(_mean(by_model, 'market-open'))} "
        f"market_close_logloss={_fmt(_mean(by_model, 'market-close'))}"
    )
    out.mkdir(parents=True, exist_ok=True)
    plot(series, alerts, out / "rolling_logloss.png")
    (out / "summary.md").write_text(markdown(per_model, alerts, summary))
    return summary, out


def _mean(by_model: dict[str, Any], model_id: str) -> float | None:
    row = by_model.get(model_id)
    return None if row is None else float(row["log_loss"])


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def markdown(per_model: list[Any], alerts: list[Any], summary: str) -> str:
    lines = ["# tipstream demo", "", "```", summary, "```", "",
             "| model | evaluations | log loss | RPS | Brier | accuracy |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model_id']} | {r['n']} | {r['log_loss']:.4f} | {r['rps']:.4f} | "
              f"{r['brier']:.4f} | {r['accuracy']:.3f} |" for r in per_model]
    lines += ["", f"## Alerts ({len(alerts)})", ""]
    lines += [f"- {a['kickoff']:%Y-%m-%d} {a['kind']} ({a['state']}): {a['message']}"
              if a["kickoff"] else f"- {a['kind']} ({a['state']}): {a['message']}"
              for a in alerts]
    lines += ["", "![rolling log loss](rolling_logloss.png)", ""]
    return "\n".join(lines)


def plot(series: list[Any], alerts: list[Any], path: Path) -> None:
    """Rolling log loss per model over kickoff time, alerts marked on the same axis."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [4, 1]})
    models = sorted({row["model_id"] for row in series})
    for model_id in models:
        rows = [r for r in series if r["model_id"] == model_id]
        if len(rows) < ROLLING:
            continue
        losses = np.array([r["log_loss"] for r in rows])
        rolling = np.convolve(losses, np.ones(ROLLING) / ROLLING, mode="valid")
        times = [r["kickoff"] for r in rows][ROLLING - 1:]
        style = "--" if model_id.startswith("market") else "-"
        top.plot(times, rolling, style, label=model_id, linewidth=1.4)
    top.set_ylabel(f"log loss (rolling {ROLLING})")
    top.set_title("Rolling log loss per model against the market")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    colours = {"decay": "tab:red", "recovery": "tab:green", "drift": "tab:orange",
               "promotion": "tab:purple"}
    for index, kind in enumerate(colours):
        times = [a["kickoff"] for a in alerts if a["kind"] == kind and a["kickoff"]]
        bottom.scatter(times, [index] * len(times), color=colours[kind], s=14, label=kind)
    bottom.set_yticks(range(len(colours)), list(colours))
    bottom.set_xlabel("kickoff")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
