"""`workerpool verify TABLE [--repair]`: compare an index with its table, record for record.

Both sides are reduced to `(objectID, content hash)` pairs streamed into temporary tables of the
verifying session, and the comparison is SQL over those tables, so the process holds a few pages of
the index and one chunk of the table at a time: its memory does not grow with the index.

* The index is walked page by page with its browse cursor (`browse.iter_pages`: a plain loop over
  single-page browse calls through the client's transport), asking for every attribute but
  `_version`. A child process does it (`index_reader.IndexReader`: browsing, parsing and hashing on
  a core of its own) while the table is walked, and sends each page's hashes as COPY text through a
  pipe; the parent copies them into the session between table chunks.
* The table is walked in key order (keyset chunks) and each row is built into the record the worker
  would send (`Shaper.serialize`: the worker's own read query, record code and checks, attribute
  selection and transform included); each chunk's hashes are copied the same way.

A content hash is that of the record's canonical JSON (sorted keys, integral floats as integers, the
`_version` bookkeeping attribute left out). A row the worker could not build (a transform error, over
MAX_RECORD_BYTES) is counted as "unbuildable", not as drift: `--repair` could not fix it.

* **missing**: a row whose record is not in the index;
* **extra**: a record whose row does not exist (or that the source view filters out);
* **stale**: both exist, contents differ.

Keys that change while verify runs are not drift: keys pending or processing in the queue, and keys
the workers acknowledged since verify started, are counted as "in flight" and left out.

`--repair` enqueues every drifted key (operation `REINDEX`), so the workers write the current state:
a missing or stale key is resynced, an extra key (no row) becomes a delete. An extra objectID that
is no key's canonical text (not a value of the key's type, `007` for 7, a composite key's text with
the wrong number of parts) can never be a row's; it is deleted from the index directly.
The exit code is 1 when drift was found (repaired or not), 0 when the index is clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import psycopg
from psycopg import sql

from workerpool.capture import keys
from workerpool.capture.model import Watched, find_watched
from workerpool.config import ConfigError, Settings
from workerpool.db import pooling
from workerpool.db.connection import one_row
from workerpool.db.queries import Q
from workerpool.ops.browse import MAX_PAGE
from workerpool.ops.hashes import INDEX_HASHES, SAMPLE, TABLE_HASHES, copy_table_hashes
from workerpool.ops.index_reader import IndexReader
from workerpool.ops.published import wait_indices_published
from workerpool.ops.table_walk import (
    DEFAULT_CHUNK,
)
from workerpool.runtime import records
from workerpool.runtime.queue import enqueue

KINDS = ("missing", "extra", "stale")

DRIFT = "workerpool_verify_drift"


@dataclass
class Report:
    table: str
    index: str
    rows: int = 0
    indexed: int = 0
    missing: int = 0
    extra: int = 0
    stale: int = 0
    in_flight: int = 0
    unbuildable: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)  # kind -> first keys in natural order
    repaired_enqueued: int = 0
    repaired_deleted: int = 0
    repaired: bool = False

    @property
    def drift(self) -> int:
        return self.missing + self.extra + self.stale

    def sample(self, kind: str) -> list[str]:
        return self.samples.get(kind, [])[:SAMPLE]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "index": self.index,
            "rows": self.rows,
            "records": self.indexed,
            "missing": self.missing,
            "extra": self.extra,
            "stale": self.stale,
            "in_flight": self.in_flight,
            "unbuildable": self.unbuildable,
            "drift": self.drift,
            "samples": {kind: self.sample(kind) for kind in KINDS},
            "repaired": self.repaired,
            "enqueued": self.repaired_enqueued,
            "deleted": self.repaired_deleted,
        }

    def render(self) -> str:
        def line(name: str) -> str:
            keys = self.sample(name)
            sample = f"  e.g. {', '.join(keys)}" if keys else ""
            return f"  {name:<9}{getattr(self, name):>8}{sample}\n"

        out = [
            f"verify {self.table} -> index {self.index}\n",
            f"  rows in table      {self.rows:>8}\n",
            f"  records in index   {self.indexed:>8}\n",
            *(line(kind) for kind in KINDS),
            f"  in flight {self.in_flight:>7}  (changed while verifying; not counted)\n",
        ]
        if self.unbuildable:
            out.append(
                f"  unbuildable {self.unbuildable:>5}  e.g. {', '.join(self.sample('unbuildable'))} "
                "(the worker cannot build these records; see failed rows in the queue)\n"
            )
        if not self.drift:
            out.append("clean: the index matches the table\n")
        elif self.repaired:
            out.append(
                f"drift: {self.drift} record(s); repair enqueued {self.repaired_enqueued} key(s) for the workers"
                + (
                    f" and deleted {self.repaired_deleted} record(s) that cannot match any row"
                    if self.repaired_deleted
                    else ""
                )
                + "\n"
            )
        else:
            out.append(f"drift: {self.drift} record(s); run `workerpool verify {self.table} --repair` to fix it\n")
        return "".join(out)


# ---- the two sides, streamed into the session ------------------------------------------------


# ---- the command -----------------------------------------------------------------------------


def verify(
    settings: Settings,
    conn: psycopg.Connection,
    table: str,
    *,
    repair: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    page_size: int = MAX_PAGE,
    stream: IO[str] | None = None,
    published_first: bool = True,
) -> Report:
    """Compare the index of `table` with the table, on `conn` (autocommit, to `settings.database_url`:
    the table's rows are read a chunk ahead on a second connection to that URL); `page_size` is the
    browse page (hitsPerPage), `chunk_size` the keys read per query. With `published_first`, it first
    waits until Algolia has published every write the index accepted (`ops/published.py`), so that
    a write accepted and not yet applied is not reported as drift."""
    settings.require_algolia()
    if pooling.transaction_pooling():
        raise ConfigError(
            "verify keeps scratch tables in its database session, which transaction pooling does not keep: "
            "run it with a direct DATABASE_URL (or DATABASE_POOL_MODE=session behind session pooling)"
        )
    watched = find_watched(conn, table)
    index = settings.algolia_index_prefix + watched.index_name
    report = Report(watched.table_name, index)
    started_at = one_row(conn.execute(Q.database_now))[0]
    if published_first:
        wait_indices_published(settings, [index])
    _create_scratch(conn)
    try:
        reader = IndexReader(settings, index, page_size)
        try:
            # Algolia refusing the key or out of reach shows on the first page: fail before the
            # table's walk prints any progress.
            reader.wait_answered()
            side = copy_table_hashes(
                settings,
                conn,
                watched,
                index,
                chunk_size,
                stream,
                between=lambda: reader.copy(conn, wait=False),
            )
            report.indexed = reader.copy(conn, wait=True) or 0
        finally:
            reader.stop()
        report.rows, report.unbuildable = side.rows, side.unbuildable
        report.samples["unbuildable"] = side.unbuildable_sample
        _compare(conn, watched, started_at, report)
        if repair and report.drift:
            _repair(settings, conn, watched, report)
    finally:
        _drop_scratch(conn)
    return report


def _create_scratch(conn: psycopg.Connection) -> None:
    _drop_scratch(conn)
    conn.execute(_scratch(Q.create_verify_scratch))


def _scratch(query: str) -> sql.Composed:
    """A query over this session's scratch tables, with their names filled in."""
    return sql.SQL(query).format(
        index_hashes=sql.Identifier(INDEX_HASHES),
        table_hashes=sql.Identifier(TABLE_HASHES),
        drift=sql.Identifier(DRIFT),
    )


def _drop_scratch(conn: psycopg.Connection) -> None:
    """Best effort: temporary tables go with the session anyway, and an error here must not hide
    the one that ended the verify."""
    if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute(_scratch(Q.drop_verify_scratch))
    except psycopg.Error:
        pass


def _compare(conn: psycopg.Connection, watched: Watched, started_at: Any, report: Report) -> None:
    """Classify every key into DRIFT, leave out the keys in flight, and count and sample the rest."""
    conn.execute(_scratch(Q.analyze_verify_hashes))
    conn.execute(_scratch(Q.create_drift))
    report.in_flight = conn.execute(
        _scratch(Q.drop_in_flight_drift),
        {"t": watched.table_name, "since": started_at},
    ).rowcount
    conn.execute(_scratch(Q.index_drift))
    for kind, n in conn.execute(_scratch(Q.count_drift)):
        setattr(report, kind, n)
    for kind in KINDS:
        report.samples[kind] = [r[0] for r in conn.execute(_scratch(Q.sample_drift), (kind, SAMPLE))]


def _drifted(conn: psycopg.Connection, kind: str, size: int = DEFAULT_CHUNK) -> Iterator[list[str]]:
    """The keys of one kind of drift, `size` at a time (keyset over the DRIFT index)."""
    last = ""
    while True:
        keys = [r[0] for r in conn.execute(_scratch(Q.drift_after), (kind, last, size))]
        if not keys:
            return
        yield keys
        last = keys[-1]


def _castable(conn: psycopg.Connection, watched: Watched, texts: list[str]) -> list[str]:
    """The objectIDs that some row could have: each is its key's canonical text (`7`, not `007`;
    for a composite key, as many parts as key columns, each a valid value). Others can never be a row."""
    if not texts:
        return []
    k = sql.SQL("k.k")
    cast = sql.SQL(Q.castable_keys).format(sql.SQL("{} = k.k").format(keys.canonical(watched, k)))
    try:
        with conn.transaction(), pooling.pinned(conn):
            return [r[0] for r in conn.execute(cast, (texts,))]
    except psycopg.DataError:
        pass
    good = []
    single = sql.SQL(Q.cast_key).format(sql.SQL("{} = k.k").format(keys.canonical(watched, k)))
    for text in texts:
        try:
            with conn.transaction(), pooling.pinned(conn):
                if one_row(conn.execute(single, (text,)))[0]:
                    good.append(text)
        except psycopg.DataError:
            pass
    return good


def _repair(settings: Settings, conn: psycopg.Connection, watched: Watched, report: Report) -> None:
    """Enqueue every drifted key whose objectID is a valid key; delete the others from the index."""
    from workerpool.runtime.algolia import Sender

    for chunk in _drifted(conn, "extra"):
        impossible = sorted(set(chunk) - set(_castable(conn, watched, chunk)))
        if impossible:
            conn.execute(_scratch(Q.mark_impossible_drift), (impossible,))
    with conn.transaction():
        report.repaired_enqueued = sum(
            enqueue(conn, watched.table_name, chunk) for kind in KINDS for chunk in _drifted(conn, kind)
        )
    sender: Any = None
    try:
        for chunk in _drifted(conn, "impossible"):
            sender = sender or Sender(settings)
            sender.send_batch(records.batch_body(records.delete_action(report.index, k) for k in chunk), len(chunk))
            report.repaired_deleted += len(chunk)
    finally:
        if sender is not None:
            sender.close()
    report.repaired = True
