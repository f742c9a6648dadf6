"""`workerpool reindex TABLE [--atomic]`: a full backfill of one watched table's index.

Plain reindex (through the queue). Walks the table's keys in chunks (keyset pagination on the key,
`WHERE key > last ORDER BY key LIMIT n`) and enqueues each chunk as operation `REINDEX` with
`ON CONFLICT (table_name, record_id) WHERE status = 'pending' DO NOTHING`, so a key that is already
pending is not duplicated. The workers then sync those keys like any other change (current state,
per-key serialization, retries). Records in the index whose row no longer exists are not touched by a
plain reindex: `workerpool verify TABLE --repair` or `reindex --atomic` removes them.

`--atomic`. Builds a fresh index `<index>_tmp_<unix time>` while the live one keeps serving and the
workers keep writing to it: the live index's settings, synonyms and rules are copied to the temporary
index (`operation_index` copy with a scope; the settings a copy cannot carry, `mode`,
`enableReRanking` and `replicas`, are read from the live index and set on the temporary one before
the move), every row is streamed into it directly (keyset chunks, records built exactly as the
worker builds them, sent through the worker's own transport), and then the
temporary index is moved over the live one (`operation_index` move). No committed change is lost: the
database time T0 is taken *before* the first row is read, and after the move every key that the workers
acknowledged since T0 (from `algolia_sync_log`) or hold at that moment (`processing`) is enqueued again,
so the workers write its current state into the new live index. Keys still pending are synced after the
move anyway. (A change committed after T0 is either read by the copy, or synced by a worker after T0 and
then re-enqueued; a change synced before T0 was committed before the copy read its row.)

Resumable. Progress lives in `workerpool_reindex_progress` (one row per table, created on first use),
updated in the same transaction as each enqueued chunk (plain) or after each chunk Algolia accepted
(atomic: with the temporary index name and T0). Running the same command again after an interruption
continues after the last key; `--restart` starts over (and deletes an abandoned temporary index). A
lease row (`ops/lease.py`) keeps two reindexes of one table from running at once, through any pooler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
import requests
from algoliasearch.http.exceptions import AlgoliaException

from workerpool.capture.model import Watched, find_watched
from workerpool.config import ConfigError, Settings
from workerpool.db.connection import one_row
from workerpool.db.queries import Q
from workerpool.exit_codes import EXIT_ALGOLIA, EXIT_ERROR
from workerpool.failures import algolia_failure
from workerpool.ops.admin import Admin
from workerpool.ops.lease import ReindexLease, ReindexLeaseLost
from workerpool.ops.progress import ProgressBar
from workerpool.ops.table_walk import (
    DEFAULT_CHUNK,
    RecordBuilder,
    count_rows,
    iter_key_chunks,
)
from workerpool.runtime import queue, records
from workerpool.runtime.algolia import AlgoliaError, Sender, TaskNotPublished
from workerpool.runtime.sending import by_request_size, send_splitting

log = logging.getLogger(__name__)

REENQUEUE_MARGIN_S = 5  # re-enqueue keys acknowledged a little before T0 too: cheap insurance
SEND_ATTEMPTS = 8


class ReindexError(Exception):
    """The reindex could not finish; the message is one line for the operator.

    `exit_code` is the command's: 2 when it cannot proceed as asked (another reindex holds the table,
    an interrupted one of the other kind), 4 when Algolia is unreachable or refuses the credentials.
    """

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---- shared with verify ----------------------------------------------------------------------


# ---- progress (resumability) -----------------------------------------------------------------


@dataclass
class Progress:
    table_name: str
    mode: str
    tmp_index: str | None
    started_at: datetime
    last_key: str | None
    rows_done: int


def _load_progress(conn: psycopg.Connection, table: str) -> Progress | None:
    row = conn.execute(
        Q.load_reindex_progress,
        (table,),
    ).fetchone()
    return Progress(*row) if row else None


def _start_progress(conn: psycopg.Connection, table: str, mode: str, tmp_index: str | None, total: int) -> Progress:
    return Progress(*one_row(conn.execute(Q.start_reindex_progress, (table, mode, tmp_index, total))))


def _advance(conn: psycopg.Connection, table: str, last_key: str, n: int) -> None:
    conn.execute(
        Q.advance_reindex_progress,
        (last_key, n, table),
    )


def _finish_progress(conn: psycopg.Connection, table: str) -> None:
    conn.execute(Q.finish_reindex_progress, (table,))


# ---- progress bar ----------------------------------------------------------------------------


# ---- the command -----------------------------------------------------------------------------


@dataclass
class Result:
    table: str
    index: str
    rows: int = 0  # rows walked in this run
    enqueued: int = 0  # new queue rows (plain) / keys re-enqueued after the move (atomic)
    written: int = 0  # records written into the temporary index (atomic)
    skipped: list[str] = field(default_factory=list)  # rows the index refused; left to the worker to fail
    tmp_index: str | None = None
    resumed: bool = False


def reindex(
    settings: Settings,
    conn: psycopg.Connection,
    table: str,
    *,
    atomic: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    restart: bool = False,
    stream: IO[str] | None = None,
) -> Result:
    """Run one reindex on `conn` (autocommit). Raises WatchError/ReindexError/ConfigError with one line."""
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size {chunk_size} is not valid; expected 1 or more")
    watched = find_watched(conn, table)
    lease = ReindexLease(settings.database_url, watched.table_name)
    other = lease.take(conn)
    if other is not None:
        holder, until = other
        raise ReindexError(
            f"another reindex of {watched.table_name} is running ({holder}); if it died, its lease ends at "
            f"{until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        )
    try:
        with lease:
            if atomic:
                return _atomic(settings, conn, watched, chunk_size, restart, stream, lease)
            return _through_queue(conn, watched, settings, chunk_size, restart, stream, lease)
    except ReindexLeaseLost as exc:
        raise ReindexError(f"reindex of {watched.table_name} stopped: {exc}; run it again to resume") from None


def _leased(lease: ReindexLease, chunks: Iterator[list[str]]) -> Iterator[list[str]]:
    """The chunks, each only while the lease is still ours."""
    for chunk in chunks:
        lease.check()
        yield chunk
    lease.check()


def _previous(
    conn: psycopg.Connection, watched: Watched, mode: str, restart: bool, settings: Settings
) -> Progress | None:
    previous = _load_progress(conn, watched.table_name)
    if previous is None:
        return None
    if restart:
        if previous.mode == "atomic" and previous.tmp_index:
            _drop_index(settings, previous.tmp_index)
        _finish_progress(conn, watched.table_name)
        return None
    if previous.mode != mode:
        other = "--atomic " if previous.mode == "atomic" else ""
        raise ReindexError(
            f"an interrupted `reindex {other}{watched.table_name}` left progress behind; run it again to resume, "
            "or pass --restart to start over"
        )
    return previous


def _through_queue(
    conn: psycopg.Connection,
    watched: Watched,
    settings: Settings,
    chunk_size: int,
    restart: bool,
    stream: IO[str] | None,
    lease: ReindexLease,
) -> Result:
    result = Result(watched.table_name, settings.algolia_index_prefix + watched.index_name)
    total = count_rows(conn, watched)
    progress = _previous(conn, watched, "queue", restart, settings)
    if progress is None:
        progress = _start_progress(conn, watched.table_name, "queue", None, total)
    else:
        result.resumed = True
    bar = ProgressBar(total, f"reindex {watched.table_name}", stream, done=min(progress.rows_done, total))
    done = progress.rows_done
    for keys in _leased(lease, iter_key_chunks(conn, watched, chunk_size, after=progress.last_key)):
        with conn.transaction():
            n = queue.enqueue(conn, watched.table_name, keys)
            _advance(conn, watched.table_name, keys[-1], len(keys))
        result.enqueued += n
        result.rows += len(keys)
        done += len(keys)
        bar.total = max(bar.total, done)
        bar.update(done)
    bar.finish()
    _finish_progress(conn, watched.table_name)
    return result


# ---- atomic ----------------------------------------------------------------------------------


def _drop_index(settings: Settings, name: str) -> None:
    try:
        admin = Admin(settings)
        try:
            admin.delete_index(name)
        finally:
            admin.close()
    except Exception as exc:  # best effort: an abandoned temporary index is harmless
        log.warning(
            "could not delete temporary index",
            extra={"action": "reindex_cleanup_failed", "index": name, "error": str(exc)},
        )


def _atomic(
    settings: Settings,
    conn: psycopg.Connection,
    watched: Watched,
    chunk_size: int,
    restart: bool,
    stream: IO[str] | None,
    lease: ReindexLease,
) -> Result:
    settings.require_algolia()
    live = settings.algolia_index_prefix + watched.index_name
    result = Result(watched.table_name, live)
    client = Admin(settings)
    sender = Sender(settings)
    builder = RecordBuilder(settings)
    try:
        total = count_rows(conn, watched)
        progress = _previous(conn, watched, "atomic", restart, settings)
        tmp = progress.tmp_index if progress is not None else None
        if progress is not None and (tmp is None or not client.exists(tmp)):
            _finish_progress(conn, watched.table_name)  # the temporary index is gone (or unnamed): start over
            progress = None
        if progress is None or tmp is None:
            tmp = f"{live}_tmp_{int(time.time())}"
            # T0 is committed before the first row is read.
            progress = _start_progress(conn, watched.table_name, "atomic", tmp, total)
            if client.exists(live):
                copied = client.operation(live, "copy", tmp, scope=["settings", "synonyms", "rules"])
                client.wait_published(tmp, copied)
        else:
            result.resumed = True
        result.tmp_index = tmp
        bar = ProgressBar(total, f"reindex {watched.table_name} -> {tmp}", stream, done=min(progress.rows_done, total))
        done = progress.rows_done
        last_task: int | None = None
        for keys in _leased(lease, iter_key_chunks(conn, watched, chunk_size, after=progress.last_key)):
            built = builder.build(conn, watched, tmp, keys)
            result.skipped.extend(built.failed)  # re-enqueued after the move: the worker fails them with the reason
            task = _send_all(sender, tmp, list(built.writes.items()), settings, result)
            last_task = task if task is not None else last_task
            _advance(conn, watched.table_name, keys[-1], len(keys))
            result.rows += len(keys)
            done += len(keys)
            bar.total = max(bar.total, done)
            bar.update(done)
        bar.finish()
        if last_task is not None:
            client.wait_published(tmp, last_task)
        _carry_over(client, live, tmp)
        moved = client.operation(tmp, "move", live)
        client.wait_published(tmp, moved)
        result.enqueued = _reenqueue_since(conn, watched, progress.started_at, result.skipped)
        _finish_progress(conn, watched.table_name)
        return result
    except (AlgoliaException, AlgoliaError, requests.RequestException, TaskNotPublished) as exc:
        code, message = algolia_failure(exc) or (EXIT_ALGOLIA, str(exc))
        raise ReindexError(f"{message} (progress kept: run the same command again to resume)", code) from None
    finally:
        sender.close()
        client.close()


# Settings an operationIndex copy never carries (Algolia's documentation of the operation); the move
# overwrites the live index's settings with the temporary index's, so they would be lost.
NOT_COPIED = ("mode", "enableReRanking", "replicas")


def _carry_over(client: Admin, live: str, tmp: str) -> None:
    """Set on `tmp`, before it is moved over `live`, the live index's settings that the copy could not
    carry (read from the live index now, so a change made during the reindex is kept too)."""
    current = client.get_settings(live) or {}
    kept = {name: current[name] for name in NOT_COPIED if name in current}
    if kept:
        client.wait_published(tmp, client.set_settings(tmp, kept))


def _send_all(
    sender: Sender, tmp: str, bodies: list[tuple[str, bytes]], settings: Settings, result: Result
) -> int | None:
    """Send the chunk in as few requests as MAX_REQUEST_BYTES allows; a record Algolia rejects is
    skipped (re-enqueued after the move, so the worker fails it with the reason). Returns the last task id."""
    task: int | None = None

    def send(group: list[tuple[str, bytes]]) -> None:
        nonlocal task
        response = _send_with_retries(sender, tmp, records.batch_body(b for _, b in group))
        result.written += len(group)
        tasks = response.get("taskID") or {}
        task = (tasks.get(tmp) if isinstance(tasks, dict) else None) or task

    for group in by_request_size(bodies, lambda kb: len(kb[1]), settings.max_request_bytes):
        send_splitting(send, group, lambda kb, _exc: result.skipped.append(kb[0]))
    return task


def _send_with_retries(sender: Sender, tmp: str, body: bytes) -> dict[str, Any]:
    """One request, retried while Algolia throttles (waiting Retry-After) or fails transiently (backoff);
    a rejection of the records or of the key is raised at once."""
    delay = 0.5
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            return sender.send_batch(body)
        except AlgoliaError as exc:
            if exc.throttled:
                time.sleep(exc.retry_after or 1.0)
                continue
            if exc.permanent or exc.auth:
                raise
            if attempt == SEND_ATTEMPTS:
                raise ReindexError(
                    f"algolia kept failing while writing {tmp}: {exc.message} "
                    "(progress kept: run the same command again to resume)",
                    EXIT_ALGOLIA,
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise ReindexError(f"algolia kept throttling writes to {tmp} (progress kept: run again to resume)", EXIT_ALGOLIA)


def _reenqueue_since(conn: psycopg.Connection, watched: Watched, t0: datetime, extra: list[str]) -> int:
    """After the move: every key synced since T0, held right now, or refused by the index goes back to the queue."""
    keys = [
        r[0]
        for r in conn.execute(
            Q.keys_to_reenqueue,
            {"t": watched.table_name, "t0": t0, "margin": REENQUEUE_MARGIN_S, "extra": extra},
        )
    ]
    with conn.transaction():
        return queue.enqueue(conn, watched.table_name, keys)
