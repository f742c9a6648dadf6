"""How records go to Algolia: in requests as large as MAX_REQUEST_BYTES allows, and a request that
Algolia rejects as wrong (a permanent 4xx) split in halves until the records at fault fail alone.

The worker and `reindex --atomic` both send this way; what "sent" and "failed" mean to each is the
callables they pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from workerpool.runtime.algolia import AlgoliaError

T = TypeVar("T")


def by_request_size(items: Sequence[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive groups of `items` whose request bodies stay within `limit` bytes (one item at least);
    a group is split only where the limit forces it."""
    group: list[T] = []
    total = 0
    for item in items:
        n = size(item) + 1  # its separator in the batch body
        if group and total + n > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += n
    if group:
        yield group


def send_splitting(send: Callable[[list[T]], None], group: list[T], reject: Callable[[T, AlgoliaError], None]) -> None:
    """`send(group)`; when Algolia rejects the request as wrong, send each half again, down to single
    records, which `reject` with the error. Throttling, refused credentials and transient errors are
    not the records' fault: they propagate to the caller unsplit."""
    try:
        send(group)
    except AlgoliaError as exc:
        if not exc.permanent or exc.auth:
            raise
        if len(group) == 1:
            reject(group[0], exc)
            return
        middle = len(group) // 2
        send_splitting(send, group[:middle], reject)
        send_splitting(send, group[middle:], reject)
