"""Index administration over the algoliasearch client's transport: settings, copy and move, tasks,
deletion, each answer checked against the shape Algolia's API documents for it.

As `browse.Browser` does for pages, the calls go through the client's own transport (the configured
hosts, the host retry strategy, timeouts, authentication, the user agent) and each answer is parsed
with orjson. Two reasons not to use the generated `SearchClientSync`:

* A 2xx answer that is not Algolia's (a proxy's page, a body that is not JSON, an object without the
  documented `taskID`/`updatedAt`) made the client raise a JSON or pydantic error, which the commands
  printed as a traceback. Here it is an `AlgoliaError` saying so, which `failures.algolia_failure`
  turns into one line and exit 4, as for any other answer that is not Algolia's.
* The client's module imports every model of the API: ~0.4 s of CPU per command on a fast machine,
  most of a `reindex` of a small table.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson
from algoliasearch.http.exceptions import RequestException
from algoliasearch.http.request_options import RequestOptions
from algoliasearch.http.transporter_sync import TransporterSync
from algoliasearch.http.verb import Verb

from workerpool.config import Settings
from workerpool.runtime.algolia import AlgoliaError, TaskNotPublished, build_config

FENCE_OBJECT_ID = "workerpool-fence"  # never created (see Admin.fence)
TASK_WAIT_S = 3600.0  # how long a command waits for one task before it gives up, saying so
POLL_MAX_S = 2.0


def _start(raw: str | bytes | None) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw or ""
    return " ".join(text.split())[:80] or "empty"


def _path(template: str, *names: str | int) -> str:
    return template.format(*(quote(str(n), safe="") for n in names))


class Admin:
    """Settings, copy/move, tasks and deletion of indices. One per command; close it when done."""

    def __init__(self, settings: Settings) -> None:
        self._config = build_config(settings)
        self._config.set_default_hosts()
        self._transporter = TransporterSync(self._config)

    def _call(
        self,
        verb: Verb,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        *,
        read: bool = False,
        required: dict[str, type | tuple[type, ...]] | None = None,
    ) -> dict[str, Any]:
        """One request; the answer as a dict with each of `required`'s keys of its type, else AlgoliaError."""
        data = orjson.dumps(body).decode() if body is not None else None
        options = RequestOptions(self._config).merge(query_parameters=query, data=data)
        try:
            response = self._transporter.request(
                verb=verb, path=path, request_options=options, use_read_transporter=read
            )
        except ValueError:  # the transport parses an error's body for its message: not Algolia's JSON
            raise AlgoliaError(f"an error answer to {verb.value} {path} that is not Algolia's (not JSON)") from None
        not_algolia = f"a 2xx answer to {verb.value} {path} that is not Algolia's"
        try:
            answer = orjson.loads(response.raw_data or "")
        except orjson.JSONDecodeError:
            raise AlgoliaError(f"{not_algolia}: not JSON ({_start(response.raw_data)})") from None
        if not isinstance(answer, dict):
            raise AlgoliaError(f"{not_algolia}: not an object ({_start(response.raw_data)})")
        for key, kind in (required or {}).items():
            value = answer.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AlgoliaError(f"{not_algolia}: no {key} ({_start(orjson.dumps(answer))})")
        return answer

    def get_settings(self, index: str) -> dict[str, Any] | None:
        """The index's settings (getSettings), or None when the index does not exist."""
        try:
            return self._call(Verb.GET, _path("/1/indexes/{}/settings", index))
        except RequestException as exc:
            if exc.status_code == 404:
                return None
            raise

    def exists(self, index: str) -> bool:
        return self.get_settings(index) is not None

    def set_settings(self, index: str, settings: dict[str, Any], *, forward_to_replicas: bool = False) -> int:
        """setSettings; returns its taskID. `forward_to_replicas` applies them to the replicas too."""
        query = {"forwardToReplicas": "true"} if forward_to_replicas else None
        answer = self._call(
            Verb.PUT,
            _path("/1/indexes/{}/settings", index),
            settings,
            query,
            required={"taskID": int, "updatedAt": str},
        )
        task: int = answer["taskID"]
        return task

    def operation(self, index: str, operation: str, destination: str, scope: list[str] | None = None) -> int:
        """operationIndex (`copy` or `move` of `index` to `destination`); returns its taskID."""
        body: dict[str, Any] = {"operation": operation, "destination": destination}
        if scope is not None:
            body["scope"] = scope
        answer = self._call(
            Verb.POST, _path("/1/indexes/{}/operation", index), body, required={"taskID": int, "updatedAt": str}
        )
        task: int = answer["taskID"]
        return task

    def delete_index(self, index: str) -> int:
        """deleteIndex; returns its taskID."""
        answer = self._call(Verb.DELETE, _path("/1/indexes/{}", index), required={"taskID": int, "deletedAt": str})
        task: int = answer["taskID"]
        return task

    def fence(self, index: str) -> int:
        """A write that changes nothing (`partialUpdateObjectNoCreate` of an objectID with no attribute:
        it never creates a record and leaves an existing one as it is); returns its taskID. Algolia
        publishes an index's tasks in order, so once this one is published, so is every write the
        index accepted before it."""
        request = {"action": "partialUpdateObjectNoCreate", "indexName": index, "body": {"objectID": FENCE_OBJECT_ID}}
        answer = self._call(Verb.POST, "/1/indexes/*/batch", {"requests": [request]}, required={"taskID": dict})
        task = answer["taskID"].get(index)
        if type(task) is not int:
            raise AlgoliaError(f"a 2xx answer to the fence on {index} that is not Algolia's: no taskID for it")
        return task

    def task_published(self, index: str, task_id: int) -> bool:
        """getTask: whether `task_id` on `index` is published."""
        answer = self._call(
            Verb.GET, _path("/1/indexes/{}/task/{}", index, task_id), read=True, required={"status": str}
        )
        return bool(answer["status"] == "published")

    def wait_published(self, index: str, task_id: int, timeout_s: float = TASK_WAIT_S) -> None:
        """Return once `task_id` on `index` is published; TaskNotPublished after `timeout_s`.

        A plain polling loop instead of the client's `wait_for_task`: that helper recurses once per
        poll and gives up after 100 polls (about seven minutes), shorter than a large index's move
        can take."""
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while not self.task_published(index, task_id):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskNotPublished(
                    f"Algolia has not published task {task_id} on {index} after {timeout_s:.0f}s "
                    "(it may still complete)"
                )
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, POLL_MAX_S)

    def close(self) -> None:
        self._transporter.close()
