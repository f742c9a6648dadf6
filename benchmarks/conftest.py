"""Benchmark fixtures. The real Postgres and emulator fixtures come from testing/fixtures.py,
loaded as a plugin (not copied): `pg_server`, `template_db`, `db_url`, `env`, `emulator`, `start_pool`; so
the server is chosen as in the tests, WORKERPOOL_TEST_EMBEDDED_PG=1 included.

Run from the repository root: `python -m pytest benchmarks/` (or `pytest benchmarks/`).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `testing` (the shared fixtures and helpers) must be importable
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["testing.fixtures"]

from benchmarks import _bench  # noqa: E402
from testing.pg import create_database, drop_database, with_dbname  # noqa: E402  (after the path is set up)
from workerpool.capture.triggers import watch  # noqa: E402


def source_fingerprint() -> str:
    """A short hash of the package (code and SQL) as benchmarked (the code changes often; git is not used).
    The SQL is read from sql/ (workerpool/db/sql is a symlink to it, which `glob("**")` does not follow)."""
    import hashlib

    h = hashlib.sha256()
    code = [*ROOT.glob("workerpool/**/*.py"), *ROOT.glob("workerpool/**/*.sql"), *ROOT.glob("sql/**/*.sql")]
    for path in sorted(code):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


SOURCE_AT_START = source_fingerprint()


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = "smoke" if _bench.SMOKE else ("full" if _bench.FULL else "default subset")
    return [
        f"workerpool benchmarks: {mode}, rows={_bench.ROWS}, batch sizes={_bench.BATCH_SIZES}, "
        f"workers={_bench.WORKER_COUNTS}, pool sizes={_bench.POOL_SIZES}, memory rows={_bench.MEMORY_ROWS}, "
        f"source {SOURCE_AT_START}"
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_generate_commit_info(config: pytest.Config) -> dict:
    """pytest-benchmark would shell out to git for this; the benchmarks do not touch the repository."""
    return {"id": None, "time": None, "author_time": None, "dirty": None, "project": "workerpool", "branch": None}


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    import os

    machine_info["workerpool_bench"] = {
        "smoke": _bench.SMOKE,
        "full": _bench.FULL,
        "rows": _bench.ROWS,
        "small_batch_rows": _bench.SMALL_BATCH_ROWS,
        "memory_rows": _bench.MEMORY_ROWS,
        "cpu_count": os.cpu_count(),
        "source_at_start": SOURCE_AT_START,
        "source_at_end": source_fingerprint(),
    }


@pytest.fixture
def bench_round() -> int:
    """Which round of a repeated point this is (WORKERPOOL_BENCH_REPEAT); 1 when not repeated."""
    return 1


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _bench.REPEAT > 1 and "bench_round" in metafunc.fixturenames:
        metafunc.parametrize("bench_round", range(1, _bench.REPEAT + 1), ids=lambda r: f"r{r}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Rounds interleave: every repeated point's round 1, then every round 2, and so on."""
    if _bench.REPEAT > 1:
        items.sort(
            key=lambda item: (getattr(item, "callspec", None) and item.callspec.params.get("bench_round", 0)) or 0
        )


@pytest.fixture(scope="session")
def products_templates(pg_server: str, template_db: str) -> Iterator[Callable[[int], str]]:
    """Databases (built once per row count, cloned per benchmark): the migrated schema, a watched
    `products` table of N rows and N pending queue rows, vacuumed and analyzed."""
    built: dict[int, str] = {}

    def get(rows: int) -> str:
        if rows in built:
            return built[rows]
        name = f"{template_db}_p{rows}"
        create_database(pg_server, name, template=template_db)
        built[rows] = name
        with psycopg.connect(with_dbname(pg_server, name), autocommit=True) as conn:
            _bench.create_products(conn)
            _bench.fill_products(conn, rows)
            watch(conn, "products", "products")
            conn.execute(_bench.ENQUEUE_ALL)
            conn.execute("VACUUM ANALYZE products")
            conn.execute("VACUUM ANALYZE algolia_sync_queue")
        return name

    yield get
    for name in built.values():
        drop_database(pg_server, name)


@pytest.fixture
def products_db(pg_server: str, products_templates: Callable[[int], str]) -> Iterator[Callable[[int], str]]:
    """`products_db(rows)`: the URL of a fresh clone holding `rows` products, all of them queued."""
    made: list[str] = []

    def make(rows: int) -> str:
        template = products_templates(rows)
        name = f"{template}_{uuid.uuid4().hex[:8]}"
        create_database(pg_server, name, template=template)
        made.append(name)
        _bench.checkpoint(pg_server)
        return with_dbname(pg_server, name)

    yield make
    for name in made:
        drop_database(pg_server, name)
