"""runtime.sending: records grouped into requests no larger than MAX_REQUEST_BYTES, and a request
Algolia rejects as wrong split in halves until each faulty record fails alone, while throttling,
refused keys and outages propagate unsplit."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.runtime.algolia import AlgoliaError
from workerpool.runtime.sending import by_request_size, send_splitting


@given(st.lists(st.integers(0, 50)), st.integers(1, 120))
def test_groups_keep_the_order_stay_under_the_limit_and_split_only_where_forced(sizes, limit):
    groups = list(by_request_size(sizes, lambda n: n, limit))
    assert [n for g in groups for n in g] == sizes
    for group in groups:
        assert group, "no empty group"
        # Each record costs its size plus one separator; a lone record over the limit still goes alone.
        assert sum(n + 1 for n in group) <= limit or len(group) == 1
    for group, following in itertools.pairwise(groups):
        assert sum(n + 1 for n in group) + following[0] + 1 > limit, "split where the next record still fit"


def test_a_group_holds_exactly_as_many_records_as_the_limit_allows():
    # Nine bytes each with the separator: 90 bytes hold ten, the eleventh starts a new group.
    assert [len(g) for g in by_request_size(["x" * 8] * 25, len, 90)] == [10, 10, 5]
    assert list(by_request_size([], len, 90)) == []


class _Algolia:
    """A fake send: rejects a request holding any of `bad` with `status`, records every request."""

    def __init__(self, bad: set[int], status: int = 400, message: str = "invalid record") -> None:
        self.bad = bad
        self.status = status
        self.message = message
        self.requests: list[list[int]] = []
        self.accepted: list[int] = []

    def __call__(self, group: list[int]) -> None:
        self.requests.append(list(group))
        if self.bad.intersection(group):
            raise AlgoliaError(self.message, self.status)
        self.accepted.extend(group)


@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=64, unique=True),
    st.data(),
    st.sampled_from([400, 404, 413, 422]),
)
def test_a_permanent_rejection_splits_down_to_the_faulty_records_alone(records, data, status):
    bad = set(data.draw(st.lists(st.sampled_from(records), unique=True)))
    algolia = _Algolia(bad, status)
    rejected: list[tuple[int, AlgoliaError]] = []
    send_splitting(algolia, records, lambda r, exc: rejected.append((r, exc)))
    assert sorted(r for r, _ in rejected) == sorted(bad)
    assert all(exc.status == status for _, exc in rejected)
    assert algolia.accepted == [r for r in records if r not in bad], "the others are sent, in order"
    # Halving: a faulty record costs at most one request per level of the split.
    depth = max(1, len(records)).bit_length()
    assert len(algolia.requests) <= 1 + 2 * len(bad) * depth


def test_a_clean_group_is_one_request():
    algolia = _Algolia(set())
    send_splitting(algolia, [1, 2, 3], lambda r, exc: pytest.fail("nothing is rejected"))
    assert algolia.requests == [[1, 2, 3]]


@pytest.mark.parametrize(
    "status, message",
    [
        (429, "too many requests"),
        (401, "invalid credentials"),
        (403, "forbidden"),
        (400, "Invalid Application-ID or API key"),  # refused credentials, whatever the status
        (408, "request timeout"),
        (500, "internal error"),
        (503, "unavailable"),
        (None, "unreachable hosts"),
    ],
)
def test_errors_that_are_not_the_records_fault_propagate_unsplit(status, message):
    algolia = _Algolia({2}, status, message)
    with pytest.raises(AlgoliaError) as caught:
        send_splitting(algolia, [1, 2, 3, 4], lambda r, exc: pytest.fail("no record is rejected"))
    assert caught.value.status == status
    assert algolia.requests == [[1, 2, 3, 4]]


def test_an_outage_during_a_split_stops_it_and_keeps_what_was_settled():
    """A split half meeting a 5xx propagates it: the caller gives back what is neither sent nor rejected."""
    requests: list[list[int]] = []
    rejected: list[int] = []
    accepted: list[int] = []

    def send(group: list[int]) -> None:
        requests.append(group)
        if 1 in group:
            raise AlgoliaError("bad record", 400)
        if 3 in group:
            raise AlgoliaError("down", 503)
        accepted.extend(group)

    with pytest.raises(AlgoliaError) as caught:
        send_splitting(send, [0, 1, 2, 3], lambda r, exc: rejected.append(r))
    assert caught.value.status == 503
    assert (accepted, rejected) == ([0], [1])
