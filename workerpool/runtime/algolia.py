"""Talking to Algolia through the algoliasearch client's own transport.

The worker hands the transport a body that orjson already serialized (the client's default path runs
`json.dumps(body_serializer(...))` over every object in Python), and keeps the transport's host list,
host retry strategy and timeouts. Throttling belongs to the worker, not the transport: the transport's
own 429 retries are turned off (`max_rate_limit_retries = 0`) so the two layers never multiply, and a
response hook keeps the `Retry-After` header that the client's exception would otherwise drop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import requests
from algoliasearch.http.exceptions import (
    AlgoliaUnreachableHostException,
    RequestException,
)
from algoliasearch.http.hosts import Host, HostsCollection
from algoliasearch.http.request_options import RequestOptions
from algoliasearch.http.transporter_sync import TransporterSync
from algoliasearch.http.verb import Verb
from algoliasearch.search.config import SearchConfig
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from workerpool import __version__
from workerpool.config import Settings
from workerpool.observability import metrics


class AlgoliaError(Exception):
    """A failed request, classified for the worker: throttled, rejected (permanent) or retryable."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def throttled(self) -> bool:
        return self.status == 429

    @property
    def auth(self) -> bool:
        """Algolia refused the credentials: nothing will be accepted until the key works again."""
        return self.status in (401, 403) or "invalid application-id or api key" in self.message.lower()

    @property
    def permanent(self) -> bool:
        """A 4xx other than 429 (and 408 timeouts): the request itself is wrong; resending won't help."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)


class TaskNotPublished(Exception):
    """Algolia has not published a task within the wait; it may still complete. (Raised by the commands'
    `ops.admin.Admin.wait_published`; defined beside AlgoliaError so that `failures` reads both from here.)"""


def build_config(settings: Settings) -> SearchConfig:
    """A client config for the configured app, pointed at ALGOLIA_HOSTS when set, with workerpool's
    own user-agent segment."""
    config = SearchConfig(settings.algolia_app_id, settings.algolia_admin_key)
    # Algolia asks integrations to name themselves in the user agent, so its support can tell our
    # traffic apart: `…; workerpool (0.1.0)` on every request (worker batches, browse, settings, tasks).
    config.add_user_agent("workerpool", __version__)
    if settings.algolia_hosts:
        hosts = []
        for base in settings.algolia_hosts:
            parts = urlsplit(base)
            hosts.append(Host(url=parts.hostname or "", scheme=parts.scheme, port=parts.port))
        config.hosts = HostsCollection(hosts)
    config.max_rate_limit_retries = 0
    # An Algolia call must end well inside the lease, across every host the transport may try.
    host_count = len(settings.algolia_hosts) or 4
    config.write_timeout = max(1000, min(30_000, settings.lease_timeout // (2 * host_count)))
    config.read_timeout = max(1000, min(5000, config.write_timeout))
    return config


class AnswerCutOff(Exception):
    """An answer that took longer than ALGOLIA_REQUEST_DEADLINE or grew past ALGOLIA_MAX_ANSWER_BYTES."""


class BoundedSession(requests.Session):
    """A session that reads every answer under a deadline and a size cap.

    requests' timeout applies per socket read: an answer that trickles a byte at a time never trips
    it, and a huge one is read whole into memory. This session streams the body itself, one socket
    read at a time (`read1`), and gives up (AnswerCutOff, the connection discarded) once the request
    has taken `deadline_s` (checked after each read, so at most one read timeout later) or the answer
    passes `max_bytes`.
    """

    def __init__(self, deadline_s: float, max_bytes: int) -> None:
        super().__init__()
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        started = time.monotonic()
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        chunks, size = [], 0
        try:
            while True:
                chunk = response.raw.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise AnswerCutOff(f"an answer of more than {self.max_bytes} bytes (ALGOLIA_MAX_ANSWER_BYTES)")
                if time.monotonic() - started > self.deadline_s:
                    raise AnswerCutOff(
                        f"an answer still arriving after {self.deadline_s:g}s (ALGOLIA_REQUEST_DEADLINE)"
                    )
                chunks.append(chunk)
        except BaseException:
            response.close()  # not consumed: the connection is closed, not reused
            raise
        response._content = b"".join(chunks)
        response._content_consumed = True
        response.close()  # consumed: the connection goes back to the pool
        return response


class Sender:
    """Sends pre-serialized multipleBatch bodies. One per worker process (created after fork)."""

    def __init__(self, settings: Settings) -> None:
        self._config = build_config(settings)
        self._config.set_default_hosts()
        self._transporter = TransporterSync(self._config)
        self._local = threading.local()
        session = BoundedSession(settings.algolia_request_deadline / 1000, settings.algolia_max_answer_bytes)
        session.mount("https://", HTTPAdapter(max_retries=Retry(connect=0)))
        session.hooks["response"].append(self._remember)
        self._transporter._session = session  # the transport creates one lazily; we give it ours

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        if response.status_code == 429:
            self._local.retry_after = _parse_retry_after(response.headers.get("Retry-After"))

    def _revive_hosts(self) -> None:
        # The client marks a host down for 5 minutes after a 5xx or network error. With every host
        # down it would fail at once until then; the worker's own backoff is the better judge.
        hosts: Sequence[Host] = self._config.hosts.write() if self._config.hosts else []
        if hosts and not any(h.up for h in hosts):
            for host in hosts:
                host.reset()

    def send_batch(self, body: bytes, count: int | None = None) -> dict[str, Any]:
        """POST /1/indexes/*/batch with an already serialized body of `count` operations; raises
        AlgoliaError, also for a 2xx that is not Algolia's answer to it (a proxy's page, a wrong
        host): only a `taskID` per index and an `objectIDs` entry per operation, as the API's
        multipleBatchResponse has them, acknowledges anything. Counted in
        `workerpool_algolia_requests_total` by outcome, so that requests per record can be computed."""
        try:
            answer = self._request("/1/indexes/*/batch", body)
            problem = _not_a_batch_answer(answer, count)
            if problem:
                raise AlgoliaError(f"a 2xx answer that is not Algolia's: {problem}")
        except AlgoliaError as exc:
            metrics.record_request("throttled" if exc.throttled else "failed")
            raise
        metrics.record_request("accepted")
        return answer

    def task_status(self, index: str, task_id: int) -> str:
        """GET /1/indexes/{index}/task/{taskID}: `published` or `notPublished` (AlgoliaError otherwise)."""
        answer = self._request(f"/1/indexes/{quote(index, safe='')}/task/{int(task_id)}", None)
        return str(answer.get("status", ""))

    def _request(self, path: str, body: bytes | None) -> dict[str, Any]:
        self._revive_hosts()
        self._local.retry_after = None
        options = RequestOptions(self._config).merge(data=body)  # type: ignore[arg-type]
        try:
            response = self._transporter.request(
                verb=Verb.POST if body is not None else Verb.GET,
                path=path,
                request_options=options,
                use_read_transporter=False,
            )
        except RequestException as exc:
            if exc.status_code in (401, 403):
                metrics.record_auth_error()
            retry_after = getattr(self._local, "retry_after", None) if exc.status_code == 429 else None
            raise AlgoliaError(str(exc.message), exc.status_code, retry_after) from None
        except AlgoliaUnreachableHostException:
            raise AlgoliaError("Algolia hosts unreachable (timeouts, network errors or 5xx on every host)") from None
        except requests.RequestException as exc:
            raise AlgoliaError(f"network error: {type(exc).__name__}: {exc}") from None
        except AnswerCutOff as exc:
            raise AlgoliaError(f"cut off {exc}") from None
        except ValueError:
            # The transport parses an error's body for its message: this one was not Algolia's JSON.
            raise AlgoliaError("an error answer that is not Algolia's (its body is not JSON)") from None
        try:
            answer = orjson.loads(response.raw_data or "")
        except orjson.JSONDecodeError:
            raise AlgoliaError(f"a 2xx answer that is not Algolia's: not JSON ({_start(response.raw_data)})") from None
        if not isinstance(answer, dict):
            raise AlgoliaError(f"a 2xx answer that is not Algolia's: not an object ({_start(response.raw_data)})")
        return answer

    def close(self) -> None:
        self._transporter.close()


def _not_a_batch_answer(answer: dict[str, Any], count: int | None) -> str | None:
    """What makes `answer` other than a multipleBatchResponse for `count` operations, or None."""
    tasks, oids = answer.get("taskID"), answer.get("objectIDs")
    if not isinstance(tasks, dict) or not tasks or not all(type(t) is int for t in tasks.values()):
        return f"no taskID per index ({_start(orjson.dumps(answer).decode())})"
    if not isinstance(oids, list):
        return "no objectIDs list"
    if count is not None and len(oids) != count:
        return f"{len(oids)} objectIDs for {count} operations"
    return None


def _start(text: str | bytes | None) -> str:
    """The first characters of an answer, on one line, for an error message."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join((text or "").split())[:80] or "empty"


def _parse_retry_after(raw: str | None) -> float:
    try:
        return max(0.0, float(raw)) if raw else 1.0
    except ValueError:
        return 1.0
