"""PostgreSQL's Pagila sample database (`../shared/data/pagila/`: its own schema and data), loaded into a
test database as it ships, through psycopg alone (no psql on the embedded server's path).

Only what ties the dump to its author's server is left out: `OWNER TO postgres` (the test server's
user may be another) and the dump's grants on the schema `public` (`GRANT ALL ON SCHEMA public TO
PUBLIC` would make workerpool's schema one that any role may create objects in, which `watch`
rightly refuses; docs/roles.md).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import psycopg

PAGILA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pagila"

_SERVER_BOUND = re.compile(r"^(ALTER .* OWNER TO .*|GRANT .*|REVOKE .*)$", re.MULTILINE)


def unavailable() -> str | None:
    """Why Pagila cannot be loaded here, or None."""
    if not (PAGILA / "pagila-schema.sql").is_file() or not (PAGILA / "pagila-data.sql.gz").is_file():
        return f"Pagila is not beside this checkout ({PAGILA}: CI has ../shared/data/ next to the clone)"
    return None


def load(url: str, data: bool = True) -> None:
    """Pagila's schema (and its two keyless jsonb tables), then its data, into the database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("pagila-schema.sql", "pagila-schema-jsonb.sql"):
            conn.execute(_SERVER_BOUND.sub("", (PAGILA / name).read_text()))
    if not data:
        return
    with psycopg.connect(url) as conn, gzip.open(PAGILA / "pagila-data.sql.gz", "rt") as lines:
        statement: list[str] = []
        for line in lines:
            if line.startswith("COPY ") and line.rstrip().endswith("FROM stdin;"):
                with conn.cursor().copy(line.rstrip().rstrip(";")) as copy:
                    for row in lines:
                        if row == "\\.\n":
                            break
                        copy.write(row)
                continue
            if line.startswith("--") or not line.strip():
                continue
            statement.append(line)
            if line.rstrip().endswith(";"):
                conn.execute("".join(statement))
                statement = []


# The loaded schema's own tables, read from its catalog (nothing of Pagila's is written down here):
# base tables of `public` (a partitioned table, not its partitions), each with its primary key's
# columns in key order, empty for a table without one.
_TABLES = """
SELECT c.relname, coalesce(array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
                           FILTER (WHERE a.attname IS NOT NULL), '{}')
  FROM pg_class c
  LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 GROUP BY c.relname ORDER BY c.relname
"""


def tables(conn: psycopg.Connection) -> dict[str, list[str]]:
    """The loaded tables by name, each with its primary key's columns (empty: it has none)."""
    return {name: list(key) for name, key in conn.execute(_TABLES)}
