"""Record shaping: source views, related-table propagation, transforms, attribute selection,
versioned writes, skipping unchanged records, and index settings as code."""

from __future__ import annotations

import json
import textwrap

import psycopg
import pytest

from testing import API_KEY, APP_ID, assert_index_matches, drain, queue_counts, run_cli, spill_all
from workerpool.emulator import make_client

CATALOG = """
CREATE TABLE brands (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE categories (id integer PRIMARY KEY, name text NOT NULL, parent text);
CREATE TABLE products (
    id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2), published boolean DEFAULT true,
    brand_id integer REFERENCES brands, category_id integer REFERENCES categories, internal_note text);
CREATE VIEW product_records AS
    SELECT p.id, p.name, p.price, b.name AS brand, c.parent || ' > ' || c.name AS category_path
      FROM products p JOIN brands b ON b.id = p.brand_id JOIN categories c ON c.id = p.category_id
     WHERE p.published;
INSERT INTO brands VALUES (1, 'Acme'), (2, 'Globex'), (3, 'Initech');
INSERT INTO categories VALUES (1, 'Chairs', 'Furniture'), (2, 'Lamps', 'Lighting');
INSERT INTO products (id, name, price, brand_id, category_id)
    SELECT g, 'product ' || g, g * 1.25, 1 + g % 3, 1 + g % 2 FROM generate_series(1, 300) g;
"""


@pytest.fixture
def catalog(db: psycopg.Connection, env: dict[str, str]) -> psycopg.Connection:
    db.execute(CATALOG)
    result = run_cli(
        env,
        "watch",
        "products",
        "--index",
        "products",
        "--source",
        "product_records",
        "--related",
        "brands:brand_id",
        "--related",
        "categories:category_id",
    )
    assert result.returncode == 0, result.stderr
    db.execute("UPDATE products SET name = name || ''")  # enqueue nothing: no change
    assert queue_counts(db) == {}
    db.execute(
        "INSERT INTO algolia_sync_queue (table_name, record_id, operation) "
        "SELECT 'products', id::text, 'REINDEX' FROM products"
    )
    drain(env)
    return db


def test_view_fed_index_follows_brand_renames_and_unpublishing(catalog, env, emulator):
    db = catalog
    assert_index_matches(db, emulator, "product_records", "products")
    acme = {str(r[0]) for r in db.execute("SELECT id FROM products WHERE brand_id = 1")}
    before = emulator.stats()["record_writes"]["products"]

    db.execute("UPDATE brands SET name = 'Acme Corporation' WHERE id = 1")  # one statement, set-wise
    assert queue_counts(db) == {"inbox": 1}  # brand 1: the spill turns it into Acme's products
    spill_all(db)
    assert queue_counts(db) == {"pending": len(acme)}
    drain(env)
    assert emulator.stats()["record_writes"]["products"] - before == len(acme), "exactly the brand's products"
    index = emulator.records("products")
    assert {k for k, r in index.items() if r["brand"] == "Acme Corporation"} == acme

    db.execute("UPDATE products SET published = false WHERE id IN (3, 4)")
    db.execute("UPDATE categories SET name = 'Desk lamps' WHERE id = 2")
    drain(env)
    index = emulator.records("products")
    assert "3" not in index and "4" not in index
    assert index["5"]["category_path"] == "Lighting > Desk lamps"
    assert_index_matches(db, emulator, "product_records", "products")


def test_updates_that_change_no_indexed_attribute_cost_zero_writes(catalog, env, emulator):
    db = catalog
    db.execute(
        "INSERT INTO products (id, name, price, brand_id, category_id) "
        "SELECT g, 'bulk ' || g, 1, 1, 1 FROM generate_series(1001, 10700) g"
    )
    drain(env, "--batch-size", "1000")
    writes = emulator.stats()["record_writes_total"]
    assert db.execute("SELECT count(*) FROM products").fetchone()[0] == 10000

    # Through a view the trigger cannot know which columns matter: the rows are enqueued, read,
    # found identical to what was sent, and skipped.
    db.execute("UPDATE products SET internal_note = 'restocked'")
    assert queue_counts(db) == {"inbox": 10000}
    result = drain(env, "--batch-size", "1000")
    assert emulator.stats()["record_writes_total"] == writes
    assert db.execute("SELECT count(*) FROM algolia_sync_log WHERE status = 'skipped'").fetchone()[0] == 10000
    assert '"skipped": 1000' in result.stdout

    # With the attributes declared, the trigger itself ignores the update: nothing is enqueued.
    assert run_cli(env, "watch", "products", "--index", "plain", "--attributes", "name,price").returncode == 0
    db.execute("UPDATE products SET internal_note = 'audited'")
    assert queue_counts(db) == {}
    assert emulator.stats()["record_writes_total"] == writes


def test_a_transform_that_raises_fails_only_its_row(db, env, emulator, tmp_path):
    (tmp_path / "shop_transforms.py").write_text(
        textwrap.dedent("""
        def product(record):
            if record["name"] == "boom":
                raise ValueError("cannot shape a boom")
            if record["name"] == "hidden":
                return None
            return {"title": record["name"].upper(), "cents": int(record["price"] * 100)}
    """)
    )
    env = {**env, "PYTHONPATH": str(tmp_path)}
    db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric)")
    result = run_cli(env, "watch", "items", "--index", "items", "--transform", "shop_transforms:product")
    assert result.returncode == 0, result.stderr
    db.execute("INSERT INTO items VALUES (1, 'chair', 10.5), (2, 'boom', 1), (3, 'lamp', 2), (4, 'hidden', 3)")
    drain(env, rows_fail=True)  # "boom"
    index = emulator.records("items")
    assert {k: (r["title"], r["cents"]) for k, r in index.items()} == {"1": ("CHAIR", 1050), "3": ("LAMP", 200)}
    assert index["1"]["objectID"] == "1"
    failed = db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall()
    assert failed == [("2", "transform shop_transforms:product raised ValueError: cannot shape a boom")]

    bad = run_cli(env, "watch", "items", "--index", "items", "--transform", "shop_transforms:nope")
    assert bad.returncode == 2 and "--transform 'shop_transforms:nope' cannot be loaded" in bad.stderr


def test_an_older_version_replayed_after_a_newer_one_is_ignored(catalog, env, emulator):
    db = catalog
    db.execute("UPDATE products SET name = 'newest name' WHERE id = 7")
    drain(env)
    record = emulator.records("products")["7"]
    assert record["name"] == "newest name"
    client = make_client(emulator.url, APP_ID, API_KEY)
    stale = {
        **record,
        "name": "stale name",
        "_version": {"_operation": "IncrementSet", "value": record["_version"] - 1},
    }
    response = client.multiple_batch(
        {"requests": [{"action": "partialUpdateObject", "indexName": "products", "body": stale}]}
    )
    assert response.object_ids == ["7"]
    assert emulator.records("products")["7"]["name"] == "newest name"
    assert emulator.records("products")["7"]["_version"] == record["_version"]


def test_attributes_that_disappear_from_a_record_disappear_from_the_index(db, env, emulator):
    db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric, color text)")
    assert run_cli(env, "watch", "items", "--index", "items").returncode == 0
    db.execute("INSERT INTO items VALUES (1, 'chair', 10, 'red')")
    drain(env)
    assert set(emulator.records("items")["1"]) == {"objectID", "id", "name", "price", "color", "_version"}
    assert run_cli(env, "watch", "items", "--index", "items", "--attributes", "name,price").returncode == 0
    db.execute("UPDATE items SET name = 'armchair'")
    drain(env)
    assert set(emulator.records("items")["1"]) == {"objectID", "name", "price", "_version"}
    assert emulator.records("items")["1"]["name"] == "armchair"


def test_settings_push_shows_the_diff_then_applies_it(db, env, emulator, tmp_path):
    client = make_client(emulator.url, APP_ID, API_KEY)
    client.wait_for_task("products", client.set_settings("products", {"searchableAttributes": ["name"]}).task_id)
    wanted = {
        "products": {
            "searchableAttributes": ["name", "brand"],
            "attributesForFaceting": ["brand"],
            "customRanking": ["desc(price)"],
        }
    }
    path = tmp_path / "algolia-settings.json"
    path.write_text(json.dumps(wanted))

    dry = run_cli(env, "settings", "push", "--file", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "products: 3 change(s) (dry run, nothing applied)" in dry.stdout
    assert 'searchableAttributes: ["name"] -> ["name","brand"]' in dry.stdout
    assert 'attributesForFaceting: (unset) -> ["brand"]' in dry.stdout
    assert client.get_settings("products").to_dict()["searchableAttributes"] == ["name"]

    applied = run_cli(env, "settings", "push", "--file", str(path))
    assert applied.returncode == 0 and "products: 3 change(s)\n" in applied.stdout
    live = client.get_settings("products").to_dict()
    assert live["searchableAttributes"] == ["name", "brand"] and live["customRanking"] == ["desc(price)"]
    again = run_cli(env, "settings", "push", "--file", str(path))
    assert "products: up to date" in again.stdout

    missing = run_cli(env, "settings", "push", "--file", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_the_last_sent_hash_is_probed_per_key_even_with_stale_statistics(db, env):
    """The row read probes the last-sent hash per key and never scans all of an index's hashes for a
    batch: a generic plan made while algolia_sync_hashes was small would materialize every hash and
    compare each with every key, a cost that grows with the index."""
    from workerpool.capture.model import load_watched
    from workerpool.runtime.shaping import rows_query

    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text)")
    assert run_cli(env, "watch", "items", "--index", "items").returncode == 0
    db.execute("ANALYZE algolia_sync_hashes")  # statistics taken while it is empty, as in a first drain
    db.execute("""INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape)
                  SELECT 'items', g::text, '\\x00', '\\x00' FROM generate_series(1, 5000) g""")
    db.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 100) g")
    db.execute("SET plan_cache_mode = force_generic_plan")  # what psycopg's prepared statement ends up using
    query = psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + rows_query(load_watched(db)["items"])
    keys = "{" + ",".join(str(i) for i in range(1, 101)) + "}"
    plan = db.execute(query, {"keys": keys, "index": "items"}).fetchone()[0][0]["Plan"]

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    hashes = [n for n in nodes(plan) if n.get("Relation Name") == "algolia_sync_hashes"]
    assert hashes and all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in hashes), hashes
    assert all("object_id" in n.get("Index Cond", "") for n in hashes), hashes
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in hashes) <= 100  # one probe per key, no more


def test_watch_warns_when_a_related_foreign_key_has_no_index(db, env):
    db.execute(CATALOG)
    result = run_cli(
        env,
        "watch",
        "products",
        "--index",
        "products",
        "--related",
        "brands:brand_id",
        "--related",
        "categories:category_id",
    )
    assert result.returncode == 0, result.stderr
    # The suite runs `watch` as a superuser with no worker role, which `watch` also warns about.
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "role" not in line]
    assert warnings == [
        "warning: products.brand_id has no index: every change to brands scans all of products to find its "
        "rows (CREATE INDEX ON products (brand_id))",
        "warning: products.category_id has no index: every change to categories scans all of products to find "
        "its rows (CREATE INDEX ON products (category_id))",
    ]
    db.execute("CREATE INDEX ON products (brand_id)")
    db.execute("CREATE INDEX ON products (category_id, id)")
    again = run_cli(
        env,
        "watch",
        "products",
        "--index",
        "products",
        "--related",
        "brands:brand_id",
        "--related",
        "categories:category_id",
    )
    assert again.returncode == 0 and "has no index" not in again.stderr, again.stderr
