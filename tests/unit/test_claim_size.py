"""runtime.claim_size.ClaimSize: full claims double the claim size up to BATCH_SIZE_MAX, a short claim returns
it to BATCH_SIZE, a 429 halves it and growth resumes from there; never below 1 nor above the top."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workerpool.config import Settings
from workerpool.runtime.claim_size import ClaimSize


def _size(batch: int = 100, top: int = 1000) -> ClaimSize:
    return ClaimSize(Settings(batch_size=batch, batch_size_max=top))


def _full(size: ClaimSize) -> bool:
    asked = size.current
    return size.claimed(asked, asked)


def test_full_claims_double_up_to_batch_size_max_and_a_short_one_returns_to_batch_size():
    size = _size(100, 1000)
    seen = [size.current]
    for _ in range(6):
        assert _full(size) is False
        seen.append(size.current)
    assert seen == [100, 200, 400, 800, 1000, 1000, 1000]
    assert size.claimed(37, 1000) is True  # the backlog is gone
    assert size.current == 100
    assert size.claimed(0, 100) is True and size.current == 100  # nothing due: stays at BATCH_SIZE


def test_batch_size_max_equal_to_batch_size_never_grows():
    size = _size(100, 100)
    for _ in range(5):
        _full(size)
    assert size.current == 100


def test_a_top_below_batch_size_is_read_as_batch_size():
    """Settings built in code (not through load) may carry the default BATCH_SIZE_MAX under a larger BATCH_SIZE."""
    size = _size(5000, 1000)
    assert size.top == 5000 and size.current == 5000
    _full(size)
    assert size.current == 5000


def test_a_429_halves_and_growth_resumes_from_there():
    size = _size(100, 1000)
    for _ in range(4):
        _full(size)
    assert size.current == 1000
    assert size.throttled() == 500 and size.current == 500
    _full(size)
    assert size.current == 1000  # at or above BATCH_SIZE, full claims double again
    assert size.throttled() == 500 and size.throttled() == 250 and size.throttled() == 125
    assert size.throttled() == 62
    _full(size)
    assert size.current == 62, "below BATCH_SIZE a full claim does not double: the sends bring it back"
    size.sent()
    assert size.current == 72  # a tenth of BATCH_SIZE per claim sent without a 429
    for _ in range(10):
        size.sent()
    assert size.current == 100
    assert size.claimed(3, 100) is True and size.current == 100, "a short claim below the top keeps BATCH_SIZE"


def test_a_short_claim_after_a_429_below_batch_size_keeps_the_throttled_size():
    size = _size(100, 1000)
    size.throttled()
    size.claimed(10, 50)
    assert size.current == 50


@given(
    batch=st.integers(min_value=1, max_value=10_000),
    extra=st.integers(min_value=0, max_value=10_000),
    events=st.lists(st.sampled_from(["full", "short", "empty", "429", "sent"]), max_size=60),
)
def test_the_limit_stays_between_1_and_the_top_whatever_happens(batch, extra, events):
    top = min(10_000, batch + extra)
    size = _size(batch, top)
    for event in events:
        asked = size.current
        if event == "full":
            size.claimed(asked, asked)
        elif event == "short":
            size.claimed(max(0, asked - 1), asked)
        elif event == "empty":
            size.claimed(0, asked)
        elif event == "429":
            size.throttled()
        else:
            size.sent()
        assert 1 <= size.current <= top
        if event in ("short", "empty") and asked > batch:
            assert size.current == batch
