"""``tipstream console`` in a real browser (Debian's headless Chromium through its chromedriver,
installed by ``infra/chromium.sh``) against a worker on the real broker and database: the
models panel shows the seeded models, the processed counter moves during a small replay, a
malformed event shows as a dead letter, the quality panel shows the models' rolling figures and
its plot, the betting panel shows each seeded model's bets at the opening odds with the
figures the evaluation log gives, the match lookup shows a match's predictions and evaluations, and
an estimate alert the pipeline fires (a window of fixtures the barely trained rating model is
expected to score worse than the opening line) appears and is acknowledged only after signing in
with the operator token, after which a promotion and a rollback from the page reach the
registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from agents import reconciler_store
from agents.estimates_rules import ESTIMATE_WINDOW
from models.betting import FAVOURITE_ID
from models.features import fixture_of
from streams.console import page, rules
from streams.settings import Settings
from streams.topics import Topics
from tests.deployment import REPO, environment, free_port
from tests.integration.conftest import Worker, publish_facts, publish_raw, wait_for
from tests.integration.test_pipeline import (
    SEEDED_MODELS,
    epl_rows,
    events_between,
    publish_events,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TOKEN = "console-test-token-of-at-least-32-bytes"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile (the machine's closed network needs the flags)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("no /usr/bin/chromium or /usr/bin/chromedriver: run infra/chromium.sh")
    profile = tempfile.mkdtemp(prefix="tipstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,2400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def console(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A ``tipstream console`` subprocess with an operator token, reading the test's worker."""
    port = free_port()
    env = environment(
        settings,
        TIPSTREAM_CONSOLE_PORT=str(port),
        TIPSTREAM_CONSOLE_TOKEN=TOKEN,
        TIPSTREAM_CONSOLE_WORKERS=f"http://127.0.0.1:{settings.web_port}",
    )
    with (tmp_path / "console.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "console"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except WebDriverException:
        return ""


def text_of_body(driver: webdriver.Chrome) -> str:
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return ""


async def loaded(driver: webdriver.Chrome, url: str) -> bool:
    try:
        driver.get(url)
    except WebDriverException:
        return False
    return "tipstream console" in driver.title


async def test_console_panels_counters_and_alert_acknowledgement(
    settings: Settings,
    start_worker: Callable[..., Worker],
    producer: Any,
    db: asyncpg.Pool,
    console: str,
    browser: webdriver.Chrome,
) -> None:
    start_worker()
    await wait_for(lambda: loaded(browser, console), timeout=60, what="the console page")
    await wait_for(
        lambda: _async("online-logreg" in text_of(browser, "models")),
        timeout=120,
        what="the seeded models in the models panel",
    )
    await wait_for(
        lambda: _async(text_of(browser, "processed").isdigit()),
        timeout=120,
        what="the group's committed offsets in the pipeline panel",
    )
    before = int(text_of(browser, "processed"))

    # A small replay: the counter the page polls moves without a reload.
    replay = events_between("2019-08-01", "2019-08-20")
    await publish_events(producer, settings, replay)
    await wait_for(
        lambda: _async(int(text_of(browser, "processed") or 0) > before),
        timeout=120,
        what="the processed counter to move",
    )

    assert text_of(browser, "since-commit").endswith("ago")

    # A malformed fixture is a dead letter: listed among the latest, counted by its reason.
    await publish_raw(producer, Topics.from_settings(settings).fixtures, [(b"bad-key", b"{nope")])
    await wait_for(
        lambda: _async("bad-key" in text_of(browser, "pipeline")),
        timeout=60,
        what="the dead letter in the pipeline panel",
    )

    # The evaluations of the replay reach the quality panel and its plot.
    await wait_for(
        lambda: _async("online-rating" in text_of(browser, "quality")),
        timeout=60,
        what="the models' rolling quality in the quality panel",
    )
    plot = browser.find_element(By.CSS_SELECTOR, "#quality img")
    assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0

    # The betting panel: every seeded model's bets at the opening odds, the favourite bettor on
    # every replayed match, the figures the evaluation log gives, and what the margin costs.
    matches = sum(1 for e in replay if e.kind == "features")
    await wait_for(
        lambda: _evaluations(db, matches * SEEDED_MODELS),
        timeout=120,
        what="every prediction of the replay evaluated",
    )
    favourite = f'#betting tr[data-model="{FAVOURITE_ID}"] td:nth-child(2)'
    await wait_for(
        lambda: _async(_texts(browser, favourite) == [str(matches)]),
        timeout=60,
        what=f"the favourite bettor's {matches} bets in the betting panel",
    )
    async with db.acquire() as conn:
        expected = rules.betting_figures(await reconciler_store.bet_rows(conn))
    shown = {
        row.get_attribute("data-model"): [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#betting tr[data-model]")
    }
    assert set(shown) == {
        "online-logreg", "online-rating", "market-open", "market-close", FAVOURITE_ID
    }  # fmt: skip
    for model_id, figures in expected.models:
        assert shown[model_id][1] == str(figures.bets), model_id
        assert shown[model_id][2] == page.figure_text(figures.roi), model_id
        assert shown[model_id][4] == f"{figures.kelly_growth:+.4f}", model_id
    assert shown["market-open"][1] == "0"  # the line never bets against itself
    plainly = text_of(browser, "level-with-the-line")
    assert f"these {matches} matches" in plainly
    assert f"{expected.margin:.1%}" in plainly
    # The same figures in /snapshot.json (NaN as null).
    browser.get(f"{console}/snapshot.json")
    data = json.loads(text_of_body(browser))
    bets = {m["model_id"]: m["bets"] for m in data["betting"]["models"]}
    assert bets == {model_id: figures.bets for model_id, figures in expected.models}

    # The match lookup: a replayed match's predictions and evaluations, every model's.
    async with db.acquire() as conn:
        match_id = await conn.fetchval("SELECT match_id FROM evaluations LIMIT 1")
    browser.get(f"{console}/?{urlencode({'match': match_id})}")
    looked_up = text_of(browser, "match")
    assert "online-logreg" in looked_up
    assert "online-rating" in looked_up
    assert "evaluations" in looked_up

    # An alert the pipeline fires: a window of next season's fixtures with odds and no result
    # yet, which the seeded rating model (barely trained) is expected to score worse than the
    # opening line, so the scorer raises its pre-result estimate alarm.
    later = [
        r
        for r in sorted(epl_rows(), key=lambda r: r.kickoff)
        if r.odds_close and r.kickoff.date() > date(2019, 8, 20)
    ]
    fixtures = [fixture_of(r) for r in later[:ESTIMATE_WINDOW]]
    await publish_facts(producer, Topics.from_settings(settings).fixtures, fixtures)

    async def fired() -> str | None:
        async with db.acquire() as conn:
            found = await conn.fetchval(
                "SELECT alert_id FROM alerts WHERE kind = 'estimate' AND state = 'firing'"
                " AND model_id = 'online-rating'"
            )
        return str(found) if found else None

    alert_id = await wait_for(fired, timeout=300, what="the estimate alarm of online-rating")
    row = f'tr[data-alert="{alert_id}"]'
    await wait_for(
        lambda: _async(bool(browser.find_elements(By.CSS_SELECTOR, row))),
        timeout=30,
        what="the alert in the alerts panel",
    )
    assert "expected to lose to the opening line" in browser.find_element(By.CSS_SELECTOR, row).text

    # Not signed in: the acknowledgement is refused and the alert stays open.
    browser.find_element(By.CSS_SELECTOR, f"{row} button.ack").click()
    await wait_for(
        lambda: _async("refused: not signed in" in text_of_body(browser)),
        timeout=30,
        what="the refusal",
    )
    assert await _status(db, alert_id) == "open"

    # Signed in with the operator token: acknowledged, in the database and on the page.
    browser.get(console)
    browser.find_element(By.CSS_SELECTOR, "#login input[name=token]").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    await wait_for(
        lambda: _async(text_of(browser, "mode") == "operator"), timeout=30, what="signed in"
    )
    browser.find_element(By.CSS_SELECTOR, f"{row} button.ack").click()
    await wait_for(
        lambda: _async(text_of(browser, "alerts").count("acknowledged") == 1),
        timeout=30,
        what="the alert acknowledged on the page",
    )
    assert await _status(db, alert_id) == "acknowledged"

    # Promote the challenger from the page, then roll back: the registry follows each click.
    browser.find_element(By.CSS_SELECTOR, "#models button.promote").click()
    await wait_for(
        lambda: _champion(db, "online-rating"), timeout=30, what="online-rating promoted"
    )
    await wait_for(
        lambda: _async(bool(browser.find_elements(By.CSS_SELECTOR, "#models button.rollback"))),
        timeout=30,
        what="the rollback button",
    )
    browser.find_element(By.CSS_SELECTOR, "#models button.rollback").click()
    await wait_for(
        lambda: _champion(db, "online-logreg"), timeout=30, what="online-logreg restored"
    )
    if os.environ.get("TIPSTREAM_CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["TIPSTREAM_CONSOLE_SCREENSHOT"])


async def _async(value: bool) -> bool:
    return value


def _texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    try:
        return [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, selector)]
    except WebDriverException:
        return []


async def _evaluations(db: asyncpg.Pool, expected: int) -> bool:
    async with db.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) = $1 FROM evaluations", expected))


async def _status(db: asyncpg.Pool, alert_id: str) -> str:
    async with db.acquire() as conn:
        return str(await conn.fetchval("SELECT status FROM alerts WHERE alert_id = $1", alert_id))


async def _champion(db: asyncpg.Pool, model_id: str) -> bool:
    async with db.acquire() as conn:
        return bool(
            await conn.fetchval(
                "SELECT status = 'champion' FROM models WHERE model_id = $1", model_id
            )
        )
