"""Which Postgres the tests get: DATABASE_URL, else 127.0.0.1:5432, else an embedded server, and
WORKERPOOL_TEST_EMBEDDED_PG=1 forcing the embedded one. Each choice is made for real and connected to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from testing import ROOT, pg
from testing.pg import EMBEDDED_SWITCH

pytestmark = pytest.mark.filterwarnings("ignore:.*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver


def _data_directory(url: str) -> Path:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return Path(conn.execute("SHOW data_directory").fetchone()[0])


def _is_embedded(url: str) -> bool:
    """An embedded server of this suite: reached on a Unix socket, its data directory a temporary
    workerpool-pg-* directory."""
    host = psycopg.conninfo.conninfo_to_dict(url).get("host") or ""
    return host.startswith("/") and _data_directory(url).name.startswith("workerpool-pg-")


def test_the_session_server_is_the_one_the_rules_choose(pg_server):
    if os.environ.get(EMBEDDED_SWITCH) == "1":
        assert _is_embedded(pg_server), pg_server
    elif os.environ.get("DATABASE_URL"):
        assert pg_server == os.environ["DATABASE_URL"]
    else:
        assert pg_server == pg.LOCAL_URL or _is_embedded(pg_server), pg_server


@pytest.mark.parametrize("case", ["switch beats an answering DATABASE_URL", "nothing answers on 5432"])
def test_the_embedded_server_starts_serves_and_stops(case, pg_server, monkeypatch):
    if case == "switch beats an answering DATABASE_URL":
        monkeypatch.setenv(EMBEDDED_SWITCH, "1")
        monkeypatch.setenv("DATABASE_URL", pg_server)  # it answers: the switch must still win
    else:
        monkeypatch.delenv(EMBEDDED_SWITCH, raising=False)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.setattr(pg, "LOCAL_URL", "postgresql://postgres@127.0.0.1:1/postgres")  # refuses
    servers = pg.server_urls()
    url = next(servers)
    try:
        assert url != pg_server and _is_embedded(url), url
        data = _data_directory(url)
        with psycopg.connect(url, autocommit=True) as conn:  # a user that may create databases
            conn.execute("CREATE DATABASE workerpool_choice_probe")
            conn.execute("DROP DATABASE workerpool_choice_probe")
    finally:
        servers.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
    assert not data.exists(), "the embedded server's temporary directory outlived it"


def test_a_bad_switch_value_stops_the_run_with_one_line():
    env = {**os.environ, EMBEDDED_SWITCH: "yes"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/acceptance/test_server_choice.py"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [
        f"ERROR: {EMBEDDED_SWITCH}='yes' is not allowed: use 1 to force the embedded Postgres, "
        f"0 or unset for DATABASE_URL, else 127.0.0.1:5432, else embedded"
    ], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
