"""One settings object for the whole service, read from ``TIPSTREAM_*`` environment variables.

Every threshold, window and address lives here with its default, so the README's table and the
code cannot disagree (``ENV_VARS`` is the table). Settings are immutable: a worker reads them
once at start, and they are validated when built (:meth:`Settings.__post_init__`): a NaN or
out-of-range value is refused at start, naming the variable, instead of quietly disabling
what it configures (``nan`` as a decay threshold never fires).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from models.policy import parse as parse_policy
from models.serialization import MIN_KEY_BYTES, Keyring, check_key, key_id_for
from streams.log import redact

ENV_PREFIX = "TIPSTREAM_"
DEV_REGISTRY_KEY = b"tipstream-development-key-public-never-use-in-production"
"""The key ``TIPSTREAM_DEV_MODE=1`` signs with: public, so state it signed proves nothing."""

LOG_FORMATS = ("json", "console", "auto")
"""Accepted values of ``TIPSTREAM_LOG_FORMAT``."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""Accepted values of ``TIPSTREAM_LOG_LEVEL`` (any case)."""
EVENT_LOOPS = ("uvloop", "asyncio")
"""Accepted values of ``TIPSTREAM_EVENT_LOOP``."""
TABLE_STORES = ("memory", "rocksdb")
"""Accepted values of ``TIPSTREAM_TABLE_STORE``: Faust's in-memory store, or RocksDB on local
disk through ``rocksdict`` (the ``rocksdb`` extra); docs/DEPLOYMENT.md has the figures."""
DRIFT_DETECTORS = ("adwin", "page-hinkley")
"""Accepted values of ``TIPSTREAM_DRIFT_DETECTOR``: the names ``agents.monitor_rules.make_detector``
knows (a unit test keeps the two in step; importing it here would load River in every command)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Service settings; each field is read from ``TIPSTREAM_<FIELD>`` (upper case)."""

    kafka_url: str = "kafka://127.0.0.1:9092"
    database_url: str = "postgresql://tipstream:tipstream@127.0.0.1:5432/tipstream"
    topic_prefix: str = "tipstream"
    partitions: int = 4
    log_format: str = "auto"  # json | console | auto (console on a terminal)
    log_level: str = "info"
    # Secret (>= 32 bytes) signing stored model state; required unless dev_mode (see
    # registry_keys). The id defaults to the first 8 hex digits of the key's SHA-256.
    registry_key: str = ""
    registry_key_id: str = ""
    # Rotation: more keys accepted when verifying, as comma-separated id=key pairs.
    registry_verify_keys: str = ""
    # Development only (make test/demo/bench/chaos): a public key when registry_key is unset.
    dev_mode: bool = False
    # The Faust app id: consumer group and prefix of Faust's internal (changelog) topics.
    # Empty: derived from the topic prefix (see ``group_id``); set, it must agree with it.
    app_id: str = ""
    # Kafka in production: replicas and min.insync.replicas of every topic the service creates
    # (its own and Faust's changelogs); the defaults fit a single development broker.
    replication_factor: int = 1
    min_insync_replicas: int = 1
    # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL, for Faust, aiokafka and the admin client alike.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""
    # Kept out of the repr (logs, tracebacks) and out of `tipstream settings`.
    kafka_sasl_password: str = dataclasses.field(default="", repr=False)
    # TLS: the CA that signed the brokers' certificates (empty: the system's), and a client
    # certificate and key for mutual TLS (empty: none).
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # The worker's web endpoints (/status/, /metrics/, /health, /ready): loopback unless told
    # otherwise; the container image binds 0.0.0.0.
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # `tipstream console`: its address (loopback unless told otherwise), the operator token that
    # enables its actions (empty: read-only), and the workers' web endpoints it reads
    # (comma-separated base URLs; empty: http://web_host:web_port).
    console_host: str = "127.0.0.1"
    console_port: int = 6067
    console_token: str = dataclasses.field(default="", repr=False)
    console_workers: str = ""
    # Acked offsets are committed this often; a restart replays at most this much.
    commit_interval: float = 1.0
    # How long the broker waits for a worker's heartbeat before it gives the worker's
    # partitions to the others: after a crash (SIGKILL, a lost machine) that is how long they
    # stand still, and how long a replacement waits to be assigned. Heartbeats come from the
    # consumer's own thread, so a busy event loop does not miss them.
    session_timeout: float = 60.0
    # Models seeded into an empty registry on a worker's first start.
    champion_model: str = "online-logreg"
    challenger_models: str = "online-rating"  # comma-separated
    # Learning
    learning_policy: str = "all"
    snapshot_every: int = 20  # learned examples between two snapshots
    snapshot_seconds: float = 10.0  # ... or this many seconds, whichever comes first
    # Decay monitor: windows of evaluations, thresholds relative to the baseline.
    decay_window: int = 300
    decay_threshold: float = 0.05
    drift_detector: str = "page-hinkley"
    # Feature drift monitor (agents/drift.py, docs/MONITORING.md "Feature drift"): kickoff
    # windows of this many days, closed once every partition's features are grace_days past
    # the window's end, evaluated from this many matches; each feature's reference is
    # its last clean windows (at least min_reference matches); levels keep the expected false
    # alarms on a stationary stream to alarms_per_year, from this many resamples.
    drift_window_days: int = 28
    drift_grace_days: int = 7
    drift_min_window: int = 60
    drift_reference_windows: int = 13
    drift_min_reference: int = 500
    drift_resamples: int = 200
    drift_alarms_per_year: float = 1.0
    # Champion/challenger's promotion gate (agents.gate_rules, docs/MODELS.md): a challenger is
    # proposed (promoted with auto_promote) when, over every match its latest fit and the
    # champion both evaluated (at least gate_min_matches), a one-sided confidence sequence for
    # the mean per-match log-loss gain (valid however often the gate looks) is above 0 at
    # gate_confidence, its mean log loss is at most gate_market_margin above the opening line's,
    # its calibration error at most gate_calibration_limit, and no league with
    # gate_league_min_matches shared matches is worse than the champion by more than
    # gate_league_regression.
    gate_confidence: float = 0.95
    gate_min_matches: int = 300
    gate_market_margin: float = 0.02
    gate_calibration_limit: float = 0.03
    gate_league_regression: float = 0.05
    gate_league_min_matches: int = 50
    auto_promote: bool = False
    # Scheduled retraining (agents/trainer.py, leader only): refit these batch models on the
    # stored results every retrain_interval_seconds (0: no schedule), and on a decay alert on
    # the champion when retrain_on_decay is set (one refit per cooldown: one per incident).
    retrain_interval_seconds: float = 0.0
    retrain_on_decay: bool = False
    retrain_models: str = "batch-logreg"  # comma-separated batch model ids
    retrain_min_matches: int = 500
    retrain_folds: int = 5
    retrain_decay_cooldown_seconds: float = 21600.0
    # Features agent: a router partition that delivers nothing of a league while others do
    # for this many seconds stops holding the league's settling back (agents/features_rules.py).
    features_idle_seconds: float = 300.0
    # Reconciler: a reconciled match's ledger leaves the table once a result this many days
    # of kickoffs newer has arrived on its partition (event time); see docs/RELIABILITY.md.
    ledger_retention_days: int = 30
    # Model versions: after each new version the learner prunes its models' versions down to
    # this many newest (plus champions' and checkpoints' versions, and every version younger
    # than the ledger window); 0 keeps every version (`tipstream models prune` still works).
    keep_versions: int = 24
    # segment.ms of the ledgers changelog when Faust creates it: the broker compacts only
    # closed segments, so retired ledgers leave what a restart reads only after this long.
    ledger_segment_seconds: int = 3600
    # Event loop of a worker: uvloop (faster I/O) or asyncio (the standard library's).
    event_loop: str = "uvloop"
    # Whole-fetch delivery (streams/worker/whole_fetch.py): the worker hands each partition's
    # fetched messages to the agents as one list instead of one event at a time; off is
    # Faust's own per-message path (an escape hatch: the copies replace two Faust methods).
    whole_fetch: bool = True
    # Where the worker keeps its tables (``ledgers``, ``league-books``): "memory" (rebuilt from
    # the changelogs at each start) or "rocksdb" (on disk under table_dir, in a directory of
    # its own per app id and web port; a restart reads only the changelogs' tail).
    table_store: str = "memory"
    table_dir: str = ".local/tables"

    def __post_init__(self) -> None:
        problems = [
            f"{ENV_PREFIX}{name.upper()} must be {rule}, got {redact(repr(value))}"
            for name, value, rule in _violations(self)
        ]
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from the environment, each unset variable taking its default."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = source.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field.name, raw, field.default)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests give each run its own prefix)."""
        return dataclasses.replace(self, **changes)

    def with_database(self, name: str) -> Settings:
        """A copy pointed at another database of the same server."""
        return self.replace(database_url=self.database_url.rsplit("/", 1)[0] + "/" + name)

    def as_env(self) -> dict[str, str]:
        """The ``TIPSTREAM_*`` variables that make a subprocess read exactly these settings."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def registry_keys(self) -> Keyring:
        """The keys that sign and verify model state; ``ValueError`` naming the setting when
        no usable key is set (outside ``dev_mode``, no key is a refusal, never a default)."""
        key = self.registry_key.encode()
        if not key:
            if not self.dev_mode:
                raise ValueError(
                    f"{ENV_PREFIX}REGISTRY_KEY is not set: it signs stored model state and must "
                    f"be a secret of at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`); "
                    f"for local development only, set {ENV_PREFIX}DEV_MODE=1"
                )
            key = DEV_REGISTRY_KEY
        try:
            check_key(key, f"{ENV_PREFIX}REGISTRY_KEY")
            return Keyring(
                self.registry_key_id or key_id_for(key),
                key,
                _verify_keys(self.registry_verify_keys),
            )
        except ValueError as error:
            raise ValueError(f"registry keys: {error}") from error

    @property
    def uses_dev_key(self) -> bool:
        """True when model state is signed with the public development key."""
        return self.dev_mode and not self.registry_key

    def masked_url(self) -> str:
        """The database URL with its password masked: the form to print or log."""
        return redact(self.database_url)

    def database_address(self) -> str:
        """``host:port`` of the database (what an operator checks when it is unreachable)."""
        parts = urlsplit(self.database_url)
        try:
            port = parts.port or 5432
        except ValueError:  # not a number: asyncpg refuses it too, the address is still useful
            return parts.netloc.rpartition("@")[2] or "localhost"
        return f"{parts.hostname or 'localhost'}:{port}"

    @property
    def group_id(self) -> str:
        """The Faust app id in use: ``TIPSTREAM_APP_ID`` if set, else the one derived from the
        topic prefix, so two deployments with different prefixes never share a consumer group
        or a changelog."""
        return self.app_id or derived_app_id(self.topic_prefix)

    def check_isolation(self) -> None:
        """Refuse an app id that disagrees with the topic prefix: with it a deployment would
        share a consumer group (and restore ledgers) with another, or two groups would each
        consume this deployment's topics."""
        derived = derived_app_id(self.topic_prefix)
        if self.app_id and self.app_id != derived:
            raise SystemExit(
                f"tipstream: {ENV_PREFIX}APP_ID={self.app_id!r} does not match "
                f"{ENV_PREFIX}TOPIC_PREFIX={self.topic_prefix!r} (its app id is {derived!r}); "
                f"unset {ENV_PREFIX}APP_ID, or set it to {derived!r}"
            )

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` list for aiokafka, from the Faust-style ``kafka://`` URL."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka_url.split(";"))


def _verify_keys(raw: str) -> dict[str, bytes]:
    """``id=key,id=key`` as a mapping; a key may contain ``=`` but not ``,``."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key_id, sep, key = item.partition("=")
        if not sep or not key_id:
            raise ValueError(
                f"{ENV_PREFIX}REGISTRY_VERIFY_KEYS takes comma-separated id=key pairs, "
                f"got an entry without an id"
            )
        if key_id in keys:
            raise ValueError(f"{ENV_PREFIX}REGISTRY_VERIFY_KEYS names key {key_id!r} twice")
        keys[key_id] = key.encode()
    return keys


DEFAULT_PREFIX = "tipstream"


def derived_app_id(prefix: str) -> str:
    """The app id of a topic prefix: ``tipstream`` for the default prefix (today's consumer
    group and changelogs stay), ``tipstream-<prefix>`` for any other."""
    return DEFAULT_PREFIX if prefix == DEFAULT_PREFIX else f"{DEFAULT_PREFIX}-{prefix}"


def _parse(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
    try:
        return type(default)(raw)
    except ValueError as error:
        raise ValueError(
            f"{ENV_PREFIX}{name.upper()} must be a {type(default).__name__}, got {raw!r}"
        ) from error


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _policy_ok(text: str) -> bool:
    try:
        parse_policy(text)
    except ValueError:
        return False
    return True


MIN_KEEP_VERSIONS = 6
"""``agents.registry.KEEP_AT_LEAST`` (the scorer's fallback versions and the newest one), kept
in step by a unit test; importing the registry here would load every model for every command."""

_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("partitions", lambda v: v >= 1, "at least 1"),
    ("web_port", lambda v: 1 <= v <= 65535, "a TCP port in 1..65535"),
    ("console_port", lambda v: 1 <= v <= 65535, "a TCP port in 1..65535"),
    ("commit_interval", lambda v: _finite(v) and v > 0, "a finite number of seconds > 0"),
    (
        "session_timeout",
        lambda v: _finite(v) and 6 <= v <= 1800,
        "a number of seconds in 6..1800 (the broker's default group.min/max.session.timeout.ms)",
    ),
    ("snapshot_every", lambda v: v >= 1, "at least 1"),
    ("snapshot_seconds", lambda v: _finite(v) and v > 0, "a finite number of seconds > 0"),
    ("decay_window", lambda v: v >= 10, "at least 10 evaluations"),
    ("decay_threshold", lambda v: _finite(v) and 0 < v < 1, "a number with 0 < value < 1"),
    ("gate_confidence", lambda v: _finite(v) and 0.5 <= v < 1, "a number in [0.5, 1)"),
    ("gate_min_matches", lambda v: v >= 2, "at least 2"),
    ("gate_market_margin", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("gate_calibration_limit", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("gate_league_regression", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    ("gate_league_min_matches", lambda v: v >= 1, "at least 1"),
    (
        "retrain_interval_seconds",
        lambda v: _finite(v) and (v == 0 or v >= 1),
        "0 (no schedule) or a finite number of seconds >= 1",
    ),
    (
        "retrain_models",
        lambda v: all(m.startswith("batch-") for m in v.split(",") if m) and bool(v.strip()),
        "a comma-separated list of batch model ids (batch-...)",
    ),
    ("retrain_min_matches", lambda v: v >= 10, "at least 10 matches"),
    ("retrain_folds", lambda v: 2 <= v <= 20, "a number of folds in 2..20"),
    (
        "retrain_decay_cooldown_seconds",
        lambda v: _finite(v) and v >= 0,
        "a finite number of seconds >= 0",
    ),
    (
        "features_idle_seconds",
        lambda v: _finite(v) and v >= 1,
        "a finite number of seconds >= 1",
    ),
    ("ledger_retention_days", lambda v: 0 <= v <= 36_500, "a number of days in 0..36500"),
    ("ledger_segment_seconds", lambda v: v >= 1, "at least 1 second"),
    ("keep_versions", lambda v: v == 0 or v >= MIN_KEEP_VERSIONS, f"0 or >= {MIN_KEEP_VERSIONS}"),
    ("log_format", lambda v: v in LOG_FORMATS, f"one of {', '.join(LOG_FORMATS)}"),
    ("log_level", lambda v: v.lower() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
    ("event_loop", lambda v: v in EVENT_LOOPS, f"one of {', '.join(EVENT_LOOPS)}"),
    ("table_store", lambda v: v in TABLE_STORES, f"one of {', '.join(TABLE_STORES)}"),
    ("table_dir", lambda v: bool(v.strip()) and "{" not in v, "a directory path without braces"),
    ("drift_detector", lambda v: v in DRIFT_DETECTORS, f"one of {', '.join(DRIFT_DETECTORS)}"),
    ("drift_window_days", lambda v: 1 <= v <= 366, "a number of days in 1..366"),
    ("drift_grace_days", lambda v: 0 <= v <= 366, "a number of days in 0..366"),
    ("drift_min_window", lambda v: v >= 2, "at least 2 matches"),
    ("drift_reference_windows", lambda v: v >= 1, "at least 1 window"),
    ("drift_min_reference", lambda v: v >= 2, "at least 2 matches"),
    ("drift_resamples", lambda v: v >= 10, "at least 10"),
    ("drift_alarms_per_year", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    (
        "learning_policy",
        _policy_ok,
        "a learning policy: errors, errors:<confidence in [0, 1)>, all or weighted",
    ),
)
"""(field, check, rule as the error message says it) for every constrained setting."""


def _violations(settings: Settings) -> list[tuple[str, Any, str]]:
    """The settings that break their rule: (field, value, rule)."""
    broken = []
    for name, check, rule in _RULES:
        value = getattr(settings, name)
        try:
            ok = check(value)
        except (TypeError, AttributeError):  # a wrong type passed in code, not the environment
            ok = False
        if not ok:
            broken.append((name, value, rule))
    return broken


def use_event_loop(settings: Settings) -> None:
    """Install the configured event loop policy; call before any loop or Faust app exists."""
    if settings.event_loop not in EVENT_LOOPS:
        raise ValueError(
            f"{ENV_PREFIX}EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}, "
            f"got {settings.event_loop!r}"
        )
    if settings.event_loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")


ENV_VARS: dict[str, str] = {ENV_PREFIX + f.name.upper(): str(f.default) for f in fields(Settings)}
"""Every environment variable the service reads, with its default."""
