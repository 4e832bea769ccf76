"""The console's pure pieces, no I/O: consumer lag from offsets, the processing rate between two
snapshots, rolling means with their confidence band, the betting figures of the evaluation log,
and the checks that guard an action (operator token, CSRF token)."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models import betting

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition the group consumes: its end offset, the group's committed offset (None:
    nothing committed yet) and the lag between them."""

    topic: str
    partition: int
    end: int
    committed: int | None

    @property
    def lag(self) -> int:
        """Records on the partition the group has not committed (all of them when it has
        committed nothing)."""
        return max(self.end - (self.committed or 0), 0)


def lags(ends: Mapping[Partition, int], committed: Mapping[Partition, int]) -> list[PartitionLag]:
    """The lag of every partition with an end offset, in (topic, partition) order.

    >>> [p.lag for p in lags({("t", 0): 10, ("t", 1): 5}, {("t", 0): 7})]
    [3, 5]
    """
    return [
        PartitionLag(topic, partition, end, committed.get((topic, partition)))
        for (topic, partition), end in sorted(ends.items())
    ]


def committed_total(partitions: list[PartitionLag]) -> int:
    """Records committed over every partition: what the group has processed."""
    return sum(p.committed or 0 for p in partitions)


def rate(before: tuple[float, int] | None, now: tuple[float, int]) -> float | None:
    """Per second between two (monotonic time, count) readings; None without an earlier one,
    or when no time passed. A count that went down (a reset group) reads as 0, not negative.

    >>> rate((10.0, 100), (12.0, 160))
    30.0
    >>> rate(None, (12.0, 160)) is None
    True
    """
    if before is None or now[0] <= before[0]:
        return None
    return max(now[1] - before[1], 0) / (now[0] - before[0])


def new_csrf_token() -> str:
    """A fresh per-browser CSRF token (kept in a SameSite=Strict cookie, echoed by each form)."""
    return secrets.token_urlsafe(32)


def session_value(operator_token: str, csrf: str) -> str:
    """What the operator's session cookie holds after a login: bound to the configured token
    and to this browser's CSRF token, so it proves the login without holding the token."""
    return hmac.new(operator_token.encode(), csrf.encode(), hashlib.sha256).hexdigest()


def refusal(
    *, operator_token: str, csrf_cookie: str, csrf_form: str, session: str | None
) -> str | None:
    """Why an action is refused (None: allowed). Compared in constant time.

    >>> refusal(operator_token="", csrf_cookie="c", csrf_form="c", session=None)
    'read-only: no operator token is configured'
    >>> s = session_value("t" * 32, "c")
    >>> refusal(operator_token="t" * 32, csrf_cookie="c", csrf_form="c", session=s) is None
    True
    >>> refusal(operator_token="t" * 32, csrf_cookie="c", csrf_form="x", session=s)
    'CSRF token missing or wrong: reload the page'
    """
    if not operator_token:
        return "read-only: no operator token is configured"
    if not csrf_cookie or not hmac.compare_digest(csrf_cookie.encode(), csrf_form.encode()):
        return "CSRF token missing or wrong: reload the page"
    expected = session_value(operator_token, csrf_cookie)
    if session is None or not hmac.compare_digest(expected.encode(), session.encode()):
        return "not signed in: give the operator token first"
    return None


def token_matches(operator_token: str, given: str) -> bool:
    """A login's token against the configured one (constant time; never with none configured)."""
    return bool(operator_token) and hmac.compare_digest(operator_token.encode(), given.encode())


@dataclass(frozen=True, slots=True)
class Band:
    """A rolling mean and its 95% confidence band (normal approximation, ±1.96 standard
    errors of the mean over the window)."""

    mean: float
    low: float
    high: float


def rolling(values: Sequence[float], window: int) -> list[Band]:
    """The mean over the last ``window`` values at each position (fewer at the start), with
    its band; a window of one value has a band of zero width.

    >>> [round(b.mean, 2) for b in rolling([1.0, 3.0, 5.0], 2)]
    [1.0, 2.0, 4.0]
    >>> b = rolling([1.0, 3.0], 2)[-1]  # standard deviation sqrt(2), so one standard error
    >>> round(b.low, 2), round(b.high, 2)
    (0.04, 3.96)
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    out: list[Band] = []
    total = 0.0
    squares = 0.0
    for i, value in enumerate(values):
        total += value
        squares += value * value
        if i >= window:
            old = values[i - window]
            total -= old
            squares -= old * old
        n = min(i + 1, window)
        mean = total / n
        variance = max(squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
        half = 1.96 * math.sqrt(variance / n)
        out.append(Band(mean, mean - half, mean + half))
    return out


@dataclass(frozen=True, slots=True)
class BettingFigures:
    """The betting panel: each model's bets at the opening odds (``models.betting.table``,
    the market references and the favourite bettor included), over how many matches, and the
    mean bookmaker's margin of their opening lines (matches with usable opening odds only)."""

    models: list[tuple[str, betting.BettingSummary]]
    matches: int
    margin: float


def betting_figures(rows: Sequence[Mapping[str, Any]]) -> BettingFigures:
    """:class:`BettingFigures` of the evaluation log's rows (``reconciler_store.bet_rows``).

    >>> from datetime import datetime
    >>> row = dict(model_id="market-open", match_id="a", kickoff=datetime(2020, 9, 12),
    ...            outcome="H", p_home=0.5, p_draw=0.25, p_away=0.25, open_home=1.9,
    ...            open_draw=3.8, open_away=3.8, close_home=None, close_draw=None, close_away=None)
    >>> figures = betting_figures([row])
    >>> [(m, s.bets) for m, s in figures.models], figures.matches, round(figures.margin, 3)
    ([('market-open', 0), ('market-open-favourite', 1)], 1, 0.053)
    """
    log = betting.BetLog.from_rows(rows)
    matches, margin = betting.mean_margin(log)
    return BettingFigures(models=betting.table(log), matches=matches, margin=margin)


def betting_json(figures: BettingFigures | str | None) -> dict[str, Any] | str | None:
    """The betting figures as JSON values (``/snapshot.json``): NaN (no bet) as null; an error
    message or None (not computed yet) as they are.

    >>> nan = float("nan")
    >>> none = betting.BettingSummary(0, nan, nan, nan, 0.0, nan)
    >>> betting_json(BettingFigures([("m", none)], 3, 0.05))["models"][0]["roi"] is None
    True
    """
    if not isinstance(figures, BettingFigures):
        return figures

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "matches": figures.matches,
        "margin": finite(figures.margin),
        "models": [
            {
                "model_id": model_id,
                "bets": s.bets,
                "roi": finite(s.roi),
                "roi_lo": finite(s.roi_lo),
                "roi_hi": finite(s.roi_hi),
                "kelly_growth": finite(s.kelly_growth),
                "clv": finite(s.clv),
            }
            for model_id, s in figures.models
        ],
    }
