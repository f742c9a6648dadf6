"""Walking a watched table in key order and building its records as the worker would: what `reindex`
and `verify` share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from workerpool.capture import keys
from workerpool.capture.model import Watched
from workerpool.config import Settings
from workerpool.db import pooling
from workerpool.db.connection import one_row
from workerpool.db.queries import Q
from workerpool.runtime import records
from workerpool.runtime.model import Action, Outcome, SyncItem
from workerpool.runtime.shaping import Shaper

DEFAULT_CHUNK = 1000


def iter_key_chunks(
    conn: psycopg.Connection, watched: Watched, size: int, after: str | None = None
) -> Iterator[list[str]]:
    """Every key of the table as text, in key order, `size` at a time (keyset pagination, on all the
    key's columns for a composite key)."""
    table = sql.SQL(watched.relation or watched.table_name)  # regclass text, quoted where needed
    shared = {"k": keys.text_of(watched, "s"), "t": table, "order": keys.order(watched, "s")}
    first = sql.SQL(Q.first_keys).format(present=keys.present(watched, "s"), **shared)
    rest = sql.SQL(Q.keys_after).format(after=keys.after(watched, "s", sql.Placeholder("last")), **shared)
    last = after
    while True:
        with pooling.pinned(conn):  # a key's text as the capture triggers write it
            query = first if last is None else rest
            rows = conn.execute(query, {"size": size, "last": last}).fetchall()
        if not rows:
            return
        chunk = [r[0] for r in rows]
        yield chunk
        if len(chunk) < size:
            return
        last = chunk[-1]


def count_rows(conn: psycopg.Connection, watched: Watched) -> int:
    query = sql.SQL(Q.count_keyed_rows).format(
        t=sql.SQL(watched.relation or watched.table_name), present=keys.present(watched, "s")
    )
    count: int = one_row(conn.execute(query))[0]
    return count


@dataclass
class Built:
    """What the worker would do with each key, as a `REINDEX` queue row (always written, never skipped)."""

    writes: dict[str, bytes] = field(default_factory=dict)  # key -> serialized batch action (with `_version`)
    deletes: list[str] = field(default_factory=list)  # no row (or the view/transform drops it): not indexed
    failed: dict[str, str] = field(default_factory=dict)  # key -> why the worker would fail it

    def record(self, key: str) -> dict[str, Any] | None:
        """The record body a write sends, without the `_version` bookkeeping attribute."""
        action = self.writes.get(key)
        if action is None:
            return None
        body: dict[str, Any] = orjson.loads(action)["body"]
        body.pop(records.VERSION, None)
        return body


class RecordBuilder:
    """Rows to records exactly as the worker builds them, through the worker's own code.

    `Shaper.load_rows` reads the current rows (the table or its source view, `key = ANY(...)`, with a
    fresh record version) and `Shaper.item` turns each into its batch action: attribute selection,
    transform, serialization, size limit and versioning included. The keys are presented as `REINDEX`
    queue rows, so an unchanged record is written anyway (a reindex must not trust what was last sent).
    """

    def __init__(self, settings: Settings) -> None:
        self._shaper = Shaper(settings)

    def build(self, conn: psycopg.Connection, watched: Watched, index: str, keys: list[str]) -> Built:
        rows = self._shaper.load_rows(conn, watched, index, keys)
        built = Built()
        made_at = datetime.now(UTC)
        for key in keys:
            outcome = Outcome()
            row = SyncItem(0, watched.table_name, key, "REINDEX", 0, made_at)
            item = self._shaper.item(watched, index, row, rows, outcome)
            if outcome.failed:
                built.failed[key] = outcome.failed[0][1]
            elif item is None or item.action is Action.DELETE:
                built.deletes.append(key)
            elif item.action is not Action.SKIP:
                built.writes[key] = item.body
        return built
