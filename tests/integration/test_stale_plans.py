"""The claim, the release and the lease recovery are planned as index scans whatever the statistics say
(migration 014): their PL/pgSQL statements are planned once per session, and a plan made right after an
ANALYZE of an empty queue must not scan the whole queue once per row when it holds many.

auto_explain shows the plans of the functions' own statements (as NOTICEs), generic plans forced, as a
worker's session keeps them."""

from __future__ import annotations

import psycopg
import pytest

CALLS = {
    "recover": "SELECT algolia_sync_recover_expired(5)",
    "claim": "SELECT count(*) FROM get_pending_algolia_syncs(100)",
}


def _plans(conn: psycopg.Connection, call: str) -> str:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    for _ in range(6):  # generic plans are forced; six calls, as a worker makes them
        conn.execute(call)
    return "\n".join(notices)


@pytest.fixture
def explained(db: psycopg.Connection) -> psycopg.Connection:
    try:
        db.execute("LOAD 'auto_explain'")
    except psycopg.Error as exc:
        pytest.skip(f"auto_explain is not installed on this server: {exc}")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_level = notice",
        "plan_cache_mode = force_generic_plan",
    ):
        db.execute(f"SET {setting}")
    return db


def _stale_queue(db: psycopg.Connection) -> None:
    """An ANALYZE of the empty queue, then 20,000 pending rows and 2,000 expired claims it never saw."""
    db.execute("ANALYZE algolia_sync_queue")
    db.execute(
        "INSERT INTO algolia_sync_queue (table_name, record_id, operation) "
        "SELECT 't', g::text, 'UPDATE' FROM generate_series(1, 20000) g"
    )
    db.execute(
        "INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, claim_token, locked_until) "
        "SELECT 't', 'x' || g, 'UPDATE', 'processing', gen_random_uuid(), now() - interval '1 minute' "
        "FROM generate_series(1, 2000) g"
    )


def test_recovery_and_claim_probe_indexes_after_an_analyze_of_an_empty_queue(explained):
    db = explained
    _stale_queue(db)
    for name, call in CALLS.items():
        plans = _plans(db, call)
        assert "algolia_sync_queue" in plans, plans
        # Neither a scan of the queue nor a hash of every pending row built on each call.
        assert "Seq Scan on algolia_sync_queue" not in plans, f"{name}:\n{plans}"
        assert "hashed SubPlan" not in plans, f"{name}:\n{plans}"
    # The 2,000 expired claims went back (the claims above hold 600 rows under live leases).
    counts = dict(db.execute("SELECT status, count(*) FROM algolia_sync_queue GROUP BY 1").fetchall())
    assert counts == {"pending": 21_400, "processing": 600}
