"""Both sides of `verify` reduced to `(objectID, content hash)` pairs and streamed into the verifying
session's temporary tables: the index page by page (`index_reader`, in a process of its own), the table in
key-order chunks built into the records the worker would send (`copy_table_hashes`).

A content hash is that of the record's canonical JSON (sorted keys, integral floats as integers, the
`_version` bookkeeping attribute left out), so the same record hashes the same on both sides.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import psycopg
from psycopg import sql

from workerpool.capture.model import Watched
from workerpool.config import Settings
from workerpool.db.connection import connect
from workerpool.db.queries import Q
from workerpool.ops.browse import HIT_EXTRAS
from workerpool.ops.progress import ProgressBar
from workerpool.ops.table_walk import count_rows, iter_key_chunks
from workerpool.runtime import records
from workerpool.runtime.shaping import Current, Shaper, Unbuildable

SAMPLE = 5


# Temporary tables of the verifying session (dropped at the end, and by Postgres with the session).
INDEX_HASHES = "workerpool_verify_index"


TABLE_HASHES = "workerpool_verify_table"


def canonical(value: Any) -> Any:
    """JSON as Algolia gives it back: integral floats become integers (15.0 and 15 are one value)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


# orjson writes every integral float below 2**53 as digits and ".0" (15.0, 1000000000000000.0); JSON
# without ".0" before a non-digit anywhere (strings included) has no float that `canonical` would
# change. (A literal first character keeps the search fast; text that matches only costs the walk.)
_MAYBE_INTEGRAL_FLOAT = re.compile(rb"\.0(?![0-9])")


def content_hash(record: Any) -> bytes:
    """`records.content_hash` of the record's canonical JSON (sorted keys, `canonical` numbers)."""
    body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    if _MAYBE_INTEGRAL_FLOAT.search(body):
        body = orjson.dumps(canonical(record), option=orjson.OPT_SORT_KEYS)
    return records.content_hash(body)


def sorted_body_hash(body: bytes) -> bytes:
    """`content_hash` of a record from its JSON already written with sorted keys (`records.dumps`
    with `sort_keys`, as `Shaper.serialize` gives it): the bytes are hashed as they are unless they
    may hold an integral float, saving a second encoding of the record."""
    if _MAYBE_INTEGRAL_FLOAT.search(body):
        return content_hash(orjson.loads(body))
    return records.content_hash(body)


def hit_hash(hit: dict[str, Any]) -> bytes:
    """The content hash of a browsed record: what the worker sent, without `_version` or hit metadata."""
    hit.pop(records.VERSION, None)
    for name in HIT_EXTRAS:
        hit.pop(name, None)
    return content_hash(hit)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_COPY_NULL = "\t\\N\n"


_COPY_BYTEA = "\t\\\\x"  # a tab, then bytea's hex form with its backslash escaped for COPY


def copy_text(rows: Sequence[tuple[str, bytes | None]]) -> str:
    """`(k, hash)` rows as COPY text (psycopg's per-row `write_row` costs more than the hashing)."""
    return "".join(
        [k.translate(_COPY_ESCAPES) + (_COPY_NULL if h is None else _COPY_BYTEA + h.hex() + "\n") for k, h in rows]
    )


def copy_text_into(conn: psycopg.Connection, table: str, text: str) -> None:
    """COPY rows already written as COPY text (`copy_text`) into `table`."""
    with conn.cursor() as cur, cur.copy(sql.SQL(Q.copy_hashes).format(sql.Identifier(table))) as copy:
        copy.write(text)


def copy_rows(conn: psycopg.Connection, table: str, rows: Sequence[tuple[str, bytes | None]]) -> None:
    """COPY `(k, hash)` rows into `table`."""
    copy_text_into(conn, table, copy_text(rows))


def _read_ahead(
    settings: Settings, watched: Watched, index: str, chunk_size: int, shaper: Shaper, depth: int = 2
) -> Iterator[tuple[list[str], Current]]:
    """Every chunk of keys with its current rows (`Shaper.load_rows`), read by a thread on its own
    connection while the caller builds and copies the chunks before: Postgres runs the next read
    while this process hashes. At most `depth` chunks wait."""
    chunks: queue.Queue[tuple[list[str], Current] | BaseException | None] = queue.Queue(maxsize=depth)
    halt = threading.Event()

    def put(item: tuple[list[str], Current] | BaseException | None) -> bool:
        while not halt.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with connect(settings.database_url, purpose="verify") as conn:
                for keys in iter_key_chunks(conn, watched, chunk_size):
                    if not put((keys, shaper.load_rows(conn, watched, index, keys))):
                        return
        except BaseException as exc:  # raised again on the caller's thread
            put(exc)
            return
        put(None)

    reader = threading.Thread(target=read, name="verify-read", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
        reader.join()


@dataclass
class TableSide:
    rows: int = 0  # rows whose record belongs in the index
    unbuildable: int = 0
    unbuildable_sample: list[str] = field(default_factory=list)


def copy_table_hashes(
    settings: Settings,
    conn: psycopg.Connection,
    watched: Watched,
    index: str,
    chunk_size: int,
    stream: IO[str] | None,
    between: Callable[[], Any] = lambda: None,
) -> TableSide:
    """Build every row's record as the worker would (`Shaper.serialize`: the worker's read query,
    record code and checks) and copy `(key, hash)` into TABLE_HASHES, one
    chunk at a time. An unbuildable row gets a NULL hash: it counts as seen (whatever the index holds
    for it, repair cannot do better); a row the view or the transform filters out is left out, so its
    record in the index, if any, is extra. `between` runs after each chunk (the index's pages are
    copied there, on the same connection). The rows are read on a connection of their own, a chunk
    ahead (`_read_ahead`)."""
    shaper = Shaper(settings)
    side = TableSide()
    total = count_rows(conn, watched)
    bar = ProgressBar(total, f"verify {watched.table_name}", stream or sys.stderr)
    done = 0
    for keys, current in _read_ahead(settings, watched, index, chunk_size, shaper):
        hashes: list[tuple[str, bytes | None]] = []
        for key in keys:
            try:
                built = shaper.serialize(watched, key, current, sort_keys=True)
            except Unbuildable:
                side.unbuildable += 1
                if len(side.unbuildable_sample) < SAMPLE:
                    side.unbuildable_sample.append(key)
                hashes.append((key, None))
                continue
            if built is None:
                continue
            side.rows += 1
            hashes.append((key, sorted_body_hash(built[1])))
        if hashes:
            copy_rows(conn, TABLE_HASHES, hashes)
        done += len(keys)
        bar.update(done)
        between()
    bar.finish()
    return side
