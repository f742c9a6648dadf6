"""Walking every record of an index, one page in memory at a time.

The algoliasearch client's `browse_objects` helper recurses once per page and keeps every page it
fetched alive until the walk ends: memory grows with the index and past ~1,000 pages (Algolia pages
hold at most 1,000 hits) it raises RecursionError. `iter_pages` is a plain loop over the client's
single-page browse call instead, following the cursor; it keeps the client's hosts, host retries,
timeouts and authentication, and parses each page's JSON with orjson (no model per hit). A caller
that consumes a page before asking for the next holds one page at a time, however large the index.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import orjson

MAX_PAGE = 1000  # the largest page Algolia serves
THROTTLE_ATTEMPTS = 8  # 429s in a row before the walk gives up

# What a browse hit may carry besides the record itself (the client's `Hit` model declares them).
HIT_EXTRAS = ("_highlightResult", "_snippetResult", "_rankingInfo", "_distinctSeqID")


def iter_pages(client: Any, index: str, *, page_size: int = MAX_PAGE,
               attributes: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """The hits of every page of `index`, page by page (nothing when the index does not exist).

    `page_size` is the `hitsPerPage` of each request (1 to 1,000); `attributes` is
    `attributesToRetrieve` (Algolia's syntax: `["*", "-_version"]` is everything but `_version`).
    Errors other than "no such index" on the first page propagate as the client raises them.
    """
    from algoliasearch.http.exceptions import RequestException

    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size {page_size} is not valid; expected 1 to {MAX_PAGE}")
    params: dict[str, Any] = {"hitsPerPage": page_size}
    if attributes is not None:
        params["attributesToRetrieve"] = attributes
    cursor: str | None = None
    while True:
        body = params if cursor is None else {**params, "cursor": cursor}
        try:
            page = _fetch(client, index, body)
        except RequestException as exc:
            if exc.status_code == 404 and cursor is None:
                return
            raise
        yield page.get("hits") or []
        cursor = page.get("cursor")
        if not cursor:
            return


def _fetch(client: Any, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """One browse page as parsed JSON; a 429 waits and asks again (the client's own 429 retries are off)."""
    from algoliasearch.http.exceptions import RequestException

    delay = 0.5
    for attempt in range(1, THROTTLE_ATTEMPTS + 1):
        try:
            response = client.browse_with_http_info(index, body)
        except RequestException as exc:
            if exc.status_code != 429 or attempt == THROTTLE_ATTEMPTS:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        return orjson.loads(response.raw_data or "{}")
    raise AssertionError("unreachable")
