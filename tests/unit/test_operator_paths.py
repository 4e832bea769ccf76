"""Operator paths (issue 13, item 7): settings validated at start, parser ranges, passwords
masked in every output and log line, one-line errors for unreachable services, the demo's
database guard, Faust's own web pages off."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import aiokafka.errors
import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from agents import scorer
from agents.monitor_rules import make_detector
from streams.cli import demo, operator, replay
from streams.cli.failures import describe_failure
from streams.cli.main import build_parser, guarded, main
from streams.db import connect
from streams.log import configure_logging, get_logger, mask_secrets, redact
from streams.settings import DRIFT_DETECTORS, ENV_VARS, Settings
from streams.worker.app import create_app

SECRET = "s3cr3t-Pa55"
URL = f"postgresql://tipstream:{SECRET}@db.example:5432/tipstream"
CLOSED = "postgresql://tipstream:tipstream@127.0.0.1:1/tipstream"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Tests that call ``configure_logging`` (or ``main``) leave logging as they found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aiokafka_level = logging.getLogger("aiokafka").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(aiokafka_level)
    structlog.reset_defaults()


# --- settings validated at start --------------------------------------------------------------


def test_default_settings_are_valid() -> None:
    """The defaults (the README's table) pass their own rules."""
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("TIPSTREAM_DECAY_THRESHOLD", "nan", "0 < value < 1"),
        ("TIPSTREAM_DECAY_THRESHOLD", "0", "0 < value < 1"),
        ("TIPSTREAM_DECAY_THRESHOLD", "1.5", "0 < value < 1"),
        ("TIPSTREAM_DECAY_THRESHOLD", "inf", "0 < value < 1"),
        ("TIPSTREAM_PARTITIONS", "0", "at least 1"),
        ("TIPSTREAM_DECAY_WINDOW", "9", "at least 10"),
        ("TIPSTREAM_COMMIT_INTERVAL", "0", "> 0"),
        ("TIPSTREAM_COMMIT_INTERVAL", "nan", "> 0"),
        ("TIPSTREAM_SESSION_TIMEOUT", "5", "in 6..1800"),
        ("TIPSTREAM_SESSION_TIMEOUT", "1801", "in 6..1800"),
        ("TIPSTREAM_SESSION_TIMEOUT", "inf", "in 6..1800"),
        ("TIPSTREAM_SNAPSHOT_EVERY", "0", "at least 1"),
        ("TIPSTREAM_SNAPSHOT_SECONDS", "-1", "> 0"),
        ("TIPSTREAM_SNAPSHOT_SECONDS", "inf", "> 0"),
        ("TIPSTREAM_GATE_CONFIDENCE", "1", "in [0.5, 1)"),
        ("TIPSTREAM_GATE_CONFIDENCE", "0.4", "in [0.5, 1)"),
        ("TIPSTREAM_GATE_CONFIDENCE", "nan", "in [0.5, 1)"),
        ("TIPSTREAM_GATE_MIN_MATCHES", "1", "at least 2"),
        ("TIPSTREAM_GATE_MARKET_MARGIN", "-0.01", ">= 0"),
        ("TIPSTREAM_GATE_CALIBRATION_LIMIT", "nan", ">= 0"),
        ("TIPSTREAM_GATE_LEAGUE_REGRESSION", "inf", ">= 0"),
        ("TIPSTREAM_GATE_LEAGUE_MIN_MATCHES", "0", "at least 1"),
        ("TIPSTREAM_WEB_PORT", "0", "1..65535"),
        ("TIPSTREAM_WEB_PORT", "65536", "1..65535"),
        ("TIPSTREAM_LOG_FORMAT", "xml", "one of json, console, auto"),
        ("TIPSTREAM_LOG_LEVEL", "loud", "one of debug, info"),
        ("TIPSTREAM_EVENT_LOOP", "trio", "one of uvloop, asyncio"),
        ("TIPSTREAM_DRIFT_DETECTOR", "ddm", "one of adwin, page-hinkley"),
        ("TIPSTREAM_LEARNING_POLICY", "sometimes", "a learning policy"),
        ("TIPSTREAM_LEARNING_POLICY", "errors:nan", "a learning policy"),
    ],
)
def test_out_of_range_setting_is_refused_naming_variable_value_and_rule(
    variable: str, value: str, rule: str
) -> None:
    """A NaN, infinite or out-of-range value is refused when the settings are read, and the
    refusal names the variable, the value and the rule."""
    with pytest.raises(ValueError, match=rf"{variable} must be .*{re.escape(rule)}") as error:
        Settings.from_env({variable: value})
    assert value.split(":")[-1] in str(error.value)


def test_every_broken_setting_is_named_at_once() -> None:
    """All problems are reported together, so an operator fixes them in one go."""
    with pytest.raises(ValueError, match="; ") as error:
        Settings.from_env({"TIPSTREAM_DECAY_THRESHOLD": "nan", "TIPSTREAM_PARTITIONS": "0"})
    assert "TIPSTREAM_DECAY_THRESHOLD" in str(error.value)
    assert "TIPSTREAM_PARTITIONS" in str(error.value)


def test_settings_built_in_code_are_validated_too() -> None:
    """``replace`` (tests, the demo) goes through the same rules as the environment."""
    with pytest.raises(ValueError, match="TIPSTREAM_DECAY_WINDOW must be at least 10"):
        Settings().replace(decay_window=9)
    with pytest.raises(ValueError, match="TIPSTREAM_DECAY_THRESHOLD"):
        Settings(decay_threshold=math.nan)


def test_accepted_forms_still_pass() -> None:
    """Valid non-default values are kept: upper-case levels, an errors threshold, adwin."""
    settings = Settings.from_env(
        {
            "TIPSTREAM_LOG_LEVEL": "WARNING",
            "TIPSTREAM_LEARNING_POLICY": "errors:0.7",
            "TIPSTREAM_DRIFT_DETECTOR": "adwin",
            "TIPSTREAM_WEB_PORT": "65535",
            "TIPSTREAM_GATE_MARKET_MARGIN": "0",
        }
    )
    assert (settings.log_level, settings.learning_policy) == ("WARNING", "errors:0.7")


def test_drift_detector_names_match_the_monitor() -> None:
    """Every name settings accept builds a detector, and the monitor knows no other."""
    for name in DRIFT_DETECTORS:
        assert make_detector(name) is not None
    with pytest.raises(ValueError, match="expected adwin or page-hinkley"):
        make_detector("ddm")


def test_a_settings_refusal_never_shows_a_password() -> None:
    """Values in a refusal are masked like any output."""
    with pytest.raises(ValueError, match="TIPSTREAM_LOG_FORMAT") as error:
        Settings(partitions=0, log_format=URL)
    assert SECRET not in str(error.value)


# --- passwords masked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (URL, "postgresql://tipstream:***@db.example:5432/tipstream"),
        ("postgres://u:p%40ss:w@h/db", "postgres://u:***@h/db"),
        ("kafka://k:9092 then postgresql://a:b@h/d", "kafka://k:9092 then postgresql://a:***@h/d"),
        ("connect failed: host=db user=x password=hunter2 dbname=y", "password=***"),
        ("postgresql://h/db?user=x&password=hunter2", "password=***"),
        (
            "postgresql://tipstream@127.0.0.1/tipstream",
            "postgresql://tipstream@127.0.0.1/tipstream",
        ),
        ("kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"),
    ],
)
def test_redact_masks_passwords_only(text: str, masked: str) -> None:
    """Passwords in URLs and ``password=`` pairs become ``***``; addresses stay readable."""
    assert masked in redact(text)
    assert "hunter2" not in redact(text)
    assert "p%40ss" not in redact(text)


def test_mask_processor_masks_every_value_and_exception_text() -> None:
    """The log processor masks strings, nested values, objects and a formatted traceback."""
    log = get_logger("test.masking")
    with capture_logs(processors=[structlog.processors.format_exc_info, mask_secrets]) as events:
        log.info("connecting", url=URL, nested={"urls": [URL]}, error=ValueError(URL))
        try:
            raise ConnectionError(f"cannot connect to {URL}")
        except ConnectionError:
            log.exception("failed")
    assert SECRET not in repr(events)
    assert events[0]["url"] == redact(URL)
    assert events[0]["nested"] == {"urls": [redact(URL)]}
    assert "***" in events[1]["exception"]


def test_configured_logging_masks_our_lines_and_foreign_ones(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real configuration, structlog and stdlib (Faust, aiokafka) lines, their
    messages and their tracebacks are masked."""
    configure_logging("json", "info")
    get_logger("test.ours").warning("retrying", url=URL)
    foreign = logging.getLogger("test.foreign")
    foreign.warning("connecting to %s", URL)
    try:
        raise OSError(f"refused by {URL}")
    except OSError:
        foreign.exception("gave up")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("***") == 3  # the field, the foreign message, the traceback's text


def test_settings_command_masks_the_database_password(
    restore_logging: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tipstream settings`` prints every variable, the database URL with its password
    masked (and the registry key hidden)."""
    monkeypatch.setenv("TIPSTREAM_DATABASE_URL", URL)
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "TIPSTREAM_DATABASE_URL=postgresql://tipstream:***@db.example:5432/tipstream" in out
    assert len(out.splitlines()) == len(ENV_VARS)
    assert Settings(database_url=URL).masked_url() == redact(URL)


# --- parser ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--rate", "-5"], "argument --rate: must be a finite number > 0, got '-5'"),
        (["--rate", "0"], "argument --rate: must be a finite number > 0"),
        (["--rate", "nan"], "argument --rate: must be a finite number > 0"),
        (["--speed", "-1"], "argument --speed: must be a finite number > 0"),
        (["--sync-timeout", "0"], "argument --sync-timeout: must be a finite number > 0"),
        (["--checkpoint-every", "-3"], "argument --checkpoint-every: must be at least 1"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: must be at least 1"),
        (["--checkpoint-every", "2.5"], "argument --checkpoint-every: not a whole number"),
        (["--leagues", "Nope!"], "argument --leagues: not a league id: 'Nope!'"),
    ],
)
def test_replay_parser_refuses_out_of_range_arguments(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rates, speeds and timeouts must be finite and positive, chunks at least 1, league ids
    well-formed: the parser refuses anything else with a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["replay", "--data", "x.csv", *arguments])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_replay_parser_accepts_valid_arguments() -> None:
    """In-range values parse to their types."""
    args = build_parser().parse_args(
        ["replay", "--data", "x.csv", "--rate", "2.5", "--checkpoint-every", "1",
         "--leagues", "england-premier-league, spain-laliga"]
    )  # fmt: skip
    assert (args.rate, args.checkpoint_every) == (2.5, 1)
    assert args.leagues == frozenset({"england-premier-league", "spain-laliga"})


def _small_csv(tmp_path: Path) -> Path:
    source = Path(__file__).resolve().parents[2] / "data" / "football"
    lines = (source / "england-premier-league.csv").read_text().splitlines()[:5]
    path = tmp_path / "small.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_refuses_an_unknown_league_listing_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--leagues nope`` would replay nothing, silently; it is refused (exit code 2) with the
    leagues the data has, before anything is published."""
    args = build_parser().parse_args(
        ["replay", "--data", str(_small_csv(tmp_path)), "--leagues", "nope", "--dry-run"]
    )
    with pytest.raises(SystemExit) as exit_:
        replay._run(args, Settings(database_url=CLOSED, kafka_url="kafka://127.0.0.1:1"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown league nope; the data has england-premier-league" in err


def test_replay_refuses_from_after_to(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty window (``--from`` after ``--to``) is a usage error, not an empty replay."""
    args = build_parser().parse_args(
        ["replay", "--data", "x.csv", "--from", "2024-01-02", "--to", "2024-01-01"]
    )
    with pytest.raises(SystemExit) as exit_:
        replay._run(args, Settings())
    assert exit_.value.code == 2
    assert "--from 2024-01-02 is after --to 2024-01-01" in capsys.readouterr().err


def test_helpers_of_the_league_and_window_checks() -> None:
    """Known leagues and a non-empty window pass."""
    assert replay.unknown_leagues(frozenset(), {"a-b"}) is None
    assert replay.unknown_leagues({"a-b"}, {"a-b", "c-d"}) is None
    assert replay.unknown_leagues({"x-y"}, set()) == (
        "tipstream replay: unknown league x-y; the data has no leagues"
    )
    assert replay.window_problem(None, None) is None


@pytest.mark.parametrize(
    "arguments",
    [["--workers", "0"], ["--timeout", "-1"], ["--from", "2024-01-02", "--to", "2024-01-01"]],
)
def test_demo_parser_refuses_out_of_range_arguments(arguments: list[str]) -> None:
    """The demo's own arguments are range-checked like the replay's."""
    with pytest.raises(SystemExit) as exit_:
        demo.parse_args(arguments)
    assert exit_.value.code == 2


# --- the demo's database ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "tipstream",
        "postgres",
        "template1",
        "tipstream_demo-x",
        'tipstream_demo"; DROP',
        "Tipstream_demo",
        "tipstream_demonstration",
        "tipstream_t_abc",
    ],
)
def test_demo_refuses_a_database_that_is_not_a_demo_database(name: str) -> None:
    """Only ``tipstream_demo`` or ``tipstream_demo_<suffix>`` may be dropped and recreated."""
    problem = demo.demo_database_problem(name, Settings())
    assert problem is not None
    assert "is not a demo database" in problem


@pytest.mark.parametrize("name", ["tipstream_demo", "tipstream_demo_t_0a1b2c", "tipstream_demo_2"])
def test_demo_accepts_demo_databases(name: str) -> None:
    """The default and suffixed demo names (the integration test's) are accepted."""
    assert demo.demo_database_problem(name, Settings()) is None


def test_demo_never_drops_the_database_of_the_settings() -> None:
    """Even a demo-looking name is refused when it is TIPSTREAM_DATABASE_URL's database."""
    base = Settings().with_database("tipstream_demo_live")
    problem = demo.demo_database_problem("tipstream_demo_live", base)
    assert problem is not None
    assert "is the database of TIPSTREAM_DATABASE_URL" in problem


def test_demo_main_refuses_before_touching_any_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--database tipstream`` exits with code 2 before any connection is attempted."""
    monkeypatch.setenv("TIPSTREAM_DATABASE_URL", CLOSED)
    attempts: list[str] = []

    async def no_connection(*args: object, **kwargs: object) -> None:
        attempts.append("connect")
        raise AssertionError("the demo connected before refusing the database name")

    monkeypatch.setattr(asyncpg, "connect", no_connection)
    monkeypatch.setattr(asyncpg, "create_pool", no_connection)
    assert demo.main(["--database", "tipstream"]) == 2
    assert attempts == []
    assert "demo: --database 'tipstream' is not a demo database" in capsys.readouterr().err


def test_fresh_database_itself_refuses_a_foreign_database() -> None:
    """The function that drops checks too, whoever calls it."""
    base = Settings(database_url=CLOSED)
    with pytest.raises(ValueError, match="not a demo database"):
        asyncio.run(demo.fresh_database(base, base, "tipstream"))


# --- one-line errors ----------------------------------------------------------------------------


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "tipstream"'),
            "PostgreSQL at 127.0.0.1:1 refused the login (password authentication failed for "
            'user "tipstream"); check TIPSTREAM_DATABASE_URL',
        ),
        (
            asyncpg.InvalidCatalogNameError('database "nope" does not exist'),
            'PostgreSQL at 127.0.0.1:1 has no such database (database "nope" does not exist); '
            "check TIPSTREAM_DATABASE_URL (or create it and run `tipstream db migrate`)",
        ),
        (
            asyncpg.CannotConnectNowError("the database system is starting up"),
            "cannot reach PostgreSQL at 127.0.0.1:1 (the database system is starting up); "
            "check TIPSTREAM_DATABASE_URL",
        ),
        (
            aiokafka.errors.KafkaConnectionError("Unable to bootstrap from [...]"),
            "cannot reach Kafka at 127.0.0.1:2 (no broker answered); check TIPSTREAM_KAFKA_URL",
        ),
        (
            aiokafka.errors.KafkaTimeoutError(),
            "cannot reach Kafka at 127.0.0.1:2 (timed out); check TIPSTREAM_KAFKA_URL",
        ),
    ],
)
def test_service_errors_become_one_line_naming_address_cause_and_setting(
    error: BaseException, line: str
) -> None:
    """Each client error maps to the service, its address, the cause and the variable."""
    settings = Settings(database_url=CLOSED, kafka_url="kafka://127.0.0.1:2")
    assert describe_failure(_raised(error), settings) == line
    wrapped = _raised(RuntimeError("while starting"))
    wrapped.__cause__ = _raised(error)
    assert describe_failure(wrapped, settings) == line


def test_other_errors_are_not_mistaken_for_an_unreachable_service() -> None:
    """A missing file or a refused socket outside asyncpg/aiokafka is not explained away."""
    assert describe_failure(_raised(FileNotFoundError("x.csv")), Settings()) is None
    assert describe_failure(_raised(ConnectionRefusedError(111, "refused")), Settings()) is None


def test_guarded_prints_one_line_or_a_masked_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unreachable: one line, exit code 2 (``verbose``: traceback first, same last line);
    anything else: a traceback with passwords masked, exit code 1."""
    settings = Settings(database_url=CLOSED)

    def unreachable() -> int:
        raise asyncpg.InvalidCatalogNameError('database "nope" does not exist')

    def broken() -> int:
        raise ValueError(f"bug near {URL}")

    assert guarded(unreachable, settings, verbose=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tipstream: PostgreSQL at 127.0.0.1:1 has no such database")
    assert guarded(unreachable, settings, verbose=True) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback")
    assert err.splitlines()[-1].startswith("tipstream: ")
    assert guarded(broken, settings, verbose=False) == 1
    err = capsys.readouterr().err
    assert "ValueError: bug near postgresql://tipstream:***@" in err
    assert SECRET not in err


def test_verbose_is_accepted_before_or_after_the_command() -> None:
    """``tipstream --verbose models list`` and ``tipstream models list -v`` both set it."""
    assert build_parser().parse_args(["--verbose", "models", "list"]).verbose is True
    assert build_parser().parse_args(["models", "list", "-v"]).verbose is True
    assert build_parser().parse_args(["models", "list"]).verbose is False


async def test_connect_gives_up_after_its_patience_and_says_so() -> None:
    """A refused database is retried for ``patience`` seconds, each retry logged with its
    attempt and the time left, then the error is raised (not ~19 s of silence)."""
    with (
        capture_logs() as events,
        pytest.raises(OSError, match="Connect call failed"),
    ):
        await connect(CLOSED, patience=0.5)
    retries = [e for e in events if e["event"] == "database not reachable yet"]
    assert retries
    assert retries[0]["attempt"] == 1
    assert {"url", "retry_in_s", "giving_up_in_s"} <= retries[0].keys()
    assert all(r["giving_up_in_s"] <= 0.5 for r in retries)


# --- promote: what the operator is told ----------------------------------------------------------


def test_promote_names_the_scorers_poll_interval_truthfully() -> None:
    """The "changed, announcement failed" message promises the scorer's real poll interval."""
    assert operator.REGISTRY_POLL_S == scorer.REGISTRY_POLL_S


# --- Faust's own pages -------------------------------------------------------------------------


def test_faust_table_router_and_stats_pages_are_not_mounted() -> None:
    """The worker's web server mounts none of Faust's pages but the plain index: no /table/
    (the reconciler's ledgers), /router/, statistics, /graph/ or /performance/."""
    app, _ = create_app(Settings(dev_mode=True))
    mounted = dict(app.web._enabled_blueprints())
    assert mounted == {"": "faust.web.apps.production_index:blueprint"}
    assert not app.conf.web_tables_enabled
    assert not app.conf.web_router_enabled
