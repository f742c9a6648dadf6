"""Walking every record of an index, one page in memory at a time.

The algoliasearch client's `browse_objects` helper recurses once per page and keeps every page it
fetched alive until the walk ends: memory grows with the index and past ~1,000 pages (Algolia pages
hold at most 1,000 hits) it raises RecursionError. `iter_pages` is a plain loop over single-page
browse calls instead, following the cursor. The calls go through the client's own transport (as the
worker's `Sender` does: the configured hosts, the host retry strategy, timeouts, authentication)
and each page's JSON is parsed with orjson, with no model per hit; the client's search module (~0.5 s
of imports) is not needed at all. A caller that consumes a page before asking for the next holds one
page at a time, however large the index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
from algoliasearch.http.exceptions import RequestException
from algoliasearch.http.request_options import RequestOptions
from algoliasearch.http.transporter_sync import TransporterSync
from algoliasearch.http.verb import Verb

from workerpool.config import Settings
from workerpool.runtime.algolia import AlgoliaError, build_config

MAX_PAGE = 1000  # the largest page Algolia serves
THROTTLE_ATTEMPTS = 8  # 429s in a row before the walk gives up

# What a browse hit may carry besides the record itself (the client's `Hit` model declares them).
HIT_EXTRAS = ("_highlightResult", "_snippetResult", "_rankingInfo", "_distinctSeqID")


class Browser:
    """Single browse pages over the client's transport (read hosts). Close it when done."""

    def __init__(self, settings: Settings) -> None:
        self._config = build_config(settings)
        self._config.set_default_hosts()
        self._transporter = TransporterSync(self._config)

    def page(self, index: str, params: dict[str, Any]) -> dict[str, Any]:
        """`POST /1/indexes/{index}/browse` with `params` as the body; the answer as parsed JSON.

        Raises the client's `RequestException` (a 404 for a missing index) or
        `AlgoliaUnreachableHostException`. A 429 waits and asks again: the client's own 429
        retries are off in this configuration (throttling belongs to the caller).
        """
        path = f"/1/indexes/{quote(index, safe='')}/browse"
        body = orjson.dumps(params).decode()
        delay = 0.5
        for attempt in range(1, THROTTLE_ATTEMPTS + 1):
            options = RequestOptions(self._config).merge(data=body)
            try:
                response = self._transporter.request(
                    verb=Verb.POST, path=path, request_options=options, use_read_transporter=True
                )
            except RequestException as exc:
                if exc.status_code != 429 or attempt == THROTTLE_ATTEMPTS:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            return _browse_answer(path, response.raw_data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._transporter.close()


def _browse_answer(path: str, raw: str | None) -> dict[str, Any]:
    """A browse answer as its documented shape (a `hits` list, a string `cursor` if any), else an
    AlgoliaError: a proxy's page or an empty object is not an empty index."""
    not_algolia = f"a 2xx answer to POST {path} that is not Algolia's"
    try:
        answer = orjson.loads(raw or "")
    except orjson.JSONDecodeError:
        raise AlgoliaError(f"{not_algolia}: not JSON ({' '.join((raw or '').split())[:80] or 'empty'})") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("hits"), list):
        raise AlgoliaError(f"{not_algolia}: no hits list ({' '.join(str(raw).split())[:80]})")
    if not isinstance(answer.get("cursor", ""), str):
        raise AlgoliaError(f"{not_algolia}: a cursor that is not a string")
    return answer


def iter_pages(
    browser: Browser, index: str, *, page_size: int = MAX_PAGE, attributes: list[str] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The hits of every page of `index`, page by page (nothing when the index does not exist).

    `page_size` is the `hitsPerPage` of each request (1 to 1,000); `attributes` is
    `attributesToRetrieve` (Algolia's syntax: `["*", "-_version"]` is everything but `_version`).
    Errors other than "no such index" on the first page propagate as the transport raises them.
    """
    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size {page_size} is not valid; expected 1 to {MAX_PAGE}")
    params: dict[str, Any] = {"hitsPerPage": page_size}
    if attributes is not None:
        params["attributesToRetrieve"] = attributes
    cursor: str | None = None
    while True:
        try:
            page = browser.page(index, params if cursor is None else {**params, "cursor": cursor})
        except RequestException as exc:
            if exc.status_code == 404 and cursor is None:
                return
            raise
        yield page.get("hits") or []
        cursor = page.get("cursor")
        if not cursor:
            return
