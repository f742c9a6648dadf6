"""The least lease queue, and what each of workerpool's guarantees adds to its Postgres CPU.

`phases.py --floor` drains the benchmarks' catalogue through a queue that does only what any lease
queue with a row per queued key must do for a record whose current row it reads: claim due rows
under a token (UPDATE ... FOR UPDATE SKIP LOCKED), read the rows, delete the queue rows. Then again
with one of workerpool's guarantees added at a time, each in the least form it can take, and with all
of them: per-key serialization (a partial index of the rows being processed and a probe per
candidate), skip-unchanged (a probe of the last hash per key in the read, a hash row written per
first send) and the log (one row per call, the records as arrays). The differences are what each
guarantee costs at the least, measured in the same run as workerpool's own steps.
"""

from __future__ import annotations

import collections
import os
import uuid
from typing import Any

import psycopg

from benchmarks import _bench

PARTS = ("key_check", "hash_read", "hash_write", "log")
STEPS = ("claim", "read", "ack")

DDL = """
CREATE TABLE floor_queue (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_token uuid,
    locked_until timestamptz);
CREATE INDEX floor_queue_due ON floor_queue (next_attempt_at, id) WHERE status = 'pending';
CREATE TABLE floor_hashes (
    index_name text NOT NULL, object_id text NOT NULL, hash bytea NOT NULL, PRIMARY KEY (index_name, object_id));
CREATE TABLE floor_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, synced_at timestamptz NOT NULL DEFAULT now(),
    queue_ids bigint[], record_ids text[]);
ALTER TABLE floor_log ALTER COLUMN queue_ids SET STORAGE EXTERNAL, ALTER COLUMN record_ids SET STORAGE EXTERNAL;
CREATE INDEX floor_log_synced_at ON floor_log (synced_at)"""
PROCESSING_INDEX = (
    "CREATE INDEX floor_queue_processing ON floor_queue (record_id, locked_until) WHERE status = 'processing'"
)
KEY_CHECK = """
   AND NOT EXISTS (SELECT 1 FROM floor_queue p WHERE p.status = 'processing' AND p.record_id = d.record_id
                      AND p.locked_until >= now())"""


def statements(parts: frozenset[str]) -> tuple[str, str, str]:
    """The claim, read and ack statements of the least queue with `parts` of PARTS added."""
    claim = f"""
UPDATE floor_queue SET status = 'processing', claim_token = %(token)s, locked_until = now() + interval '1 minute'
 WHERE id = ANY(ARRAY(SELECT d.id FROM floor_queue d WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                      {KEY_CHECK if "key_check" in parts else ""}
                      ORDER BY d.next_attempt_at, d.id LIMIT %(batch)s FOR UPDATE SKIP LOCKED))
RETURNING id, record_id"""
    if "hash_read" in parts:
        read = """
SELECT s.*, h.hash FROM unnest(%(keys)s::text[]) AS k(id) JOIN products s ON s.id = k.id::bigint
  LEFT JOIN LATERAL (SELECT f.hash FROM floor_hashes f WHERE f.index_name = 'products' AND f.object_id = k.id
                     LIMIT 1) h ON true"""
    else:
        read = "SELECT s.* FROM unnest(%(keys)s::text[]) AS k(id) JOIN products s ON s.id = k.id::bigint"
    ctes = [
        "d AS (DELETE FROM floor_queue WHERE id = ANY(%(ids)s) AND claim_token = %(token)s RETURNING id, record_id)"
    ]
    if "hash_write" in parts:
        ctes.append(
            "h AS (INSERT INTO floor_hashes SELECT 'products', u.k, u.h "
            "FROM unnest(%(keys)s::text[], %(hashes)s::bytea[]) AS u(k, h))"
        )
    if "log" in parts:
        ctes.append(
            "l AS (INSERT INTO floor_log (queue_ids, record_ids) SELECT array_agg(id), array_agg(record_id) FROM d)"
        )
    ack = "WITH " + ", ".join(ctes) + " SELECT count(*) FROM d"
    return claim, read, ack


def drain(conn: psycopg.Connection, rows: int, batch: int, parts: frozenset[str]) -> dict[str, float]:
    """Queue every catalogue key afresh and drain it with `parts`; Postgres µs per record and step."""
    conn.execute("TRUNCATE floor_queue, floor_hashes, floor_log")
    conn.execute("DROP INDEX IF EXISTS floor_queue_processing")
    if "key_check" in parts:
        conn.execute(PROCESSING_INDEX)
    conn.execute("INSERT INTO floor_queue (record_id) SELECT id::text FROM products")
    conn.execute("VACUUM ANALYZE floor_queue")
    claim, read, ack = statements(parts)
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    server: collections.Counter[str] = collections.Counter()
    done = 0
    while True:
        token = uuid.uuid4()
        b0 = _bench.thread_cpu_s(backend)
        claimed = conn.execute(claim, {"token": token, "batch": batch}, prepare=True).fetchall()
        b1 = _bench.thread_cpu_s(backend)
        server["claim"] += b1 - b0
        if not claimed:
            break
        keys = "{" + ",".join(f'"{k}"' for _, k in claimed) + "}"
        conn.execute(read, {"keys": keys}, prepare=True).fetchall()
        b2 = _bench.thread_cpu_s(backend)
        server["read"] += b2 - b1
        hashes = [os.urandom(16) for _ in claimed] if "hash_write" in parts else []
        params = {"ids": [i for i, _ in claimed], "token": token, "keys": keys, "hashes": hashes}
        done += conn.execute(ack, params, prepare=True).fetchone()[0]
        server["ack"] += _bench.thread_cpu_s(backend) - b2
    assert done == rows, f"acknowledged {done} of {rows}"
    return {k: round(server[k] / done * 1e6, 1) for k in STEPS}


def measure(url: str, rows: int, batch: int) -> dict[str, Any]:
    """The least queue alone, with each of PARTS added alone, and with all of them, draining `rows`
    keys of the catalogue on the fresh database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        _bench.create_products(conn)
        _bench.fill_products(conn, rows)
        conn.execute(DDL)
        conn.execute("VACUUM ANALYZE products")
    variants = {"floor": frozenset(), **{p: frozenset({p}) for p in PARTS}, "all": frozenset(PARTS)}
    with psycopg.connect(url, autocommit=True, options="-c synchronous_commit=off") as conn:
        server = {name: drain(conn, rows, batch, parts) for name, parts in variants.items()}
    return {"rows": rows, "server_us": server}
