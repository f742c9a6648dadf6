"""Configuration: environment variables, a `.env` file, and command-line overrides.

The contract (README, Configuration): every variable has a default or is required for `run`; the environment
wins over `.env`; flags win over both; a bad value stops start-up with exit code 2 and one line
naming the variable, the bad value and what is allowed. Secrets are never echoed back.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from workerpool.redaction import dsn_passwords, environment_secrets, redact_dsn


class ConfigError(Exception):
    """A bad or missing setting. Its message is one line meant for the operator."""


def _int_range(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number; expected an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={raw!r} is out of range; expected an integer from {lo} to {hi}")
        return value

    return parse


def _batch_size_max(name: str, raw: str) -> int:
    """A whole number up to 10000; `load` holds it to BATCH_SIZE or more, once both are known."""
    return _int_range(1, 10_000)(name, raw)


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    allowed = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if level == "WARN":
        level = "WARNING"
    if level not in allowed:
        raise ConfigError(f"{name}={raw!r} is not a log level; expected one of {', '.join(allowed)}")
    return level


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().rstrip("/") for h in raw.split(",") if h.strip())
    for host in hosts:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{name} has {host!r}, which is not a base URL; expected comma-separated URLs like http://127.0.0.1:8089"
            )
        try:
            _ = parts.port  # the property parses the port and raises ValueError for a bad one
        except ValueError:
            raise ConfigError(f"{name} has {host!r}, whose port is not a number from 1 to 65535") from None
    return hosts


_INDEX_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]*$")


def _prefix(name: str, raw: str) -> str:
    if not _INDEX_PREFIX.match(raw):
        raise ConfigError(
            f"{name}={raw!r} has characters Algolia index names avoid; expected letters, digits, '_', '-' or '.'"
        )
    return raw


def _address(name: str, raw: str) -> str:
    """An IP address to bind: 127.0.0.1 (this host only), 0.0.0.0 or :: (every interface), or one
    interface's address."""
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an IP address; expected 127.0.0.1 (this host only), 0.0.0.0 (every interface) "
            "or one of this host's addresses"
        ) from None


def _days(name: str, raw: str) -> float:
    try:
        value = float(raw.strip().replace("_", ""))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 36_500:  # also refuses nan and inf
        raise ConfigError(
            f"{name}={raw!r} is not a number of days; expected 0 (keep forever) or a number up to 36500, "
            "decimals allowed (0.5 = 12 hours)"
        )
    return value


def _ratio(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1_000_000:
        raise ConfigError(f"{name}={raw!r} is not a ratio; expected a number from 0 (no warning) to 1000000")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; expected true or false (also 1/0, yes/no, on/off)")


def _text(name: str, raw: str) -> str:
    return raw


POOL_MODES = ("auto", "direct", "session", "transaction")


def _pool_mode(name: str, raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in POOL_MODES:
        raise ConfigError(f"{name}={raw!r} is not a pool mode; expected one of {', '.join(POOL_MODES)}")
    return mode


DASHBOARD_TOKEN_MIN = 16


def _token(name: str, raw: str) -> str:
    """A bearer token: long enough not to be guessed, and sendable in an HTTP header. Never echoed."""
    token = raw.strip()
    if len(token) < DASHBOARD_TOKEN_MIN:
        raise ConfigError(
            f"{name} is too short ({len(token)} characters); expected at least {DASHBOARD_TOKEN_MIN} "
            "characters, e.g. from `openssl rand -hex 24`"
        )
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(
            f"{name} has a space or a non-ASCII character; expected printable ASCII without spaces "
            "(it travels in an HTTP Authorization header)"
        )
    return token


def _dsn(name: str, raw: str) -> str:
    raw = raw.strip()
    if raw and not (raw.startswith(("postgres://", "postgresql://")) or "=" in raw):
        raise ConfigError(
            f"{name}={redact_dsn(raw)!r} is not a Postgres connection string; expected postgresql://user@host:port/dbname"
        )
    return raw


@dataclass(frozen=True)
class Settings:
    """Every runtime setting, already validated. Times are in milliseconds, as in the contract."""

    database_url: str = ""
    database_pool_mode: str = "auto"
    listen_database_url: str = ""
    algolia_app_id: str = ""
    algolia_admin_key: str = field(default="", repr=False)
    algolia_hosts: tuple[str, ...] = ()
    algolia_index_prefix: str = ""
    algolia_forward_to_replicas: bool = False
    batch_size: int = 100
    batch_size_max: int = 1000
    polling_interval: int = 5000
    max_retries: int = 5
    shutdown_timeout: int = 30000
    workers: int = 1
    pool_size: int = 2
    lease_timeout: int = 60000
    log_level: str = "INFO"
    health_port: int = 0
    health_host: str = "127.0.0.1"
    health_stall_seconds: int = 60
    health_algolia_down_seconds: int = 60
    restart_limit: int = 5
    restart_window: int = 60_000
    retry_backoff: int = 1000
    retry_backoff_max: int = 300_000
    max_record_bytes: int = 100_000
    max_request_bytes: int = 9_000_000
    algolia_request_deadline: int = 30_000
    algolia_max_answer_bytes: int = 16_000_000
    requests_in_flight: int = 8
    task_tracking: int = 16
    transform_timeout: int = 5000
    worker_timeout: int = 120_000
    dashboard_token: str = field(default="", repr=False)
    log_retention_days: float = 7.0
    vacuum_warn_dead_ratio: float = 5.0
    vacuum_warn_min_dead: int = 10_000
    vacuum_warn_horizon_seconds: int = 300

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        **overrides: Any,
    ) -> Settings:
        """Settings as `workerpool run` reads them: `.env`, then the environment (or `environ`), then
        `overrides` given by field name (`batch_size=500`). A bad value raises `ConfigError`, one
        line naming the variable and the value.

        Examples:
            >>> from workerpool import Settings
            >>> settings = Settings.from_env(batch_size=500)
            >>> settings.batch_size
            500
        """
        return load(overrides, environ, env_file)

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line, an error or `stats` output."""
        found = [s for s in (self.algolia_admin_key, self.dashboard_token) if s]
        return (
            found + dsn_passwords(self.database_url) + dsn_passwords(self.listen_database_url) + environment_secrets()
        )

    def require_algolia(self) -> None:
        """`run` and friends need credentials; say which one is missing."""
        for env, value in (("ALGOLIA_APP_ID", self.algolia_app_id), ("ALGOLIA_ADMIN_KEY", self.algolia_admin_key)):
            if not value:
                raise ConfigError(
                    f"{env} is not set; it is required to talk to Algolia (set it in the environment or .env)"
                )

    def require_database(self) -> None:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set; expected postgresql://user@host:port/dbname")


# name -> (field, parser). The order is the contract's table order.
VARIABLES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "DATABASE_URL": ("database_url", _dsn),
    "DATABASE_POOL_MODE": ("database_pool_mode", _pool_mode),
    "LISTEN_DATABASE_URL": ("listen_database_url", _dsn),
    "ALGOLIA_APP_ID": ("algolia_app_id", _text),
    "ALGOLIA_ADMIN_KEY": ("algolia_admin_key", _text),
    "ALGOLIA_HOSTS": ("algolia_hosts", _hosts),
    "ALGOLIA_INDEX_PREFIX": ("algolia_index_prefix", _prefix),
    "ALGOLIA_FORWARD_TO_REPLICAS": ("algolia_forward_to_replicas", _bool),
    "BATCH_SIZE": ("batch_size", _int_range(1, 10_000)),
    "BATCH_SIZE_MAX": ("batch_size_max", _batch_size_max),
    "POLLING_INTERVAL": ("polling_interval", _int_range(10, 3_600_000)),
    "MAX_RETRIES": ("max_retries", _int_range(1, 1000)),
    "SHUTDOWN_TIMEOUT": ("shutdown_timeout", _int_range(0, 3_600_000)),
    "WORKERS": ("workers", _int_range(1, 256)),
    "POOL_SIZE": ("pool_size", _int_range(1, 100)),
    "LEASE_TIMEOUT": ("lease_timeout", _int_range(1000, 86_400_000)),
    "LOG_LEVEL": ("log_level", _log_level),
    "HEALTH_PORT": ("health_port", _int_range(0, 65535)),
    "HEALTH_HOST": ("health_host", _address),
    "HEALTH_STALL_SECONDS": ("health_stall_seconds", _int_range(1, 86_400)),
    "HEALTH_ALGOLIA_DOWN_SECONDS": ("health_algolia_down_seconds", _int_range(1, 86_400)),
    "RESTART_LIMIT": ("restart_limit", _int_range(1, 100_000)),
    "RESTART_WINDOW": ("restart_window", _int_range(1000, 86_400_000)),
    "RETRY_BACKOFF": ("retry_backoff", _int_range(0, 3_600_000)),
    "RETRY_BACKOFF_MAX": ("retry_backoff_max", _int_range(0, 86_400_000)),
    "MAX_RECORD_BYTES": ("max_record_bytes", _int_range(0, 100_000_000)),
    "MAX_REQUEST_BYTES": ("max_request_bytes", _int_range(1000, 100_000_000)),
    "ALGOLIA_REQUEST_DEADLINE": ("algolia_request_deadline", _int_range(1000, 3_600_000)),
    "ALGOLIA_MAX_ANSWER_BYTES": ("algolia_max_answer_bytes", _int_range(1000, 1_000_000_000)),
    "REQUESTS_IN_FLIGHT": ("requests_in_flight", _int_range(1, 64)),
    "TASK_TRACKING": ("task_tracking", _int_range(0, 1000)),
    "TRANSFORM_TIMEOUT": ("transform_timeout", _int_range(0, 3_600_000)),
    "WORKER_TIMEOUT": ("worker_timeout", _int_range(1000, 86_400_000)),
    "DASHBOARD_TOKEN": ("dashboard_token", _token),
    "LOG_RETENTION_DAYS": ("log_retention_days", _days),
    "VACUUM_WARN_DEAD_RATIO": ("vacuum_warn_dead_ratio", _ratio),
    "VACUUM_WARN_MIN_DEAD": ("vacuum_warn_min_dead", _int_range(0, 1_000_000_000)),
    "VACUUM_WARN_HORIZON_SECONDS": ("vacuum_warn_horizon_seconds", _int_range(0, 31_536_000)),
}

_FIELD_TO_VAR = {f: var for var, (f, _) in VARIABLES.items()}

# What each variable means, for `--help` (cli derives every flag's text from here).
MEANINGS: dict[str, str] = {
    "DATABASE_URL": "Postgres DSN, e.g. postgresql://user@host:5432/dbname",
    "DATABASE_POOL_MODE": "what is between workerpool and Postgres: direct, session (session pooling), transaction "
    "(transaction pooling: no prepared statements, no session state) or auto (transaction when a proxy is seen)",
    "LISTEN_DATABASE_URL": "a direct Postgres DSN for the workers' LISTEN connections only, when DATABASE_URL goes "
    "through transaction pooling (which drops notifications)",
    "ALGOLIA_APP_ID": "Algolia application id",
    "ALGOLIA_ADMIN_KEY": "Algolia admin API key (never logged)",
    "ALGOLIA_HOSTS": "comma-separated base URLs replacing Algolia's hosts, e.g. http://127.0.0.1:8089",
    "ALGOLIA_INDEX_PREFIX": "prefix for every index name (dev/staging/prod on one Algolia app)",
    "ALGOLIA_FORWARD_TO_REPLICAS": "settings push applies the settings to each index's replicas too "
    "(Algolia's forwardToReplicas)",
    "BATCH_SIZE": "rows claimed per batch, 1-10000",
    "BATCH_SIZE_MAX": "rows a claim may grow to while claims come back full (a deep backlog), BATCH_SIZE-10000",
    "POLLING_INTERVAL": "milliseconds between polls when no NOTIFY arrives",
    "MAX_RETRIES": "attempts before a row is marked failed",
    "SHUTDOWN_TIMEOUT": "milliseconds a graceful stop may take before workers are killed",
    "WORKERS": "worker processes of this supervisor",
    "POOL_SIZE": "database connections in each worker's pool",
    "LEASE_TIMEOUT": "milliseconds before an unacknowledged claim returns to the queue",
    "LOG_LEVEL": "level of the JSON logs on stdout: DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "HEALTH_PORT": "port serving /healthz and /metrics (0: off)",
    "HEALTH_HOST": "address /healthz and /metrics are served on (0.0.0.0: every interface)",
    "HEALTH_STALL_SECONDS": "seconds a backlog may stand still before /healthz fails",
    "HEALTH_ALGOLIA_DOWN_SECONDS": "seconds Algolia may be unreachable (5xx, network errors, timeouts, answers that "
    "are not Algolia's) before /healthz fails",
    "RESTART_LIMIT": "workers dying before their first settled batch, within RESTART_WINDOW, that make the "
    "supervisor give up (exit 3)",
    "RESTART_WINDOW": "milliseconds over which RESTART_LIMIT counts crashes",
    "RETRY_BACKOFF": "milliseconds before the first retry of a failed row (doubled per attempt, jittered)",
    "RETRY_BACKOFF_MAX": "cap in milliseconds of the retry backoff",
    "MAX_RECORD_BYTES": "records larger than this many bytes fail before sending (0: no check)",
    "MAX_REQUEST_BYTES": "a batch larger than this many bytes is split into several requests",
    "ALGOLIA_REQUEST_DEADLINE": "milliseconds one batch request to Algolia may take, from connecting to the last "
    "byte of the answer (a slower one is cut and retried)",
    "ALGOLIA_MAX_ANSWER_BYTES": "bytes an answer to a batch request may have (a larger one is cut and retried)",
    "REQUESTS_IN_FLIGHT": "batches each worker keeps on the wire at once, each under its own claim",
    "TASK_TRACKING": "Algolia tasks each worker follows until published (time to searchable; 0: off)",
    "TRANSFORM_TIMEOUT": "milliseconds a --transform may take for one record before that record fails (0: no limit)",
    "WORKER_TIMEOUT": "milliseconds a worker's claim loop may go without turning before the supervisor kills and "
    "replaces it",
    "DASHBOARD_TOKEN": "bearer token that allows the dashboard's actions (never logged)",
    "LOG_RETENTION_DAYS": "days the running pool keeps algolia_sync_log rows (decimals allowed; 0: forever)",
    "VACUUM_WARN_DEAD_RATIO": "warn when a hot table's dead tuples pass this many times its live ones (0: never)",
    "VACUUM_WARN_MIN_DEAD": "dead tuples a hot table must have before VACUUM_WARN_DEAD_RATIO warns",
    "VACUUM_WARN_HORIZON_SECONDS": "warn when the xmin horizon has been held back this many seconds (0: never)",
}

# Defaults whose value alone would not say what they mean.
_DEFAULT_TEXT = {
    "DATABASE_URL": "none, `demo` starts an embedded server",
    "LISTEN_DATABASE_URL": "none, DATABASE_URL (polling only under transaction pooling)",
    "ALGOLIA_APP_ID": "none",
    "ALGOLIA_ADMIN_KEY": "none",
    "ALGOLIA_HOSTS": "Algolia's own hosts",
    "ALGOLIA_INDEX_PREFIX": "none",
    "ALGOLIA_FORWARD_TO_REPLICAS": "false",
    "HEALTH_PORT": "0, off",
    "DASHBOARD_TOKEN": "empty, the dashboard is read-only",
}


def flag_help(var: str) -> str:
    """The `--help` text of a flag that overrides `var`: meaning, default, and the variable itself."""
    default = _DEFAULT_TEXT.get(var, str(getattr(Settings(), VARIABLES[var][0])))
    return f"{MEANINGS[var]} (default: {default}; environment: {var})"


def load(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
) -> Settings:
    """Build Settings from `.env`, then the environment, then `overrides` (field name -> raw value).

    Overrides with value None are ignored, so argparse namespaces can be passed through directly.
    """
    source: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        try:
            from_file = dotenv_values(env_file, encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{env_file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "expected a UTF-8 file of NAME=value lines"
            ) from None
        source.update({k: v for k, v in from_file.items() if v is not None})
    source.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    for var, (name, parse) in VARIABLES.items():
        raw = source.get(var)
        if raw is not None and raw.strip() != "":
            values[name] = parse(var, raw)
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        var = _FIELD_TO_VAR[name]
        values[name] = VARIABLES[var][1](var, str(raw))
    size = values.get("batch_size", Settings.batch_size)
    top = values.setdefault("batch_size_max", max(Settings.batch_size_max, size))  # unset: follows BATCH_SIZE up
    if top < size:
        raise ConfigError(f"BATCH_SIZE_MAX={top} is below BATCH_SIZE={size}; expected a number from {size} to 10000")
    return replace(Settings(), **values)
