"""The sync log's contract: one algolia_sync_log_batches row per acknowledgement or release call, read
per record through the view algolia_sync_log with the seed's columns; retention and cleanup delete
whole calls; a row inserted into the view becomes a call of one record; migration 010 carries the
per-record log of an older install over unchanged."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from tests.integration.test_queue_contract import ack, claim, enqueue, release
from workerpool.ops.migrate import migrate
from workerpool.process.retention import Retention

LOG_COLUMNS = (
    "id, queue_id, table_name, record_id, index_name, operation, action, status, attempts, error, "
    "claim_token, claimed_by, enqueued_at, claimed_at, synced_at"
)


def batches(db: psycopg.Connection) -> list[tuple]:
    """(id, claim_token, claimed_by, records) of every logged call, oldest first."""
    return db.execute(
        "SELECT id, claim_token, claimed_by, cardinality(table_names) FROM algolia_sync_log_batches ORDER BY id"
    ).fetchall()


def test_the_view_has_the_seed_logs_columns_and_types(db):
    columns = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'algolia_sync_log' ORDER BY ordinal_position"
    ).fetchall()
    assert columns == [
        ("id", "bigint"),
        ("queue_id", "bigint"),
        ("table_name", "text"),
        ("record_id", "text"),
        ("index_name", "text"),
        ("operation", "text"),
        ("action", "text"),
        ("status", "text"),
        ("attempts", "integer"),
        ("error", "text"),
        ("claim_token", "uuid"),
        ("claimed_by", "text"),
        ("enqueued_at", "timestamp with time zone"),
        ("claimed_at", "timestamp with time zone"),
        ("synced_at", "timestamp with time zone"),
    ]


def test_an_ack_of_n_rows_writes_one_batch_and_the_view_shows_each_record(db):
    ids = enqueue(db, "a", "b", "c", "d", operation="UPDATE")
    token, got = claim(db, worker="host:1:1")
    queued = dict(db.execute("SELECT id, created_at FROM algolia_sync_queue").fetchall())
    claimed_at = dict(db.execute("SELECT id, claimed_at FROM algolia_sync_queue").fetchall())
    acked = ack(
        db,
        ids,
        token,
        actions=["updateObject", "skip", "deleteObject", "partialUpdateObject"],
        indexes=["products"] * 4,
    )
    assert acked == 4
    assert batches(db) == [(batches(db)[0][0], token, "host:1:1", 4)]
    batch_id = batches(db)[0][0]
    logged = db.execute(f"SELECT {LOG_COLUMNS} FROM algolia_sync_log ORDER BY id").fetchall()
    now = db.execute("SELECT now()").fetchone()[0]
    assert len(logged) == 4
    assert [r[0] for r in logged] == [batch_id * 1048576 + n for n in (1, 2, 3, 4)]  # in the call's order
    for row, queue_id, key, action, status in zip(
        logged,
        ids,
        "abcd",
        ["updateObject", "skip", "deleteObject", "partialUpdateObject"],
        ["success", "skipped", "success", "success"],
        strict=True,
    ):
        assert row[1:] == (
            queue_id,
            "products",
            key,
            "products",
            "UPDATE",
            action,
            status,
            1,
            None,
            token,
            "host:1:1",
            queued[queue_id],
            claimed_at[queue_id],
            row[14],
        )
        assert timedelta(0) <= now - row[14] < timedelta(minutes=1)
    assert got  # the claim held the rows the ack took


def test_ids_grow_from_one_call_to_the_next_and_an_empty_call_logs_nothing(db):
    first = enqueue(db, "a", "b")
    token, _ = claim(db)
    ack(db, first, token)
    second = enqueue(db, "c")
    token2, _ = claim(db)
    assert ack(db, [999_999], token2) == 0  # nothing of this claim: no batch row
    assert len(batches(db)) == 1
    ack(db, second, token2)
    ids = [r[0] for r in db.execute("SELECT id, record_id FROM algolia_sync_log ORDER BY id")]
    keys = [r[0] for r in db.execute("SELECT record_id FROM algolia_sync_log ORDER BY id")]
    assert keys == ["a", "b", "c"] and len(set(ids)) == 3
    assert [r[3] for r in batches(db)] == [2, 1]


def test_a_release_that_fails_rows_for_good_logs_them_in_one_batch(db):
    ids = enqueue(db, "a", "b", "c")
    token, _ = claim(db, worker="host:2:1")
    assert release(db, ids[:2], token, permanent=True, error="record too large") == 2
    assert batches(db) == [(batches(db)[0][0], token, "host:2:1", 2)]
    logged = db.execute(
        "SELECT record_id, status, error, attempts, action, index_name, claim_token FROM algolia_sync_log ORDER BY id"
    ).fetchall()
    assert logged == [
        ("a", "failed", "record too large", 1, None, None, token),
        ("b", "failed", "record too large", 1, None, None, token),
    ]
    # A release that only retries logs nothing.
    assert release(db, ids[2:], token, permanent=False) == 1
    assert len(batches(db)) == 1


def test_a_where_on_synced_at_uses_the_batches_index(db):
    db.execute("SET enable_seqscan = off")  # an empty table: only whether the index can be used is checked
    plan = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN SELECT count(*) FROM algolia_sync_log "
            "WHERE synced_at > now() - interval '1 hour' AND status = 'success'"
        )
    )
    assert "algolia_sync_log_batches_synced_at" in plan, plan


def test_an_insert_into_the_view_writes_a_call_of_one_record(db):
    row = db.execute(
        "INSERT INTO algolia_sync_log (table_name, record_id, operation, status, error) "
        "VALUES ('products', '7', 'DELETE', 'failed', 'gone') RETURNING id, attempts, synced_at"
    ).fetchone()
    assert row[1] == 0 and row[2] is not None  # the view's defaults, as the table's were
    assert batches(db) == [(row[0] // 1048576, None, None, 1)]
    assert db.execute("SELECT id, record_id, status, error FROM algolia_sync_log").fetchall() == [
        (row[0], "7", "failed", "gone")
    ]
    for columns, values in (
        ("table_name, record_id, operation, status", "'p', '1', 'UPDATE', 'odd'"),  # no such status
        ("table_name, record_id, operation, status", "'p', NULL, 'UPDATE', 'success'"),  # no key
        ("id, table_name, record_id, operation, status", "1, 'p', '1', 'UPDATE', 'success'"),  # an id
    ):
        bad = f"INSERT INTO algolia_sync_log ({columns}) VALUES ({values})"
        try:
            db.execute(bad)
        except psycopg.Error:
            pass
        else:
            raise AssertionError(f"accepted: {bad}")
    assert db.execute("SELECT count(*) FROM algolia_sync_log").fetchone()[0] == 1


def _old_and_new_calls(db: psycopg.Connection) -> None:
    """Two acknowledged calls of 3 and 2 records, the first ten days old; and two hand-written rows,
    one ten days old."""
    ids = enqueue(db, "a", "b", "c")
    token, _ = claim(db)
    ack(db, ids, token)
    db.execute("UPDATE algolia_sync_log_batches SET synced_at = now() - interval '10 days'")
    ids = enqueue(db, "d", "e")
    token, _ = claim(db)
    ack(db, ids, token)
    db.execute(
        "INSERT INTO algolia_sync_log (table_name, record_id, operation, status, synced_at) "
        "VALUES ('products', 'f', 'UPDATE', 'success', now() - interval '10 days'), "
        "       ('products', 'g', 'UPDATE', 'success', now())"
    )


def test_cleanup_deletes_whole_old_calls_and_counts_their_records(db):
    _old_and_new_calls(db)
    assert db.execute("SELECT cleanup_old_sync_records(7)").fetchone()[0] == 4
    assert [r[0] for r in db.execute("SELECT record_id FROM algolia_sync_log ORDER BY id")] == ["d", "e", "g"]
    assert db.execute("SELECT cleanup_old_sync_records(7)").fetchone()[0] == 0


def test_retention_prunes_old_calls_in_batches_of_calls(db):
    _old_and_new_calls(db)
    retention = Retention(days=7, batch_calls=1)  # one call per transaction: several rounds
    deleted = retention.step(db, time.monotonic())
    assert deleted == 4 and retention.cutoff is None  # the pass finished within its budget
    assert [r[0] for r in db.execute("SELECT record_id FROM algolia_sync_log ORDER BY id")] == ["d", "e", "g"]
    assert len(batches(db)) == 2


def test_migration_010_carries_the_per_record_log_over(empty_db_url):
    token = uuid.uuid4()
    at = datetime(2026, 12, 1, tzinfo=UTC)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate(conn, target=9)
        conn.execute(
            "INSERT INTO algolia_sync_log (queue_id, table_name, record_id, index_name, operation, action, status, "
            "attempts, error, claim_token, claimed_by, enqueued_at, claimed_at, synced_at) VALUES "
            "(1, 'products', '1', 'products', 'UPDATE', 'updateObject', 'success', 1, NULL, %(t)s, 'w', "
            " %(a)s, %(a)s, %(a)s),"
            "(3, 'products', '3', 'products', 'UPDATE', 'skip', 'skipped', 2, NULL, %(t)s, 'w', %(a)s, %(a)s, %(a)s),"
            "(2, 'products', '2', NULL, 'DELETE', NULL, 'failed', 3, 'boom', %(t)s, 'w', %(a)s, %(a)s, %(b)s),"
            "(NULL, 'brands', 'x', NULL, 'UPDATE', NULL, 'retry', 0, NULL, NULL, NULL, NULL, NULL, %(b)s)",
            {"t": token, "a": at, "b": at + timedelta(seconds=1)},
        )
        before = conn.execute(f"SELECT {LOG_COLUMNS} FROM algolia_sync_log ORDER BY id").fetchall()
        assert [m.version for m in migrate(conn, target=10)] == [10]
        after = conn.execute(f"SELECT {LOG_COLUMNS} FROM algolia_sync_log ORDER BY id").fetchall()
        assert [r[1:] for r in after] == [r[1:] for r in before]  # same records, in the same order
        assert len({r[0] for r in after}) == 4
        calls = conn.execute("SELECT cardinality(table_names) FROM algolia_sync_log_batches ORDER BY id").fetchall()
        assert [c[0] for c in calls] == [2, 1, 1]  # grouped by claim, worker and synced_at
        new = conn.execute(
            "INSERT INTO algolia_sync_log (table_name, record_id, operation, status) "
            "VALUES ('products', 'n', 'UPDATE', 'success') RETURNING id"
        ).fetchone()[0]
        assert new > max(r[0] for r in after)
