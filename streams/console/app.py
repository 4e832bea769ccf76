"""``tipstream console``: the status page of a deployment, an aiohttp app on
``TIPSTREAM_CONSOLE_HOST``:``TIPSTREAM_CONSOLE_PORT`` (loopback by default).

Read-only unless ``TIPSTREAM_CONSOLE_TOKEN`` is set. With a token, an operator signs in with it
once (``POST /login``) and may then acknowledge alerts. Every POST carries the browser's CSRF
token (a SameSite=Strict cookie, echoed by a hidden form field, compared in constant time), and
the session cookie is an HMAC of the configured token and that CSRF token, so a forged request
from another site has neither and the cookie never holds the token itself.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from aiohttp import web

from agents import alert_store, registry
from agents.alert_store import AlertNotFound
from streams.cli.operator import NotAnnounced, change_champion
from streams.cli.output import jsonable
from streams.cli.predictions import match_record
from streams.console import page, rules
from streams.console.data import Reader
from streams.db import connect
from streams.kafka import client_options
from streams.log import get_logger
from streams.settings import Settings

log = get_logger(__name__)

CSRF_COOKIE = "tipstream_csrf"
SESSION_COOKIE = "tipstream_session"
READER: web.AppKey[Reader] = web.AppKey("reader", Reader)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``console`` subcommand."""
    console = subparsers.add_parser(
        "console", help="the operator's status page (TIPSTREAM_CONSOLE_HOST:PORT)"
    )
    console.set_defaults(func=_console)


def _console(args: argparse.Namespace, settings: Settings) -> int:
    mode = "operator actions enabled" if settings.console_token else "read-only"
    print(
        f"tipstream console on http://{settings.console_host}:{settings.console_port}/ ({mode})",
        flush=True,
    )
    web.run_app(
        build_app(settings),
        host=settings.console_host,
        port=settings.console_port,
        print=None,
        access_log=None,
    )
    return 0


def build_app(settings: Settings) -> web.Application:
    """The console app; its clients open at startup and close at cleanup."""
    app = web.Application()
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> Any:
        pool = await connect(settings.database_url, max_size=2)
        reader = Reader(settings, pool)
        await reader.start(client_options(settings))
        app[READER] = reader
        yield
        await reader.stop()
        await pool.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", index)
    app.router.add_get("/panels", panels)
    app.router.add_get("/snapshot.json", snapshot_json)
    app.router.add_get("/quality.svg", quality_svg)
    app.router.add_post("/login", login)
    app.router.add_post("/alerts/ack", acknowledge)
    app.router.add_post("/models/promote", promote)
    app.router.add_post("/models/rollback", rollback)
    return app


def _csrf(request: web.Request) -> tuple[str, bool]:
    """This browser's CSRF token, and whether it is new (to be set as a cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return (token, False) if token else (rules.new_csrf_token(), True)


def _set_cookie(response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="Strict", path="/")


def _signed_in(request: web.Request, settings: Settings, csrf: str) -> bool:
    session = request.cookies.get(SESSION_COOKIE)
    return (
        session is not None
        and rules.refusal(
            operator_token=settings.console_token, csrf_cookie=csrf, csrf_form=csrf, session=session
        )
        is None
    )


async def index(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    reader = request.app[READER]
    csrf, new = _csrf(request)
    match = request.query.get("match", "").strip()
    record = None
    if match:
        async with reader.pool.acquire() as conn:
            record = await match_record(conn, match)
    html = page.document(
        await reader.snapshot(),
        csrf=csrf,
        actions=bool(settings.console_token),
        signed_in=_signed_in(request, settings, csrf),
        match=match,
        match_html=page.match_panel(match, record),
        now=time.time(),
    )
    response = web.Response(text=html, content_type="text/html")
    if new:
        _set_cookie(response, CSRF_COOKIE, csrf)
    return response


async def panels(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    csrf, _ = _csrf(request)
    snapshot = await request.app[READER].snapshot()
    return web.json_response(page.panels(snapshot, csrf=csrf, actions=bool(settings.console_token)))


async def snapshot_json(request: web.Request) -> web.Response:
    """The panels' data as JSON, for a script or a test."""
    snapshot = await request.app[READER].snapshot()
    snapshot["pipeline"]["partitions"] = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "end": p.end,
            "committed": p.committed,
            "lag": p.lag,
        }
        for p in snapshot["pipeline"].get("partitions", [])
    ]
    for item in snapshot["quality"]["models"]:
        for metric in ("log_loss", "rps", "accuracy"):
            b = item[metric]
            item[metric] = {"mean": b.mean, "low": b.low, "high": b.high}
    snapshot["betting"] = rules.betting_json(snapshot["betting"])
    for worker in snapshot["workers"]:
        letters = worker.get("dead_letters")
        if letters is not None:
            worker["dead_letters"] = [
                {"topic": t, "reason": r, "count": n} for (t, r), n in sorted(letters.items())
            ]
    return web.Response(text=json.dumps(jsonable(snapshot)), content_type="application/json")


async def quality_svg(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[READER].quality_svg(), content_type="image/svg+xml")


def _refused(reason: str) -> web.Response:
    return web.Response(
        status=403,
        text=f'<!doctype html><p class="refused">refused: {escape(reason)}</p>'
        '<p><a href="/">back</a></p>',
        content_type="text/html",
    )


async def login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    form = await request.post()
    csrf = request.cookies.get(CSRF_COOKIE, "")
    reason = rules.refusal(
        operator_token=settings.console_token,
        csrf_cookie=csrf,
        csrf_form=str(form.get("csrf", "")),
        session=rules.session_value(settings.console_token, csrf),
    )
    if reason is None and not rules.token_matches(
        settings.console_token, str(form.get("token", ""))
    ):
        reason = "wrong operator token"
    if reason is not None:
        log.warning("console: sign-in refused", reason=reason)
        return _refused(reason)
    response = web.HTTPSeeOther("/")
    _set_cookie(response, SESSION_COOKIE, rules.session_value(settings.console_token, csrf))
    raise response


def _refusal(request: web.Request, form: Any) -> str | None:
    """Why this POST may not act (None: it may): token configured, CSRF, signed in."""
    return rules.refusal(
        operator_token=request.app[SETTINGS].console_token,
        csrf_cookie=request.cookies.get(CSRF_COOKIE, ""),
        csrf_form=str(form.get("csrf", "")),
        session=request.cookies.get(SESSION_COOKIE),
    )


async def acknowledge(request: web.Request) -> web.Response:
    form = await request.post()
    reason = _refusal(request, form)
    if reason is not None:
        log.warning("console: action refused", action="acknowledge", reason=reason)
        return _refused(reason)
    alert_id = str(form.get("alert_id", ""))
    async with request.app[READER].pool.acquire() as conn:
        try:
            row, changed = await alert_store.change_status(
                conn, alert_id, "acknowledge", by="console", note=None, now=datetime.now(UTC)
            )
        except AlertNotFound as error:
            return web.Response(status=404, text=str(error.args[0]))
    log.info("console: alert acknowledged", alert_id=row["alert_id"], changed=changed)
    raise web.HTTPSeeOther("/")


async def promote(request: web.Request) -> web.Response:
    form = await request.post()
    return await _change_champion(request, form, str(form.get("model_id", "")) or None)


async def rollback(request: web.Request) -> web.Response:
    return await _change_champion(request, await request.post(), None)


async def _change_champion(request: web.Request, form: Any, model_id: str | None) -> web.Response:
    """Promote ``model_id`` (None: roll back to the previous champion), as
    ``tipstream models promote|rollback`` does, announcement included."""
    action = "rollback" if model_id is None else "promote"
    reason = _refusal(request, form)
    if reason is not None:
        log.warning("console: action refused", action=action, reason=reason)
        return _refused(reason)
    settings = request.app[SETTINGS]
    async with request.app[READER].pool.acquire() as conn:
        try:
            changed = await change_champion(
                conn, settings, model_id, reason="promoted from the console"
            )
        except registry.RegistryError as error:
            return _refused(str(error))
        except NotAnnounced as failure:
            log.warning("console: champion changed, not announced", error=repr(failure.error))
            return web.Response(
                text=f"<!doctype html><p>champion: {' -> '.join(failure.changed)} (changed in "
                "the registry; the announcement failed: scorers pick it up by polling)</p>"
                '<p><a href="/">back</a></p>',
                content_type="text/html",
            )
    log.info("console: champion changed", action=action, champions=changed)
    raise web.HTTPSeeOther("/")
