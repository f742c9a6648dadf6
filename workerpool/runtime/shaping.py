"""Current rows to Algolia actions: the one place a record is built, for the worker, reindex and verify.

A row becomes a record (its columns, or the `--attributes` picked, plus objectID), goes through the
index's transform, is serialized once, and is then either skipped (same content as last sent), sent as
a version-guarded partial update (also the first time), replaced whole (its attribute set changed
since the last send, or a reindex), or deleted (the row is gone, or the transform returned None).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from workerpool.capture import keys
from workerpool.capture.model import Transform, Watched, load_transform
from workerpool.config import Settings
from workerpool.db import pgtypes, pooling
from workerpool.db.queries import Q
from workerpool.logs import one_line
from workerpool.runtime import records
from workerpool.runtime.model import DELETE, SKIP, Item, Outcome, SyncItem
from workerpool.runtime.queue import text_array

OBJECT_ID_COLUMN = "__workerpool_object_id"
VERSION_COLUMN = "__workerpool_version"
HASH_COLUMN = "__workerpool_hash"
SHAPE_COLUMN = "__workerpool_shape"
HIDDEN_COLUMNS = (OBJECT_ID_COLUMN, VERSION_COLUMN, HASH_COLUMN, SHAPE_COLUMN)


class TransformTimeout(BaseException):
    """A transform ran past TRANSFORM_TIMEOUT. A BaseException, so that a transform's own
    `except Exception` cannot swallow it."""


class Unbuildable(Exception):
    """A record the worker cannot build or send (its transform failed, it cannot be serialized, it is
    over MAX_RECORD_BYTES): the worker fails its queue row with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rows_query(watched: Watched, one_by_one: bool = False) -> sql.Composed:
    """The query `Shaper.load_rows` runs: parameters `keys` (a text[] literal) and `index`."""
    # queries.sql (load_rows, load_rows_one_by_one) says why the queries are shaped so.
    key = sql.SQL("k.oid")
    return sql.SQL(Q.load_rows_one_by_one if one_by_one else Q.load_rows).format(
        match=keys.matches(watched, "s", key),
        match_r=keys.matches(watched, "r", key),
        oid=sql.Identifier(OBJECT_ID_COLUMN),
        version=sql.Identifier(VERSION_COLUMN),
        hash=sql.Identifier(HASH_COLUMN),
        shape=sql.Identifier(SHAPE_COLUMN),
        source=sql.SQL(watched.reads_from),
    )


def fetch(
    conn: psycopg.Connection, query: sql.Composable | str, params: Any = None
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The column names and rows of a query, read as the worker reads rows (on a connection that
    `pgtypes.configure` set up, under the pinned settings): psycopg's C loaders, and, when a date or
    timestamp in them is one Python cannot hold (infinity, year 10000), the query again with those
    values as text."""
    with pooling.pinned(conn):
        try:
            return _fetch(conn, query, params, tolerant=False)
        except Exception as exc:
            if not pgtypes.is_unloadable(exc):
                raise
        return _fetch(conn, query, params, tolerant=True)


def _fetch(
    conn: psycopg.Connection, query: sql.Composable | str, params: Any, *, tolerant: bool
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    # A cursor of its own: a cursor keeps the loaders it first used.
    with conn.cursor() as cur:
        if tolerant:
            pgtypes.tolerant(cur)
        cur.execute(query, params, prepare=pooling.prepared(conn))  # type: ignore[arg-type]  # str or Composable, as psycopg takes
        if cur.description is None:  # what psycopg reports for a statement that returns no rows
            raise psycopg.ProgrammingError("the query returned no columns")
        return tuple(c.name for c in cur.description), cur.fetchall()


class Current:
    """The current rows of one batch's keys in one table, as `Shaper.load_rows` read them.

    Rows are plain tuples, (version, hash, shape, *columns), with the column names held once per
    batch: the only dict built per row is the record itself.
    """

    __slots__ = ("columns", "rows", "shape")

    def __init__(self, columns: tuple[str, ...], rows: dict[str, tuple[Any, ...]], shape: bytes | None) -> None:
        self.columns = columns  # the record's columns, in the relation's order
        self.rows = rows  # objectID -> (version, hash, shape, *values)
        self.shape = shape  # shape hash of every record of this batch, or None with a transform


class Shaper:
    """Builds the actions for rows of watched tables. Transforms are imported once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transforms: dict[str, Transform] = {}
        # The row whose record a transform is building, and since when (time.monotonic()): a worker's
        # watchdog reads it to find a transform that will not return.
        self.building: tuple[SyncItem, float] | None = None

    def load_rows(
        self, conn: psycopg.Connection, watched: Watched, index: str, keys: list[str], one_by_one: bool = False
    ) -> Current:
        """Current rows by key (one query), with one fresh version for the query and the hashes of
        what was last sent to `index`. `one_by_one` probes the source per key, evaluating its
        expressions for those keys alone (to find the row that failed a batch)."""
        query = rows_query(watched, one_by_one)
        described, fetched = fetch(conn, query, {"index": index, "keys": text_array(keys)})
        columns = described[len(HIDDEN_COLUMNS) :]
        rows = {r[0]: r[1:] for r in fetched}
        shape = None
        if not watched.transform:  # without a transform every record of the batch has the same attributes
            names = [c for c in columns if c != records.VERSION]
            if watched.attributes is not None:
                names = [c for c in watched.attributes if c in names]
            shape = records.shape_hash(dict.fromkeys([*names, records.OBJECT_ID]))
        return Current(columns, rows, shape)

    def record(
        self, watched: Watched, object_id: str, columns: tuple[str, ...], found: tuple[Any, ...]
    ) -> dict[str, Any] | None:
        """The record for a loaded row, transform applied (None: the transform deletes it).
        A transform's exception propagates: the caller fails that one record."""
        record = records.to_record(columns, found[3:], object_id)
        if watched.attributes is not None:
            record = {k: record[k] for k in (*watched.attributes, records.OBJECT_ID) if k in record}
        if watched.transform:
            transformed = self._call_transform(watched.transform, record)
            if transformed is None:
                return None
            record = {**transformed, records.OBJECT_ID: object_id}
        record.pop(records.VERSION, None)
        return record

    def serialize(
        self, watched: Watched, object_id: str, current: Current, *, sort_keys: bool = False
    ) -> tuple[dict[str, Any], bytes] | None:
        """The record of a loaded key and its JSON body, checked as the worker sends it (None: no
        row, or the transform deletes it). Raises `Unbuildable` with the reason the worker fails it.
        `sort_keys` writes the body with sorted keys: the same bytes reordered, so of the same length."""
        found = current.rows.get(object_id)
        if found is None:
            return None
        try:
            record = self.record(watched, object_id, current.columns, found)
        except TransformTimeout as exc:
            raise Unbuildable(str(exc)) from None
        except Exception as exc:  # the user's transform: fail this record only
            what = f"transform {watched.transform} raised" if watched.transform else "building the record raised"
            raise Unbuildable(f"{what} {type(exc).__name__}: {one_line(exc)}") from None
        if record is None:
            return None
        try:
            body = records.dumps(record, sort_keys=sort_keys)
        except Exception as exc:  # a value orjson cannot represent (a transform's own object, say)
            raise Unbuildable(f"cannot serialize record {object_id}: {one_line(exc)}") from None
        limit = self.settings.max_record_bytes
        if limit and len(body) > limit:
            raise Unbuildable(f"record {object_id} is {len(body)} bytes, over MAX_RECORD_BYTES={limit}")
        return record, body

    def item(self, watched: Watched, index: str, row: SyncItem, current: Current, outcome: Outcome) -> Item | None:
        """One row's action: delete, skip (unchanged), or a versioned write; None when it failed
        (the reason is added to `outcome.failed`)."""
        if watched.transform:  # the user's code, which a watchdog may have to give up on
            self.building = (row, time.monotonic())
        try:
            built = self.serialize(watched, row.record_id, current)
        except Unbuildable as exc:
            outcome.failed.append((row, exc.reason))
            return None
        finally:
            self.building = None
        if built is None:
            return Item(row, index, DELETE, records.delete_action(index, row.record_id))
        record, body = built
        found = current.rows[row.record_id]
        version, last_hash, last_shape = found[0], found[1], found[2]
        digest = records.content_hash(body)
        shape = current.shape if current.shape is not None else records.shape_hash(record)
        reindex = row.operation == "REINDEX"
        if digest == last_hash and not reindex:
            return Item(row, index, SKIP, b"", digest, shape)
        # Replaced whole only when attributes may have to disappear (the attribute set changed since the
        # last send) or on a reindex. A first send is a guarded partial update too: a request that
        # arrives late (a worker frozen after its lease check) must not overwrite a newer record.
        replace = reindex or (last_shape is not None and shape != last_shape)
        action, payload = records.versioned_action(index, body, version, replace=replace)
        return Item(row, index, action, payload, digest, shape, last_hash is not None)

    def _call_transform(self, spec: str, record: dict[str, Any]) -> Any:
        """The transform applied under TRANSFORM_TIMEOUT: one that hangs fails its record, not the worker.

        A SIGALRM timer interrupts Python code and blocking calls alike; it needs the main thread,
        where workers and reindex build records. Elsewhere (an embedding application's thread) the
        transform runs without a limit.
        """
        func = self._transform(spec)
        limit = self.settings.transform_timeout / 1000.0
        if limit <= 0 or threading.current_thread() is not threading.main_thread():
            return func(record)

        def expired(signum: int, frame: object) -> None:
            raise TransformTimeout(
                f"transform {spec} did not return within TRANSFORM_TIMEOUT={self.settings.transform_timeout} ms"
            )

        previous = signal.signal(signal.SIGALRM, expired)
        # Raised again every second after the first: a transform that catches it once (a broad
        # `except BaseException` around a sleep) still ends. One that catches it every time never
        # returns, and the supervisor replaces the worker after WORKER_TIMEOUT.
        signal.setitimer(signal.ITIMER_REAL, limit, 1.0)
        try:
            return func(record)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _transform(self, spec: str) -> Transform:
        if spec not in self._transforms:
            self._transforms[spec] = load_transform(spec)
        return self._transforms[spec]
