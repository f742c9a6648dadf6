"""Pagila, PostgreSQL's sample database (its own schema and data, nobody here wrote them): every table
with a primary key is watched, the junction tables by their composite keys and the partitioned
`payment` by (payment_date, payment_id) through its parent; a workload of Pagila's own kind (rentals
and their payments, payments moving between partitions, junction rows added and removed, a film's
key changed and cascading into its junction rows and inventory) converges exactly; the tables
without a key are refused with one line.
"""

from __future__ import annotations

import pytest

from testing import drain, run_cli
from testing import pagila as sample
from testing.index import assert_index_matches

pytestmark = pytest.mark.slow

WORKLOAD = """
-- New rentals and their payments (into the partitions by date), returns.
INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id)
SELECT '2022-07-20 10:00:00+00'::timestamptz + g * interval '1 hour', g * 7, g * 3, 1 + g % 2
  FROM generate_series(1, 40) g;
INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)
SELECT r.customer_id, r.staff_id, r.rental_id, 4.99, r.rental_date + interval '5 minutes'
  FROM rental r WHERE r.rental_date BETWEEN '2022-07-20' AND '2022-07-25';
UPDATE rental SET return_date = rental_date + interval '3 days'
 WHERE rental_date BETWEEN '2022-07-20' AND '2022-07-25' AND rental_id % 2 = 0;
-- Payments corrected to another month: each row moves to another partition (a new objectID).
UPDATE payment SET payment_date = payment_date + interval '1 month', amount = amount + 1
 WHERE (payment_date, payment_id) IN (SELECT payment_date, payment_id FROM payment_p2022_02 ORDER BY 2 LIMIT 25);
DELETE FROM payment
 WHERE (payment_date, payment_id) IN (SELECT payment_date, payment_id FROM payment_p2022_05 ORDER BY 2 LIMIT 10);
-- Junction rows added and removed.
INSERT INTO film_actor (actor_id, film_id) SELECT a, 1 FROM generate_series(150, 160) a ON CONFLICT DO NOTHING;
DELETE FROM film_actor WHERE film_id = 2;
INSERT INTO film_category (film_id, category_id) VALUES (3, 1), (3, 2) ON CONFLICT DO NOTHING;
DELETE FROM film_category WHERE film_id = 4;
-- Key changes, cascading (ON UPDATE CASCADE) into film_actor, film_category and inventory.
UPDATE film SET film_id = 5001 WHERE film_id = 10;
UPDATE actor SET actor_id = 5002 WHERE actor_id = 11;
UPDATE category SET category_id = 50, name = 'Renamed' WHERE category_id = 16;
UPDATE customer SET email = lower(email) WHERE customer_id < 50;
"""


@pytest.fixture
def pagila(db, db_url):
    reason = sample.unavailable()
    if reason:
        pytest.skip(reason)
    workerpool_own = set(sample.tables(db))  # workerpool's tables share the schema `public`
    sample.load(db_url)
    return db, {table: key for table, key in sample.tables(db).items() if table not in workerpool_own}


def test_every_pagila_table_with_a_key_is_watched_and_converges(pagila, env, emulator):
    db, found = pagila
    keyed = {table: key for table, key in found.items() if key}
    keyless = sorted(table for table, key in found.items() if not key)
    # What makes Pagila the test it is, read from its own catalog: junction tables with composite keys,
    # a partitioned table keyed by (partition key, id), and tables with no key at all.
    assert {"film_actor", "film_category", "payment"} <= {t for t, key in keyed.items() if len(key) > 1}, keyed
    assert db.execute("SELECT relkind FROM pg_class WHERE oid = 'payment'::regclass").fetchone()[0] == "p"
    assert keyless, found
    for table in keyed:
        watched = run_cli(env, "watch", table, "--index", f"pagila_{table}")
        assert watched.returncode == 0, watched.stderr
    for table in keyless:
        refused = run_cli(env, "watch", table, "--index", table)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "has no primary key; pass --key" in refused.stderr, refused.stderr
    for table in keyed:
        result = run_cli(env, "reindex", table)
        assert result.returncode == 0, result.stderr[-2000:]
    drain(env)
    for table, key in keyed.items():
        assert_index_matches(db, emulator, table, f"pagila_{table}", key)
    actor, film = db.execute("SELECT actor_id, film_id FROM film_actor ORDER BY 1, 2 LIMIT 1").fetchone()
    assert emulator.records("pagila_film_actor")[f"{{{actor},{film}}}"]["actor_id"] == actor

    db.execute(WORKLOAD)
    drain(env)
    for table, key in keyed.items():
        assert_index_matches(db, emulator, table, f"pagila_{table}", key)
        report = run_cli(env, "verify", table)
        assert report.returncode == 0, report.stdout + report.stderr[-2000:]
    films = emulator.records("pagila_film")
    assert "10" not in films and films["5001"]["title"]
    assert not any(k.endswith(",10}") for k in emulator.records("pagila_film_actor"))
    assert any(k.startswith("{5001,") for k in emulator.records("pagila_film_category"))
