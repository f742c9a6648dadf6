"""Expected failures of a command, as one line and an exit code (the codes are `exit_codes`', listed
in the README's "Exit codes").

An Algolia failure is exit 4 when Algolia is unreachable or refuses the credentials, 2 when it
rejects the request as it stands; a database error is one line without its CONTEXT. Anything else
that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

from workerpool.exit_codes import EXIT_ALGOLIA, EXIT_ERROR


def algolia_failure(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an error from the algoliasearch client or the worker's sender; None otherwise."""
    import requests
    from algoliasearch.http.exceptions import (
        AlgoliaUnreachableHostException,
        RequestException,
    )

    from workerpool.runtime.algolia import AlgoliaError, TaskNotPublished

    if isinstance(exc, TaskNotPublished):
        return EXIT_ALGOLIA, str(exc)
    if isinstance(exc, RequestException):
        status, message = exc.status_code, str(exc.message)
    elif isinstance(exc, AlgoliaError):
        status, message = exc.status, exc.message
    elif isinstance(exc, AlgoliaUnreachableHostException):
        status, message = None, "no host answered (connection refused, timeouts or 5xx on every host)"
    elif isinstance(exc, requests.RequestException):
        status, message = None, f"network error: {type(exc).__name__}"
    else:
        return None
    message = " ".join(message.split())[:300]
    if status in (401, 403):
        return EXIT_ALGOLIA, (
            f"Algolia refused the credentials ({status}: {message}); check ALGOLIA_APP_ID and ALGOLIA_ADMIN_KEY"
        )
    if status is None or status >= 500 or status in (408, 429):
        return EXIT_ALGOLIA, f"Algolia unreachable: {message} (check ALGOLIA_HOSTS and the network)"
    return EXIT_ERROR, f"Algolia rejected the request ({status}): {message}"


def database_error(exc: psycopg.Error, limit: int = 300) -> str:
    """A database error as one short line: Postgres's message, its detail and hint, never its CONTEXT.

    psycopg's text of a server error carries the CONTEXT too, which for an error raised inside
    generated code (the capture function that `watch` creates, under a user's event trigger) is the
    whole generated statement: kilobytes of SQL on what must be one line.
    """
    diag = exc.diag
    primary = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    parts = [
        primary,
        *(f"{label}: {text}" for label, text in (("detail", diag.message_detail), ("hint", diag.message_hint)) if text),
    ]
    line = " ".join("; ".join(parts).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
