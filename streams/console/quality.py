"""The quality panel: each model's rolling log loss, RPS and accuracy over the decay monitor's
window of current evaluations (kickoff order), with a 95% band. The market references
(``market-open``, ``market-close``) are the opening and closing lines every model is read
against. The plot is a server-side matplotlib SVG."""

from __future__ import annotations

import io
from typing import Any

from streams.console import rules

METRICS = ("log_loss", "rps", "accuracy")


async def evaluations(conn: Any, per_model: int) -> dict[str, list[dict[str, Any]]]:
    """The newest ``per_model`` current evaluations of each model, in kickoff order."""
    rows = await conn.fetch(
        """SELECT model_id, kickoff, log_loss, rps, hit FROM (
               SELECT model_id, kickoff, log_loss, rps, hit, row_number() OVER (
                   PARTITION BY model_id ORDER BY kickoff DESC, evaluation_id DESC) AS n
               FROM evaluations WHERE superseded_by IS NULL) e
           WHERE n <= $1 ORDER BY model_id, kickoff""",
        per_model,
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["model_id"], []).append(dict(row))
    return out


def series(rows: list[dict[str, Any]], metric: str) -> list[float]:
    if metric == "accuracy":
        return [1.0 if r["hit"] else 0.0 for r in rows]
    return [float(r[metric]) for r in rows]


def summary(by_model: dict[str, list[dict[str, Any]]], window: int) -> list[dict[str, Any]]:
    """Per model: matches in the window, and each metric's rolling mean and band at the end."""
    out = []
    for model_id, rows in sorted(by_model.items()):
        item: dict[str, Any] = {"model_id": model_id, "matches": min(len(rows), window)}
        for metric in METRICS:
            item[metric] = rules.rolling(series(rows, metric), window)[-1]
        out.append(item)
    return out


def svg(by_model: dict[str, list[dict[str, Any]]], window: int) -> bytes:
    """Rolling log loss per model against kickoff, each with its band, as SVG."""
    from matplotlib.figure import Figure  # slow to import: only when the plot is drawn

    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.add_subplot()
    for model_id, rows in sorted(by_model.items()):
        bands = rules.rolling(series(rows, "log_loss"), window)
        kickoffs = [r["kickoff"] for r in rows]
        style = "--" if model_id.startswith("market-") else "-"
        (line,) = axes.plot(kickoffs, [b.mean for b in bands], style, label=model_id)
        axes.fill_between(
            kickoffs,
            [b.low for b in bands],
            [b.high for b in bands],
            alpha=0.15,
            color=line.get_color(),
        )
    axes.set_ylabel(f"log loss (rolling {window})")
    axes.grid(alpha=0.3)
    if by_model:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no evaluations yet", ha="center", transform=axes.transAxes)
    figure.autofmt_xdate()
    out = io.BytesIO()
    figure.savefig(out, format="svg")
    return out.getvalue()
