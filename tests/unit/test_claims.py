"""``store.claims``: which order may go now (lanes, instruments, settle, exits first), and
the send stamp that keeps the rate windows.  Run against SQLite and PostgreSQL alike.
"""

import time
from datetime import timedelta

from database.order_queue_db import (
    OrderState,
    QueueStore,
    RateLimits,
)
from tests.conftest import TEST_SEALING
from tests.support.store_steps import (
    KEY_A,
    KEY_B,
    LIMITS,
    T0,
    claim,
    claim_and_stamp,
    claim_in_doubt,
    dead_order,
    enqueue,
)


def test_claim_prefers_smart_lane_then_oldest(store):
    regular = enqueue(store, symbol="SBIN")
    smart = enqueue(store, "placesmartorder", symbol="INFY", action="SELL")
    first, second = claim(store), claim(store)
    assert (first.id, second.id) == (smart, regular)
    assert first.state == OrderState.SENDING.value
    assert first.payload["symbol"] == "INFY"


def test_later_order_for_same_instrument_waits_for_earlier_one(store):
    entry = enqueue(store, symbol="SBIN", action="BUY")
    exit_ = enqueue(store, "placesmartorder", symbol="SBIN", action="SELL")
    other = enqueue(store, symbol="TCS")
    first = claim(store)
    assert first.id == entry  # the smart exit may not overtake the entry before it
    assert claim(store).id == other
    assert claim(store) is None
    store.lifecycle.mark_sent(first, now=T0, actor="d1", broker_orderid="1")
    assert claim(store).id == exit_


def test_same_symbol_on_another_account_is_independent(store):
    enqueue(store, symbol="SBIN", apikey=KEY_A)
    second = enqueue(store, symbol="SBIN", apikey=KEY_B)
    claim(store)
    assert claim(store).id == second


def test_rate_limit_per_account_and_lane(store):
    ids = [enqueue(store, symbol=f"S{i}") for i in range(12)]
    other_account = enqueue(store, symbol="S0", apikey=KEY_B)
    claimed = [claim(store) for _ in range(10)]
    assert [c.id for c in claimed] == ids[:10]
    result = store.claims.claim_next("d1", now=T0, lease_seconds=30, limits=LIMITS)
    assert result.order.id == other_account  # another account has its own budget
    result = store.claims.claim_next("d1", now=T0, lease_seconds=30, limits=LIMITS)
    assert result.order is None
    assert result.next_due_at == T0 + timedelta(seconds=1.1)
    assert claim(store, at=T0 + timedelta(seconds=1.11)).id == ids[10]


def test_smart_lane_one_per_window(store):
    enqueue(store, "placesmartorder", symbol="A", action="SELL")
    second = enqueue(store, "placesmartorder", symbol="B", action="SELL")
    regular = enqueue(store, symbol="C")
    claim(store)
    assert claim(store).id == regular  # the regular lane is not stalled by smart pacing
    assert claim(store) is None
    assert claim(store, at=T0 + timedelta(seconds=1.2)).id == second


SETTLING = RateLimits(smart=10, regular=10, window=1.1, settle_gap=1.0)


def smart_order(store, symbol, position_size, at=T0):
    return enqueue(
        store,
        "placesmartorder",
        at=at,
        symbol=symbol,
        action="SELL",
        position_size=str(position_size),
        quantity="0",
    )


def test_smart_orders_for_different_instruments_go_back_to_back(store):
    ids = [smart_order(store, f"S{i}", 0) for i in range(5)]
    assert [claim(store, limits=SETTLING).id for _ in ids] == ids


def test_a_smart_order_waits_the_settle_gap_after_the_last_one_for_its_instrument(store):
    """The gap counts from the send stamp (on PostgreSQL the database server's time)."""
    first, second = smart_order(store, "SBIN", 0), smart_order(store, "SBIN", 10)
    start = store.reads.shared_now()
    claimed = claim_and_stamp(store, at=start, limits=SETTLING)
    assert claimed.id == first
    store.lifecycle.mark_sent(claimed, now=start, actor="d1", broker_orderid="B1")
    sent_at = store.reads.get_order(first)["sent_at"]
    result = store.claims.claim_next(
        "d1", now=sent_at + timedelta(seconds=0.5), lease_seconds=30, limits=SETTLING
    )
    assert result.order is None  # the outcome is known, but the position has not settled
    assert result.next_due_at == sent_at + timedelta(seconds=1.0)
    assert claim(store, at=sent_at + timedelta(seconds=1.0), limits=SETTLING).id == second


def test_a_smart_order_that_placed_nothing_leaves_nothing_to_settle(store):
    """The broker answered "position already matches" (success, no orderid): the
    position did not change, so the next smart order for it need not wait."""
    first, second = smart_order(store, "SBIN", 0), smart_order(store, "SBIN", 0)
    third = smart_order(store, "SBIN", 5)
    start = store.reads.shared_now()
    claimed = claim_and_stamp(store, at=start, limits=SETTLING)
    store.lifecycle.mark_sent(claimed, now=start, actor="d1", broker_orderid=None)
    after = start + timedelta(seconds=0.1)
    claimed = claim_and_stamp(store, at=after, limits=SETTLING)
    assert claimed.id == second
    store.lifecycle.mark_sent(claimed, now=after, actor="d1", broker_orderid="B2")
    sent_at = store.reads.get_order(second)["sent_at"]
    assert claim(store, at=sent_at, limits=SETTLING) is None  # that one placed an order
    assert claim(store, at=sent_at + timedelta(seconds=1), limits=SETTLING).id == third
    assert first < second < third


def test_the_send_stamp_takes_turns_within_the_lane_window(store):
    """Two per second: a third stamp in the same window is refused with the wait until
    the oldest stamp leaves it; the lease is not touched by a refused stamp."""
    two_a_second = RateLimits(smart=2, regular=2, window=1.0)
    for symbol in ("A", "B", "C"):
        enqueue(store, symbol=symbol)
    claimed = [claim(store) for _ in range(3)]
    moment = [T0]  # the queue's clock; PostgreSQL stamps with its server's own

    def clock():
        return moment[0]

    first = store.claims.stamp_send(claimed[0], clock=clock, lease_seconds=30, limits=two_a_second)
    assert first.go and not first.lease_lost
    assert store.claims.stamp_send(
        claimed[1], clock=clock, lease_seconds=30, limits=two_a_second
    ).go
    refused = store.claims.stamp_send(
        claimed[2], clock=clock, lease_seconds=30, limits=two_a_second
    )
    assert not refused.go and not refused.lease_lost
    assert 0.9 < refused.wait_seconds <= 1.0
    assert store.reads.get_order(claimed[2].id)["sent_at"] is None
    moment[0] += timedelta(seconds=refused.wait_seconds)
    if store.backend.spans_machines:
        time.sleep(refused.wait_seconds)
    assert store.claims.stamp_send(
        claimed[2], clock=clock, lease_seconds=30, limits=two_a_second
    ).go


def test_the_hosts_jitter_widens_the_window_a_stamp_is_counted_over(tmp_path):
    """OpenAlgo's limiter counts a request when its server gets to it: with 0.3 s of
    jitter, a lane of two a second takes its third stamp only 1.3 s after the first,
    where without it 1.0 s would do.  (SQLite: stamps on the clock given; PostgreSQL
    stamps with its server's clock under the same window rule.)"""
    store = QueueStore(f"sqlite:///{tmp_path}/queue.db", sealing=TEST_SEALING)
    store.schema.create()
    jittery = RateLimits(smart=2, regular=2, window=1.0, jitter=0.3)
    for symbol in ("A", "B", "C"):
        enqueue(store, symbol=symbol)
    claimed = [claim(store) for _ in range(3)]
    for order in claimed[:2]:
        assert store.claims.stamp_send(order, clock=lambda: T0, lease_seconds=30, limits=jittery).go
    later = T0 + timedelta(seconds=1.1)  # past the broker's second, inside the jitter
    refused = store.claims.stamp_send(
        claimed[2], clock=lambda: later, lease_seconds=30, limits=jittery
    )
    assert not refused.go and 0.19 < refused.wait_seconds <= 0.2
    after = T0 + timedelta(seconds=1.31)
    assert store.claims.stamp_send(
        claimed[2], clock=lambda: after, lease_seconds=30, limits=jittery
    ).go
    store.dispose()


def test_exits_are_claimed_before_entries_but_never_overtake_their_own_instrument(store):
    entry_a = enqueue(store, symbol="A")
    entry_b = enqueue(store, symbol="B")
    smart_entry = smart_order(store, "C", 5)
    smart_order(store, "B", 0)  # an exit behind entry_b, its own instrument
    exit_d = smart_order(store, "D", 0)
    order = [claim(store, limits=SETTLING).id for _ in range(4)]
    assert order == [exit_d, smart_entry, entry_a, entry_b]
    assert claim(store, limits=SETTLING) is None  # B's exit waits for entry_b's outcome


def test_in_doubt_order_blocks_its_instrument(store):
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store, symbol="SBIN")
    claim_and_stamp(store)
    later_id = enqueue(store, symbol="SBIN", at=T0 + timedelta(seconds=1))
    later = T0 + timedelta(seconds=10)
    store.recovery.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later)
    assert claim(store, at=later) is None
    doubt = claim_in_doubt(store, later)
    store.lifecycle.release_to_pending(doubt, now=later, actor="d2", message="not at broker")
    first = claim(store, at=later)
    assert first.id == doubt.id  # the released order goes first
    assert claim(store, at=later) is None  # and its instrument's later one waits for it
    store.lifecycle.mark_sent(first, now=later, actor="d1", broker_orderid="B1")
    assert claim(store, at=later).id == later_id


def test_a_per_minute_lane_counts_over_its_own_window(store):
    per_minute = RateLimits(smart=10, regular=2, window=1.0, regular_window=60.0)
    ids = [enqueue(store, symbol=f"M{i}") for i in range(3)]
    assert [claim(store, limits=per_minute).id for _ in range(2)] == ids[:2]
    assert claim(store, at=T0 + timedelta(seconds=30), limits=per_minute) is None
    assert claim(store, at=T0 + timedelta(seconds=61), limits=per_minute).id == ids[2]


def test_a_replayed_order_waits_for_a_later_one_in_doubt(store):
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    dead = dead_order(store, symbol="SBIN")
    later = enqueue(store, symbol="SBIN", action="SELL")
    claim_and_stamp(store)  # the later order is on the wire...
    after = T0 + timedelta(seconds=10)
    store.recovery.recover_stale_sending(
        now=after, heartbeat_timeout=5, check_at=after
    )  # ...in doubt
    assert [r["id"] for r in store.reads.later_orders_gone_ahead(dead)] == [later]
    store.operator_moves.replay(dead, now=after, actor="op", max_age_seconds=300)
    assert claim(store, at=after) is None  # not while the later one is in doubt
