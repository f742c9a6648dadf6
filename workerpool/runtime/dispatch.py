"""The HTTP half of a batch, run on a worker's sender threads: send its records, and decide what
Algolia's answer means for each row.

Sent records are done; records Algolia rejects as wrong fail alone (`sending.send_splitting`);
a 429 halves the worker's claim size (`claim_size.ClaimSize`) and gives the rest back unspent; a
refused key gives everything back unspent and waits (a rotated key starts working without a
restart); an outage of Algolia (5xx, network errors, timeouts, answers that are not Algolia's)
gives the rest back unspent, due after a backoff that grows with the outage. Before each request
the caller's `ensure_lease` refuses to send under a lease that is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from workerpool.config import Settings
from workerpool.logs import one_line
from workerpool.observability import metrics
from workerpool.runtime import records
from workerpool.runtime.algolia import AlgoliaError, Sender
from workerpool.runtime.claim_size import ClaimSize
from workerpool.runtime.model import SKIP, Batch, Item, Outcome
from workerpool.runtime.queue import compute_backoff
from workerpool.runtime.searchable import TaskTracker
from workerpool.runtime.sending import by_request_size, send_splitting

log = logging.getLogger(__name__)

AUTH_RETRY_MAX_S = 30.0  # while Algolia refuses the key: the longest wait before trying it again
OUTAGE_PAUSE_MAX_S = 5.0  # while Algolia is unreachable: the longest pause before a worker's next request
OUTAGE_RETRY_MAX_MS = 30_000  # ...and the longest its rows wait: they sync within this of Algolia's return


class LeaseLost(Exception):
    """This worker's claim token no longer holds its rows: stop touching them."""


class _AuthRejected(Exception):
    """Algolia answered 401/403: the credentials are wrong or revoked, not the records."""

    def __init__(self, error: AlgoliaError) -> None:
        super().__init__(error.message)
        self.error = error


class _Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled for {retry_after}s")
        self.retry_after = retry_after


class Dispatcher:
    """One worker's sending policy. The sends report 429s and their absence to the worker's `ClaimSize`
    (made by `AlgoliaService`, which also reports each claim's fill to it)."""

    def __init__(
        self,
        settings: Settings,
        number: int,
        sender: Sender,
        ensure_lease: Callable[[Batch], None],
        out_of_time: Callable[[], bool],
        sleep: Callable[[float], None],
        claim_size: ClaimSize,
        tracker: TaskTracker | None = None,
    ) -> None:
        self.settings = settings
        self.number = number
        self.sender = sender
        self.claim_size = claim_size
        self._ensure_lease = ensure_lease
        self._out_of_time = out_of_time
        self._sleep = sleep
        self._auth_failures = 0
        self._outage_failures = 0
        self._tracker = tracker

    def send(self, claim: Batch, items: list[Item], outcome: Outcome) -> None:
        """Send a claim's items; every row ends in one of `outcome`'s lists, unless LeaseLost is raised."""
        outcome.done.extend(i for i in items if i.action is SKIP)
        limit = self.settings.max_request_bytes
        chunks = list(by_request_size([i for i in items if i.action is not SKIP], lambda i: len(i.body), limit))
        for n, chunk in enumerate(chunks):
            if self._out_of_time():
                outcome.unsent.extend(i.row for c in chunks[n:] for i in c)
                return
            try:
                self._send_chunk(claim, chunk, outcome)
            except _Throttled as exc:
                outcome.unsent.extend(outcome.unsettled(i.row for c in chunks[n:] for i in c))
                self._slow_down(exc.retry_after)
                return
            except _AuthRejected as exc:
                outcome.unsent.extend(outcome.unsettled(i.row for c in chunks[n:] for i in c))
                self._auth_rejected(exc.error)
                return
            except AlgoliaError as exc:
                outcome.unsent.extend(outcome.unsettled(i.row for c in chunks[n:] for i in c))
                outcome.unsent_error = f"algolia unreachable: {one_line(exc.message)}"
                outcome.unsent_delay_ms, outcome.outage = self._unreachable(exc), True
                return
        if self._outage_failures:
            log.info(
                "algolia reachable again",
                extra={"action": "algolia_reachable", "worker": self.number, "failures": self._outage_failures},
            )
            self._outage_failures = 0
        if self._auth_failures:
            self._auth_failures = 0
            log.info(
                "algolia accepts the credentials again", extra={"action": "algolia_auth_ok", "worker": self.number}
            )
        self.claim_size.sent()

    def _send_chunk(self, claim: Batch, chunk: list[Item], outcome: Outcome) -> None:
        """Send one request; records Algolia rejects as wrong fail alone (the request is split to find them)."""

        def send(part: list[Item]) -> None:
            self._ensure_lease(claim)
            answer = self.sender.send_batch(records.batch_body(i.body for i in part), len(part))
            metrics.record_auth(accepted=True)
            outcome.done.extend(part)
            if self._tracker is not None and self._tracker.wants(answer["taskID"]):
                self._tracker.accepted(answer["taskID"], [i.row.created_at for i in part], claim.token)

        def reject(item: Item, exc: AlgoliaError) -> None:
            outcome.failed.append((item.row, f"algolia {exc.status}: {one_line(exc.message)}"))

        try:
            send_splitting(send, chunk, reject)
        except AlgoliaError as exc:
            if exc.throttled:
                raise _Throttled(exc.retry_after or 1.0) from None
            if exc.auth:
                raise _AuthRejected(exc) from None
            raise

    def _slow_down(self, retry_after: float) -> None:
        metrics.record_throttle(self.claim_size.throttled())
        log.warning(
            "algolia throttled",
            extra={
                "action": "throttled",
                "worker": self.number,
                "retry_after_s": retry_after,
                "batch_limit": self.claim_size.current,
            },
        )
        self._sleep(retry_after)

    def _unreachable(self, error: AlgoliaError) -> int:
        """Algolia failed as a service (5xx, network errors or timeouts on every host, an answer that is
        not Algolia's): not the records' fault, so their rows go back without spending an attempt,
        due again after a capped backoff that grows with the outage, however long it lasts. The
        worker pauses as long (at most OUTAGE_PAUSE_MAX_S) before its next request. Returns the
        rows' delay in ms."""
        self._outage_failures += 1
        if self._outage_failures == 1:
            metrics.record_unreachable()
        cap = min(self.settings.retry_backoff_max, OUTAGE_RETRY_MAX_MS)
        delay = compute_backoff(self._outage_failures, self.settings.retry_backoff, cap)
        log.warning(
            "algolia unreachable; rows go back without spending an attempt",
            extra={
                "action": "algolia_unreachable",
                "worker": self.number,
                "status": error.status,
                "error": one_line(error.message),
                "failures": self._outage_failures,
                "retry_in_ms": delay,
            },
        )
        self._sleep(min(delay / 1000, OUTAGE_PAUSE_MAX_S))
        return delay

    def _auth_rejected(self, error: AlgoliaError) -> None:
        """Algolia refuses the key: say so once, and try again later."""
        self._auth_failures += 1
        metrics.record_auth(accepted=False)
        wait = min(AUTH_RETRY_MAX_S, 2.0 * 2 ** min(self._auth_failures - 1, 4))
        if self._auth_failures == 1:
            log.error(
                f"algolia refused ALGOLIA_APP_ID/ALGOLIA_ADMIN_KEY ({error.status}: {one_line(error.message)}); "
                "nothing is sent and no row spends an attempt until the key works again",
                extra={"action": "algolia_auth_failed", "worker": self.number, "status": error.status},
            )
        self._sleep(wait)
