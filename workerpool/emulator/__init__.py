"""A local HTTP server that speaks Algolia's Search REST API (the part this project uses).

Algolia cannot be reached from tests, benchmarks or demos, so they all point the real,
unmodified ``algoliasearch`` v4 client at this emulator over real HTTP (``make_client``).
What it covers:

* writes: ``/1/indexes/*/batch``, ``/1/indexes/{i}/batch`` and the single-record endpoints, with
  every batch action and the built-in partial-update operations (``Increment``, ``Decrement``,
  ``Add``, ``Remove``, ``AddUnique``, ``IncrementFrom``, ``IncrementSet``). A batch is atomic
  here: any invalid request in it (bad objectID, record over the size limit) rejects it whole.
* an asynchronous index, as Algolia's is: a record write is acknowledged with its ``taskID`` at
  once and becomes readable (get object(s), browse, search, ``Emulator.records``, the record counts
  of stats and list indices) only when its task is ``published``. By default that is at once, so
  every task is immediately ``published``. With a publish delay (``Emulator.set_publish_delay``,
  ``POST /_emulator/publish-delay``, ``workerpool emulator --publish-delay-ms N
  --publish-ms-per-record N``) a task is due at ``max(accepted + delay_ms, due of the previous task
  of its index) + records * per_record_ms``: the tasks of one index publish in order and a queue
  builds up under load. Until then reads see the record as it was before (absent, the old value,
  or still there for a delete). Settings and index-level operations (clear, delete, copy, move)
  stay immediate: clearing, deleting or replacing an index publishes its pending tasks at once; a
  move takes them along. See ``publishing``.
* reads: get object(s), cursor browse, a naive substring search, settings, list indices, tasks;
  index copy/move, clear and delete.
* Algolia's auth (403) and error shape ``{"message": ..., "status": ...}``.
* test hooks under ``/_emulator/`` (no auth; loopback clients only), mirrored by methods of
  ``Emulator`` since tests often run workers in other processes:

  - ``GET /_emulator/stats``: ``requests`` (every ``/1/`` request, rejected ones included),
    ``batch_requests`` (``*/batch`` and ``{i}/batch`` calls that got past faults and auth),
    ``record_writes`` ({index: record-level actions of accepted batches and single-record
    writes, including updates ignored by IncrementSet/IncrementFrom, which Algolia also counts
    as operations}), ``record_writes_total``, ``ignored_writes``, ``rejected`` (``429``,
    ``5xx``, ``dropped``, ``400``, ``403``, ``404`` answers), ``faults_pending``, ``indices``
    ({index: published record count}).
  - ``POST /_emulator/reset``: drop indices, counters, faults and the task log; no round trip,
    task delay or publish delay.
  - ``POST /_emulator/faults`` with one fault or a list: ``{"status": 429, "retry_after": 1,
    "count": N}``, ``{"status": 503, "seconds": S}``, ``{"drop": true, "count": N}``,
    ``{"latency_ms": M, "seconds": S}``, each optionally ``"writes_only": true``;
    ``GET`` lists them, ``DELETE`` clears them.
  - ``POST /_emulator/rtt`` with ``{"rtt_ms": 60, "jitter_ms": 10}``: every ``/1/`` answer waits
    that round trip (± jitter) from then on; reset clears it.
  - ``POST /_emulator/task-delay`` with ``{"seconds": S}``: tasks other than record writes (copy,
    move, clear, settings) stay ``notPublished`` for S seconds, as a large index's copy does.
  - ``POST /_emulator/publish-delay`` with ``{"delay_ms": N, "per_record_ms": M}``: record-write
    tasks publish as described above; ``{}`` turns it off (reset does too). Answers the values set.
  - ``GET /_emulator/tasks`` and ``GET /_emulator/tasks/{i}``: ``{"tasks": [...]}``, the last
    100,000 record-write tasks (of index i), oldest first, each ``{"task_id", "index", "records",
    "accepted_at", "published_at"}`` in Unix seconds, ``published_at`` null until published
    (``Emulator.task_log``).
  - ``GET /_emulator/indexes/{i}``: every published record as ``{objectID: record}``.
  - ``GET /_emulator/health``: ``{"ok": true}``.
  - ``POST /_emulator/requests``: record every ``/1/`` request from then on (method, path, query,
    headers with the API key starred, body); ``GET`` lists them; reset stops and forgets them.

Modules: ``state`` (the in-memory store), ``index`` (one index, what a copy carries), ``publishing``
(the publish delay, pending tasks and their pre-images, the task log), ``records`` (rules about one
record), ``api`` (the ``/1/`` routes), ``hooks`` (``/_emulator/``), ``faults`` (fault injection, round
trip, task delay), ``recorder`` (the requests received, for tests), ``server`` (HTTP, ``Emulator``),
``bind`` (bind safety), ``client`` (``make_client``), ``cli`` (the command line, also ``workerpool
emulator``), ``common`` (defaults, error shape).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `X as X`: re-exported for type checkers; at run time __getattr__ loads them
    from workerpool.emulator.bind import is_loopback as is_loopback
    from workerpool.emulator.bind import refuse_unsafe_bind as refuse_unsafe_bind
    from workerpool.emulator.cli import main as main
    from workerpool.emulator.cli import serve as serve
    from workerpool.emulator.client import make_client as make_client
    from workerpool.emulator.common import DEFAULT_API_KEY as DEFAULT_API_KEY
    from workerpool.emulator.common import DEFAULT_APP_ID as DEFAULT_APP_ID
    from workerpool.emulator.common import DEFAULT_MAX_RECORD_BYTES as DEFAULT_MAX_RECORD_BYTES
    from workerpool.emulator.common import DEFAULT_PORT as DEFAULT_PORT
    from workerpool.emulator.common import ApiError as ApiError
    from workerpool.emulator.server import Emulator as Emulator
    from workerpool.emulator.state import EmulatorState as EmulatorState

# Exported name -> its module. Loaded on first use, so that `workerpool`'s own parser can take the
# emulator's options (workerpool.emulator.cli) without importing the HTTP server.
_EXPORTS = {
    "DEFAULT_API_KEY": "common",
    "DEFAULT_APP_ID": "common",
    "DEFAULT_MAX_RECORD_BYTES": "common",
    "DEFAULT_PORT": "common",
    "ApiError": "common",
    "Emulator": "server",
    "EmulatorState": "state",
    "is_loopback": "bind",
    "main": "cli",
    "make_client": "client",
    "refuse_unsafe_bind": "bind",
    "serve": "cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
