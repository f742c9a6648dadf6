"""The suite's fixtures, a pytest plugin: tests/conftest.py and benchmarks/conftest.py load it.

A real Postgres (chosen by testing.pg) and the emulator over real HTTP, never mocks. The run
creates its own template database (migrated once), each test gets a fresh clone of it, and everything
is dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from testing.constants import API_KEY, APP_ID, PRODUCTS
from testing.pg import create_database, drop_database, embedded_forced, server_kind, server_urls, with_dbname
from testing.processes import Pool, run_cli
from workerpool.emulator import Emulator
from workerpool.ops.migrate import migrate

_server_used: list[str] = []  # what the run's summary says it ran on (no DSN: it may hold a password)


def pytest_configure(config: pytest.Config) -> None:
    embedded_forced()  # a bad value stops the run before any test, with one line


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for server in _server_used:
        terminalreporter.write_line(f"workerpool tests ran on {server}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A URL of the run's server whose user may create databases."""
    servers = server_urls()
    url = next(servers)
    with psycopg.connect(url) as conn:
        version = conn.info.server_version
    _server_used.append(f"PostgreSQL {version // 10000}.{version % 10000} ({server_kind(url)})")
    try:
        yield url
    finally:
        servers.close()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    """This run's own database, migrated once; tests clone it."""
    name = f"workerpool_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    create_database(pg_server, name)
    try:
        with psycopg.connect(with_dbname(pg_server, name), autocommit=True) as conn:
            migrate(conn)
        yield name
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def db_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"{template_db}_{uuid.uuid4().hex[:8]}"
    create_database(pg_server, name, template=template_db)
    yield with_dbname(pg_server, name)
    drop_database(pg_server, name)


@pytest.fixture
def empty_db_url(pg_server: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"workerpool_empty_{uuid.uuid4().hex[:8]}"
    create_database(pg_server, name)
    yield with_dbname(pg_server, name)
    drop_database(pg_server, name)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's fresh, migrated database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def _emulator() -> Iterator[Emulator]:
    with Emulator(app_id=APP_ID, api_key=API_KEY).start() as emu:
        yield emu


@pytest.fixture
def emulator(_emulator: Emulator) -> Emulator:
    """The run's emulator, emptied for this test."""
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


@pytest.fixture
def products(db: psycopg.Connection, env: dict[str, str]) -> psycopg.Connection:
    """The `products` table, created and watched (index `products`)."""
    db.execute(PRODUCTS)
    result = run_cli(env, "watch", "products", "--index", "products")
    assert result.returncode == 0, result.stderr
    return db


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
