"""runtime.queue.recovery_interval_s: the one formula for how often expired claims are looked for, used by
a worker's housekeeping and by `DatabaseService.claim(recover=True)`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workerpool.runtime.queue import recovery_interval_s


@given(st.integers(1000, 86_400_000))
def test_a_quarter_of_the_lease_between_one_and_five_seconds(lease_ms):
    interval = recovery_interval_s(lease_ms)
    assert 1.0 <= interval <= 5.0
    assert interval == min(5.0, max(1.0, lease_ms / 4000))


def test_the_default_lease_is_looked_at_every_five_seconds_and_a_short_one_every_second():
    assert recovery_interval_s(60_000) == 5.0
    assert recovery_interval_s(8_000) == 2.0
    assert recovery_interval_s(1_000) == 1.0
