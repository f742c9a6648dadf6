"""runtime.dispatch.Dispatcher.send with a fake sender: skips settle unsent, records go in requests
within MAX_REQUEST_BYTES, a 429 gives the rest back unsent and halves the claim size, a refused key
gives everything back unsent, an outage gives the rest back unsent with a backoff, and a record
Algolia rejects as wrong fails alone. Every row ends in exactly one of the outcome's lists."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.config import Settings
from workerpool.runtime import records
from workerpool.runtime.algolia import AlgoliaError
from workerpool.runtime.claim_size import ClaimSize
from workerpool.runtime.dispatch import OUTAGE_RETRY_MAX_MS, Dispatcher, LeaseLost
from workerpool.runtime.model import Action, Batch, Item, Outcome, SyncItem

INDEX = "products"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeSender:
    """Answers each request as `answer(request_number, object_ids)` says: None accepts it, an
    AlgoliaError is raised. Records what it was sent."""

    def __init__(self, answer=lambda n, ids: None) -> None:
        self.answer = answer
        self.requests: list[list[str]] = []

    def send_batch(self, body: bytes, count: int | None = None) -> dict:
        ids = [r["body"]["objectID"] for r in orjson.loads(body)["requests"]]
        assert count == len(ids)
        self.requests.append(ids)
        error = self.answer(len(self.requests), ids)
        if error is not None:
            raise error
        return {"taskID": len(self.requests), "objectIDs": ids}


def _item(n: int, action: Action = Action.DELETE) -> Item:
    row = SyncItem(n, "products", str(n), "UPDATE", 1, NOW)
    body = b"" if action == Action.SKIP else records.delete_action(INDEX, str(n))
    return Item(row, INDEX, action, body)


def _claim(items: list[Item]) -> Batch:
    return Batch(uuid.uuid4(), [i.row for i in items], claimed_at=0.0, lease_s=60.0)


def _dispatcher(sender: FakeSender, settings: Settings | None = None, **kw) -> tuple[Dispatcher, list[float]]:
    slept: list[float] = []
    settings = settings or Settings(batch_size=100, batch_size_max=1000)
    dispatcher = Dispatcher(
        settings,
        1,
        sender,  # type: ignore[arg-type]  # a fake with send_batch
        kw.get("ensure_lease", lambda claim: None),
        kw.get("out_of_time", lambda: False),
        slept.append,
        claim_size=kw.get("claim_size") or ClaimSize(settings),
        tracker=None,
    )
    return dispatcher, slept


def _send(dispatcher: Dispatcher, items: list[Item]) -> Outcome:
    outcome = Outcome()
    dispatcher.send(_claim(items), items, outcome)
    return outcome


def _ids(rows) -> list[int]:
    return sorted(r.id for r in rows)


def _settled_once(items: list[Item], outcome: Outcome) -> None:
    ended = [i.row.id for i in outcome.done] + [r.id for r, _ in outcome.failed] + [r.id for r in outcome.unsent]
    assert sorted(ended) == sorted(i.row.id for i in items), "every row ends in exactly one list"
    assert not outcome.retry


def test_every_record_is_sent_and_skips_are_done_without_a_request():
    items = [_item(1), _item(2, Action.SKIP), _item(3), _item(4, Action.SKIP)]
    sender = FakeSender()
    dispatcher, slept = _dispatcher(sender)
    outcome = _send(dispatcher, items)
    assert sender.requests == [["1", "3"]]
    assert _ids(i.row for i in outcome.done) == [1, 2, 3, 4]
    assert not outcome.failed and not outcome.unsent and not outcome.outage and not slept
    _settled_once(items, outcome)


def test_only_skips_send_nothing():
    sender = FakeSender()
    dispatcher, _ = _dispatcher(sender)
    outcome = _send(dispatcher, [_item(1, Action.SKIP)])
    assert sender.requests == [] and _ids(i.row for i in outcome.done) == [1]


def test_requests_stay_within_max_request_bytes():
    items = [_item(n) for n in range(10, 40)]
    size = len(items[0].body) + 1  # each action and its separator
    sender = FakeSender()
    dispatcher, _ = _dispatcher(sender, Settings(max_request_bytes=size * 7))
    outcome = _send(dispatcher, items)
    assert [len(r) for r in sender.requests] == [7, 7, 7, 7, 2]
    assert _ids(i.row for i in outcome.done) == list(range(10, 40))


def test_a_429_gives_the_rest_back_unsent_and_halves_the_claim_size():
    items = [_item(n) for n in range(10, 40)]
    size = len(items[0].body) + 1
    sender = FakeSender(lambda n, ids: AlgoliaError("slow down", 429, retry_after=2.5) if n == 2 else None)
    claim_size = ClaimSize(Settings(batch_size=100, batch_size_max=1000))
    dispatcher, slept = _dispatcher(sender, Settings(max_request_bytes=size * 10), claim_size=claim_size)
    outcome = _send(dispatcher, items)
    assert _ids(i.row for i in outcome.done) == list(range(10, 20))
    assert _ids(outcome.unsent) == list(range(20, 40)), "the throttled request and those after it"
    assert not outcome.failed and not outcome.outage and outcome.unsent_delay_ms == 0
    assert claim_size.current == 50 and slept == [2.5]
    assert len(sender.requests) == 2, "nothing is sent after a 429"
    _settled_once(items, outcome)


def test_a_429_without_retry_after_waits_a_second_and_sends_grow_the_size_back():
    claim_size = ClaimSize(Settings(batch_size=100, batch_size_max=1000))
    throttle = [True]
    sender = FakeSender(lambda n, ids: AlgoliaError("slow down", 429) if throttle[0] else None)
    dispatcher, slept = _dispatcher(sender, claim_size=claim_size)
    _send(dispatcher, [_item(1)])
    assert slept == [1.0] and claim_size.current == 50
    throttle[0] = False
    _send(dispatcher, [_item(2)])
    assert claim_size.current == 60, "a claim sent without a 429 grows the size back by a tenth of BATCH_SIZE"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_gives_every_row_back_unsent_and_waits(status):
    items = [_item(1), _item(2), _item(3, Action.SKIP)]
    sender = FakeSender(lambda n, ids: AlgoliaError("invalid credentials", status))
    dispatcher, slept = _dispatcher(sender)
    outcome = _send(dispatcher, items)
    assert _ids(outcome.unsent) == [1, 2] and _ids(i.row for i in outcome.done) == [3]
    assert not outcome.failed and not outcome.outage
    assert outcome.unsent_error == "released unsent" and outcome.unsent_delay_ms == 0
    assert len(sender.requests) == 1, "a refused key is not split per record"
    # The wait grows while the key stays refused: 2, 4, 8, 16, then 30 s at most.
    for _ in range(5):
        _send(dispatcher, [_item(4)])
    assert slept == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    _settled_once(items, outcome)


@pytest.mark.parametrize("status", [500, 502, 503, None])
def test_an_outage_gives_the_rest_back_unsent_with_a_growing_capped_delay(status):
    items = [_item(n) for n in range(10, 30)]
    size = len(items[0].body) + 1
    sender = FakeSender(lambda n, ids: AlgoliaError("service unavailable\nretry", status) if n >= 2 else None)
    settings = Settings(max_request_bytes=size * 5, retry_backoff=1000, retry_backoff_max=300_000)
    dispatcher, slept = _dispatcher(sender, settings)
    outcome = _send(dispatcher, items)
    assert _ids(i.row for i in outcome.done) == list(range(10, 15))
    assert _ids(outcome.unsent) == list(range(15, 30))
    assert outcome.outage and not outcome.failed
    assert outcome.unsent_error == "algolia unreachable: service unavailable retry"
    assert 500 <= outcome.unsent_delay_ms <= 1000  # the first failure: RETRY_BACKOFF with jitter
    assert slept == [outcome.unsent_delay_ms / 1000]
    delays = []
    for _ in range(8):  # the outage goes on: the delay grows, capped at OUTAGE_RETRY_MAX_MS
        later = _send(dispatcher, [_item(99)])
        delays.append(later.unsent_delay_ms)
    assert max(delays) <= OUTAGE_RETRY_MAX_MS and delays[-1] >= OUTAGE_RETRY_MAX_MS // 2
    assert max(slept) <= 5.0, "a worker pauses OUTAGE_PAUSE_MAX_S at most"
    _settled_once(items, outcome)


def test_the_outage_delay_is_capped_by_retry_backoff_max_when_lower():
    sender = FakeSender(lambda n, ids: AlgoliaError("down", 503))
    dispatcher, _ = _dispatcher(sender, Settings(retry_backoff=1000, retry_backoff_max=3000))
    delays = [_send(dispatcher, [_item(1)]).unsent_delay_ms for _ in range(6)]
    assert max(delays) <= 3000 and delays[-1] >= 1500


@given(st.integers(1, 40), st.data())
def test_a_permanent_rejection_fails_only_the_faulty_records(count, data):
    items = [_item(n) for n in range(count)]
    bad = set(data.draw(st.lists(st.sampled_from([str(n) for n in range(count)]), unique=True)))
    sender = FakeSender(lambda n, ids: AlgoliaError("attribute too big", 400) if bad.intersection(ids) else None)
    dispatcher, slept = _dispatcher(sender)
    outcome = _send(dispatcher, items)
    assert sorted(r.record_id for r, _ in outcome.failed) == sorted(bad)
    assert all(reason == "algolia 400: attribute too big" for _, reason in outcome.failed)
    assert sorted(i.row.record_id for i in outcome.done) == sorted(str(n) for n in range(count) if str(n) not in bad)
    assert not outcome.unsent and not slept
    _settled_once(items, outcome)


@given(
    st.lists(st.sampled_from([Action.DELETE, Action.SKIP]), min_size=1, max_size=30),
    st.integers(1, 8),
    st.integers(1, 6),
    st.sampled_from([429, 401, 503, None, 400]),
)
def test_whatever_algolia_answers_every_row_ends_in_exactly_one_list(actions, per_request, failing, status):
    items = [_item(n, action) for n, action in enumerate(actions)]
    size = len(records.delete_action(INDEX, "0")) + 1
    sender = FakeSender(lambda n, ids: AlgoliaError("no", status) if n == failing else None)
    dispatcher, _ = _dispatcher(sender, Settings(max_request_bytes=size * per_request))
    outcome = _send(dispatcher, items)
    _settled_once(items, outcome)
    assert {i.row.id for i in items if i.action == "skip"} <= {i.row.id for i in outcome.done}


def test_out_of_time_gives_the_remaining_requests_back_unsent():
    items = [_item(n) for n in range(10)]
    size = len(items[0].body) + 1
    calls = []

    def out_of_time() -> bool:
        calls.append(1)
        return len(calls) > 2  # time runs out before the third request

    sender = FakeSender()
    dispatcher, _ = _dispatcher(sender, Settings(max_request_bytes=size * 3), out_of_time=out_of_time)
    outcome = _send(dispatcher, items)
    assert _ids(i.row for i in outcome.done) == list(range(6))
    assert _ids(outcome.unsent) == list(range(6, 10)) and not outcome.outage
    _settled_once(items, outcome)


def test_a_lost_lease_stops_before_the_request():
    def ensure_lease(claim: Batch) -> None:
        raise LeaseLost()

    sender = FakeSender()
    dispatcher, _ = _dispatcher(sender, ensure_lease=ensure_lease)
    with pytest.raises(LeaseLost):
        _send(dispatcher, [_item(1)])
    assert sender.requests == []


@pytest.mark.parametrize("status", [429, 401, 503])
def test_rows_settled_during_a_split_are_not_given_back_when_the_split_is_cut_short(status):
    """Record 1 is rejected as wrong, and a later half of the split meets a 429, a refused key or an
    outage: the rows already sent or failed stay so, only the rest go back unsent."""
    items = [_item(n) for n in range(4)]

    def answer(n: int, ids: list[str]) -> AlgoliaError | None:
        if "1" in ids:
            return AlgoliaError("bad record", 400)
        if "3" in ids:
            return AlgoliaError("stop", status)
        return None

    dispatcher, _ = _dispatcher(FakeSender(answer))
    outcome = _send(dispatcher, items)
    assert _ids(i.row for i in outcome.done) == [0]
    assert [r.id for r, _ in outcome.failed] == [1]
    assert _ids(outcome.unsent) == [2, 3]
    _settled_once(items, outcome)
