"""``store.reads``: depth, listings, counts and the trail.  Run against SQLite and PostgreSQL
alike.
"""

from datetime import timedelta

from database.order_queue_db import (
    OrderState,
)
from tests.support.store_steps import (
    T0,
    claim,
    dead_order,
    enqueue,
)


def test_depth_counts_every_state_and_lane(store):
    enqueue(store)
    enqueue(store, "placesmartorder", symbol="TCS", action="SELL")
    claim(store)
    depth = store.reads.depth()
    assert set(depth) == {s.value for s in OrderState}
    assert depth["sending"]["smart"] == 1 and depth["pending"]["regular"] == 1
    assert depth["sent"] == {"smart": 0, "regular": 0}


def test_broker_orderid_binding_lookup(store):
    enqueue(store)
    first = claim(store)
    store.lifecycle.mark_sent(first, now=T0, actor="d1", broker_orderid="777")
    assert store.reads.bound_broker_orderids(["777", "888"], excluding=first.id + 1) == {"777"}
    assert store.reads.bound_broker_orderids(["777"], excluding=first.id) == set()


def test_filters_and_counts(store):
    dead_order(store, symbol="SBIN")
    enqueue(store, symbol="TCS")
    assert store.reads.count_orders(states=["dead"], reason="rejected") == 1
    assert [r["symbol"] for r in store.reads.list_orders(symbol="TCS")] == ["TCS"]
    assert store.reads.count_orders(strategy="S1") == 2
    assert store.reads.count_orders(since=T0 + timedelta(seconds=1)) == 0
    stats = store.reads.stats(now=T0 + timedelta(seconds=30), day_start=T0 - timedelta(hours=1))
    assert stats["oldest_pending_age_seconds"] == 30 and stats["dead"] == 1


def test_later_sent_orders_for_the_same_instrument_are_reported(store):
    dead = dead_order(store, symbol="SBIN")
    enqueue(store, symbol="SBIN")
    enqueue(store, symbol="TCS")
    for _ in range(2):
        claimed = claim(store)
        store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid=str(claimed.id))
    later = store.reads.later_orders_gone_ahead(dead)
    assert [row["symbol"] for row in later] == ["SBIN"]
