"""The SQL has one copy, the top-level sql/, and the package reads that same copy: workerpool/db/sql is a
symlink to it, so `resources.files("workerpool.db") / "sql"` (what migrate, the schema version check and
the query registry read) finds the files in a checkout and in an editable install. (The wheel's copy is
checked by tests/acceptance/test_dashboard.py, which builds one.)"""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from workerpool.ops.migrate import migrations, sql_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_reads_the_top_level_sql_directory():
    link = ROOT / "workerpool" / "db" / "sql"
    assert link.is_symlink() and link.readlink() == Path("../../sql")
    assert sql_dir().resolve() == (ROOT / "sql").resolve()
    assert Path(str(resources.files("workerpool.db") / "sql" / "schema.sql")).resolve() == ROOT / "sql" / "schema.sql"
    assert [m.name for m in migrations()][:1] == ["schema"]


def test_git_holds_the_sql_once():
    tracked = subprocess.run(
        ["git", "ls-files", "-s", "sql", "workerpool/db/sql"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    sql_files = [line.split("\t")[1] for line in tracked if line.endswith(".sql")]
    assert sql_files and all(f.startswith("sql/") for f in sql_files), "no .sql file under workerpool/ in git"
    (link,) = [line for line in tracked if line.endswith("\tworkerpool/db/sql")]
    assert link.startswith("120000 "), "workerpool/db/sql is tracked as a symlink"
