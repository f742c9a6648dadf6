"""Current rows to Algolia actions: the one place a record is built, for the worker, reindex and verify.

A row becomes a record (its columns, or the `--attributes` picked, plus objectID), goes through the
index's transform, is serialized once, and is then either skipped (same content as last sent), sent as
a version-guarded partial update, replaced whole (its attribute set changed, or a reindex), or deleted
(the row is gone, or the transform returned None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from . import records
from .capture import Watched, load_transform
from .config import Settings
from .logs import one_line
from .queue import QueueRow, text_array

OBJECT_ID_COLUMN = "__workerpool_object_id"
VERSION_COLUMN = "__workerpool_version"
HASH_COLUMN = "__workerpool_hash"
SHAPE_COLUMN = "__workerpool_shape"
HIDDEN_COLUMNS = (OBJECT_ID_COLUMN, VERSION_COLUMN, HASH_COLUMN, SHAPE_COLUMN)


@dataclass
class Item:
    """One queue row on its way to Algolia."""

    row: QueueRow
    index: str
    action: str  # "partialUpdateObject", "updateObject", "deleteObject", or "skip" (unchanged: not sent)
    body: bytes
    hash: bytes | None = None
    shape: bytes | None = None


@dataclass
class Outcome:
    """What happened to a claim's rows; each row ends in exactly one list."""

    done: list[Item] = field(default_factory=list)
    failed: list[tuple[QueueRow, str]] = field(default_factory=list)  # permanent
    retry: list[tuple[QueueRow, str]] = field(default_factory=list)
    unsent: list[QueueRow] = field(default_factory=list)  # given back without spending an attempt


class Shaper:
    """Builds the actions for rows of watched tables. Transforms are imported once, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transforms: dict[str, Callable[[dict], Any]] = {}

    def load_rows(self, conn: psycopg.Connection, watched: Watched, index: str, keys: list[str]) -> dict[str, dict]:
        """Current rows by key (one query), with one fresh version for the query and the hashes of
        what was last sent to `index`."""
        # Driven from the key list: a handful of outer rows, so both the source and the hashes are
        # probed by index whatever the statistics say. (A plan made while the hash table was empty
        # scanned all of an index's hashes on every batch: quadratic at small batch sizes.)
        query = sql.SQL(
            "SELECT k.oid AS {oid}, (SELECT nextval('algolia_sync_version_seq')) AS {version}, "
            "h.hash AS {hash}, h.shape AS {shape}, s.* "
            "FROM unnest(%(keys)s::text[]) AS k(oid) "
            "JOIN {source} s ON s.{key} = k.oid::{ktype} "
            "LEFT JOIN algolia_sync_hashes h ON h.index_name = %(index)s AND h.object_id = k.oid"
        ).format(
            key=sql.Identifier(watched.key_column),
            oid=sql.Identifier(OBJECT_ID_COLUMN),
            version=sql.Identifier(VERSION_COLUMN),
            hash=sql.Identifier(HASH_COLUMN),
            shape=sql.Identifier(SHAPE_COLUMN),
            source=sql.SQL(watched.source_view or watched.table_name),
            ktype=sql.SQL(watched.key_type),
        )
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, {"index": index, "keys": text_array(keys)}, prepare=True)
            return {r[OBJECT_ID_COLUMN]: r for r in cur.fetchall()}

    def record(self, watched: Watched, object_id: str, found: dict) -> dict | None:
        """The record for a loaded row, transform applied (None: the transform deletes it).
        A transform's exception propagates: the caller fails that one record."""
        record = records.to_record(found, object_id, HIDDEN_COLUMNS)
        if watched.attributes is not None:
            record = {k: record[k] for k in (*watched.attributes, records.OBJECT_ID) if k in record}
        if watched.transform:
            record = self._transform(watched.transform)(record)
            if record is None:
                return None
            record = {**record, records.OBJECT_ID: object_id}
        record.pop(records.VERSION, None)
        return record

    def item(self, watched: Watched, index: str, row: QueueRow, found: dict | None, outcome: Outcome) -> Item | None:
        """One row's action: delete, skip (unchanged), or a versioned write; None when it failed
        (the reason is added to `outcome.failed`)."""
        if found is None:
            return Item(row, index, "deleteObject", records.delete_action(index, row.record_id))
        try:
            record = self.record(watched, row.record_id, found)
        except Exception as exc:  # the user's transform: fail this record only
            outcome.failed.append((row, f"transform {watched.transform} raised {type(exc).__name__}: {one_line(exc)}"))
            return None
        if record is None:
            return Item(row, index, "deleteObject", records.delete_action(index, row.record_id))
        try:
            body = records.dumps(record)
        except TypeError as exc:  # a value orjson cannot represent
            outcome.failed.append((row, f"cannot serialize record: {exc}"))
            return None
        limit = self.settings.max_record_bytes
        if limit and len(body) > limit:
            outcome.failed.append((row, f"record {row.record_id} is {len(body)} bytes, over MAX_RECORD_BYTES={limit}"))
            return None
        digest, shape = records.content_hash(body), records.shape_hash(record)
        reindex = row.operation == "REINDEX"
        if digest == found[HASH_COLUMN] and not reindex:
            return Item(row, index, "skip", b"", digest, shape)
        action, payload = records.versioned_action(index, body, found[VERSION_COLUMN],
                                                   replace=reindex or shape != found[SHAPE_COLUMN])
        return Item(row, index, action, payload, digest, shape)

    def _transform(self, spec: str) -> Callable[[dict], Any]:
        if spec not in self._transforms:
            self._transforms[spec] = load_transform(spec)
        return self._transforms[spec]

