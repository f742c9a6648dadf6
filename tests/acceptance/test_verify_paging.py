"""verify over an index of more pages than Python's recursion limit, in flat memory.

An index past ~1,000 browse pages broke the algoliasearch `browse_objects` helper (one recursion per
page, every page kept alive). A million records are too slow for a test, so the page is made small
instead (hitsPerPage=2 through the emulator): a few thousand records are more than 1,000 pages.
verify runs in its own process (the in-process emulator's allocations must not count) under
tracemalloc, and so does the index reader's loop (verify runs it in a child process); neither peak
may grow with the index.

Also here: the page loop's edges (no such index, excluded attributes, throttling), the content
hash's shortcut against its definition, and hashes reaching Postgres intact through COPY.
"""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testing import API_KEY, APP_ID, drain
from workerpool import config
from workerpool.emulator import make_client
from workerpool.ops.browse import Browser, iter_pages

PAGE = 2
# Table rows read per query. Up to four chunks are alive at once (two waiting in the read-ahead
# queue, one being put, one being built) or as few as one, depending on which side is faster in that
# run: at 100 rows (~85 kB of rows each) that timing alone moved the peak by 180 kB; at 20 it is a
# few tens of kB, below this test's margin, while a map held over the whole index is not.
CHUNK = 20

# As the CLI runs it (its connection, its session settings); warmed up once (imports, prepared
# statements), then a second run traced.
_TRACED_VERIFY = """
import json, os, sys, tracemalloc
from workerpool import config
from workerpool.db.connection import connect
from workerpool.ops.index_reader import browse_hashes
from workerpool.ops.verify import verify

settings = config.load(environ=dict(os.environ), env_file=None)
sizes = {"page_size": int(sys.argv[1]), "chunk_size": int(sys.argv[2])}
with connect(settings.database_url, purpose="verify") as conn:
    verify(settings, conn, "products", **sizes, stream=open("/dev/null", "w"))
    tracemalloc.start()
    report = verify(settings, conn, "products", **sizes, stream=open("/dev/null", "w"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
# The index reader's loop (verify runs it in a child process), here in this one, traced alike.
browse_hashes(settings, "products", sizes["page_size"], lambda n, text: None)
tracemalloc.start()
browse_hashes(settings, "products", sizes["page_size"], lambda n, text: None)
reader_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"peak": peak, "reader_peak": reader_peak, "recursion_limit": sys.getrecursionlimit(),
                  **report.as_dict()}))
"""


def _traced_verify(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _TRACED_VERIFY, str(PAGE), str(CHUNK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


def _add_products(db: psycopg.Connection, first: int, last: int) -> None:
    db.execute(
        "INSERT INTO products (id, name, price, stock, tags, attrs) "
        "SELECT g, 'item ' || g, g * 1.25, g %% 7, ARRAY['t' || g %% 5], jsonb_build_object('n', g) "
        "FROM generate_series(%s::int, %s::int) g",
        (first, last),
    )


@pytest.mark.slow
def test_verify_walks_more_pages_than_the_recursion_limit_in_flat_memory(products, env, emulator):
    db = products
    _add_products(db, 1, 500)
    drain(env, "--batch-size", "500")
    small = _traced_verify(env)
    assert (small["records"], small["drift"]) == (500, 0), small

    _add_products(db, 501, 3000)
    drain(env, "--batch-size", "1000")
    client = make_client(emulator.url, APP_ID, API_KEY)
    client.delete_object("products", "2999")  # missing
    client.partial_update_object("products", "1234", {"name": "tampered"})  # stale
    client.save_object("products", {"objectID": "77777", "name": "ghost"})  # extra
    big = _traced_verify(env)

    pages = (big["records"] + PAGE - 1) // PAGE
    assert pages > big["recursion_limit"], (
        pages,
        big["recursion_limit"],
    )  # the client's browse helper recurses once per page
    assert (big["rows"], big["records"]) == (3000, 3000)
    assert (big["missing"], big["extra"], big["stale"], big["in_flight"]) == (1, 1, 1, 0)
    assert big["samples"] == {"missing": ["2999"], "extra": ["77777"], "stale": ["1234"]}
    # Six times the records (and pages) and the peak stays put: a held {objectID: hash} of 3,000
    # records alone is ~400 kB, one page and one chunk are a few kB.
    assert big["peak"] < small["peak"] + 64 * 1024, (small["peak"], big["peak"])
    assert big["reader_peak"] < small["reader_peak"] + 64 * 1024, (small["reader_peak"], big["reader_peak"])


def _browser(env: dict[str, str]) -> Browser:
    return Browser(config.load(environ=env, env_file=None))


def test_browsing_an_index_that_does_not_exist_yields_nothing(env):
    browser = _browser(env)
    assert list(iter_pages(browser, "no-such-index", page_size=PAGE)) == []
    with pytest.raises(ValueError, match="page_size 0 is not valid"):
        next(iter_pages(browser, "no-such-index", page_size=0))


def test_browse_pages_leave_out_excluded_attributes(env, emulator):
    client = make_client(emulator.url, APP_ID, API_KEY)
    client.save_objects("things", [{"objectID": str(i), "a": i, "_version": 7} for i in range(5)], wait_for_tasks=True)
    pages = list(iter_pages(_browser(env), "things", page_size=PAGE, attributes=["*", "-_version"]))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted((h["objectID"], h["a"]) for p in pages for h in p) == [(str(i), i) for i in range(5)]
    assert not any("_version" in h for p in pages for h in p)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**54), 2**54).map(float)
    | st.sampled_from([0.0, -0.0, 15.0, 1e15, 2.0**53, 1e16, "1.0", "v2.0,"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(_json)
def test_content_hash_equals_the_hash_of_the_canonical_form(value):
    import orjson
    import xxhash

    from workerpool.ops.hashes import canonical, content_hash

    expected = xxhash.xxh3_128_digest(orjson.dumps(canonical(value), option=orjson.OPT_SORT_KEYS))
    assert content_hash(value) == expected


def test_hashes_reach_the_database_intact_whatever_the_objectid(db):
    from workerpool.ops.hashes import copy_rows

    db.execute("CREATE TEMPORARY TABLE hashes (k text, hash bytea)")
    keys = ["1", "tab\there", "line\nbreak", "cr\r", "back\\slash", "\\N", "\\x00", "é✓ 🙂", ""]
    rows = [(k, bytes([i, 0, 255])) for i, k in enumerate(keys)] + [("unbuildable", None)]
    copy_rows(db, "hashes", rows)
    assert db.execute("SELECT k, hash FROM hashes").fetchall() == rows


def test_a_throttled_browse_waits_and_goes_on(env, emulator):
    client = make_client(emulator.url, APP_ID, API_KEY)
    client.save_objects("things", [{"objectID": str(i)} for i in range(5)], wait_for_tasks=True)
    emulator.inject_fault(status=429, retry_after=0, count=2)
    pages = list(iter_pages(_browser(env), "things", page_size=PAGE))
    assert sorted(h["objectID"] for p in pages for h in p) == [str(i) for i in range(5)]
    assert emulator.stats()["rejected"]["429"] == 2
