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

# Pagila's base tables and their primary keys (the schema's own; `payment` is partitioned by
# payment_date, its partitions are watched through it).
TABLES = {
    "actor": ["actor_id"],
    "address": ["address_id"],
    "category": ["category_id"],
    "city": ["city_id"],
    "country": ["country_id"],
    "customer": ["customer_id"],
    "film": ["film_id"],
    "film_actor": ["actor_id", "film_id"],
    "film_category": ["film_id", "category_id"],
    "inventory": ["inventory_id"],
    "language": ["language_id"],
    "payment": ["payment_date", "payment_id"],
    "rental": ["rental_id"],
    "staff": ["staff_id"],
    "store": ["store_id"],
}
KEYLESS = ["packages_apt_postgresql_org", "packages_yum_postgresql_org"]  # pagila-schema-jsonb.sql

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
