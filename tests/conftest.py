"""Shared fixtures: a real Postgres and the emulator over real HTTP, never mocks.

Postgres: DATABASE_URL when set, otherwise the local server on 127.0.0.1:5432, otherwise an embedded
one (pgserver); WORKERPOOL_TEST_EMBEDDED_PG=1 forces the embedded one whatever else answers, so that
a machine with a server can still prove the path of a machine without one. The run creates its own
template database (migrated once), each test gets a fresh clone of it, and everything is dropped at
the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from workerpool.emulator import Emulator
from workerpool.ops.migrate import migrate
from workerpool.runtime import queue, records

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "TESTAPP"
API_KEY = "test-admin-key-5f2a9c"  # grepped for in every captured output: it must never leak


EMBEDDED_SWITCH = "WORKERPOOL_TEST_EMBEDDED_PG"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def embedded_forced() -> bool:
    """Whether WORKERPOOL_TEST_EMBEDDED_PG asks for the embedded server ("1"; "0" or unset: no)."""
    value = os.environ.get(EMBEDDED_SWITCH, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(
            f"{EMBEDDED_SWITCH}={value!r} is not allowed: use 1 to force the embedded "
            f"Postgres, 0 or unset for DATABASE_URL, else 127.0.0.1:5432, else embedded"
        )
    return value == "1"


def pytest_configure(config: pytest.Config) -> None:
    embedded_forced()  # a bad value stops the run before any test, with one line


@contextlib.contextmanager
def embedded_server() -> Iterator[Any]:
    """A private embedded server (a pgserver.PostgresServer), its data in a new workerpool-pg-*
    directory of the system's temporary directory, stopped before that directory is removed.

    Not under pytest's tmp_path: run as root, pgserver runs Postgres as the user `pgserver`, which
    must traverse every parent directory, and each pytest session that starts on the machine resets
    pytest's temporary root to owner-only access."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
        import pgserver

    with tempfile.TemporaryDirectory(prefix="workerpool-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()


def _embedded_server_url() -> Iterator[str]:
    with embedded_server() as server:
        yield server.get_uri()


def _server_url() -> Iterator[str]:
    """A URL whose user may create databases: embedded when forced, else DATABASE_URL, else the local
    server, else embedded."""
    if embedded_forced():
        yield from _embedded_server_url()
        return
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    try:
        psycopg.connect(LOCAL_URL, connect_timeout=3).close()
        yield LOCAL_URL
        return
    except psycopg.Error:
        pass
    yield from _embedded_server_url()


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


_server_used: list[str] = []  # what the run's summary says it ran on (no DSN: it may hold a password)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    servers = _server_url()
    url = next(servers)
    with psycopg.connect(url) as conn:
        version = conn.info.server_version
    kind = (
        "127.0.0.1:5432"
        if url == LOCAL_URL
        else "DATABASE_URL"
        if url == os.environ.get("DATABASE_URL")
        else "embedded, pgserver"
    )
    _server_used.append(f"PostgreSQL {version // 10000}.{version % 10000} ({kind})")
    try:
        yield url
    finally:
        servers.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for server in _server_used:
        terminalreporter.write_line(f"workerpool tests ran on {server}")


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """This run's own database, migrated once; tests clone it."""
    name = f"workerpool_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(_with_dbname(pg_server, name), autocommit=True) as conn:
            migrate(conn)
        yield name
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"{template_db}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
        )
    yield _with_dbname(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db_url(pg_server: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"workerpool_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_dbname(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def _emulator() -> Iterator[Emulator]:
    with Emulator(app_id=APP_ID, api_key=API_KEY).start() as emu:
        yield emu


@pytest.fixture
def emulator(_emulator: Emulator) -> Emulator:
    _emulator.reset()
    return _emulator


@pytest.fixture
def env(db_url: str, emulator: Emulator) -> dict[str, str]:
    """The environment a `workerpool` subprocess runs with in tests."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ALGOLIA_", "WORKERPOOL_"))}
    base.update(
        DATABASE_URL=db_url,
        ALGOLIA_APP_ID=APP_ID,
        ALGOLIA_ADMIN_KEY=API_KEY,
        ALGOLIA_HOSTS=emulator.url,
        POLLING_INTERVAL="500",
        LEASE_TIMEOUT="10000",
        SHUTDOWN_TIMEOUT="10000",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return base


PRODUCTS = """
CREATE TABLE products (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    price       numeric(12, 2),
    stock       integer DEFAULT 0,
    tags        text[],
    attrs       jsonb,
    released_on date,
    updated_at  timestamptz DEFAULT now()
)"""


@pytest.fixture
def products(db: psycopg.Connection, env: dict[str, str]) -> psycopg.Connection:
    db.execute(PRODUCTS)
    result = run_cli(env, "watch", "products", "--index", "products")
    assert result.returncode == 0, result.stderr
    return db


def workerpool_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "workerpool", *args]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Run one `workerpool` command to completion."""
    return subprocess.run(
        workerpool_cmd(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or tempfile.gettempdir(),
    )


class Pool:
    """A `workerpool run` supervisor running in the background, its output kept in a file."""

    def __init__(self, env: dict[str, str], *args: str, cwd: str | None = None, prefix: Sequence[str] = ()) -> None:
        # `prefix` runs the command through another, e.g. `ip netns exec NAME` (which execs in place).
        # Open while the pool runs: the supervisor writes to it.
        self.log_file = tempfile.NamedTemporaryFile(prefix="workerpool-run-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*prefix, *workerpool_cmd("run", *args)],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd or tempfile.gettempdir(),
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return Path(self.log_file.name).read_text()

    def lines(self, action: str) -> list[dict[str, Any]]:
        import orjson

        found = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if event.get("action") == action:
                    found.append(event)
        return found

    def worker_pids(self) -> list[int]:
        """Pids of live worker processes of this supervisor."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


@pytest.fixture
def start_pool(env: dict[str, str]) -> Iterator[Callable[..., Pool]]:
    """Start supervisors; any still running at the end of the test is killed with its workers."""
    pools: list[Pool] = []

    def start(*args: str, extra_env: dict[str, str] | None = None, prefix: Sequence[str] = ()) -> Pool:
        pool = Pool({**env, **(extra_env or {})}, *args, prefix=prefix)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.kill_all()


def drain(env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the pool until nothing is pending or processing; fail the test if it does not exit 0."""
    result = run_cli({**env, **(extra_env or {})}, "run", "--drain", *args, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def queue_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Queue rows by status, and keys that bulk statements left in the inbox as "inbox": empty when
    nothing is left to sync."""
    return dict(
        conn.execute(
            """SELECT status, count(*) FROM algolia_sync_queue GROUP BY status
           UNION ALL SELECT 'inbox', sum(keys) FROM algolia_sync_inbox HAVING count(*) > 0"""
        ).fetchall()
    )


def spill_all(conn: psycopg.Connection, max_keys: int = 10_000) -> int:
    """Move every key waiting in the inbox into the queue, max_keys per call as a worker with that
    BATCH_SIZE does before it claims."""
    moved = 0
    while n := queue.spill(conn, max_keys):
        moved += n
    return moved


def expected_records(conn: psycopg.Connection, relation: str, key: str) -> dict[str, dict]:
    """What the index must hold for a table: every row, serialized as workerpool maps types."""
    import orjson

    from workerpool.db.connection import connect

    query = sql.SQL("SELECT {key}::text AS __oid, t.* FROM {rel} t").format(
        key=sql.Identifier(key), rel=sql.SQL(relation)
    )
    out = {}
    # Read as the workers read: their session settings and value loaders.
    with connect(conn.info.dsn, purpose="test") as pinned, pinned.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for row in cur.execute(query):
            oid = row.pop("__oid")
            out[oid] = orjson.loads(records.dumps(records.to_record(row.keys(), row.values(), oid)))
    return out


def assert_index_matches(
    conn: psycopg.Connection, emulator: Emulator, relation: str, index: str, key: str = "id"
) -> None:
    """The index equals the table record for record: no missing, no extra, no stale."""
    expected = expected_records(conn, relation, key)
    actual = emulator.records(index)
    unversioned = sorted(k for k, r in actual.items() if not isinstance(r.pop("_version", None), int))
    assert not unversioned, f"records without an integer _version: {unversioned[:5]}"
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    stale = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    assert not (missing or extra or stale), (
        f"index {index} differs from {relation}: {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} extra {extra[:5]}, {len(stale)} stale {[(k, expected[k], actual[k]) for k in stale[:2]]}"
    )
