"""runtime.reading.Reader with a fake connection and a fake row loader: a claim whose read fails for
some rows is halved until each faulty row fails alone and the others are read; an error about the
table retries all of its rows; a lost connection or a transient server error propagates; a row that
is not watched fails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.capture.model import Watched
from workerpool.config import Settings
from workerpool.runtime.model import Action, Item, Outcome, SyncItem
from workerpool.runtime.reading import Reader
from workerpool.runtime.shaping import Current

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# One registration, as `load_watched` reads it: table, index, key, key type, source view,
# attributes, transform, relation, a composite key's columns and types.
REGISTRATION = ("products", "products_idx", "id", "bigint", None, None, None, "public.products", None, None)


class FakeConnection:
    """Answers the registrations query (the only query the reader itself runs)."""

    def __init__(self, registrations: list[tuple[Any, ...]]) -> None:
        self.registrations = registrations
        self.queries = 0

    def execute(self, query: str, params: Any = None) -> FakeConnection:
        self.queries += 1
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.registrations


class FakeShaper:
    """Loads rows unless the keys asked for include a faulty one; `raises(keys, one_by_one)` says what
    a read raises (None: it succeeds). Builds a delete for each row read."""

    def __init__(self, raises) -> None:
        self.raises = raises
        self.reads: list[tuple[list[str], bool]] = []

    def load_rows(self, conn: Any, watched: Watched, index: str, keys: list[str], one_by_one: bool = False) -> Current:
        self.reads.append((list(keys), one_by_one))
        error = self.raises(keys, one_by_one)
        if error is not None:
            raise error
        return Current((), {}, None)

    def item(self, watched: Watched, index: str, row: SyncItem, current: Current, outcome: Outcome) -> Item:
        return Item(row, index, Action.DELETE, b"")


def _rows(count: int, table: str = "products") -> list[SyncItem]:
    return [SyncItem(n, table, str(n), "UPDATE", 1, NOW) for n in range(count)]


def _reader(raises) -> tuple[Reader, FakeShaper]:
    reader = Reader(Settings(algolia_index_prefix="dev_"))
    shaper = FakeShaper(raises)
    reader.shaper = shaper  # type: ignore[assignment]  # a fake with load_rows and item
    return reader, shaper


def _bad_value(keys: list[str], bad: set[str]) -> Exception | None:
    return psycopg.errors.InvalidTextRepresentation("invalid input syntax") if bad.intersection(keys) else None


def test_a_claim_read_whole_is_one_query_and_every_row_becomes_an_item():
    reader, shaper = _reader(lambda keys, one: None)
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION]), _rows(5), outcome)  # type: ignore[arg-type]
    assert [i.row.id for i in items] == [0, 1, 2, 3, 4]
    assert {i.index for i in items} == {"dev_products_idx"}
    assert shaper.reads == [(["0", "1", "2", "3", "4"], False)]
    assert outcome == Outcome()


@given(st.integers(1, 40), st.data())
def test_a_failed_read_is_halved_until_each_faulty_row_fails_alone(count, data):
    rows = _rows(count)
    bad = set(data.draw(st.lists(st.sampled_from([r.record_id for r in rows]), unique=True)))
    reader, shaper = _reader(lambda keys, one: _bad_value(keys, bad))
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION]), rows, outcome)  # type: ignore[arg-type]
    assert [r.record_id for r, _ in outcome.failed] == [r.record_id for r in rows if r.record_id in bad]
    assert [i.row.record_id for i in items] == [r.record_id for r in rows if r.record_id not in bad]
    for _, reason in outcome.failed:
        assert reason.startswith("cannot read row ") and "of public.products: InvalidTextRepresentation" in reason
    assert not outcome.retry and not outcome.unsent
    # After the first read of the whole claim, the halves are read with the source probed per key.
    assert shaper.reads[0] == ([r.record_id for r in rows], False)
    assert all(one for _, one in shaper.reads[1:])


def test_a_row_that_fails_only_in_a_batch_read_is_read_again_alone():
    """A lone row whose batch read failed (the plan may have evaluated other rows) is probed per key
    before it is failed: read that way it succeeds."""
    reader, shaper = _reader(lambda keys, one: None if one else ValueError("the plan read another row"))
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION]), _rows(1), outcome)  # type: ignore[arg-type]
    assert [i.row.id for i in items] == [0] and not outcome.failed
    assert shaper.reads == [(["0"], False), (["0"], True)]


def test_a_loader_error_that_is_not_postgres_fails_its_row_alone():
    reader, _ = _reader(lambda keys, one: OverflowError("date out of range") if "2" in keys else None)
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION]), _rows(4), outcome)  # type: ignore[arg-type]
    assert [i.row.id for i in items] == [0, 1, 3]
    assert outcome.failed == [(_rows(4)[2], "cannot read row 2 of public.products: OverflowError: date out of range")]


@pytest.mark.parametrize("sqlstate", ["42P01", "42703", "42501", "0A000"])
def test_an_error_about_the_table_retries_its_rows_and_no_other_table(sqlstate):
    other = ("brands", "brands", "id", "bigint", None, None, None, "public.brands", None, None)
    error = psycopg.errors.lookup(sqlstate)("relation is gone")

    def raises(keys: list[str], one: bool) -> Exception | None:
        return error if keys[0].startswith("p") else None

    reader, shaper = _reader(raises)
    rows = [SyncItem(n, "products", f"p{n}", "UPDATE", 1, NOW) for n in range(3)] + _rows(2, "brands")
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION, other]), rows, outcome)  # type: ignore[arg-type]
    assert [i.row.table_name for i in items] == ["brands", "brands"]
    assert [r.record_id for r, _ in outcome.retry] == ["p0", "p1", "p2"]
    assert outcome.retry[0][1] == "cannot read public.products for table products: relation is gone"
    assert not outcome.failed
    assert len(shaper.reads) == 2, "one read per table: the table's error is not bisected"


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection"),
        psycopg.InterfaceError("connection already closed"),
        psycopg.errors.lookup("40P01")("deadlock detected"),
        psycopg.errors.lookup("57014")("canceling statement"),
        psycopg.errors.lookup("53200")("out of memory"),
    ],
)
def test_a_lost_connection_or_a_transient_error_gives_the_claim_back(error):
    reader, shaper = _reader(lambda keys, one: error)
    with pytest.raises(type(error)):
        reader.items(FakeConnection([REGISTRATION]), _rows(4), Outcome())  # type: ignore[arg-type]
    assert len(shaper.reads) == 1, "not bisected"


def test_rows_of_a_table_that_is_not_watched_fail():
    reader, _ = _reader(lambda keys, one: None)
    outcome = Outcome()
    items = reader.items(FakeConnection([REGISTRATION]), _rows(2, "orders") + _rows(1), outcome)  # type: ignore[arg-type]
    assert [i.row.table_name for i in items] == ["products"]
    assert [(r.table_name, reason) for r, reason in outcome.failed] == [
        ("orders", "table orders is not watched (no enabled row in algolia_index_config)")
    ] * 2


def test_the_registrations_are_read_once_and_refreshed_for_an_unknown_table():
    conn = FakeConnection([REGISTRATION])
    reader, _ = _reader(lambda keys, one: None)
    reader.items(conn, _rows(2), Outcome())  # type: ignore[arg-type]
    reader.items(conn, _rows(2), Outcome())  # type: ignore[arg-type]
    assert conn.queries == 1
    reader.items(conn, _rows(1, "orders"), Outcome())  # type: ignore[arg-type]
    assert conn.queries == 2
    assert reader.index_of("products") == "dev_products_idx" and reader.index_of("orders") == "orders"
