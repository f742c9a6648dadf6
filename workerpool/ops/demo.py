"""`workerpool demo`: the whole pipeline on a laptop with nothing configured.

1. Postgres: an embedded server (pgserver, the `demo` extra) in a temporary directory, unless
   DATABASE_URL / --database-url is given; then that database is used, but everything lives in its
   own schema `workerpool_demo` (recreated on each run; `DROP SCHEMA workerpool_demo CASCADE` removes it).
2. Algolia: the project's emulator, in this process, on a free port of 127.0.0.1.
3. A small catalog (brands, categories, products), watched through a view that joins the brand and
   category names into each record; `workerpool run --workers 2` as a subprocess whose JSON logs go to
   a temporary file.
4. The initial sync, then live changes (a price update, a delete, an insert), a look at the index and
   at `workerpool stats`, and a graceful stop (SIGTERM, exit code 0).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import conninfo, sql

from workerpool import logs
from workerpool.db.connection import one_row
from workerpool.db.queries import Statements, parse
from workerpool.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED
from workerpool.runtime import queue

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

_T = TypeVar("_T")

SCHEMA = "workerpool_demo"
INDEX = "demo_products"
APP_ID = "DEMOAPP"
WAIT_S = 45.0

BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark"]
CATEGORIES = ["Chairs", "Tables", "Lamps", "Shelves"]
ADJECTIVES = ["Oak", "Walnut", "Steel", "Linen", "Velvet", "Glass", "Bamboo", "Marble", "Cork", "Copper"]
NOUNS = {"Chairs": "chair", "Tables": "table", "Lamps": "lamp", "Shelves": "shelf"}


class DemoStatements(Statements):
    """The demo's statements, the blocks of ops/demo.sql (beside this module: not workerpool's schema)."""

    FILE = "demo.sql"

    reset_schema: str
    catalog: str
    server_version: str
    insert_brand: str
    insert_category: str
    insert_product: str
    count_products: str
    queued: str
    first_product: str
    reprice: str
    last_product: str
    delete_product: str
    add_product: str
    count_records: str


DEMO_SQL = DemoStatements(parse((resources.files("workerpool.ops") / "demo.sql").read_text(), "demo.sql"))


class DemoFailed(Exception):
    pass


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(number: int, text: str) -> float:
    _say(f"\n[{number}] {text}")
    return time.monotonic()


def _done(started: float, detail: str = "") -> None:
    _say(f"    ok ({time.monotonic() - started:.1f}s){' - ' + detail if detail else ''}")


def _wait(predicate: Callable[[], _T | None], what: str, timeout: float = WAIT_S) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _queue_empty(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return queue.idle(conn)


def _start_postgres(database_url: str | None, workdir: Path) -> tuple[str, PostgresServer | None]:
    """(DSN for the demo, embedded server or None)."""
    if database_url:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL(DEMO_SQL.reset_schema).format(schema=sql.Identifier(SCHEMA)))
        return conninfo.make_conninfo(database_url, options=f"-csearch_path={SCHEMA}"), None
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
    try:
        from pgserver.postgres_server import get_server
    except ImportError:
        raise DemoFailed(
            "DATABASE_URL is not set and the embedded Postgres is not installed; "
            "install it with: pip install 'workerpool[demo]'  (or set DATABASE_URL)"
        ) from None
    server = get_server(str(workdir / "pgdata"), cleanup_mode="stop")
    return server.get_uri(), server


def _load_catalog(dsn: str) -> int:
    import random

    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.cursor().executemany(DEMO_SQL.insert_brand, list(enumerate(BRANDS, 1)))
            conn.cursor().executemany(DEMO_SQL.insert_category, list(enumerate(CATEGORIES, 1)))
            rows = []
            for n in range(50):
                category = rng.randrange(len(CATEGORIES))
                name = f"{ADJECTIVES[n % len(ADJECTIVES)]} {NOUNS[CATEGORIES[category]]} {n // len(ADJECTIVES) + 1}"
                rows.append(
                    (
                        name,
                        rng.randrange(len(BRANDS)) + 1,
                        category + 1,
                        round(rng.uniform(9, 499), 2),
                        rng.random() > 0.15,
                    )
                )
            conn.cursor().executemany(DEMO_SQL.insert_product, rows)
        count: int = one_row(conn.execute(DEMO_SQL.count_products))[0]
        return count


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "    " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def run_demo(database_url: str | None) -> int:
    """Run the demo; 0 when every step worked."""
    from workerpool.config import ConfigError, load

    if not database_url:
        try:
            database_url = load().database_url or None
        except ConfigError:
            database_url = os.environ.get("DATABASE_URL") or None
    workdir = Path(tempfile.mkdtemp(prefix="workerpool-demo-"))
    log_path = workdir / "workerpool.log"
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 (closed in the finally below, after the pool)
    logs.setup("INFO", stream=log_file)  # this process's own log lines go to the file too
    server: PostgresServer | None = None
    emulator = None
    pool: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        _say("workerpool demo: Postgres -> queue -> workers -> Algolia (emulated), all on this machine")
        _say(f"    worker logs (JSON): {log_path}")

        t = _step(
            1, "Postgres" + (f": schema {SCHEMA} in DATABASE_URL" if database_url else ": starting an embedded server")
        )
        dsn, server = _start_postgres(database_url, workdir)
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = one_row(conn.execute(DEMO_SQL.server_version))[0]
        _done(t, f"PostgreSQL {version}")

        t = _step(2, "Algolia emulator (in this process, 127.0.0.1 only)")
        import secrets

        from workerpool.emulator import Emulator

        emulator = Emulator(app_id=APP_ID, api_key="demo-" + secrets.token_hex(8)).start()
        _done(t, emulator.url)

        t = _step(3, "schema, sample catalog, watch products through the view products_search")
        from workerpool.capture.triggers import watch
        from workerpool.ops.migrate import migrate

        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            conn.execute(DEMO_SQL.catalog)
            watched = watch(conn, "products", INDEX, source="products_search")
        products = _load_catalog(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Statements capture into the inbox; the workers move its keys into the queue later.
            queued, inbox = one_row(conn.execute(DEMO_SQL.queued))
        _done(
            t,
            f"{len(BRANDS)} brands, {len(CATEGORIES)} categories, {products} products; "
            f"watching {watched.table_name} -> index {INDEX}; the trigger captured {queued + inbox} changes "
            f"({inbox} waiting in the inbox, {queued} in the queue)",
        )

        t = _step(4, "workerpool run --workers 2 (a subprocess; SIGTERM stops it)")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALGOLIA_", "PROMETHEUS_"))}
        env.update(
            DATABASE_URL=dsn,
            ALGOLIA_APP_ID=APP_ID,
            ALGOLIA_ADMIN_KEY=emulator.api_key,
            ALGOLIA_HOSTS=emulator.url,
            POLLING_INTERVAL="200",
            LOG_LEVEL="INFO",
            WORKERS="2",
            SHUTDOWN_TIMEOUT="10000",
            HEALTH_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        pool = subprocess.Popen(
            [sys.executable, "-m", "workerpool", "run", "--workers", "2"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=str(workdir),
            start_new_session=True,
        )
        _wait(
            lambda: pool.poll() is not None or (_queue_empty(dsn) and len(emulator.records(INDEX)) >= products),
            "the initial sync",
        )
        if pool.poll() is not None:
            raise DemoFailed(f"workerpool run exited early with code {pool.returncode}; see {log_path}")
        _done(t, f"{len(emulator.records(INDEX))} records in index {INDEX}")

        t = _step(5, "live changes: a price update, a delete, an insert")
        with psycopg.connect(dsn, autocommit=True) as conn:
            first, old_price = one_row(conn.execute(DEMO_SQL.first_product))
            conn.execute(DEMO_SQL.reprice, (first,))
            victim = one_row(conn.execute(DEMO_SQL.last_product))[0]
            conn.execute(DEMO_SQL.delete_product, (victim,))
            new_id = one_row(conn.execute(DEMO_SQL.add_product))[0]
        index = _wait(
            lambda: (
                lambda recs: (
                    recs
                    if (
                        recs.get(str(first), {}).get("price") == 9.99
                        and str(victim) not in recs
                        and str(new_id) in recs
                    )
                    else None
                )
            )(emulator.records(INDEX)),
            "the changes to reach the index",
        )
        _wait(lambda: _queue_empty(dsn), "the queue to drain")
        _done(
            t,
            f"#{first} price {old_price} -> {index[str(first)]['price']}, #{victim} deleted, "
            f"#{new_id} '{index[str(new_id)]['name']}' ({index[str(new_id)]['brand']}) inserted",
        )

        t = _step(6, "what the index holds")
        index = emulator.records(INDEX)
        with psycopg.connect(dsn, autocommit=True) as conn:
            expected = one_row(conn.execute(DEMO_SQL.count_records))[0]
        sample = [index[k] for k in sorted(index, key=int)[:5]] + [index[str(new_id)]]
        _say(
            _table(
                ["objectID", "name", "brand", "category", "price", "published"],
                [
                    [
                        r["objectID"],
                        r["name"],
                        r["brand"],
                        r["category"],
                        f"{r['price']:.2f}",
                        str(r["published"]).lower(),
                    ]
                    for r in sample
                ],
            )
        )
        _say(f"    ... {len(index)} records in index {INDEX} ({expected} rows in products_search)")
        if len(index) != expected:
            raise DemoFailed(f"the index holds {len(index)} records, the view {expected} rows")
        _done(t)

        t = _step(7, "workerpool stats")
        from workerpool.ops.stats import collect, render

        with psycopg.connect(dsn, autocommit=True) as conn:
            text = render(collect(conn))
        _say("\n".join(("    " + line).rstrip() for line in text.rstrip("\n").splitlines()))

        t = _step(8, "graceful stop: SIGTERM to the supervisor")
        pool.send_signal(signal.SIGTERM)
        try:
            code = pool.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise DemoFailed("workerpool run did not stop within 20s of SIGTERM") from None
        if code != 0:
            raise DemoFailed(f"workerpool run exited with code {code} after SIGTERM; see {log_path}")
        _done(t, "exit code 0")
        ok = True
        _say(f"\ndemo finished: {len(index)} records synced and kept in sync; worker logs in {log_path}")
        if database_url:
            _say(f"the demo tables stay in schema {SCHEMA}; remove them with: DROP SCHEMA {SCHEMA} CASCADE")
        return 0
    except DemoFailed as exc:
        _say(f"\ndemo failed: {exc}")
        return EXIT_ERROR
    except psycopg.Error as exc:
        _say(f"\ndemo failed: database error: {' '.join(str(exc).split())}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return EXIT_INTERRUPTED
    finally:
        if pool is not None and pool.poll() is None:
            try:
                os.killpg(pool.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pool.wait()
        if emulator is not None:
            emulator.stop()
        if server is not None:
            try:
                server.cleanup()
            except Exception:
                pass
        log_file.close()
        if ok and server is not None:
            # Keep the log, drop the embedded cluster's data directory.
            shutil.rmtree(workdir / "pgdata", ignore_errors=True)
