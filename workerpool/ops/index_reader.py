"""The index side of `verify`, in a process of its own: browse every page, hash each record, and
hand the parent each page as ready-made COPY text of `(objectID, hash)` rows.

Browsing, parsing and hashing the index is about a third of verify's CPU; on a thread it shared one
interpreter lock with the table's walk, so the two sides took turns. In a child process (spawned: a
fresh interpreter, nothing inherited but the settings) the two sides run on two cores and the parent
only copies the text it receives into its session.

Memory stays flat: the child sends a page at a time through a pipe and blocks while the pipe is full,
so at most a few pages are in flight whatever the index's size. The child ignores Ctrl-C (the
parent ends it), dies with the parent (Linux parent-death signal; a write to a closed pipe ends it
elsewhere), and reports an error as its kind, status and message, which the parent raises again as
the client's own exception, so verify fails with the same line and exit code as in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from workerpool.config import Settings
from workerpool.ops.browse import MAX_PAGE, Browser, iter_pages
from workerpool.ops.hashes import INDEX_HASHES, copy_text, copy_text_into, hit_hash
from workerpool.runtime import records

# Messages from the child: ("page", records, copy text) | ("error", kind, message, status) | ("done",)


def browse_hashes(settings: Settings, index: str, page_size: int, send: Callable[[int, str], None]) -> None:
    """Every page of `index` as COPY text of `(objectID, content hash)` rows, one `send` per page."""
    browser = Browser(settings)
    try:
        for hits in iter_pages(browser, index, page_size=page_size, attributes=["*", f"-{records.VERSION}"]):
            send(len(hits), copy_text([(hit[records.OBJECT_ID], hit_hash(hit)) for hit in hits]))
    finally:
        browser.close()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(settings: Settings, index: str, page_size: int, out: Connection, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return
    try:
        browse_hashes(settings, index, page_size, lambda n, text: out.send(("page", n, text)))
    except (BrokenPipeError, EOFError):  # the parent is gone or stopped reading: nothing to report
        return
    except BaseException as exc:
        try:
            out.send(_describe(exc))
        except OSError:
            pass
        return
    out.send(("done",))


def _describe(exc: BaseException) -> tuple[Any, ...]:
    from algoliasearch.http.exceptions import AlgoliaUnreachableHostException, RequestException

    if isinstance(exc, RequestException):
        return ("error", "request", str(exc.message), exc.status_code)
    if isinstance(exc, AlgoliaUnreachableHostException):
        return ("error", "unreachable", str(exc.message), None)
    try:
        exc.__traceback__ = None
        pickle.loads(pickle.dumps(exc))
        return ("error", "pickled", pickle.dumps(exc), None)
    except Exception:
        return ("error", "other", f"{type(exc).__name__}: {exc}", None)


def _rebuild(kind: str, message: Any, status: int | None) -> BaseException:
    from algoliasearch.http.exceptions import AlgoliaUnreachableHostException, RequestException

    if kind == "request":
        return RequestException(message, status)  # type: ignore[no-untyped-call]
    if kind == "unreachable":
        return AlgoliaUnreachableHostException(message)  # type: ignore[no-untyped-call]
    if kind == "pickled":
        rebuilt: BaseException = pickle.loads(message)
        return rebuilt
    return RuntimeError(f"browsing the index failed: {message}")


class IndexReader:
    """The child process browsing `index`, and the parent's end of its pipe."""

    def __init__(self, settings: Settings, index: str, page_size: int = MAX_PAGE) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise ValueError(f"page_size {page_size} is not valid; expected 1 to {MAX_PAGE}")
        context = multiprocessing.get_context("spawn")
        self._pipe, out = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child, args=(settings, index, page_size, out, os.getpid()), name="verify-browse", daemon=True
        )
        self._process.start()
        out.close()
        self.count = 0  # records copied so far
        self.done = False  # every page copied
        self._first: Any = None  # the first message, read by `wait_answered`

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def wait_answered(self) -> None:
        """Block until the first page (or the error) is in; raise the error. Algolia refusing the key
        or out of reach shows here, before the table's walk starts."""
        self._first = self._receive()
        if self._first[0] == "error":
            self.done = True
            raise _rebuild(*self._first[1:])

    def copy(self, conn: psycopg.Connection, *, wait: bool) -> int | None:
        """Copy the pages received so far into INDEX_HASHES (one COPY per page, so no transaction
        stays open). Returns the index's record count once every page is in, else None; with `wait`,
        blocks until then."""
        while not self.done:
            if self._first is not None:
                message, self._first = self._first, None
            elif wait or self._pipe.poll():
                message = self._receive()
            else:
                return None
            if message[0] == "page":
                if message[1]:
                    copy_text_into(conn, INDEX_HASHES, message[2])
                    self.count += message[1]
            elif message[0] == "done":
                self.done = True
            else:
                self.done = True
                raise _rebuild(*message[1:])
        return self.count

    def _receive(self) -> Any:
        try:
            return self._pipe.recv()
        except EOFError:
            self._process.join(5)
            code = self._process.exitcode
            raise RuntimeError(f"the index reader process ended without an answer (exit code {code})") from None

    def stop(self) -> None:
        """End the child (if it still runs) and wait for it."""
        self._pipe.close()
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
