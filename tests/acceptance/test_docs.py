"""The documentation's code runs as shown: every ```python block of docs/ and the README is either a
complete program (titled with the file name to save it as) or marked a fragment ("Fragment: …", with
what it needs), each complete one runs against real Postgres and the emulator, and so does every
docstring example of the public API.
"""

from __future__ import annotations

import doctest
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import workerpool
from testing import drain, run_cli, wait_until
from testing.docs import program, python_blocks

COMPLETE = sorted(b.title for b in python_blocks() if b.title and not b.fragment)


def test_every_python_block_is_a_complete_program_or_marked_a_fragment():
    blocks = python_blocks()
    assert blocks, "no python block found: the scan is broken"
    unmarked = [f"{b.page}:{b.line}" for b in blocks if not b.title or not (b.fragment or b.title.endswith(".py"))]
    assert not unmarked, f"blocks neither titled NAME.py nor 'Fragment: …': {unmarked}"
    assert {"sync_loop.py", "load_prices.py", "run_pool.py"} <= set(COMPLETE)
    assert not any("--8<--" in b.code for b in blocks), "an include only the built site expands"


def test_the_complete_blocks_pass_mypy_strict():
    mypy = os.path.join(os.path.dirname(sys.executable), "mypy")
    paths = [str(program(title)) for title in COMPLETE]
    result = subprocess.run([mypy, "--strict", "--no-incremental", *paths], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _python(env: dict[str, str], path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(path), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=path.parent
    )


def test_sync_loop_py_runs(products, env, emulator):
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 25) g")
    result = _python(env, program("sync_loop.py"), "--drain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "synced 25 row(s)"
    assert len(emulator.records("products")) == 25


def test_load_prices_py_runs_as_an_ordinary_role(db, db_url, env, emulator, tmp_path):
    db.execute("CREATE TABLE products (id int PRIMARY KEY, name text)")
    db.execute("CREATE TABLE prices (product_id int PRIMARY KEY REFERENCES products, price numeric(10, 2))")
    db.execute(
        "CREATE VIEW product_records AS "
        "SELECT p.id, p.name, r.price FROM products p LEFT JOIN prices r ON r.product_id = p.id"
    )
    assert run_cli(env, "watch", "products", "--index", "products", "--source", "product_records").returncode == 0
    db.execute("INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 3) g")
    drain(env)
    # An ordinary role with the rights the page lists: no superuser, no file on the database server.
    loader = f"loader_{os.getpid()}"
    db.execute(f"CREATE ROLE {loader} LOGIN")
    try:
        db.execute(f"GRANT INSERT ON prices TO {loader}")
        db.execute(f"GRANT SELECT ON algolia_index_config TO {loader}")
        db.execute(f"GRANT SELECT, INSERT ON algolia_sync_queue TO {loader}")
        (tmp_path / "prices.csv").write_text("1,9.99\n3,4.25\n")
        url = psycopg.conninfo.make_conninfo(db_url, user=loader)
        result = _python({**env, "DATABASE_URL": url}, program("load_prices.py"), str(tmp_path / "prices.csv"))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "loaded 2 price(s), queued 2 product(s)"
        drain(env)
        records = emulator.records("products")
        assert records["1"]["price"] == 9.99 and records["3"]["price"] == 4.25 and records["2"]["price"] is None
    finally:
        db.execute(f"DROP OWNED BY {loader}")
        db.execute(f"DROP ROLE {loader}")


def test_run_pool_py_runs_and_stops_on_sigterm(products, env, emulator):
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 10) g")
    path = program("run_pool.py")
    proc = subprocess.Popen([sys.executable, str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(emulator.records("products")) == 10, timeout=60, message="the pool to sync")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _RunsOnly(doctest.OutputChecker):
    """Docstring examples show outputs of a larger claim than a test makes (`500`, counts): what is
    checked is that each runs against the real services, names and signatures included."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return True


# Examples that start something that runs until stopped, each run by a test of its own instead.
NOT_RUN_HERE = {"run": "starts the supervisor until SIGTERM: test_run_pool_py_runs_and_stops_on_sigterm"}


def _docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found = []
    for name in sorted(set(workerpool.__all__) - {"__version__"} - set(NOT_RUN_HERE)):
        found += [t for t in finder.find(getattr(workerpool, name), name) if t.examples]
    return found


@pytest.mark.parametrize("test", _docstring_tests(), ids=lambda t: t.name)
def test_the_docstring_examples_run(test, products, db_url, env, emulator, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(os.path.dirname(__file__))
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 1200) g")
    settings = workerpool.Settings.from_env(env_file=None)
    with (
        workerpool.DatabaseService(db_url, settings) as db,
        workerpool.AlgoliaService(db) as algolia,
        ThreadPoolExecutor(2) as executor,
    ):
        items = db.get_pending_syncs(5)
        names = {
            "psycopg": psycopg,
            "workerpool": workerpool,
            "settings": settings,
            "db": db,
            "algolia": algolia,
            "dsn": db_url,
            "executor": executor,
            "items": items,
            "item": items[0],
            "results": algolia.sync_batch(items),
            "batch": db.claim(5),
        }
        test.globs.update(names)
        runner = doctest.DocTestRunner(checker=_RunsOnly(), optionflags=doctest.ELLIPSIS)
        failures = runner.run(test, out=lambda text: print(text, end="")).failed
        assert failures == 0, f"{test.name}: an example raised (printed above)"
