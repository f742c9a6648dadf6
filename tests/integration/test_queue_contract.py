"""The queue's SQL contract, called directly on a real Postgres (a fresh migrated database per test):
claim (get_pending_algolia_syncs), ack, release, spill, recover_expired, and the lease token that
guards every one of them. No worker process, no Algolia: only the functions the worker calls."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from workerpool.api.results import BareAck
from workerpool.runtime import queue
from workerpool.runtime.model import SyncItem

MAX_ATTEMPTS = 3


def enqueue(db: psycopg.Connection, *keys: str, table: str = "products", operation: str = "UPDATE") -> list[int]:
    """Pending queue rows, in this order (ids ascending)."""
    return [
        db.execute(
            "INSERT INTO algolia_sync_queue (table_name, record_id, operation) VALUES (%s, %s, %s) RETURNING id",
            (table, key, operation),
        ).fetchone()[0]
        for key in keys
    ]


def claim(db: psycopg.Connection, batch: int = 100, lease_ms: int = 60_000, worker: str = "w1"):
    """(token, {record_id: row}) of one claim."""
    token = uuid.uuid4()
    rows = db.execute(
        "SELECT id, table_name, record_id, operation, attempts, claim_token "
        "FROM get_pending_algolia_syncs(%s, %s, %s, %s)",
        (batch, lease_ms, token, worker),
    ).fetchall()
    assert all(r[5] == token for r in rows)
    return token, {r[2]: r for r in rows}


def ack(db, ids, token, actions=None, indexes=None, hashes=None, shapes=None, stored=None) -> int:
    return db.execute(
        "SELECT algolia_sync_ack(%s::bigint[], %s, %s::text[], %s::text[], %s::bytea[], %s::bytea[], %s::boolean[])",
        (list(ids), token, actions, indexes, hashes, shapes, stored),
    ).fetchone()[0]


def release(db, ids, token, delay_ms=0, permanent=False, count_attempt=True, error="boom") -> int:
    ids = list(ids)
    return db.execute(
        "SELECT algolia_sync_release(%s::bigint[], %s, %s::text[], %s::integer[], %s::boolean[], %s, %s)",
        (ids, token, [error] * len(ids), [delay_ms] * len(ids), [permanent] * len(ids), MAX_ATTEMPTS, count_attempt),
    ).fetchone()[0]


def rows(db: psycopg.Connection) -> dict[tuple[str, str], tuple]:
    """(record_id, status) -> (operation, attempts, claim_token, last_error) of every queue row of `products`."""
    found = db.execute(
        "SELECT record_id, status, operation, attempts, claim_token, last_error FROM algolia_sync_queue "
        "WHERE table_name = 'products'"
    ).fetchall()
    out = {(r[0], r[1]): r[2:] for r in found}
    assert len(out) == len(found), found  # no key twice in one status
    return out


def expire(db: psycopg.Connection, token: uuid.UUID) -> None:
    db.execute(
        "UPDATE algolia_sync_queue SET locked_until = now() - interval '1 second' WHERE claim_token = %s", (token,)
    )


def log(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT record_id, status, action, index_name, attempts, claim_token FROM algolia_sync_log ORDER BY id"
    ).fetchall()


def inbox(db: psycopg.Connection, keys: list[str | None], table: str = "products", operation: str = "UPDATE") -> None:
    db.execute(
        "INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids) VALUES (%s, %s, %s, %s)",
        (table, operation, len(keys), keys),
    )


def spill(db: psycopg.Connection, max_keys: int = 10_000) -> int:
    return db.execute("SELECT algolia_sync_spill(%s)", (max_keys,)).fetchone()[0]


# ---- claim ---------------------------------------------------------------------------------------


def test_a_claim_takes_due_rows_oldest_first_under_its_token_and_counts_the_attempt(db):
    enqueue(db, "a", "b", "c", "d")
    db.execute("UPDATE algolia_sync_queue SET next_attempt_at = now() + interval '1 hour' WHERE record_id = 'd'")
    token, got = claim(db, batch=2, lease_ms=30_000, worker="host:1:1")
    assert sorted(got) == ["a", "b"]
    held = db.execute(
        "SELECT record_id, attempts, claimed_by, locked_until - now() FROM algolia_sync_queue "
        "WHERE status = 'processing' AND claim_token = %s ORDER BY record_id",
        (token,),
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in held] == [("a", 1, "host:1:1"), ("b", 1, "host:1:1")]
    assert all(timedelta(seconds=29) < r[3] <= timedelta(seconds=30) for r in held)

    token2, got2 = claim(db)
    assert sorted(got2) == ["c"] and token2 != token  # not yet due: d
    assert claim(db)[1] == {}


@pytest.mark.parametrize("lease_ms", [1000, 1001, 30_000, 86_400_000])
def test_extending_pushes_the_lease_by_the_claims_lease_in_the_unit_the_claim_used(db, lease_ms):
    """`queue.claim_batch` and `queue.extend` both send the lease in ms: the lease after an extend is
    the claim's own, to the millisecond, and a lost lease is not revived."""
    enqueue(db, "a", "b")
    claimed = queue.claim_batch(db, 10, lease_ms, "w1", 0.0)
    assert claimed is not None and claimed.lease_s == lease_ms / 1000.0
    with db.transaction():  # one now() for the extend and the check
        assert queue.extend(db, claimed, 5.0) and claimed.extended_at == 5.0
        lease = db.execute(
            "SELECT DISTINCT locked_until - now() FROM algolia_sync_queue WHERE claim_token = %s", (claimed.token,)
        ).fetchall()
    assert lease == [(timedelta(milliseconds=lease_ms),)]
    expire(db, claimed.token)
    assert not queue.extend(db, claimed, 6.0) and claimed.extended_at == 5.0


def test_a_key_with_a_live_claim_is_not_claimed_again_until_its_lease_expires(db):
    enqueue(db, "a")
    token, _ = claim(db)
    enqueue(db, "a", "b")  # a newer change to a, while the older one is in flight
    assert sorted(claim(db)[1]) == ["b"]
    expire(db, token)
    assert sorted(claim(db)[1]) == ["a"]


def test_a_claim_skips_rows_another_transaction_has_locked(db, db_url):
    enqueue(db, "a", "b")
    with psycopg.connect(db_url) as other:
        other.execute("SELECT 1 FROM algolia_sync_queue WHERE record_id = 'a' FOR UPDATE")
        assert sorted(claim(db)[1]) == ["b"]  # no wait: SKIP LOCKED
    assert sorted(claim(db)[1]) == ["a"]


# ---- ack -----------------------------------------------------------------------------------------


def test_ack_deletes_logs_and_remembers_what_was_sent(db):
    ids = dict(zip("abc", enqueue(db, "a", "b", "c"), strict=True))
    db.execute(
        "INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape) VALUES ('idx', 'c', '\\x01', '\\x02')"
    )
    db.execute(
        "INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, last_error) "
        "VALUES ('products', 'a', 'UPDATE', 'failed', 'an older failure')"
    )
    token, _ = claim(db)
    acked = ack(
        db,
        [ids["a"], ids["b"], ids["c"]],
        token,
        actions=["partialUpdateObject", "skip", "deleteObject"],
        indexes=["idx", "idx", "idx"],
        hashes=[b"\xaa", None, None],
        shapes=[b"\xbb", None, None],
    )
    assert acked == 3
    assert rows(db) == {}  # acknowledged, and a's older failure is moot now
    assert [r[:5] for r in log(db)] == [
        ("a", "success", "partialUpdateObject", "idx", 1),
        ("b", "skipped", "skip", "idx", 1),
        ("c", "success", "deleteObject", "idx", 1),
    ]
    assert all(r[5] == token for r in log(db))
    hashes = db.execute("SELECT object_id, hash, shape FROM algolia_sync_hashes ORDER BY object_id").fetchall()
    assert hashes == [("a", b"\xaa", b"\xbb")]  # c deleted: its hash forgotten


def stored_hashes(db: psycopg.Connection) -> dict[str, tuple]:
    """object_id -> (hash, shape, xmin) of index idx: a rewritten row has a new xmin."""
    found = db.execute(
        "SELECT object_id, hash, shape, xmin::text FROM algolia_sync_hashes WHERE index_name = 'idx'"
    ).fetchall()
    return {r[0]: r[1:] for r in found}


def test_ack_inserts_first_hashes_and_rewrites_only_changed_ones(db):
    ids = dict(zip("abc", enqueue(db, "a", "b", "c"), strict=True))
    db.execute(
        "INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape) "
        "VALUES ('idx', 'b', '\\x01', '\\x02'), ('idx', 'c', '\\x01', '\\x02')"
    )
    before = stored_hashes(db)
    token, _ = claim(db)
    sent = ["updateObject"] * 3
    # a is new (no hash when read); b is re-sent unchanged (a reindex); c changed.
    assert (
        ack(db, ids.values(), token, sent, ["idx"] * 3, [b"\xaa", b"\x01", b"\xcc"], [b"\x02"] * 3, [False, True, True])
        == 3
    )
    after = stored_hashes(db)
    assert {k: v[:2] for k, v in after.items()} == {
        "a": (b"\xaa", b"\x02"),
        "b": (b"\x01", b"\x02"),
        "c": (b"\xcc", b"\x02"),
    }
    assert after["b"][2] == before["b"][2]  # unchanged: not written
    assert after["c"][2] != before["c"][2]


@pytest.mark.parametrize("twice", [False, True])
def test_a_first_hash_whose_key_is_already_stored_is_upserted(db, twice):
    """The worker read no hash, yet one is there by the ack (another table feeding the same index), or
    the batch holds the key twice: the plain INSERT fails and the upsert writes the newest."""
    keys = ["a", "b"] if not twice else ["a", "a"]
    tables = ["products", "products"] if not twice else ["products", "others"]
    ids = [enqueue(db, k, table=t)[0] for k, t in zip(keys, tables, strict=True)]
    if not twice:
        db.execute(
            "INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape) VALUES ('idx', 'a', '\\x01', '\\x02')"
        )
    token, _ = claim(db)
    assert (
        ack(db, ids, token, ["updateObject"] * 2, ["idx"] * 2, [b"\xaa", b"\xbb"], [b"\x02"] * 2, [False, False]) == 2
    )
    expected = {"a": (b"\xaa", b"\x02"), "b": (b"\xbb", b"\x02")} if not twice else {"a": (b"\xbb", b"\x02")}
    assert {k: v[:2] for k, v in stored_hashes(db).items()} == expected


def worker_ack(db, token, got, *items) -> int:
    """queue.ack as the worker calls it: items (key, action, index, hash, shape, stored), their rows
    taken from the claim `got`."""
    return queue.ack(
        db,
        token,
        [
            BareAck(SyncItem(got[k][0], got[k][1], k, got[k][3], got[k][4], None), a, i, h, s, st)
            for k, a, i, h, s, st in items
        ],
    )


def test_a_worker_ack_of_a_claim_it_fully_holds_writes_the_split_hash_groups(db):
    """The fast path: every row held, items passed out of id order; the log is in id order."""
    ids = dict(zip("abcd", enqueue(db, "a", "b", "c", "d"), strict=True))
    db.execute(
        "INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape) "
        "VALUES ('idx', 'b', '\\x01', '\\x02'), ('idx', 'c', '\\x01', '\\x02'), ('idx', 'd', '\\x0d', '\\x02')"
    )
    db.execute(
        "INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, last_error) "
        "VALUES ('products', 'c', 'UPDATE', 'failed', 'an older failure')"
    )
    token, got = claim(db, worker="host:9:1")
    held = worker_ack(
        db,
        token,
        got,
        ("d", "skip", "idx", None, None, None),
        ("c", "deleteObject", "idx", None, None, None),
        ("b", "partialUpdateObject", "idx", b"\xbb", b"\x02", True),
        ("a", "updateObject", "idx", b"\xaa", b"\x03", False),
    )
    assert held == 4
    assert rows(db) == {}  # acknowledged, and c's older failure dropped
    logged = db.execute(
        "SELECT queue_id, record_id, status, action, index_name, attempts, claim_token, claimed_by "
        "FROM algolia_sync_log ORDER BY id"
    ).fetchall()
    assert logged == [
        (ids["a"], "a", "success", "updateObject", "idx", 1, token, "host:9:1"),
        (ids["b"], "b", "success", "partialUpdateObject", "idx", 1, token, "host:9:1"),
        (ids["c"], "c", "success", "deleteObject", "idx", 1, token, "host:9:1"),
        (ids["d"], "d", "skipped", "skip", "idx", 1, token, "host:9:1"),
    ]
    assert db.execute("SELECT count(*) FROM algolia_sync_log_batches").fetchone()[0] == 1
    assert {k: v[:2] for k, v in stored_hashes(db).items()} == {
        "a": (b"\xaa", b"\x03"),  # first hash inserted
        "b": (b"\xbb", b"\x02"),  # changed: rewritten
        "d": (b"\x0d", b"\x02"),  # skipped: untouched
    }  # c deleted: its hash forgotten


def test_a_worker_ack_after_some_rows_lost_their_lease_acknowledges_only_the_held_ones(db):
    """The fallback: b and c lost their lease (and b was claimed again elsewhere); only a and d are
    acknowledged, logged and have their hashes written; b's first hash and c's delete are not."""
    enqueue(db, "a", "b", "c", "d")
    db.execute(
        "INSERT INTO algolia_sync_hashes (index_name, object_id, hash, shape) "
        "VALUES ('idx', 'c', '\\x0c', '\\x02'), ('idx', 'd', '\\x01', '\\x02')"
    )
    token, got = claim(db)
    db.execute("UPDATE algolia_sync_queue SET locked_until = now() - interval '1 second' WHERE record_id IN ('b', 'c')")
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 2
    other, _ = claim(db, worker="w2")
    held = worker_ack(
        db,
        token,
        got,
        ("a", "updateObject", "idx", b"\xaa", b"\x02", False),
        ("b", "updateObject", "idx", b"\xbb", b"\x02", False),
        ("c", "deleteObject", "idx", None, None, None),
        ("d", "updateObject", "idx", b"\xdd", b"\x02", True),
    )
    assert held == 2
    assert rows(db) == {
        ("b", "processing"): ("UPDATE", 2, other, None),
        ("c", "processing"): ("UPDATE", 2, other, None),
    }
    assert [r[:4] for r in log(db)] == [
        ("a", "success", "updateObject", "idx"),
        ("d", "success", "updateObject", "idx"),
    ]
    assert {k: v[:2] for k, v in stored_hashes(db).items()} == {
        "a": (b"\xaa", b"\x02"),
        "c": (b"\x0c", b"\x02"),  # its delete was not acknowledged
        "d": (b"\xdd", b"\x02"),
    }


@pytest.mark.parametrize("held_all", [True, False])
def test_a_worker_acks_first_hash_collision_is_upserted_the_newest_row_winning(db, held_all):
    """Two tables feed key a of one index, both read with no hash: the plain INSERT fails and the
    upsert writes the newest queue row's hash, whether the claim held all its rows or not."""
    enqueue(db, "a", table="products")
    enqueue(db, "a", table="others")
    enqueue(db, "z")
    token, got = claim(db)  # by record id: z's row (the two rows of a are read below)
    rows_by_table = dict(
        db.execute(
            "SELECT table_name, id FROM algolia_sync_queue WHERE record_id = 'a' AND claim_token = %s", (token,)
        ).fetchall()
    )
    assert set(rows_by_table) == {"products", "others"}  # both rows of a claimed
    if not held_all:
        db.execute("UPDATE algolia_sync_queue SET locked_until = now() - interval '1 second' WHERE record_id = 'z'")
    items = [
        BareAck(SyncItem(rows_by_table[t], t, "a", "UPDATE", 1, None), "updateObject", "idx", h, b"\x02", False)
        for t, h in (("others", b"\xbb"), ("products", b"\xaa"))
    ]
    z = got["z"]
    items.append(BareAck(SyncItem(z[0], z[1], "z", z[3], z[4], None), "updateObject", "idx", b"\xcc", b"\x02", False))
    assert queue.ack(db, token, items) == (3 if held_all else 2)
    expected = {"a": (b"\xbb", b"\x02")}  # the others row was queued last
    if held_all:
        expected["z"] = (b"\xcc", b"\x02")
    assert {k: v[:2] for k, v in stored_hashes(db).items()} == expected
    assert sorted(r[0] for r in log(db)) == (["a", "a", "z"] if held_all else ["a", "a"])


def test_a_stale_token_acknowledges_nothing(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    assert ack(db, [row_id], uuid.uuid4()) == 0
    assert rows(db)[("a", "processing")][2] == token
    assert log(db) == []


def test_an_expired_lease_acknowledges_nothing_even_with_its_own_token(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    expire(db, token)
    assert ack(db, [row_id], token) == 0
    assert ("a", "processing") in rows(db)


def test_after_recovery_and_a_new_claim_only_the_new_token_acknowledges(db):
    (row_id,) = enqueue(db, "a")
    first, _ = claim(db)
    expire(db, first)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 1
    second, got = claim(db)
    assert got["a"][4] == 2  # the second attempt
    assert ack(db, [row_id], first) == 0
    assert release(db, [row_id], first) == 0
    assert rows(db)[("a", "processing")][2] == second
    assert ack(db, [row_id], second) == 1
    assert rows(db) == {}


# ---- release -------------------------------------------------------------------------------------


def test_release_returns_rows_after_their_delay_with_the_attempt_spent(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    assert release(db, [row_id], token, delay_ms=5000, error="503 from Algolia") == 1
    assert rows(db) == {("a", "pending"): ("UPDATE", 1, None, "503 from Algolia")}
    wait = db.execute("SELECT next_attempt_at - now() FROM algolia_sync_queue").fetchone()[0]
    assert timedelta(seconds=4) < wait <= timedelta(seconds=5)
    assert claim(db)[1] == {}  # not due yet
    db.execute("UPDATE algolia_sync_queue SET next_attempt_at = now()")
    assert claim(db)[1]["a"][4] == 2


def test_release_fails_a_row_whose_attempts_are_spent_and_logs_it(db):
    (row_id,) = enqueue(db, "a")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        token, got = claim(db)
        assert got["a"][4] == attempt
        assert release(db, [row_id], token, error=f"try {attempt}") == 1
    assert rows(db) == {("a", "failed"): ("UPDATE", MAX_ATTEMPTS, None, f"try {MAX_ATTEMPTS}")}
    assert [r[:2] + r[4:5] for r in log(db)] == [("a", "failed", MAX_ATTEMPTS)]


def test_a_permanent_error_fails_at_the_first_attempt(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    assert release(db, [row_id], token, permanent=True, error="record too big") == 1
    assert rows(db) == {("a", "failed"): ("UPDATE", 1, None, "record too big")}


def test_giving_back_without_counting_undoes_the_claims_attempt(db):
    """Throttling and a graceful stop: the row goes back as if never claimed, even at the last attempt."""
    (row_id,) = enqueue(db, "a")
    db.execute("UPDATE algolia_sync_queue SET attempts = %s", (MAX_ATTEMPTS - 1,))
    token, got = claim(db)
    assert got["a"][4] == MAX_ATTEMPTS
    assert release(db, [row_id], token, count_attempt=False, error="429") == 1
    assert rows(db) == {("a", "pending"): ("UPDATE", MAX_ATTEMPTS - 1, None, "429")}


def test_a_released_row_merges_into_a_newer_pending_change_of_its_key(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    enqueue(db, "a", operation="DELETE")
    assert release(db, [row_id], token) == 1
    assert rows(db) == {("a", "pending"): ("DELETE", 0, None, None)}


def test_a_stale_token_releases_nothing(db):
    (row_id,) = enqueue(db, "a")
    token, _ = claim(db)
    assert release(db, [row_id], uuid.uuid4(), permanent=True) == 0
    assert rows(db)[("a", "processing")][2] == token


# ---- spill ---------------------------------------------------------------------------------------


def test_spill_moves_inbox_keys_into_the_queue_coalescing_each_key(db):
    inbox(db, ["1", "2"], operation="INSERT")
    inbox(db, ["2", "3"], operation="UPDATE")
    inbox(db, ["3"], operation="DELETE")
    inbox(db, ["1"], table="brands")
    assert spill(db) == 4
    assert {k: v[0] for k, v in rows(db).items()} == {
        ("1", "pending"): "INSERT",
        ("2", "pending"): "UPDATE",  # the latest operation of the key wins
        ("3", "pending"): "DELETE",
    }
    assert db.execute("SELECT count(*) FROM algolia_sync_queue WHERE table_name = 'brands'").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM algolia_sync_inbox").fetchone()[0] == 0
    assert spill(db) == 0


def test_spill_merges_into_pending_rows_and_a_pending_reindex_stays_one(db):
    enqueue(db, "1", operation="REINDEX")
    enqueue(db, "2", operation="INSERT")
    inbox(db, ["1", "2"], operation="UPDATE")
    assert spill(db) == 2
    assert {k: v[0] for k, v in rows(db).items()} == {("1", "pending"): "REINDEX", ("2", "pending"): "UPDATE"}


def test_spill_drops_null_keys(db):
    inbox(db, [None, "1", None])
    spill(db)
    assert list(rows(db)) == [("1", "pending")]


def test_a_key_over_1000_bytes_becomes_a_failed_row_and_the_rest_still_spill(db):
    at_limit = "é" * 500  # 1,000 bytes in UTF-8
    over = "é" * 500 + "x"
    inbox(db, ["1", at_limit, over])
    spill(db)
    found = rows(db)
    assert ("1", "pending") in found and (at_limit, "pending") in found
    failed = [(k, v) for k, v in found.items() if k[1] == "failed"]
    assert len(failed) == 1
    (record_id, _), (_, attempts, _, error) = failed[0]
    assert record_id == "é" * 100 + "…" and attempts == 0
    assert "1001 bytes" in error and "1000-byte limit" in error


def test_spill_takes_whole_inbox_rows_oldest_first_until_max_keys(db):
    inbox(db, ["1", "2", "3"])
    inbox(db, ["4", "5"])
    inbox(db, ["6"])
    assert spill(db, max_keys=4) == 5  # the second row is taken whole
    assert db.execute("SELECT record_ids FROM algolia_sync_inbox").fetchall() == [(["6"],)]
    assert spill(db, max_keys=1) == 1


def test_spill_waits_for_nobody_and_moves_what_it_can(db, db_url):
    inbox(db, ["1"])
    inbox(db, ["2"])
    with psycopg.connect(db_url) as other:
        other.execute("SELECT 1 FROM algolia_sync_inbox WHERE record_ids = '{1}' FOR UPDATE")
        assert spill(db) == 1  # the locked inbox row is skipped
    assert list(rows(db)) == [("2", "pending")]


# ---- recover_expired -----------------------------------------------------------------------------


def test_recover_returns_expired_leases_and_leaves_live_ones(db):
    enqueue(db, "a", "b")
    expired, _ = claim(db, batch=1)
    live, _ = claim(db, batch=1)
    expire(db, expired)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 1
    assert rows(db) == {("a", "pending"): ("UPDATE", 1, None, None), ("b", "processing"): ("UPDATE", 1, live, None)}
    assert sorted(claim(db)[1]) == ["a"]  # due at once


def test_recover_fails_an_expired_row_out_of_attempts(db):
    enqueue(db, "a")
    db.execute("UPDATE algolia_sync_queue SET attempts = %s", (MAX_ATTEMPTS - 1,))
    token, _ = claim(db)
    expire(db, token)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 1
    ((key, status),) = rows(db)
    assert status == "failed"
    assert (
        rows(db)[(key, status)][3]
        == f"lease expired after {MAX_ATTEMPTS} attempts (worker crashed or stalled while holding it)"
    )


def test_recover_drops_an_expired_row_whose_key_has_a_newer_pending_change(db):
    enqueue(db, "a")
    token, _ = claim(db)
    enqueue(db, "a", operation="DELETE")
    expire(db, token)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 1
    assert rows(db) == {("a", "pending"): ("DELETE", 0, None, None)}


def test_recover_keeps_the_newest_of_several_expired_claims_of_one_key_and_recovers_the_rest(db):
    """Key "a" claimed, its worker killed; a newer change of "a" claimed once that lease expired, and
    that worker killed too: two expired claims of one key, next to another key's. All come back, one
    pending row per key, the newest change of "a" kept; again and again would mean a stuck queue."""
    enqueue(db, "a", "b")
    first, _ = claim(db)
    expire(db, first)
    enqueue(db, "a", operation="DELETE")
    second, got = claim(db)
    assert list(got) == ["a"]
    expire(db, second)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (MAX_ATTEMPTS,)).fetchone()[0] == 3
    assert rows(db) == {("a", "pending"): ("DELETE", 1, None, None), ("b", "pending"): ("UPDATE", 1, None, None)}
    assert sorted(claim(db)[1]) == ["a", "b"]


@pytest.mark.parametrize("max_attempts", [1, 5])
def test_recover_with_nothing_expired_changes_nothing(db, max_attempts):
    enqueue(db, "a", "b")
    claim(db, batch=1)
    before = rows(db)
    assert db.execute("SELECT algolia_sync_recover_expired(%s)", (max_attempts,)).fetchone()[0] == 0
    assert rows(db) == before
