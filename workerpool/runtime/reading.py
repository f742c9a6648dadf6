"""Reading a claim's current rows and turning them into the actions to send.

One query per table for the whole claim; a row that cannot be read fails alone (the keys are halved
until it is found), a table that cannot be read retries only its own rows, and a lost connection
gives the whole claim back (the caller's `psycopg.Error` handler).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import psycopg

from workerpool.capture.model import Watched, load_watched
from workerpool.config import Settings
from workerpool.logs import one_line
from workerpool.runtime.model import Item, Outcome, SyncItem
from workerpool.runtime.shaping import Current, Shaper

CONFIG_REFRESH_S = 10.0

# SQLSTATE classes that speak of the relation, not of a row: 42 (undefined table or column,
# insufficient privilege, syntax) and 0A (feature not supported). Their rows retry with backoff.
TABLE_ERROR_CLASSES = ("42", "0A")
# Classes that speak of the server or the moment (a deadlock, a cancelled statement, no memory, a
# shutdown): nobody's data is at fault, so the whole claim is given back as on a lost connection.
TRANSIENT_ERROR_CLASSES = ("08", "40", "53", "57", "58")


class Reader:
    """Builds a claim's items: the registrations (refreshed every CONFIG_REFRESH_S), the current rows,
    and the records shaped as the index wants them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shaper = Shaper(settings)
        self._watched: dict[str, Watched] = {}
        self._watched_at = 0.0

    def index_of(self, table: str) -> str:
        """The index a table's records go to (the table's own name when it is not watched)."""
        watched = self._watched.get(table)
        return self.settings.algolia_index_prefix + watched.index_name if watched is not None else table

    def config_for(self, conn: psycopg.Connection, table: str) -> Watched | None:
        now = time.monotonic()
        if table not in self._watched or now - self._watched_at > CONFIG_REFRESH_S:
            self._watched = load_watched(conn)
            self._watched_at = now
        return self._watched.get(table)

    def items(self, conn: psycopg.Connection, rows: Sequence[SyncItem], outcome: Outcome) -> list[Item]:
        """The actions for `rows`; rows that need no request (and those that failed) land in `outcome`."""
        by_table: dict[str, list[SyncItem]] = {}
        for row in rows:
            by_table.setdefault(row.table_name, []).append(row)
        items: list[Item] = []
        prefix = self.settings.algolia_index_prefix
        for table, table_rows in by_table.items():
            watched = self.config_for(conn, table)
            if watched is None:
                outcome.failed.extend(
                    (r, f"table {table} is not watched (no enabled row in algolia_index_config)") for r in table_rows
                )
                continue
            index = prefix + watched.index_name
            for current, part in self._read(conn, watched, index, table_rows, outcome):
                for row in part:
                    item = self.shaper.item(watched, index, row, current, outcome)
                    if item is not None:
                        items.append(item)
        return items

    def _read(
        self,
        conn: psycopg.Connection,
        watched: Watched,
        index: str,
        rows: list[SyncItem],
        outcome: Outcome,
        one_by_one: bool = False,
    ) -> Iterator[tuple[Current, list[SyncItem]]]:
        """The current rows of `rows`' keys, in one query when it succeeds.

        When it fails for something in the rows (a value that cannot be read, a key that no longer
        casts to the key's type, an error a source view raises for one row), the keys are halved
        until each offending key fails alone, with the error as its last_error; the others are read
        in the same batch. The halves are read with the source probed per key (`one_by_one`), so
        that a source view's expression that raises for one row is evaluated for the keys asked for
        alone. An error about the table itself (dropped, renamed column, permission)
        retries all of its rows with backoff, and touches no other table.
        """
        try:
            yield self.shaper.load_rows(conn, watched, index, [r.record_id for r in rows], one_by_one), rows
            return
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            if exc.sqlstate and exc.sqlstate[:2] in TRANSIENT_ERROR_CLASSES:
                raise
            if exc.sqlstate and exc.sqlstate[:2] in TABLE_ERROR_CLASSES:
                reason = f"cannot read {watched.reads_from} for table {watched.table_name}: {one_line(exc)}"
                outcome.retry.extend((r, reason) for r in rows)
                return
            error: BaseException = exc
        except Exception as exc:  # a loader or value error in psycopg: one row's data
            error = exc
        if len(rows) == 1 and not one_by_one:  # the batch's plan may have evaluated other rows too
            yield from self._read(conn, watched, index, rows, outcome, True)
            return
        if len(rows) == 1:
            outcome.failed.append(
                (
                    rows[0],
                    f"cannot read row {rows[0].record_id} of {watched.reads_from}: "
                    f"{type(error).__name__}: {one_line(error)}",
                )
            )
            return
        middle = len(rows) // 2
        yield from self._read(conn, watched, index, rows[:middle], outcome, True)
        yield from self._read(conn, watched, index, rows[middle:], outcome, True)
