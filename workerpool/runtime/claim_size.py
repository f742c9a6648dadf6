"""How many rows a worker claims at a time: BATCH_SIZE when the queue is shallow, up to BATCH_SIZE_MAX under
a deep backlog, less while Algolia throttles.

Every claim becomes at least one `POST /1/indexes/*/batch`, and each request is an indexing task on Algolia's
side: its service limits allow 100 pending requests per application, and it asks for batches of about 1,000 to
10,000 records. A claim that comes back full says the backlog is deeper than a claim, so the next claim asks for
twice as many rows, up to BATCH_SIZE_MAX: a deep backlog drains in fewer, larger requests. A claim that comes
back short says the backlog is gone, so the size returns to BATCH_SIZE, and a trickle of changes goes out in
requests no larger than an operator chose. A 429 halves the size, and growth resumes from there: below
BATCH_SIZE it creeps back by a tenth of BATCH_SIZE per claim sent without a 429 (the rate Algolia accepted
before it throttled), from BATCH_SIZE on it doubles again with each full claim.

The claim loop reads and grows the size on the worker's main thread; the sender threads halve it and grow it
back after a 429. A lock keeps each change whole.

This is the claim size's one owner: `AlgoliaService` makes one per service and hands it to its `Dispatcher`
(which halves and grows it back); everything else reads `current`. In the runtime the number is called
`claim_size` wherever it is passed (the claim, the spill before it); the public API keeps its own names for it
(`AlgoliaService.batch_limit` and `claimed`, `DatabaseService.claim(batch_size)`), and so do the `batch_limit`
log field and the `workerpool_worker_batch_limit` gauge.
"""

from __future__ import annotations

import threading

from workerpool.config import Settings


class ClaimSize:
    """One worker's adaptive claim size (`current`), between 1 and max(BATCH_SIZE, BATCH_SIZE_MAX)."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.batch_size
        self.top = max(settings.batch_size, settings.batch_size_max)
        self._step = max(1, self.base // 10)
        self._limit = self.base
        self._lock = threading.Lock()

    @property
    def current(self) -> int:
        """The claim size: how many rows the next claim asks for."""
        return self._limit

    def claimed(self, got: int, claim_size: int) -> bool:
        """A claim that asked for `claim_size` rows got `got`: grow the size if it was full, return it to
        BATCH_SIZE if it was short. Returns whether it was short (the queue held fewer due rows than asked for)."""
        short = got < claim_size
        with self._lock:
            if short and self._limit > self.base:
                self._limit = self.base
            elif not short and self.base <= self._limit < self.top:
                self._limit = min(self.top, self._limit * 2)
        return short

    def sent(self) -> None:
        """A claim went out without a 429: below BATCH_SIZE (after a 429), grow back by a step."""
        with self._lock:
            if self._limit < self.base:
                self._limit = min(self.base, self._limit + self._step)

    def throttled(self) -> int:
        """Algolia answered 429: halve the size (never below 1); returns the new size."""
        with self._lock:
            self._limit = max(1, self._limit // 2)
            return self._limit
