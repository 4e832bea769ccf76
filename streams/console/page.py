"""The console's HTML, rendered on the server from a snapshot (:mod:`streams.console.data`):
one function per panel, every value escaped. The page polls ``/panels`` every
:data:`POLL_MS` and swaps each panel's HTML; no client-side templating, no framework."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from models import betting
from streams.cli.output import cell
from streams.cli.predictions import EVALUATION_COLUMNS, PREDICTION_COLUMNS

POLL_MS = 2000

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#123;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:1em;
align-items:center}header h1{font-size:1.1em;margin:0}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30em),1fr));gap:1em;
padding:1em}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;
overflow-x:auto}h2{font-size:1em;margin:.2em 0 .5em}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.15em .5em;
border-bottom:1px solid #eee;white-space:nowrap}td.msg{white-space:normal}
.open{color:#b00;font-weight:600}.acknowledged{color:#a60}.resolved{color:#080}
.err{color:#b00}.muted{color:#777}form{display:inline}
"""

SCRIPT = f"""
async function poll(){{
  try{{
    const r=await fetch('/panels',{{cache:'no-store'}});
    if(r.ok){{const p=await r.json();
      for(const k in p){{const e=document.getElementById(k);if(e)e.innerHTML=p[k];}}
      document.getElementById('updated').textContent='updated '+new Date().toLocaleTimeString();}}
  }}catch(e){{document.getElementById('updated').textContent='console unreachable';}}
}}
setInterval(poll,{POLL_MS});
"""


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, raw_last: bool = False) -> str:
    """Rows as an HTML table, each value as the command line prints it (escaped); with
    ``raw_last`` the last column is HTML already built here (an action form)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [f"<td>{escape(cell(v))}</td>" for v in row]
        if raw_last:
            cells[-1] = f"<td>{row[-1]}</td>"
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        return '<p class="muted">none</p>'
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def since_text(seconds: float | None) -> str:
    """How long ago, for a person.

    >>> since_text(4.2), since_text(125), since_text(None)
    ('4 s ago', '2 min ago', 'not seen yet')
    """
    if seconds is None:
        return "not seen yet"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def pipeline_panel(snapshot: Mapping[str, Any]) -> str:
    pipe = snapshot["pipeline"]
    out = ["<h2>Pipeline</h2>"]
    if "error" in pipe:
        out.append(f'<p class="err">{escape(pipe["error"])}</p>')
    else:
        rate = pipe["per_second"]
        out.append(
            f"<p>group <b>{escape(pipe['group'])}</b>: processed "
            f'<b id="processed">{pipe["processed"]}</b>, '
            f'<b id="rate">{"-" if rate is None else f"{rate:.1f}"}</b> events/s, '
            f'total lag <b id="lag">{pipe["total_lag"]}</b>, committed offsets last moved '
            f'<b id="since-commit">{since_text(pipe.get("since_commit_s"))}</b></p>'
        )
        out.append(
            table(
                ((p.topic, p.partition, p.end, p.committed, p.lag) for p in pipe["partitions"]),
                ("topic", "partition", "end offset", "committed", "lag"),
            )
        )
        latest = pipe.get("latest_dead_letters", [])
        out.append("<h2>Latest dead letters</h2>")
        if isinstance(latest, str):
            out.append(f'<p class="err">not read: {escape(latest)}</p>')
        else:
            out.append(
                table(
                    ((d["id"], d["failed_at"], d["topic"], d["key"], d["reason"]) for d in latest),
                    ("id", "failed (UTC)", "topic", "key", "reason"),
                )
            )
    out.append("<h2>Workers</h2>")
    for worker in snapshot["workers"]:
        out.append(f"<p><b>{escape(worker['url'])}</b>")
        if "error" in worker:
            out.append(f' <span class="err">not answering: {escape(worker["error"])}</span></p>')
            continue
        status = worker["status"]
        out.append(f" partitions: {escape(', '.join(status.get('partitions', [])) or '-')}</p>")
        counters = status.get("counters", {})
        out.append(table(sorted(counters.items()), ("counter", "value")))
        letters = worker["dead_letters"]
        out.append("<p>dead letters by reason</p>")
        out.append(
            table(
                ((t, r, n) for (t, r), n in sorted(letters.items())), ("topic", "reason", "count")
            )
        )
    return "".join(out)


def _post(action: str, csrf: str, label: str, css: str, **fields: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    return (
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">{hidden}'
        f'<button type="submit" class="{escape(css)}">{escape(label)}</button></form>'
    )


def models_panel(snapshot: Mapping[str, Any], *, csrf: str = "", actions: bool = False) -> str:
    """The models, champion first; with actions, promote a challenger or roll back."""
    models = snapshot["models"]

    def action(m: Mapping[str, Any]) -> str:
        if not actions or m["status"] != "challenger":
            return ""
        return _post("/models/promote", csrf, "promote", "promote", model_id=m["model_id"])

    rows = (
        (
            m["model_id"],
            m["status"],
            m["kind"],
            m["version"],
            m["learned"],
            m["policy"],
            m["created_at"],
            action(m),
        )
        for m in models["models"]
    )
    changes = ((c["changed_at"], c["model_id"], c["reason"]) for c in models["changes"])
    undo = _post("/models/rollback", csrf, "roll back to the previous champion", "rollback")
    return (
        "<h2>Models</h2>"
        f"<p>learning policy: <b>{escape(models['learning_policy'])}</b></p>"
        + table(
            rows,
            ("model", "status", "kind", "version", "learned", "policy", "published", ""),
            raw_last=True,
        )
        + "<h2>Champion changes (promotions, rollbacks)</h2>"
        + table(changes, ("when (UTC)", "champion", "reason"))
        + (undo if actions and len(models["changes"]) > 1 else "")
    )


def alerts_panel(snapshot: Mapping[str, Any], *, csrf: str, actions: bool) -> str:
    """The alerts, newest first, each with its sentence; an acknowledge button on the open
    ones when actions are enabled (an operator token is configured)."""

    def action(alert: Mapping[str, Any]) -> str:
        if not actions or alert["status"] != "open":
            return ""
        return (
            '<form method="post" action="/alerts/ack">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="alert_id" value="{escape(alert["alert_id"])}">'
            f'<button type="submit" class="ack" data-alert="{escape(alert["alert_id"])}">'
            "acknowledge</button></form>"
        )

    rows = []
    for a in snapshot["alerts"]:
        rows.append(
            f'<tr data-alert="{escape(a["alert_id"])}"><td>{escape(cell(a["created_at"]))}</td>'
            f'<td class="{escape(a["status"])} status">{escape(a["status"])}</td>'
            f"<td>{escape(a['kind'])}</td><td>{escape(cell(a['model_id']))}</td>"
            f'<td class="msg">{escape(a["message"])}</td><td>{action(a)}</td></tr>'
        )
    body = (
        "<table><tr><th>created (UTC)</th><th>status</th><th>kind</th><th>model</th>"
        f"<th>message</th><th></th></tr>{''.join(rows)}</table>"
        if rows
        else '<p class="muted">no alerts</p>'
    )
    return f"<h2>Alerts</h2>{body}"


def quality_panel(snapshot: Mapping[str, Any], *, now: float) -> str:
    """Rolling log loss, RPS and accuracy per model with their 95% band, and the plot (its
    URL changes every 10 s, so the browser fetches a fresh one that often)."""
    q = snapshot["quality"]

    def band(b: Any) -> str:
        return f"{b.mean:.4f} ± {b.high - b.mean:.4f}"

    rows = (
        (m["model_id"], m["matches"], band(m["log_loss"]), band(m["rps"]), band(m["accuracy"]))
        for m in q["models"]
    )
    return (
        f"<h2>Quality (last {q['window']} evaluated matches per model)</h2>"
        + table(rows, ("model", "matches", "log loss", "RPS", "accuracy"))
        + f'<img src="/quality.svg?at={int(now // 10)}" alt="rolling log loss per model" '
        'style="width:100%;height:auto">'
    )


def figure_text(value: float, digits: int = 4) -> str:
    """A betting figure, "-" where there is none (no bet: NaN)."""
    return "-" if math.isnan(value) else f"{value:+.{digits}f}"


def interval_text(summary: betting.BettingSummary) -> str:
    """The ROI interval, "-" without a bet."""
    if summary.bets == 0:
        return "-"
    return f"{figure_text(summary.roi_lo)} .. {figure_text(summary.roi_hi)}"


def betting_panel(snapshot: Mapping[str, Any]) -> str:
    """Each model's bets at the opening odds (flat value bets, their ROI with its interval,
    Kelly growth, closing-line value), the market references, and plainly what a model level
    with the opening line can expect after the bookmaker's margin."""
    figures = snapshot["betting"]
    head = "<h2>Betting at the opening odds</h2>"
    if figures is None:
        return f'{head}<p class="muted">computing the betting figures&hellip;</p>'
    if isinstance(figures, str):
        return f'{head}<p class="err">not computed: {escape(figures)}</p>'
    rows = "".join(
        f'<tr data-model="{escape(model_id)}"><td>{escape(model_id)}</td><td>{s.bets}</td>'
        f"<td>{figure_text(s.roi)}</td>"
        f"<td>{interval_text(s)}</td>"
        f"<td>{s.kelly_growth:+.4f}</td><td>{figure_text(s.clv)}</td></tr>"
        for model_id, s in figures.models
    )
    body = (
        "<table><tr><th>model</th><th>bets</th><th>ROI</th><th>ROI 95%</th>"
        f"<th>Kelly growth</th><th>CLV</th></tr>{rows}</table>"
        if rows
        else '<p class="muted">no evaluated match with opening odds yet</p>'
    )
    margin = figures.margin
    if math.isnan(margin):
        level = ""
    else:
        level = (
            f'<p id="level-with-the-line"><b>Plainly:</b> a model level with the opening line '
            f"has no edge to bet on. The opening lines of these {figures.matches} matches carry "
            f"a bookmaker's margin of {margin:.1%} on average, so a bet at those prices with "
            f"the line's own probabilities expects to lose {1 - 1 / (1 + margin):.1%} of its "
            "stake; a model bets only where it disagrees with the line by more than "
            f"{betting.DEFAULT_THRESHOLD:.0%}, and a negative CLV says the market moved "
            "against those disagreements by kickoff (docs/MODELS.md).</p>"
        )
    return (
        head
        + body
        + level
        + '<p class="muted">One unit on the outcome of largest expected value p &times; odds '
        f"&minus; 1 if above {betting.DEFAULT_THRESHOLD}; ROI per unit staked with a 95% "
        "bootstrap interval over match days; Kelly growth: log of the bankroll's growth at "
        f"{betting.DEFAULT_KELLY} Kelly (0 unchanged); CLV: opening odds &times; normalised "
        "closing probability &minus; 1. market-open is the opening line (it never bets), "
        "market-close the closing line at opening prices (an upper bound, not a strategy), "
        f"{betting.FAVOURITE_ID} backs the opening favourite every match.</p>"
    )


def panels(
    snapshot: Mapping[str, Any], *, csrf: str, actions: bool, now: float = 0.0
) -> dict[str, str]:
    """Each panel's HTML by element id (what ``/panels`` returns)."""
    return {
        "pipeline": pipeline_panel(snapshot),
        "models": models_panel(snapshot, csrf=csrf, actions=actions),
        "quality": quality_panel(snapshot, now=now),
        "betting": betting_panel(snapshot),
        "alerts": alerts_panel(snapshot, csrf=csrf, actions=actions),
    }


def match_panel(match_id: str, record: Mapping[str, Any] | None) -> str:
    """The match lookup: features, every model's prediction, the result, the evaluations."""
    form = (
        '<form method="get" action="/"><input name="match" placeholder="match id" '
        f'value="{escape(match_id)}"> <button type="submit">look up</button></form>'
    )
    if not match_id:
        return f"<h2>Match lookup</h2>{form}"
    if record is None:
        return f'<h2>Match lookup</h2>{form}<p class="err">no match {escape(match_id)!s} stored</p>'
    features = record["features"]
    feature_rows: list[tuple[str, Any]] = []
    if features is not None:
        feature_rows = [
            ("league", features["league"]),
            ("kickoff", features["kickoff"]),
            ("home", features["home_team"]),
            ("away", features["away_team"]),
            *sorted((features["payload"].get("features") or {}).items()),
        ]
    result = record["result"]
    result_rows = (
        []
        if result is None
        else [
            ("score", f"{result['home_goals']}-{result['away_goals']}"),
            ("outcome", result["outcome"]),
        ]
    )
    return (
        f"<h2>Match lookup</h2>{form}<h2>{escape(match_id)}: features</h2>"
        + table(feature_rows, ("feature", "value"))
        + "<h2>predictions</h2>"
        + table(
            ([p.get(c) for c in PREDICTION_COLUMNS] for p in record["predictions"]),
            PREDICTION_COLUMNS,
        )
        + "<h2>result</h2>"
        + table(result_rows, ("", ""))
        + "<h2>evaluations</h2>"
        + table(
            ([e.get(c) for c in EVALUATION_COLUMNS] for e in record["evaluations"]),
            EVALUATION_COLUMNS,
        )
    )


def document(
    snapshot: Mapping[str, Any],
    *,
    csrf: str,
    actions: bool,
    signed_in: bool,
    match: str,
    match_html: str,
    now: float = 0.0,
) -> str:
    """The whole page."""
    if not actions:
        mode = '<span id="mode">read-only</span>'
    elif signed_in:
        mode = '<span id="mode">operator</span>'
    else:
        mode = (
            '<form method="post" action="/login" id="login">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<input type="password" name="token" placeholder="operator token" '
            'autocomplete="current-password"> <button type="submit">sign in</button></form>'
        )
    sections = "".join(
        f'<section id="{name}">{html}</section>'
        for name, html in panels(snapshot, csrf=csrf, actions=actions, now=now).items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>tipstream console</title><style>{STYLE}</style></head><body>"
        f"<header><h1>tipstream console</h1>{mode}"
        '<span id="updated" class="muted"></span></header>'
        f'<main>{sections}<section id="match">{match_html}</section></main>'
        f"<script>{SCRIPT}</script></body></html>"
    )
