"""``store.lifecycle``: enqueue, the marks under a lease, recovery and expiry.  Run against
SQLite and PostgreSQL alike.
"""

from datetime import timedelta

import pytest
from sqlalchemy import text

from database.order_queue.recovery import after_stale_lease
from database.order_queue_db import (
    OrderState,
)
from tests.support.store_steps import (
    KEY_A,
    T0,
    claim,
    claim_and_stamp,
    claim_in_doubt,
    enqueue,
    mark_dead,
    mark_for_retry,
    order,
)


def test_enqueue_commits_a_pending_row_without_the_plain_key(store):
    order_id = enqueue(store)
    row = store.reads.get_order(order_id)
    assert row["state"] == OrderState.PENDING.value
    assert row["payload"] == {k: v for k, v in order().items() if k != "apikey"}
    assert row["lane"] == "regular" and row["symbol"] == "SBIN"
    with store.transaction(read_only=True) as conn:
        stored = conn.execute(text("SELECT payload, apikey_token FROM order_queue")).one()
    assert KEY_A not in stored.payload and KEY_A not in stored.apikey_token


@pytest.mark.parametrize("endpoint", ["cancelorder", "placeorder ", "", "PLACEORDER"])
def test_enqueue_refuses_other_endpoints_and_stores_nothing(store, endpoint):
    with pytest.raises(ValueError, match="endpoint"):
        store.intake.enqueue(endpoint, order(), now=T0, max_age_seconds=None)
    assert store.reads.list_orders() == []


@pytest.mark.parametrize(
    "payload", [None, [], {"symbol": "SBIN"}, order(apikey=""), {**order(), "symbol": 5}]
)
def test_enqueue_refuses_unusable_payloads(store, payload):
    with pytest.raises(ValueError):
        store.intake.enqueue("placeorder", payload, now=T0, max_age_seconds=None)
    assert store.reads.list_orders() == []


def test_mark_with_a_stale_lease_changes_nothing(store):
    enqueue(store)
    first = claim_and_stamp(store)
    store.recovery.recover_stale_sending(
        now=T0 + timedelta(seconds=60), heartbeat_timeout=5, check_at=T0 + timedelta(seconds=60)
    )
    assert not store.lifecycle.mark_sent(first, now=T0, actor="d1", broker_orderid="X")
    row = store.reads.get_order(first.id)
    assert row["state"] == OrderState.IN_DOUBT.value and row["broker_orderid"] is None


def test_mark_sent_records_orderid_and_attempt(store):
    enqueue(store)
    claimed = claim(store)
    assert store.lifecycle.mark_sent(
        claimed, now=T0, actor="d1", broker_orderid="2501", http_status=200, latency_ms=12.5
    )
    row = store.reads.get_order(claimed.id)
    assert (row["state"], row["broker_orderid"], row["attempts"]) == ("sent", "2501", 1)
    trail = store.reads.list_attempts(claimed.id)
    assert [(a["outcome"], a["http_status"], a["broker_orderid"]) for a in trail] == [
        ("accepted", 200, "2501")
    ]


def test_mark_for_retry_returns_to_pending_until_retry_at(store):
    enqueue(store)
    claimed = claim(store)
    retry_at = T0 + timedelta(seconds=2)
    assert mark_for_retry(store, claimed, retry_at=retry_at, http_status=500)
    assert claim(store, at=T0 + timedelta(seconds=1.9)) is None
    again = claim(store, at=retry_at)
    assert again.id == claimed.id and again.attempts == 1


def test_mark_dead_keeps_reason_and_lists_as_dead(store):
    enqueue(store)
    claimed = claim(store)
    mark_dead(store, claimed)
    row = store.reads.get_order(claimed.id)
    assert (row["state"], row["dead_reason"], row["last_error"]) == (
        "dead",
        "rejected",
        "Invalid symbol",
    )
    assert [r["id"] for r in store.reads.list_orders(states=["dead"])] == [claimed.id]


def test_recovery_moves_orders_of_a_silent_dispatcher_to_in_doubt(store):
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store)
    claimed = claim_and_stamp(store)
    assert (
        store.recovery.recover_stale_sending(
            now=T0 + timedelta(seconds=2), heartbeat_timeout=5, check_at=T0
        )
        == []
    )
    later = T0 + timedelta(seconds=6)
    assert store.recovery.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later) == [
        claimed.id
    ]
    row = store.reads.get_order(claimed.id)
    assert row["state"] == OrderState.IN_DOUBT.value  # never straight back to pending
    store.dispatcher_registry.register_dispatcher("d2", host="h", pid=2, now=later)
    assert claim_in_doubt(store, later, owner="d2").id == claimed.id
    assert claim_in_doubt(store, later, owner="d3") is None  # leased by a live dispatcher


def test_an_in_doubt_order_leased_by_a_dispatcher_that_died_is_free_once_it_is_silent(store):
    """A process killed mid-check must not hold the order, and its instrument, until its
    lease runs out: only until its heartbeat is stale."""
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store)
    claimed = claim_and_stamp(store)
    later = T0 + timedelta(seconds=6)
    store.recovery.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later)
    store.dispatcher_registry.register_dispatcher("d2", host="h", pid=2, now=later)
    store.dispatcher_registry.register_dispatcher("d3", host="h", pid=3, now=later)
    assert claim_in_doubt(store, later, owner="d2").id == claimed.id  # then d2 is killed
    beating = later + timedelta(seconds=4)
    store.dispatcher_registry.heartbeat("d3", now=beating)
    assert claim_in_doubt(store, beating, owner="d3") is None  # d2 may still be checking
    silent = later + timedelta(seconds=6)  # d2's lease runs 30 s; its heartbeat is stale
    store.dispatcher_registry.heartbeat("d3", now=silent)
    assert claim_in_doubt(store, silent, owner="d3").id == claimed.id


def test_an_order_claimed_but_never_stamped_goes_straight_back_to_pending(store):
    """Its dispatcher died before the send stamp: the request never left, so there is
    nothing to reconcile, and no receipt of an earlier attempt may speak for it."""
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    order_id = enqueue(store)
    first = claim_and_stamp(store)
    assert mark_for_retry(store, first, error="HTTP 502")
    claim(store)  # the retry is claimed, and its dispatcher dies before stamping
    later = T0 + timedelta(seconds=10)
    assert (
        store.recovery.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later) == []
    )
    row = store.reads.get_order(order_id)
    assert (row["state"], row["sent_at"], row["door_expected"]) == ("pending", None, None)
    assert row["attempts"] == 1  # the unsent claim is no attempt
    assert store.reads.list_attempts(order_id)[-1]["outcome"] == "released"
    assert claim(store, at=later).id == order_id


def test_live_dispatcher_keeps_its_orders(store):
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store)
    claim(store)
    store.dispatcher_registry.heartbeat("d1", now=T0 + timedelta(seconds=9))
    assert (
        store.recovery.recover_stale_sending(
            now=T0 + timedelta(seconds=10), heartbeat_timeout=5, check_at=T0
        )
        == []
    )


def test_expired_pending_orders_are_dead_lettered_not_claimed(store):
    old = enqueue(store, max_age=60)
    fresh = enqueue(store, symbol="TCS", max_age=60, at=T0 + timedelta(seconds=50))
    at = T0 + timedelta(seconds=61)
    assert claim(store, at=at).id == fresh  # claim never returns an expired order
    expired = store.recovery.expire_pending(now=at)
    assert [r["id"] for r in expired] == [old]
    row = store.reads.get_order(old)
    assert (row["state"], row["dead_reason"]) == ("dead", "expired")


def test_deadline_before_max_age_sets_expiry_and_past_deadline_is_ignored(store):
    soon = enqueue(store, max_age=300, deadline=None)
    assert store.reads.get_order(soon)["expires_at"] == T0 + timedelta(seconds=300)
    squareoff = T0 + timedelta(seconds=60)
    early = store.intake.enqueue(
        "placeorder", order(symbol="TCS"), now=T0, max_age_seconds=300, deadline=squareoff
    )
    assert store.reads.get_order(early)["expires_at"] == squareoff
    flatten = store.intake.enqueue(
        "placesmartorder",
        order(symbol="INFY"),
        now=squareoff,
        max_age_seconds=300,
        deadline=squareoff,
    )  # the squareoff itself
    assert store.reads.get_order(flatten)["expires_at"] == squareoff + timedelta(seconds=300)


def test_a_stale_send_goes_in_doubt_only_when_it_was_stamped():
    """``recovery.after_stale_lease``: a stamped request may have left; one never
    stamped never did."""

    later = T0 + timedelta(seconds=3)
    stamped = after_stale_lease(stamped=True, now=T0, check_at=later)
    assert (stamped.state, stamped.available_at, stamped.spends_attempt) == (
        OrderState.IN_DOUBT,
        later,
        True,
    )
    unstamped = after_stale_lease(stamped=False, now=T0, check_at=later)
    assert (unstamped.state, unstamped.available_at, unstamped.spends_attempt) == (
        OrderState.PENDING,
        T0,
        False,
    )
