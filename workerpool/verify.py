"""`workerpool verify TABLE [--repair]`: compare an index with its table, record for record.

The index is browsed with the algoliasearch client (`browse_objects`); the table is walked in key
order (keyset chunks) and each row is built into the record the worker would send (`RecordBuilder`:
the worker's own read query and record code, attribute selection and transform included). Both sides
are reduced to a content hash of their canonical JSON (sorted keys, integral floats as integers, the
`_version` bookkeeping attribute left out), so the comparison keeps two hashes per record in memory,
not the records themselves. A row the worker could not build (a transform error, over
MAX_RECORD_BYTES) is counted as "unbuildable", not as drift: `--repair` could not fix it.

* **missing**: a row whose record is not in the index;
* **extra**: a record whose row does not exist (or that the source view filters out);
* **stale**: both exist, contents differ.

Keys that change while verify runs are not drift: keys pending or processing in the queue, and keys
the workers acknowledged since verify started, are counted as "in flight" and left out.

`--repair` enqueues every drifted key (operation `REINDEX`), so the workers write the current state:
a missing or stale key is resynced, an extra key (no row) becomes a delete. An extra objectID that
cannot even be cast to the key's type can never match a row; it is deleted from the index directly.
The exit code is 1 when drift was found (repaired or not), 0 when the index is clean.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import psycopg
from psycopg import sql

from . import records
from .config import Settings
from .reindex import DEFAULT_CHUNK, ProgressBar, RecordBuilder, count_rows, find_watched, iter_key_chunks

SAMPLE = 5


def canonical(value: Any) -> Any:
    """JSON as Algolia gives it back: integral floats become integers (15.0 and 15 are one value)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def content_hash(record: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(canonical(record), option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


@dataclass
class Report:
    table: str
    index: str
    rows: int = 0
    indexed: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    in_flight: int = 0
    unbuildable: list[str] = field(default_factory=list)
    repaired_enqueued: int = 0
    repaired_deleted: int = 0
    repaired: bool = False

    @property
    def drift(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.stale)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "index": self.index, "rows": self.rows, "records": self.indexed,
            "missing": len(self.missing), "extra": len(self.extra), "stale": len(self.stale),
            "in_flight": self.in_flight, "unbuildable": len(self.unbuildable), "drift": self.drift,
            "samples": {"missing": self.missing[:SAMPLE], "extra": self.extra[:SAMPLE], "stale": self.stale[:SAMPLE]},
            "repaired": self.repaired, "enqueued": self.repaired_enqueued, "deleted": self.repaired_deleted,
        }

    def render(self) -> str:
        def line(name: str, keys: list[str]) -> str:
            sample = f"  e.g. {', '.join(keys[:SAMPLE])}" if keys else ""
            return f"  {name:<9}{len(keys):>8}{sample}\n"

        out = [f"verify {self.table} -> index {self.index}\n",
               f"  rows in table      {self.rows:>8}\n",
               f"  records in index   {self.indexed:>8}\n",
               line("missing", self.missing), line("extra", self.extra), line("stale", self.stale),
               f"  in flight {self.in_flight:>7}  (changed while verifying; not counted)\n"]
        if self.unbuildable:
            out.append(f"  unbuildable {len(self.unbuildable):>5}  e.g. {', '.join(self.unbuildable[:SAMPLE])} "
                       "(the worker cannot build these records; see failed rows in the queue)\n")
        if not self.drift:
            out.append("clean: the index matches the table\n")
        elif self.repaired:
            out.append(f"drift: {self.drift} record(s); repair enqueued {self.repaired_enqueued} key(s) for the workers"
                       + (f" and deleted {self.repaired_deleted} record(s) that cannot match any row" if self.repaired_deleted else "")
                       + "\n")
        else:
            out.append(f"drift: {self.drift} record(s); run `workerpool verify {self.table} --repair` to fix it\n")
        return "".join(out)


def browse_hashes(client: Any, index: str) -> dict[str, bytes]:
    """{objectID: content hash} of every record of the index ({} when it does not exist)."""
    from algoliasearch.http.exceptions import RequestException

    found: dict[str, bytes] = {}

    def take(page: Any) -> None:
        for hit in page.hits:
            record = dict(hit.model_extra or {})
            record.pop(records.VERSION, None)
            record[records.OBJECT_ID] = hit.object_id
            found[hit.object_id] = content_hash(record)

    try:
        client.browse_objects(index, take, {"hitsPerPage": 1000})
    except RequestException as exc:
        if exc.status_code == 404:
            return {}
        raise
    return found


def verify(settings: Settings, conn: psycopg.Connection, table: str, *, repair: bool = False,
           chunk_size: int = DEFAULT_CHUNK, stream: IO[str] | None = None) -> Report:
    from .algolia import make_client

    settings.require_algolia()
    watched = find_watched(conn, table)
    index = settings.algolia_index_prefix + watched.index_name
    report = Report(watched.table_name, index)
    started_at = conn.execute("SELECT now()").fetchone()[0]
    client = make_client(settings)
    try:
        indexed = browse_hashes(client, index)
    finally:
        client.close()
    report.indexed = len(indexed)

    builder = RecordBuilder(settings)
    total = count_rows(conn, watched)
    bar = ProgressBar(total, f"verify {watched.table_name}", stream or sys.stderr)
    seen: set[str] = set()
    done = 0
    for keys in iter_key_chunks(conn, watched, chunk_size):
        built = builder.build(conn, watched, index, keys)
        for key in keys:
            if key in built.failed:
                report.unbuildable.append(key)
                seen.add(key)  # whatever the index holds for it, repair cannot do better
                continue
            record = built.record(key)
            if record is None:
                continue  # filtered out by the view or the transform: must not be indexed (extra below)
            seen.add(key)
            have = indexed.get(key)
            if have is None:
                report.missing.append(key)
            elif have != content_hash(record):
                report.stale.append(key)
        done += len(keys)
        bar.update(done)
    bar.finish()
    report.rows = len(seen) - len(report.unbuildable)
    report.extra = [k for k in indexed if k not in seen]

    moving = {r[0] for r in conn.execute(
        """SELECT record_id FROM algolia_sync_queue WHERE table_name = %(t)s AND status IN ('pending', 'processing')
           UNION SELECT unnest(record_ids) FROM algolia_sync_inbox WHERE table_name = %(t)s
           UNION SELECT record_id FROM algolia_sync_log WHERE table_name = %(t)s AND synced_at >= %(since)s""",
        {"t": watched.table_name, "since": started_at},
    )}
    before = report.drift
    report.missing = [k for k in report.missing if k not in moving]
    report.extra = [k for k in report.extra if k not in moving]
    report.stale = [k for k in report.stale if k not in moving]
    report.in_flight = before - report.drift
    for keys in (report.missing, report.extra, report.stale):
        keys.sort(key=_natural)

    if repair and report.drift:
        _repair(settings, conn, watched, report)
    return report


def _natural(key: str) -> tuple:
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


def _castable(conn: psycopg.Connection, key_type: str, keys: list[str]) -> list[str]:
    """The keys that are valid values of the key's type (others can never be a row)."""
    if not keys:
        return []
    cast = sql.SQL("SELECT k FROM unnest(%s::text[]) AS k WHERE k::{} IS NOT NULL").format(sql.SQL(key_type))
    try:
        with conn.transaction():
            return [r[0] for r in conn.execute(cast, (keys,))]
    except psycopg.DataError:
        pass
    good = []
    single = sql.SQL("SELECT %s::{}").format(sql.SQL(key_type))
    for key in keys:
        try:
            with conn.transaction():
                conn.execute(single, (key,))
            good.append(key)
        except psycopg.DataError:
            pass
    return good


def _repair(settings: Settings, conn: psycopg.Connection, watched: Any, report: Report) -> None:
    from .algolia import Sender

    castable_extra = _castable(conn, watched.key_type, report.extra)
    keys = report.missing + report.stale + castable_extra
    with conn.transaction():
        report.repaired_enqueued = conn.execute(
            """INSERT INTO algolia_sync_queue (table_name, record_id, operation)
               SELECT %s, k, 'REINDEX' FROM unnest(%s::text[]) AS k
               ON CONFLICT (table_name, record_id) WHERE status = 'pending' DO NOTHING""",
            (watched.table_name, keys),
        ).rowcount
        conn.execute("SELECT pg_notify('algolia_sync', %s)", (watched.table_name,))
    impossible = sorted(set(report.extra) - set(castable_extra))
    if impossible:
        sender = Sender(settings)
        try:
            sender.send_batch(records.batch_body(records.delete_action(report.index, k) for k in impossible))
        finally:
            sender.close()
        report.repaired_deleted = len(impossible)
    report.repaired = True
