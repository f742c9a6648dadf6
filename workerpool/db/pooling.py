"""Behind a connection pooler: which session state workerpool relies on, and the settings every
record and key is read under.

`DATABASE_POOL_MODE` says what sits between workerpool and Postgres:

- `direct` or `session` (PgBouncer `pool_mode = session`): a client connection keeps one server
  session for its life. Statements are prepared on the server and the workers' sessions carry the
  pinned settings and `synchronous_commit = off`.
- `transaction` (PgBouncer `pool_mode = transaction`, Supavisor, RDS Proxy, Neon's pooled endpoint):
  each transaction may run on a different server session, which other clients share. Nothing is
  prepared on the server; the only session settings are DateStyle and TimeZone, which poolers keep
  per client (PgBouncer tracks them); LISTEN works only on `LISTEN_DATABASE_URL`.
- `auto` (the default): `direct`, unless the server sees the connection arrive from another port
  than the one workerpool opened, a proxy in between; then `transaction`, which is safe behind any
  pooler, with a warning naming the setting that chooses.

Whatever the mode, a record's values and a key's text are read inside a transaction that sets what
they depend on with SET LOCAL (`pinned`): no pooler, `PGTZ`, `PGDATESTYLE`, `ALTER DATABASE … SET`
or role setting can change them. `check_pinned` proves it on a process's first connection.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.pq import TransactionStatus

from workerpool.config import POOL_MODES, ConfigError

log = logging.getLogger(__name__)

# What a record's values and a key's text depend on: timestamps in UTC and ISO form, intervals in
# Postgres's form, floats in their shortest exact text, money in the C locale's form. row_security
# off: a read that a row-level security policy would filter fails with Postgres's message instead of
# running the policy, the table owner's code, as the pool's role (docs/roles.md).
PINNED = (
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("lc_monetary", "C"),
    ("row_security", "off"),
)
# Reported to the client and kept per client by poolers (PgBouncer's tracked parameters): safe as
# session settings in every mode, and what psycopg's date and time loaders need outside `pinned`.
_TRACKED = ("DateStyle", "TimeZone")

_SET_LOCAL = "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in PINNED)
_BEGIN_PINNED = "BEGIN; " + _SET_LOCAL

# Values whose text shows each pinned setting, and that text under the pinned settings.
_CANARY = (
    "SELECT concat_ws(' | ', '2001-02-03 04:05:06.5+00'::timestamptz, '2001-02-03'::date,"
    " '1 day 02:03:04'::interval, 0.1::float8, 12.5::numeric::money, current_setting('row_security'))"
)
_CANARY_EXPECTED = "2001-02-03 04:05:06.5+00 | 2001-02-03 | 1 day 02:03:04 | 0.1 | $12.50 | off"

_configured = "auto"
_resolved: str | None = None
_checked = False


def use(mode: str) -> None:
    """Set this process's pool mode (one of config.POOL_MODES) before it opens connections. The same
    mode again keeps what `auto` found and what `check_pinned` proved."""
    global _configured, _resolved, _checked
    if mode not in POOL_MODES:
        raise ConfigError(f"DATABASE_POOL_MODE={mode!r} is not valid; expected one of {', '.join(POOL_MODES)}")
    if mode == _configured:
        return
    _configured, _resolved, _checked = mode, (None if mode == "auto" else mode), False


def mode() -> str:
    """The mode connections follow: the configured one, or what `auto` found (`auto` before the
    first connection)."""
    return _resolved or _configured


def transaction_pooling() -> bool:
    """Whether server sessions may change between transactions (and be shared with other clients)."""
    return _resolved == "transaction"


def setup_session(conn: psycopg.Connection, *, worker: bool = False) -> None:
    """Set up a new connection for the mode: resolve `auto` on the first one, turn off server-side
    prepared statements under transaction pooling, and set what the session may carry. `worker`
    connections (claims and acks) also commit without waiting for the WAL flush where the session
    is theirs alone."""
    if _resolved is None:
        _resolve(conn)
    names: tuple[str, ...] = _TRACKED
    statements = []
    if transaction_pooling():
        conn.prepare_threshold = None
    else:
        names = tuple(name for name, _ in PINNED)
        if worker:
            # A lost commit only returns a claim or an ack to an earlier state (pending, or claimed
            # until the lease expires): the rows are sent again, never lost. Writers' own
            # transactions (the triggers) keep the server's setting.
            statements.append("SET synchronous_commit = off")
    settings = dict(PINNED)
    statements[:0] = [f"SET {name} = '{settings[name]}'" for name in names]
    conn.execute("; ".join(statements), prepare=False)
    check_pinned(conn)


def prepared(conn: psycopg.Connection) -> bool:
    """`prepare=` for a hot statement on `conn`: on the server unless the mode forbids it."""
    return conn.prepare_threshold is not None


@contextmanager
def pinned(conn: psycopg.Connection) -> Iterator[None]:
    """The block runs in one transaction under the PINNED settings (SET LOCAL): values read in it
    come out as records need them whatever the session's settings. Inside a transaction already,
    the settings are added to it for its rest."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute(_SET_LOCAL, prepare=False)
        yield
        return
    # BEGIN and the settings in one round trip, as psycopg's own transaction() would take two.
    conn.execute(_BEGIN_PINNED, prepare=False)
    try:
        yield
    except BaseException:
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK", prepare=False)
            except psycopg.Error:
                pass
        raise
    conn.execute("COMMIT", prepare=False)


class PinnedSettingsRefused(ConfigError):
    """Values read under the pinned settings do not come out as records need them."""


def check_pinned(conn: psycopg.Connection) -> None:
    """Refuse (one line) if values read under `pinned` would not come out as records and keys need
    them: a pooler or proxy that drops SET LOCAL, say. Once per process, on its first connection."""
    global _checked
    if _checked:
        return
    with pinned(conn):
        row = conn.execute(_CANARY, prepare=False).fetchone()
    got = row[0] if row else None
    if got != _CANARY_EXPECTED:
        raise PinnedSettingsRefused(
            f"values read under workerpool's pinned settings come out as {got!r}, expected {_CANARY_EXPECTED!r}:"
            " something between workerpool and Postgres drops SET LOCAL; connect directly or through"
            " a pooler that passes SET LOCAL through (docs/deployment.md#poolers)"
        )
    _checked = True


def _resolve(conn: psycopg.Connection) -> None:
    global _resolved
    proxy = _proxy_seen(conn)
    _resolved = "transaction" if proxy else "direct"
    if proxy:
        log.warning(
            "a proxy or pooler sits between workerpool and Postgres; working as under transaction pooling "
            "(no server-side prepared statements, LISTEN only on LISTEN_DATABASE_URL); set "
            "DATABASE_POOL_MODE=session or direct if each client connection keeps its own server session",
            extra={"action": "pooler_detected", "seen": proxy},
        )


def _proxy_seen(conn: psycopg.Connection) -> str:
    """What shows a proxy between us and the server ('' when nothing does): the server sees our
    connection come from a port other than the one we opened, or from a Unix socket when ours is
    TCP. A pooler reached through a Unix socket cannot be seen: set DATABASE_POOL_MODE."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return ""
            ours = sock.getsockname()[1]
    except OSError:
        return ""
    row = conn.execute("SELECT inet_client_port()", prepare=False).fetchone()
    theirs = row[0] if row else None
    if theirs is None:
        return f"our TCP port {ours}, a Unix socket at the server"
    if theirs != ours:
        return f"our TCP port {ours}, port {theirs} at the server"
    return ""
