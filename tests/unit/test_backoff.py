"""runtime.queue.compute_backoff: exponential from the base, capped, with jitter in [50%, 100%] of the ceiling."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from workerpool.runtime.queue import compute_backoff

attempts = st.integers(min_value=-3, max_value=200)
base_ms = st.integers(min_value=0, max_value=3_600_000)
cap_ms = st.integers(min_value=0, max_value=86_400_000)


def _ceiling(attempt: int, base: int, cap: int) -> int:
    return min(cap, base * 2 ** max(0, attempt - 1))


@given(attempt=attempts, base=base_ms, cap=cap_ms, seed=st.integers())
def test_within_half_and_all_of_the_capped_exponential(attempt, base, cap, seed):
    random.seed(seed)
    delay = compute_backoff(attempt, base, cap)
    ceiling = _ceiling(attempt, base, cap)
    assert isinstance(delay, int)
    assert ceiling // 2 <= delay <= ceiling <= cap


@given(attempt=attempts, base=base_ms, cap=cap_ms, seed=st.integers())
def test_with_the_same_draw_a_later_attempt_never_waits_less(attempt, base, cap, seed):
    random.seed(seed)
    now = compute_backoff(attempt, base, cap)
    random.seed(seed)
    later = compute_backoff(attempt + 1, base, cap)
    assert later >= now


def test_the_first_attempts_double_from_the_base_until_the_cap():
    random.seed(1)
    highest = [max(compute_backoff(a, 1000, 10_000) for _ in range(300)) for a in range(1, 7)]
    lowest = [min(compute_backoff(a, 1000, 10_000) for _ in range(300)) for a in range(1, 7)]
    # 300 draws each get within 3% of both ends of [ceiling / 2, ceiling].
    for got, want in zip(highest, [1000, 2000, 4000, 8000, 10_000, 10_000], strict=True):
        assert want * 0.97 <= got <= want
    for got, want in zip(lowest, [500, 1000, 2000, 4000, 5000, 5000], strict=True):
        assert want <= got <= want * 1.03


def test_retries_are_jittered_so_a_burst_of_failures_spreads_out():
    random.seed(2)
    delays = [compute_backoff(3, 1000, 300_000) for _ in range(100)]
    assert len(set(delays)) > 50
    assert min(delays) < 2500 < max(delays)


def test_attempt_zero_or_below_waits_like_the_first():
    random.seed(3)
    assert all(500 <= compute_backoff(a, 1000, 300_000) <= 1000 for a in (-1, 0, 1) for _ in range(50))
