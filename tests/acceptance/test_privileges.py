"""Least privilege (docs/roles.md), tried as an attacker would: no role gains a right through
workerpool, application roles keep writing, and the pool runs as a worker role with only its grants.

Every role here is real and unique to its test, and dropped at the end. Each attack checks that the
attacker's `rolsuper` never changes and that the attacker's code left no trace of having run as
another role (an `evidence` table it may write to records `current_user` whenever its code runs).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import conninfo, sql

from testing import assert_index_matches, drain, run_cli, spill_all
from workerpool.emulator import Emulator

EVIDENCE = """CREATE TABLE public.evidence (who text, what text);
              GRANT INSERT, SELECT ON public.evidence TO PUBLIC"""


@pytest.fixture
def make_role(db: psycopg.Connection, db_url: str) -> Iterator[Callable[..., str]]:
    """Create a unique LOGIN role (`make_role("attacker", "CREATEDB")`). At the end every role made,
    or named with `make_role.adopt`, is dropped with what it owns and was granted, in the test's
    database and in those named with `make_role.database`."""
    made: list[str] = []
    databases = [db_url]

    def make(purpose: str, *options: str) -> str:
        name = f"wp_{purpose}_{uuid.uuid4().hex[:8]}"
        db.execute(sql.SQL("CREATE ROLE {} LOGIN " + " ".join(options)).format(sql.Identifier(name)))
        made.append(name)
        return name

    make.adopt = made.append  # type: ignore[attr-defined]
    make.database = databases.append  # type: ignore[attr-defined]
    yield make
    for url in databases:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in made:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
    for name in reversed(made):
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def as_role(db_url: str, role: str, **kwargs: str) -> psycopg.Connection:
    """An autocommit connection to the test's database as `role` (the suite's servers trust local roles)."""
    return psycopg.connect(conninfo.make_conninfo(db_url, user=role, **kwargs), autocommit=True)


def superuser(db: psycopg.Connection, role: str) -> bool:
    return bool(db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0])


def evidence(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute("SELECT who, what FROM public.evidence ORDER BY 1, 2").fetchall()


def records_of(emulator: Emulator, index: str) -> dict[str, dict]:
    """An index's records by objectID, without the objectID and workerpool's _version."""
    return {
        oid: {k: v for k, v in record.items() if k not in ("objectID", "_version")}
        for oid, record in emulator.records(index).items()
    }


def watch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = run_cli(env, "watch", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# ---- a role with only CONNECT and TEMP ----------------------------------------------------------


def test_temporary_objects_cannot_make_the_ddl_followers_run_a_roles_code(db, db_url, env, make_role):
    """The event triggers are SECURITY DEFINER (a superuser's): a temporary view shadowing the
    registrations, whose column calls a temporary function, must never be read by them."""
    db.execute("CREATE TABLE products (id int PRIMARY KEY, name text)")
    watch(env, "products", "--index", "products")
    attacker = make_role("temp")
    db.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO PUBLIC"))
    db.execute(EVIDENCE)
    with as_role(db_url, attacker) as conn:
        conn.execute(
            f"""CREATE FUNCTION pg_temp.evil() RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO public.evidence VALUES (current_user, 'evil');
                    ALTER ROLE {attacker} SUPERUSER;
                    RETURN true;
                END $$"""
        )
        # Its columns are the ones both followers read; `relation` calls the function too, so that
        # any join with the DDL command's objects evaluates it.
        conn.execute(
            """CREATE TEMP VIEW algolia_index_config AS
               SELECT 'x'::text AS table_name, CASE WHEN pg_temp.evil() THEN 'pg_class'::regclass END AS relation,
                      1::smallint AS key_attnum, NULL::smallint[] AS attribute_attnums, pg_temp.evil() AS enabled"""
        )
        # Both event triggers fire: a CREATE TABLE (partitions follower) and an ALTER TABLE (both).
        conn.execute("CREATE TEMP TABLE scratch (a int)")
        conn.execute("ALTER TABLE scratch ADD COLUMN b int")
        conn.execute("CREATE TABLE pg_temp.other (a int) PARTITION BY RANGE (a)")
    assert not superuser(db, attacker)
    assert evidence(db) == []


# ---- a table owner ------------------------------------------------------------------------------


HOSTILE = "a$body$;ALTER ROLE {role} SUPERUSER;SELECT $body$"


def test_a_column_name_cannot_break_out_of_the_generated_capture_code(db, db_url, env, emulator, make_role):
    owner = make_role("owner")
    db.execute(sql.SQL("CREATE SCHEMA shop AUTHORIZATION {}").format(sql.Identifier(owner)))
    with as_role(db_url, owner, options="-csearch_path=shop") as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price int)")
        conn.execute("INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2)")
    watch(env, "shop.items", "--index", "items", "--attributes", "name,price")
    key, attribute = HOSTILE.format(role=owner), HOSTILE.format(role=owner).replace("a$", "n$")
    with as_role(db_url, owner, options="-csearch_path=shop") as conn:
        # The DDL follower (a superuser's) regenerates the capture code under each new name.
        conn.execute(sql.SQL("ALTER TABLE items RENAME COLUMN id TO {}").format(sql.Identifier(key)))
        conn.execute(sql.SQL("ALTER TABLE items RENAME COLUMN name TO {}").format(sql.Identifier(attribute)))
        conn.execute(sql.SQL("INSERT INTO items VALUES (3, 'c', 3)"))
        conn.execute(
            sql.SQL("UPDATE items SET {} = 'b2' WHERE {} = 2").format(sql.Identifier(attribute), sql.Identifier(key))
        )
        conn.execute(sql.SQL("DELETE FROM items WHERE {} = 1").format(sql.Identifier(key)))
    assert not superuser(db, owner)
    drain(env)
    assert records_of(emulator, "items") == {"2": {attribute: "b2", "price": 2}, "3": {attribute: "c", "price": 3}}
    # `watch` itself takes the name, and the capture it generates works.
    unwatched = run_cli(env, "unwatch", "shop.items", "--drop-pending")
    assert unwatched.returncode == 0, unwatched.stderr
    watch(env, "shop.items", "--index", "items2", "--key", key, "--attributes", f"{attribute},price")
    with as_role(db_url, owner, options="-csearch_path=shop") as conn:
        conn.execute(sql.SQL("UPDATE items SET price = price + 1"))
    assert not superuser(db, owner)
    drain(env)
    assert records_of(emulator, "items2") == {"2": {attribute: "b2", "price": 3}, "3": {attribute: "c", "price": 4}}


def test_an_enum_key_with_a_cast_to_text_is_refused(db, env):
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    db.execute("CREATE TABLE moods (m mood PRIMARY KEY)")
    db.execute("CREATE FUNCTION mood_text(mood) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$")
    db.execute("CREATE CAST (mood AS text) WITH FUNCTION mood_text(mood)")
    result = run_cli(env, "watch", "moods", "--index", "moods")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cast to or from text that runs a function" in result.stderr


def test_table_owners_code_never_runs_as_the_pool(db, db_url, env, emulator, make_role):
    """A domain CHECK on the key, a row-level security policy: the table owner's code, which the
    pool's reads must not run with the pool's rights."""
    owner = make_role("owner")
    worker = make_role("worker")
    db.execute(sql.SQL("CREATE SCHEMA shop AUTHORIZATION {}").format(sql.Identifier(owner)))
    db.execute(EVIDENCE)
    migrated = run_cli(env, "migrate", "--worker-role", worker)
    assert migrated.returncode == 0, migrated.stderr
    with as_role(db_url, owner, options="-csearch_path=shop") as conn:
        conn.execute(
            """CREATE FUNCTION shop.spy(v int) RETURNS boolean LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO public.evidence VALUES (current_user, 'spy'); RETURN v > 0; END $$"""
        )
        conn.execute("CREATE DOMAIN sku AS int CHECK (shop.spy(VALUE))")
        conn.execute("CREATE TABLE items (id sku PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE secret (id int PRIMARY KEY, name text)")
        conn.execute("ALTER TABLE secret ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY peek ON secret USING (shop.spy(id))")
    watch(env, "shop.items", "--index", "items")
    watch(env, "shop.secret", "--index", "secret")
    with as_role(db_url, owner, options="-csearch_path=shop") as conn:
        conn.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
        conn.execute("INSERT INTO secret VALUES (1, 'a')")
    db.execute("DELETE FROM public.evidence")  # the owner's own writes ran its CHECK, as the owner
    worker_env = {**env, "DATABASE_URL": conninfo.make_conninfo(db_url, user=worker), "MAX_RETRIES": "1"}
    ran = run_cli(worker_env, "run", "--drain", timeout=120)
    # The row under row-level security failed: `--drain` says so with exit 5.
    assert ran.returncode == 5 and "1 row(s) failed during the run" in ran.stdout, (
        ran.stdout[-2000:] + ran.stderr[-2000:]
    )
    assert evidence(db) == []
    assert not superuser(db, worker) and not superuser(db, owner)
    assert_index_matches(db, emulator, "shop.items", "items")
    failed = db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall()
    assert [r[0] for r in failed] == ["1"] and "row-level security" in failed[0][1], failed


# ---- a role with CREATE on a schema -------------------------------------------------------------


PLANTS = [
    # Better matches than pg_catalog's polymorphic or coercing versions, for calls that workerpool's
    # capture code, its queue functions and the DDL followers make.
    "CREATE FUNCTION public.cardinality(text[]) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.evidence VALUES (current_user, 'cardinality'); RETURN pg_catalog.cardinality($1); END $$",
    "CREATE FUNCTION public.format(text, int) RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.evidence VALUES (current_user, 'format'); RETURN pg_catalog.format($1, $2); END $$",
    "CREATE FUNCTION public.pg_notify(text, varchar) RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.evidence VALUES (current_user, 'pg_notify'); END $$",
    "CREATE FUNCTION public.array_agg_step(text[], text) RETURNS text[] LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.evidence VALUES (current_user, 'array_agg'); RETURN $1 || $2; END $$",
    "CREATE AGGREGATE public.array_agg(text) (SFUNC = public.array_agg_step, STYPE = text[])",
    # An operator more specific than pg_catalog's polymorphic `anycompatiblearray || anycompatible`,
    # which the spill (run by the pool) uses.
    "CREATE FUNCTION public.tid_append(tid[], tid) RETURNS tid[] LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO public.evidence VALUES (current_user, 'tid ||'); RETURN array_append($1, $2); END $$",
    "CREATE OPERATOR public.|| (LEFTARG = tid[], RIGHTARG = tid, FUNCTION = public.tid_append)",
]


def test_migrate_refuses_a_schema_that_other_roles_can_create_in(empty_db_url, env, make_role):
    planter = make_role("planter")
    make_role.database(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(planter)))
    result = run_cli({**env, "DATABASE_URL": empty_db_url}, "migrate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and planter in result.stderr and "schema of workerpool's own" in result.stderr
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('algolia_sync_queue')").fetchone()[0] is None  # nothing written
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(planter)))


def test_overloads_planted_in_another_schema_never_run(empty_db_url, env, emulator, make_role):
    """workerpool in a schema of its own; a role that can create in `public`, where the watched
    tables are, plants better-matching overloads; then a superuser writes every kind of statement."""
    planter = make_role("planter")
    make_role.database(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA wp")
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(planter)))
        conn.execute(EVIDENCE)
        conn.execute("CREATE TABLE brands (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE products (id int PRIMARY KEY, name text, brand_id int REFERENCES brands)")
        conn.execute("INSERT INTO brands VALUES (1, 'b')")
    wp_url = conninfo.make_conninfo(empty_db_url, options="-csearch_path=wp,public")
    wp_env = {**env, "DATABASE_URL": wp_url}
    assert run_cli(wp_env, "migrate").returncode == 0
    watch(wp_env, "products", "--index", "products", "--related", "brands:brand_id")
    planter_url = conninfo.make_conninfo(empty_db_url, user=planter)
    with psycopg.connect(planter_url, autocommit=True) as conn:
        for plant in PLANTS:
            conn.execute(plant)
    # A superuser whose search_path has `public` first writes through every path of the capture code.
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO products SELECT g, 'p', 1 FROM generate_series(1, 1200) g")
        conn.execute("UPDATE products SET name = 'q' WHERE id <= 3")
        conn.execute("UPDATE brands SET name = 'c'")
        conn.execute("INSERT INTO products VALUES (5000, 'x', 1) ON CONFLICT (id) DO UPDATE SET name = 'y'")
        conn.execute("DELETE FROM products WHERE id > 1100")
        conn.execute("TRUNCATE brands CASCADE")
        conn.execute("INSERT INTO brands VALUES (2, 'b2')")
        conn.execute("INSERT INTO products VALUES (1, 'again', 2)")
        assert conn.execute("SELECT * FROM public.evidence").fetchall() == []
    drain(wp_env)
    with psycopg.connect(wp_url, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM public.evidence").fetchall() == []
        assert not superuser(conn, planter)
        assert_index_matches(conn, emulator, "products", "products")


# ---- application roles and the pool's role --------------------------------------------------------


def test_application_roles_keep_writing_and_the_pool_runs_as_its_worker_role(db, db_url, env, emulator, make_role):
    """An application role with only table privileges writes every kind of statement after `watch`;
    a role that writes only the related table needs no right on the watched one; the pool, `stats`
    and `verify` run as the worker role with only the grants `migrate --worker-role` gave it."""
    app = make_role("app")
    brand_writer = make_role("brands")
    worker = make_role("worker")
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE TABLE shop.brands (id int PRIMARY KEY, name text)")
    db.execute(
        "CREATE TABLE shop.products (id int PRIMARY KEY, name text, price numeric, brand_id int REFERENCES shop.brands)"
    )
    db.execute("CREATE INDEX ON shop.products (brand_id)")
    joined = "shop.products p LEFT JOIN shop.brands b ON b.id = p.brand_id"
    db.execute(f"CREATE VIEW shop.catalog AS SELECT p.*, b.name AS brand FROM {joined}")
    for role, tables in ((app, "shop.products, shop.brands"), (brand_writer, "shop.brands")):
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA shop TO {}").format(sql.Identifier(role)))
        db.execute(
            sql.SQL(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {tables} TO {{}}").format(sql.Identifier(role))
        )
    migrated = run_cli(env, "migrate", "--worker-role", worker)
    assert migrated.returncode == 0, migrated.stderr
    assert f"worker role {worker} exists" in migrated.stdout
    watch(env, "shop.products", "--index", "products", "--source", "shop.catalog", "--related", "shop.brands:brand_id")
    worker_env = {**env, "DATABASE_URL": conninfo.make_conninfo(db_url, user=worker)}
    with as_role(db_url, app) as conn:
        conn.execute("INSERT INTO shop.brands VALUES (1, 'acme'), (2, 'globex')")
        conn.execute("INSERT INTO shop.products SELECT g, 'p' || g, g, 1 + g % 2 FROM generate_series(1, 1500) g")
        conn.execute("UPDATE shop.products SET price = price * 2 WHERE id <= 10")
        conn.execute("INSERT INTO shop.products VALUES (1, 'one', 1, 1) ON CONFLICT (id) DO UPDATE SET name = 'uno'")
        conn.execute("DELETE FROM shop.products WHERE id > 1400")
        with conn.cursor().copy("COPY shop.products (id, name, price, brand_id) FROM STDIN") as copy:
            copy.write_row((5000, "copied", 5, 2))
    with as_role(db_url, brand_writer) as conn:
        conn.execute("UPDATE shop.brands SET name = 'ACME' WHERE id = 1")
        conn.execute("INSERT INTO shop.brands VALUES (3, 'initech')")
        conn.execute("DELETE FROM shop.brands WHERE id = 3")
    drain(worker_env)
    assert_index_matches(db, emulator, "shop.catalog", "products")
    assert emulator.records("products")["2"]["brand"] == "ACME"
    with as_role(db_url, app) as conn:
        conn.execute("TRUNCATE shop.products")
        conn.execute("INSERT INTO shop.products VALUES (7, 'seven', 7, 2)")
    drain(worker_env)
    assert_index_matches(db, emulator, "shop.catalog", "products")
    for command in (("stats",), ("verify", "shop.products")):
        result = run_cli(worker_env, *command)
        assert result.returncode == 0, result.stdout + result.stderr
    # Exactly the documented grants: nothing on other tables, no superuser, no DDL.
    assert not superuser(db, worker)
    with as_role(db_url, worker) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE algolia_sync_extra (a int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE algolia_index_config SET transform = 'os:system'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO shop.brands VALUES (9, 'x')")
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog, public, pg_temp"


def test_migrate_refuses_a_superuser_as_the_worker_role(db, env, make_role):
    boss = make_role("boss", "SUPERUSER")
    result = run_cli(env, "migrate", "--worker-role", boss)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "is a superuser" in result.stderr


def test_related_triggers_follow_renames_of_both_tables_and_every_linked_column(db, env):
    db.execute("CREATE TABLE brands (id int PRIMARY KEY, name text)")
    db.execute("CREATE TABLE products (id int PRIMARY KEY, name text, brand_id int REFERENCES brands)")
    watch(env, "products", "--index", "products", "--related", "brands:brand_id")
    db.execute("INSERT INTO brands VALUES (1, 'a')")
    db.execute("INSERT INTO products VALUES (10, 'p', 1), (11, 'q', NULL)")
    spill_all(db)
    db.execute("DELETE FROM algolia_sync_queue")
    for ddl in (
        "ALTER TABLE products RENAME TO items",
        "ALTER TABLE items RENAME COLUMN id TO sku",
        "ALTER TABLE items RENAME COLUMN brand_id TO maker",
        "ALTER TABLE brands RENAME COLUMN id TO brand_no",
        "ALTER TABLE brands RENAME TO makers",
    ):
        db.execute(ddl)
    db.execute("UPDATE makers SET name = 'b'")
    spill_all(db)
    assert db.execute("SELECT table_name, record_id FROM algolia_sync_queue").fetchall() == [("products", "10")]
    # `migrate` attaches the related triggers again from what is stored: by the current names.
    assert run_cli(env, "migrate").returncode == 0
    db.execute("DELETE FROM algolia_sync_queue")
    db.execute("TRUNCATE makers CASCADE")
    spill_all(db)
    assert sorted(db.execute("SELECT record_id, operation FROM algolia_sync_queue").fetchall()) == [
        ("10", "DELETE"),
        ("11", "DELETE"),
    ]


def test_a_worker_role_of_any_name_is_set_up_and_granted(db, db_url, env, make_role):
    name = f'wp "Pool" {uuid.uuid4().hex[:6]};x'
    migrated = run_cli(env, "migrate", "--worker-role", name)
    make_role.adopt(name)
    assert migrated.returncode == 0, migrated.stderr
    db.execute("CREATE TABLE parts (id int PRIMARY KEY)")
    db.execute("INSERT INTO parts VALUES (1)")
    watch(env, "parts", "--index", "parts")
    with as_role(db_url, name) as conn:
        assert conn.execute("SELECT count(*) FROM parts").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM algolia_sync_queue").fetchone()[0] == 0
