"""Serialization per record: workerpool's orjson path (`records.to_record`, `records.dumps` into an
`updateObject` action, `batch_body`; and, as a third line, everything the worker does per record through its own
`Shaper.item`: record, orjson body, hashes and versioned action) against the algoliasearch client's
default path (`json.dumps(body_serializer(...))`), on the same 1,000 realistic product rows as psycopg
reads them (Decimal, datetime, list, dict).

The client's default path cannot serialize a datetime at all (body_serializer calls `.to_dict()` on
it), so its input gets the timestamps as ISO strings beforehand; that conversion is not timed, which
favours the client path."""

from __future__ import annotations

import datetime as dt
import json

import orjson
import pytest
from psycopg.rows import dict_row

from benchmarks import _bench
from workerpool.capture.model import Watched
from workerpool.config import Settings
from workerpool.runtime import records
from workerpool.runtime.model import Outcome, SyncItem
from workerpool.runtime.shaping import Current, Shaper

OID = "__workerpool_object_id"  # the worker's key column alias (workerpool.runtime.shaping.OBJECT_ID_COLUMN)
INDEX = "products"


def _rows(db) -> list[dict]:
    _bench.create_products(db)
    _bench.fill_products(db, _bench.SERIALIZATION_RECORDS)
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT s.id::text AS {OID}, s.* FROM products s ORDER BY id").fetchall()


def orjson_path(rows: list[dict]) -> bytes:
    head = b'{"action":"updateObject","indexName":' + orjson.dumps(INDEX) + b',"body":'
    columns = tuple(k for k in rows[0] if k != OID)
    return records.batch_body(
        head + records.dumps(records.to_record(columns, (r[c] for c in columns), r[OID])) + b"}" for r in rows
    )


def worker_path(rows: list[dict]) -> bytes:
    """What the worker does per record (`Shaper.item` on the rows as `Shaper.load_rows` hands them
    over, without the database): record, orjson body, content hash and versioned action."""
    columns = tuple(k for k in rows[0] if k != OID)
    current = Current(
        columns,
        {r[OID]: (1, None, None, *(r[c] for c in columns)) for r in rows},
        records.shape_hash(dict.fromkeys([*columns, records.OBJECT_ID])),
    )
    shaper, watched, outcome = Shaper(Settings()), Watched("products", INDEX, "id", "bigint"), Outcome()
    items = [
        shaper.item(watched, INDEX, SyncItem(0, "products", r[OID], "INSERT", 1, None), current, outcome) for r in rows
    ]
    assert not outcome.failed, outcome.failed
    return records.batch_body(i.body for i in items)


def client_default_path(rows: list[dict]) -> str:
    from algoliasearch.http.serializer import body_serializer

    requests = [
        {
            "action": "updateObject",
            "indexName": INDEX,
            "body": {**{k: v for k, v in r.items() if k != OID}, "objectID": r[OID]},
        }
        for r in rows
    ]
    return json.dumps(body_serializer({"requests": requests}))


def _iso(rows: list[dict]) -> list[dict]:
    return [{k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v) for k, v in r.items()} for r in rows]


PATHS = {
    "workerpool-orjson": orjson_path,
    "algoliasearch-json": client_default_path,
    "workerpool-worker-path": worker_path,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_serialization(benchmark, path, db):
    rows = _rows(db)
    same = orjson.loads(orjson_path(rows)) == json.loads(client_default_path(_iso(rows)))
    assert same, "the two paths must produce the same JSON"
    data = _iso(rows) if path == "algoliasearch-json" else rows
    fn = PATHS[path]
    body = fn(data)
    benchmark.group = "serialization"
    benchmark.pedantic(fn, args=(data,), rounds=5 if _bench.SMOKE else 60, iterations=1, warmup_rounds=2)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "records": len(rows),
            "us_per_record": round(median / len(rows) * 1e6, 3),
            "records_per_s": round(len(rows) / median, 1),
            "bytes_per_record": round(len(body) / len(rows), 1),
        }
    )
