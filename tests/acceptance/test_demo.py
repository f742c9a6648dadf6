"""`workerpool demo` on a bare machine: a fresh virtualenv, `pip install .[demo]`, nothing configured;
and the same demo where no Postgres server listens on 127.0.0.1:5432 at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bare_env(home: Path) -> dict[str, str]:
    """No DATABASE_URL, no ALGOLIA_*, no virtualenv or Python path leaking in from this test run."""
    keep = (
        "PATH",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_TRUSTED_HOST",
        "PIP_CERT",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["HOME"] = str(home)
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A fresh virtualenv holding `pip install .[demo]` and nothing else, and the bare environment
    to run it with."""
    base = tmp_path_factory.mktemp("demo")
    venv = base / "venv"
    home = base / "home"
    home.mkdir()
    env = _bare_env(home)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = venv / "bin" / "python"
    # A genuinely fresh environment: not even this run's packages are importable.
    probe = subprocess.run([str(python), "-c", "import psycopg"], env=env, capture_output=True, timeout=60)
    assert probe.returncode != 0
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{ROOT}[demo]"],
        env=env,
        capture_output=True,
        text=True,
        timeout=720,
    )
    if install.returncode != 0 and "Failed to establish a new connection" in install.stderr:
        pytest.skip("pip cannot reach its package index from here (no network), so no fresh virtualenv can be built")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "DATABASE_URL" not in env
    return SimpleNamespace(python=python, workerpool=venv / "bin" / "workerpool", env=env, base=base)


def _run_demo(install: SimpleNamespace, workdir: Path, prefix: Sequence[str] = ()) -> str:
    """Run `workerpool demo` in an empty directory (no .env) and check everything it shows; its output."""
    workdir.mkdir()
    result = subprocess.run(
        [*prefix, str(install.workerpool), "demo"],
        env=install.env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    assert "starting an embedded server" in out
    # The index table: a header and real records (objectID, name, brand and category joined in by the view).
    assert re.search(r"objectID\s+name\s+brand\s+category\s+price", out), out
    rows = re.findall(
        r"^\s+(\d+)\s+(.+?)\s{2,}(Acme|Globex|Initech|Umbrella|Stark)\s+(Chairs|Tables|Lamps|Shelves)"
        r"\s+(\d+\.\d\d)",
        out,
        re.M,
    )
    assert len(rows) >= 5, out
    assert ("1", "9.99") in [(r[0], r[4]) for r in rows], "the live price update shows in the index"
    assert any(r[1] == "Demo lamp" for r in rows), "the live insert shows in the index"
    match = re.search(r"\.\.\. (\d+) records in index demo_products \((\d+) rows in products_search\)", out)
    assert match and match.group(1) == match.group(2) == "50", out  # 50 products, one deleted, one inserted
    assert "exit code 0" in out and "demo finished" in out
    # Capture counts what waits in the inbox as well as in the queue: the 50 products loaded.
    captured = re.search(r"the trigger captured (\d+) changes \((\d+) waiting in the inbox, (\d+) in the queue\)", out)
    assert captured and captured.group(1) == "50", out
    assert int(captured.group(2)) + int(captured.group(3)) == 50
    # `workerpool stats` output is part of the summary.
    assert re.search(r"products\s+demo_products\s+0\s+0\s+0\s+\d+", out), out
    # The workers' JSON logs went to a file, not to the terminal.
    assert not any(line.lstrip().startswith("{") for line in out.splitlines()), out
    log_path = re.search(r"worker logs \(JSON\): (\S+)", out).group(1)
    log_text = Path(log_path).read_text()
    shutil.rmtree(Path(log_path).parent)  # the demo keeps its log directory for the user to read
    assert '"action": "batch_synced"' in log_text or '"action":"batch_synced"' in log_text
    assert "supervisor_stopped" in log_text
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_runs_from_a_fresh_virtualenv_with_nothing_configured(fresh_install):
    _run_demo(fresh_install, fresh_install.base / "work")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_runs_where_nothing_listens_on_5432(fresh_install):
    """The demo in a network namespace of its own (loopback only), where 127.0.0.1:5432 refuses: the
    embedded server is all it uses, whatever runs on this machine."""
    from testing import netpartition

    why = netpartition.unavailable()
    if why:
        pytest.skip(why)
    with netpartition.Isolated() as ns:
        probe = subprocess.run(
            [
                *ns.prefix,
                str(fresh_install.python),
                "-c",
                "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=5)",
            ],
            env=fresh_install.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode != 0 and "ConnectionRefusedError" in probe.stderr, probe.stderr
        _run_demo(fresh_install, fresh_install.base / "work-isolated", prefix=ns.prefix)
