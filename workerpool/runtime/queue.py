"""The queue's operations, as the worker calls them: claim, extend, ack, fail, retry, give back, recover.

Each is one short autocommit statement of sql/queries.sql: claim, spill, ack, release, recovery and
the idle check call functions of sql/schema.sql; extending a lease, enqueueing and the heartbeat are
single statements on their tables. So no transaction is ever open across an Algolia call, and every
ack or release names the claim token it holds.
"""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from workerpool.db.connection import one_row
from workerpool.db.pooling import prepared
from workerpool.db.queries import Q
from workerpool.runtime.model import DELETE, WRITES, Acked, Batch, SyncItem


def claim_batch(conn: psycopg.Connection, claim_size: int, lease_ms: int, worker: str, now: float) -> Batch | None:
    """Claim up to `claim_size` due rows under a fresh token and a lease of `lease_ms` (LEASE_TIMEOUT),
    or None when nothing is due."""
    token = uuid.uuid4()
    rows = conn.execute(
        Q.claim_batch,
        (claim_size, lease_ms, token, worker),
        prepare=prepared(conn),
    ).fetchall()
    if not rows:
        return None
    return Batch(token, [SyncItem(*r) for r in rows], now, lease_ms / 1000.0)


def enqueue(conn: psycopg.Connection, table_name: str, keys: Sequence[str], operation: str = "REINDEX") -> int:
    """Queue `keys` of a watched table for a sync (a key already pending is not queued twice) and wake
    the workers at commit; returns how many rows were queued. Runs in the caller's transaction."""
    if not keys:
        return 0
    queued = conn.execute(
        Q.enqueue,
        (table_name, operation, list(keys)),
    ).rowcount
    conn.execute(Q.notify, (table_name,))
    return queued


def spill(conn: psycopg.Connection, claim_size: int) -> int | None:
    """Move the keys the capture triggers wrote into the inbox into the queue: whole inbox rows in
    capture order until as many keys as the claim that follows asks for, `claim_size` (at least one
    row). Returns how many queue rows that made or merged, or None when another transaction's
    uncommitted pending row of one of those keys made it give up for now (the keys stay in the inbox)."""
    try:
        moved: int = one_row(conn.execute(Q.spill, (claim_size,), prepare=prepared(conn)))[0]
    except psycopg.errors.LockNotAvailable:
        return None
    return moved


def idle(conn: psycopg.Connection) -> bool:
    """Whether nothing is left to do: no key pending or being processed, in the queue or the inbox."""
    nothing_left: bool = one_row(conn.execute(Q.idle))[0]
    return nothing_left


def extend(conn: psycopg.Connection, claim: Batch, now: float) -> bool:
    """Push the lease forward by the claim's own lease; False means the lease was lost. An expired
    lease is not revived: another worker may already hold a newer change to one of its keys. The
    lease goes to the database in ms, as `claim_batch` sends it."""
    n = conn.execute(
        Q.extend_lease,
        (round(claim.lease_s * 1000), claim.token),
        prepare=prepared(conn),
    ).rowcount
    if n:
        claim.extended_at = now
    return n > 0


def int_array(values: Iterable[int]) -> str:
    """A bigint[] literal. psycopg dumps list elements one by one in Python, which costs more per
    batch than the statement itself; the server parses a literal in C."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Iterable[str | None]) -> str:
    """A text[] literal, every element quoted (see int_array). Keys, index names and actions seldom
    hold a quote, a backslash or a NULL: then one join in C quotes them all, ~5x faster than
    quoting each in Python (an ack passes up to five of these per batch)."""
    items = list(values)
    if not items:
        return "{}"
    try:
        body = '","'.join(cast("list[str]", items))  # a None raises TypeError
    except TypeError:
        body = None
    if body is not None and body.count('"') == 2 * len(items) - 2 and "\\" not in body:
        return '{"' + body + '"}'
    return "{" + ",".join("NULL" if v is None else _quote(v) for v in items) + "}"


_BYTEA_OID, _BYTEA_ARRAY_OID = 17, 1001
# Postgres's binary array: dimensions, whether it holds a NULL, element type, then length and lower
# bound of its one dimension; then each element's length (-1: NULL) and bytes.
_ARRAY_HEAD = struct.Struct(">iiIii")
_EMPTY_BYTEA_ARRAY = struct.pack(">iiI", 0, 0, _BYTEA_OID)
_NULL_ELEMENT = (-1).to_bytes(4, "big", signed=True)


class PackedByteaArray(bytes):
    """A bytea[] parameter already in Postgres's binary format (`bytea_array`), sent as it is."""


class _PackedByteaArrayDumper(Dumper):
    format = Format.BINARY
    oid = _BYTEA_ARRAY_OID

    def dump(self, obj: Buffer) -> Buffer:
        return obj


def bytea_array(values: Iterable[bytes | None]) -> PackedByteaArray:
    """A bytea[] parameter in binary form, for a cursor that `send_packed` set up. Postgres parses a
    bytea element of a text literal (hex) at ~0.3 us and of a binary array at ~0.05, and an ack
    passes two per record (hash and shape). Hashes of one kind have one length: then a single join
    writes every element's length and bytes."""
    items = list(values)
    if not items:
        return PackedByteaArray(_EMPTY_BYTEA_ARRAY)
    has_null = None in items
    head = _ARRAY_HEAD.pack(1, has_null, _BYTEA_OID, len(items), 1)
    if not has_null:
        present = cast("list[bytes]", items)
        widths = set(map(len, present))
        if len(widths) == 1:
            prefix = widths.pop().to_bytes(4, "big")
            return PackedByteaArray(head + prefix + prefix.join(present))
    return PackedByteaArray(
        head + b"".join(_NULL_ELEMENT if v is None else len(v).to_bytes(4, "big") + v for v in items)
    )


def send_packed(cursor: psycopg.Cursor[Any]) -> psycopg.Cursor[Any]:
    """`cursor`, able to send `bytea_array` parameters (the dumper is the cursor's own: the
    connection's adapters, the caller's, are left alone)."""
    cursor.adapters.register_dumper(PackedByteaArray, _PackedByteaArrayDumper)
    return cursor


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ack(conn: psycopg.Connection, token: uuid.UUID, items: Sequence[Acked]) -> int:
    """Delete acknowledged rows, log them and remember what was sent (the worker's sent or skipped
    items); returns how many this token held. An item's `stored` (whether its key had a hash when
    its row was read) lets a first hash be a plain INSERT instead of an upsert, which costs Postgres
    less; None (not known) is upserted.

    The items go in id order, split here into the hash groups the function writes (first hashes,
    other sent records, deleted records): when the claim still holds every row, the function then
    writes them as given instead of joining its deleted rows with the items to split them."""
    if not items:
        return 0
    ordered = sorted(items, key=_queue_id)
    first: list[Acked] = []
    sent: list[Acked] = []
    gone: list[Acked] = []
    for i in ordered:
        if i.action == DELETE:
            gone.append(i)
        elif i.hash is not None and i.action in WRITES:
            (first if i.stored is False else sent).append(i)
    with send_packed(conn.cursor()) as cursor:
        cursor.execute(
            Q.ack,
            (
                int_array(i.row.id for i in ordered),
                token,
                text_array(i.action for i in ordered),
                text_array(i.index for i in ordered),
                *_hash_group(first),
                *_hash_group(sent),
                int_array(i.row.id for i in gone),
                text_array(i.index for i in gone),
                text_array(i.row.record_id for i in gone),
            ),
            prepare=prepared(conn),
        )
        held: int = one_row(cursor)[0]
    return held


def _queue_id(item: Acked) -> int:
    return item.row.id


def _hash_group(items: Sequence[Acked]) -> tuple[str, str, str, PackedByteaArray, PackedByteaArray]:
    """ids, index names, record ids (array literals), hashes and shapes (binary arrays) of one hash group."""
    return (
        int_array(i.row.id for i in items),
        text_array(i.index for i in items),
        text_array(i.row.record_id for i in items),
        bytea_array(i.hash for i in items),
        bytea_array(i.shape for i in items),
    )


def fail(
    conn: psycopg.Connection, token: uuid.UUID, failures: Sequence[tuple[SyncItem, str]], max_attempts: int
) -> int:
    """Fail rows for good, each with its error as last_error; returns how many this token held."""
    return _release(conn, token, failures, [0] * len(failures), permanent=True, max_attempts=max_attempts)


def retry(
    conn: psycopg.Connection,
    token: uuid.UUID,
    retries: Sequence[tuple[SyncItem, str]],
    max_attempts: int,
    backoff_ms: int,
    backoff_max_ms: int,
) -> int:
    """Give rows back for another attempt after a capped, jittered backoff, each with its error as
    last_error (a row out of attempts fails instead); returns how many this token held."""
    delays = [compute_backoff(row.attempts, backoff_ms, backoff_max_ms) for row, _ in retries]
    return _release(conn, token, retries, delays, permanent=False, max_attempts=max_attempts)


def give_back(
    conn: psycopg.Connection,
    token: uuid.UUID,
    rows: Sequence[SyncItem],
    max_attempts: int,
    error: str = "released unsent",
    delay_ms: int = 0,
) -> int:
    """Give rows back unspent, their attempt not counted (a stop, a throttle, a refused key, an Algolia
    outage is nobody's data at fault): due after `delay_ms`, with `error` as last_error; returns how
    many this token held."""
    released = [(row, error) for row in rows]
    return _release(
        conn, token, released, [delay_ms] * len(rows), permanent=False, max_attempts=max_attempts, count_attempt=False
    )


def compute_backoff(attempt: int, base_ms: int, cap_ms: int) -> int:
    """Capped exponential backoff with full jitter in [50%, 100%] (dramatiq's shape), in ms."""
    ceiling = min(cap_ms, base_ms * 2 ** max(0, attempt - 1))
    return int(ceiling * random.uniform(0.5, 1.0))


def _release(
    conn: psycopg.Connection,
    token: uuid.UUID,
    rows: Sequence[tuple[SyncItem, str]],
    delays_ms: Sequence[int],
    *,
    permanent: bool,
    max_attempts: int,
    count_attempt: bool = True,
) -> int:
    if not rows:
        return 0
    cursor = conn.execute(
        Q.release,
        (
            [row.id for row, _ in rows],
            token,
            [error for _, error in rows],
            list(delays_ms),
            [permanent] * len(rows),
            max_attempts,
            count_attempt,
        ),
    )
    held: int = one_row(cursor)[0]
    return held


def recovery_interval_s(lease_ms: int) -> float:
    """How often expired claims are looked for (by a worker's housekeeping, or a `DatabaseService`
    that claims with `recover`): a quarter of the lease LEASE_TIMEOUT, between 1 and 5 seconds."""
    return max(1.0, min(5.0, lease_ms / 4000.0))


def recover_expired(conn: psycopg.Connection, max_attempts: int) -> int:
    """Return expired claims to the queue (or fail those out of attempts)."""
    recovered: int = one_row(conn.execute(Q.recover_expired, (max_attempts,)))[0]
    return recovered


def heartbeat(conn: psycopg.Connection, worker: str, host: str, pid: int, batches: int, records: int) -> None:
    conn.execute(
        Q.heartbeat,
        (worker, host, pid, batches, records),
    )


def forget_worker(conn: psycopg.Connection, worker: str) -> None:
    conn.execute(Q.forget_worker, (worker,))
