"""Contract of the queue storage, run against SQLite and PostgreSQL alike.

One contract for every part of ``database/order_queue`` (claims, writes, operator
moves, reads, triggers, upgrades), kept in one module so both backends prove the same
list.
"""

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from database.order_queue_db import (
    IDENTITY_COLUMNS,
    DeadReason,
    OrderState,
    QueueStorageError,
    QueueStore,
    RateLimits,
)
from tests.conftest import TEST_PEPPER, TEST_SEALING

T0 = datetime(2026, 11, 23, 4, 0, 0)  # 09:30 IST
LIMITS = RateLimits(smart=1, regular=10, window=1.1)
KEY_A = "a" * 64
KEY_B = "b" * 64


def order(symbol="SBIN", action="BUY", apikey=KEY_A, **extra):
    return {
        "apikey": apikey,
        "strategy": "S1",
        "symbol": symbol,
        "exchange": "NSE",
        "product": "MIS",
        "action": action,
        "pricetype": "MARKET",
        "quantity": "10",
        **extra,
    }


def enqueue(store, endpoint="placeorder", at=T0, max_age=None, deadline=None, **fields):
    return store.lifecycle.enqueue(
        endpoint, order(**fields), now=at, max_age_seconds=max_age, deadline=deadline
    )


def claim(store, at=T0, owner="d1", limits=LIMITS):
    return store.claims.claim_next(owner, now=at, lease_seconds=30, limits=limits).order


def claim_and_stamp(store, at=T0, owner="d1"):
    """Claim, then stamp the send: the request is on its way."""
    claimed = claim(store, at=at, owner=owner)
    assert store.claims.stamp_send(claimed, clock=lambda: at, lease_seconds=30).go
    return claimed


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
        store.lifecycle.enqueue(endpoint, order(), now=T0, max_age_seconds=None)
    assert store.reads.list_orders() == []


@pytest.mark.parametrize(
    "payload", [None, [], {"symbol": "SBIN"}, order(apikey=""), {**order(), "symbol": 5}]
)
def test_enqueue_refuses_unusable_payloads(store, payload):
    with pytest.raises(ValueError):
        store.lifecycle.enqueue("placeorder", payload, now=T0, max_age_seconds=None)
    assert store.reads.list_orders() == []


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


SETTLING = RateLimits(smart=10, regular=10, window=1.1, smart_settle=1.0)


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
    first, second = smart_order(store, "SBIN", 0), smart_order(store, "SBIN", 10)
    claimed = claim(store, limits=SETTLING)
    assert claimed.id == first
    store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid="B1")
    result = store.claims.claim_next(
        "d1", now=T0 + timedelta(seconds=0.5), lease_seconds=30, limits=SETTLING
    )
    assert result.order is None  # the outcome is known, but the position has not settled
    assert result.next_due_at == T0 + timedelta(seconds=1.0)
    assert claim(store, at=T0 + timedelta(seconds=1.0), limits=SETTLING).id == second


def test_a_smart_order_that_placed_nothing_leaves_nothing_to_settle(store):
    """The broker answered "position already matches" (success, no orderid): the
    position did not change, so the next smart order for it need not wait."""
    first, second = smart_order(store, "SBIN", 0), smart_order(store, "SBIN", 0)
    third = smart_order(store, "SBIN", 5)
    claimed = claim(store, limits=SETTLING)
    store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid=None)
    after = T0 + timedelta(seconds=0.1)
    claimed = claim(store, at=after, limits=SETTLING)
    assert claimed.id == second
    store.lifecycle.mark_sent(claimed, now=after, actor="d1", broker_orderid="B2")
    assert claim(store, at=after, limits=SETTLING) is None  # that one placed an order
    assert claim(store, at=after + timedelta(seconds=1), limits=SETTLING).id == third
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


def test_mark_with_a_stale_lease_changes_nothing(store):
    enqueue(store)
    first = claim_and_stamp(store)
    store.lifecycle.recover_stale_sending(
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


def test_mark_failed_returns_to_pending_until_retry_at(store):
    enqueue(store)
    claimed = claim(store)
    retry_at = T0 + timedelta(seconds=2)
    assert store.lifecycle.mark_failed(
        claimed,
        now=T0,
        actor="d1",
        retry_at=retry_at,
        outcome="transient",
        error="HTTP 500",
        counts_as_attempt=True,
        http_status=500,
    )
    assert claim(store, at=T0 + timedelta(seconds=1.9)) is None
    again = claim(store, at=retry_at)
    assert again.id == claimed.id and again.attempts == 1


def test_mark_dead_keeps_reason_and_lists_as_failed(store):
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_dead(
        claimed,
        now=T0,
        actor="d1",
        reason=DeadReason.REJECTED,
        outcome="rejected",
        error="Invalid symbol",
        http_status=400,
    )
    row = store.reads.get_order(claimed.id)
    assert (row["state"], row["dead_reason"], row["last_error"]) == (
        "dead",
        "rejected",
        "Invalid symbol",
    )
    assert [r["id"] for r in store.reads.list_orders(states=["dead"])] == [claimed.id]


def test_recovery_moves_orders_of_a_silent_dispatcher_to_in_doubt(store):
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store)
    claimed = claim_and_stamp(store)
    assert (
        store.lifecycle.recover_stale_sending(
            now=T0 + timedelta(seconds=2), heartbeat_timeout=5, check_at=T0
        )
        == []
    )
    later = T0 + timedelta(seconds=6)
    assert store.lifecycle.recover_stale_sending(
        now=later, heartbeat_timeout=5, check_at=later
    ) == [claimed.id]
    row = store.reads.get_order(claimed.id)
    assert row["state"] == OrderState.IN_DOUBT.value  # never straight back to pending
    assert store.claims.claim_in_doubt("d2", now=later, lease_seconds=30).id == claimed.id
    assert store.claims.claim_in_doubt("d3", now=later, lease_seconds=30) is None  # leased


def test_an_order_claimed_but_never_stamped_goes_straight_back_to_pending(store):
    """Its dispatcher died before the send stamp: the request never left, so there is
    nothing to reconcile, and no receipt of an earlier attempt may speak for it."""
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    order_id = enqueue(store)
    first = claim_and_stamp(store)
    assert store.lifecycle.mark_failed(
        first,
        now=T0,
        actor="d1",
        retry_at=T0,
        outcome="transient",
        error="HTTP 502",
        counts_as_attempt=True,
    )
    claim(store)  # the retry is claimed, and its dispatcher dies before stamping
    later = T0 + timedelta(seconds=10)
    assert (
        store.lifecycle.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later) == []
    )
    row = store.reads.get_order(order_id)
    assert (row["state"], row["sent_at"], row["door_expected"]) == ("pending", None, None)
    assert row["attempts"] == 1  # the unsent claim is no attempt
    assert store.reads.list_attempts(order_id)[-1]["outcome"] == "released"
    assert claim(store, at=later).id == order_id


def test_live_dispatcher_keeps_its_orders(store):
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store)
    claim(store)
    store.dispatchers.heartbeat("d1", now=T0 + timedelta(seconds=9))
    assert (
        store.lifecycle.recover_stale_sending(
            now=T0 + timedelta(seconds=10), heartbeat_timeout=5, check_at=T0
        )
        == []
    )


def test_in_doubt_order_blocks_its_instrument(store):
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    enqueue(store, symbol="SBIN")
    claim_and_stamp(store)
    later_id = enqueue(store, symbol="SBIN", at=T0 + timedelta(seconds=1))
    later = T0 + timedelta(seconds=10)
    store.lifecycle.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later)
    assert claim(store, at=later) is None
    doubt = store.claims.claim_in_doubt("d2", now=later, lease_seconds=30)
    store.lifecycle.release_to_pending(doubt, now=later, actor="d2", message="not at broker")
    assert claim(store, at=later).id == doubt.id
    assert later_id != doubt.id


def test_expired_pending_orders_are_dead_lettered_not_claimed(store):
    old = enqueue(store, max_age=60)
    fresh = enqueue(store, symbol="TCS", max_age=60, at=T0 + timedelta(seconds=50))
    at = T0 + timedelta(seconds=61)
    assert claim(store, at=at).id == fresh  # claim never returns an expired order
    expired = store.lifecycle.expire_pending(now=at)
    assert [r["id"] for r in expired] == [old]
    row = store.reads.get_order(old)
    assert (row["state"], row["dead_reason"]) == ("dead", "expired")


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


def test_schema_creation_is_idempotent(store):
    enqueue(store)
    store.schema.create()
    assert len(store.reads.list_orders()) == 1


def test_sqlite_file_settings(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/q/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    store.dispose()


def test_sqlite_file_never_holds_the_api_key(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    for i in range(20):
        store.lifecycle.enqueue("placeorder", order(symbol=f"S{i}"), now=T0, max_age_seconds=None)
    store.dispose()
    for path in tmp_path.iterdir():  # the database and its WAL
        assert KEY_A.encode() not in path.read_bytes(), path.name


def test_sqlite_write_to_a_deleted_file_fails_instead_of_vanishing(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    enqueue(store)
    for path in tmp_path.iterdir():
        path.unlink()
    with pytest.raises(QueueStorageError, match="missing"):
        enqueue(store)
    store.dispose()


def test_deadline_before_max_age_sets_expiry_and_past_deadline_is_ignored(store):
    soon = enqueue(store, max_age=300, deadline=None)
    assert store.reads.get_order(soon)["expires_at"] == T0 + timedelta(seconds=300)
    squareoff = T0 + timedelta(seconds=60)
    early = store.lifecycle.enqueue(
        "placeorder", order(symbol="TCS"), now=T0, max_age_seconds=300, deadline=squareoff
    )
    assert store.reads.get_order(early)["expires_at"] == squareoff
    flatten = store.lifecycle.enqueue(
        "placesmartorder",
        order(symbol="INFY"),
        now=squareoff,
        max_age_seconds=300,
        deadline=squareoff,
    )  # the squareoff itself
    assert store.reads.get_order(flatten)["expires_at"] == squareoff + timedelta(seconds=300)


# ----------------------------------------------------------------- write-once protection

IDENTITY_VALUES = {
    "id": 999_999,
    "endpoint": "placesmartorder",
    "payload": "{}",
    "apikey_token": "x",
    "account": "x",
    "strategy": "Other",
    "symbol": "TCS",
    "exchange": "BSE",
    "product": "CNC",
    "instrument": "x",
    "lane": "smart",
    "lane_key": "x",
    "lane_priority": 0,
    "created_at": T0 + timedelta(days=1),
}


def raw(store, sql, **params):
    with store.transaction() as conn:
        return conn.execute(text(sql), params)


@pytest.mark.parametrize("column", sorted(IDENTITY_VALUES))
def test_identity_columns_cannot_be_updated(store, column):
    assert set(IDENTITY_VALUES) == set(IDENTITY_COLUMNS)
    order_id = enqueue(store)
    select_column = f"SELECT {column} FROM order_queue WHERE id = :id"
    before = raw(store, select_column, id=order_id).scalar()
    with pytest.raises(QueueStorageError, match="write-once"):
        raw(
            store,
            f"UPDATE order_queue SET {column} = :value WHERE id = :id",
            value=IDENTITY_VALUES[column],
            id=order_id,
        )
    assert raw(store, select_column, id=order_id).scalar() == before
    raw(store, "UPDATE order_queue SET last_error = 'note' WHERE id = :id", id=order_id)


#: How an order reaches each state through the lifecycle's own transitions.
PATHS = {
    "pending": [],
    "sending": ["sending"],
    "in_doubt": ["sending", "in_doubt"],
    "dead": ["dead"],
    "sent": ["sending", "sent"],
    "dismissed": ["dead", "dismissed"],
    "cancelled": ["cancelled"],
}


def finish(store, state, at=T0):
    order_id = enqueue(store, symbol=f"S{state}")
    for step in PATHS[state]:
        raw(
            store,
            "UPDATE order_queue SET state = :state, finished_at = :at, updated_at = :at "
            "WHERE id = :id",
            state=step,
            at=at,
            id=order_id,
        )
    return order_id


@pytest.mark.parametrize(
    "start, jump",
    [
        ("pending", "sent"),
        ("pending", "dismissed"),
        ("in_doubt", "dismissed"),
        ("sent", "pending"),
        ("cancelled", "pending"),
    ],
)
def test_state_changes_outside_the_lifecycle_are_refused(store, start, jump):
    order_id = finish(store, start)
    with pytest.raises(QueueStorageError, match="not part of the order lifecycle"):
        raw(store, "UPDATE order_queue SET state = :state WHERE id = :id", state=jump, id=order_id)
    assert store.reads.get_order(order_id)["state"] == start


def test_an_open_order_cannot_be_replaced_or_truncated(store):
    order_id = enqueue(store)
    columns = (
        "id, endpoint, payload, apikey_token, account, strategy, symbol, exchange, "
        "product, instrument, lane, lane_key, lane_priority, created_at, state, "
        "attempts, available_at, reconcile_checks, updated_at"
    )
    rewritten = columns.replace("payload", "'{}'")  # same id, another payload
    if store.backend.name == "sqlite":
        with pytest.raises(QueueStorageError, match="never replaced"):
            raw(
                store,
                f"INSERT OR REPLACE INTO order_queue ({columns}) "
                f"SELECT {rewritten} FROM order_queue WHERE id = :id",
                id=order_id,
            )
    else:
        with pytest.raises(QueueStorageError, match="cannot be deleted"):
            raw(store, "TRUNCATE order_queue, order_queue_attempts")
    assert store.reads.get_order(order_id)["payload"]["symbol"] == "SBIN"


@pytest.mark.parametrize("state", ["pending", "sending", "in_doubt", "dead"])
def test_rows_that_still_owe_something_cannot_be_deleted(store, state):
    order_id = finish(store, state)
    with pytest.raises(QueueStorageError, match="cannot be deleted"):
        raw(store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    assert store.reads.get_order(order_id) is not None


@pytest.mark.parametrize("state", ["sent", "dismissed", "cancelled"])
def test_finished_rows_may_be_deleted(store, state):
    order_id = finish(store, state)
    raw(store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    assert store.reads.get_order(order_id) is None


def test_attempts_are_append_only(store):
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid="1")
    with pytest.raises(QueueStorageError, match="append-only"):
        raw(store, "UPDATE order_queue_attempts SET outcome = 'x'")
    with pytest.raises(QueueStorageError, match="append-only"):
        raw(store, "DELETE FROM order_queue_attempts")
    assert len(store.reads.list_attempts(claimed.id)) == 1


def test_purge_removes_only_old_finished_orders_and_their_trails(store):
    old_sent = finish(store, "sent", at=T0)
    old_dead = finish(store, "dead", at=T0)
    old_dismissed = finish(store, "dismissed", at=T0)
    new_sent = finish(store, "sent", at=T0 + timedelta(days=40))
    pending = finish(store, "pending")
    raw(
        store,
        "INSERT INTO order_queue_attempts (order_id, at, kind, outcome) "
        "VALUES (:id, :at, 'send', 'accepted')",
        id=old_sent,
        at=T0,
    )
    assert store.operator.purge_finished(older_than=T0 + timedelta(days=30)) == 2
    remaining = {row["id"] for row in store.reads.list_orders()}
    assert remaining == {old_dead, new_sent, pending}
    assert old_dismissed not in remaining and store.reads.list_attempts(old_sent) == []


def test_purge_goes_in_batches_so_a_backlog_never_holds_the_writer_long(store):
    old = [finish(store, "sent", at=T0) for _ in range(5)]
    assert store.operator.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 2
    assert store.operator.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 2
    assert store.operator.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 1
    assert store.operator.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 0
    assert not {row["id"] for row in store.reads.list_orders()} & set(old)


# ----------------------------------------------------------------- operator actions


def dead_order(store, **fields):
    enqueue(store, **fields)
    claimed = claim(store)
    store.lifecycle.mark_dead(
        claimed,
        now=T0,
        actor="d1",
        reason=DeadReason.REJECTED,
        outcome="rejected",
        error="Invalid symbol",
    )
    return claimed.id


def test_replay_puts_a_dead_order_back_in_line_with_a_fresh_expiry(store):
    order_id = dead_order(store)
    later = T0 + timedelta(hours=2)
    assert store.operator.replay(order_id, now=later, actor="alice", max_age_seconds=300)
    row = store.reads.get_order(order_id)
    assert (row["state"], row["dead_reason"]) == ("pending", None)
    assert row["expires_at"] == later + timedelta(seconds=300)
    again = claim(store, at=later)
    assert again.id == order_id
    trail = store.reads.list_attempts(order_id)
    assert (trail[-1]["kind"], trail[-1]["outcome"], trail[-1]["actor"]) == (
        "operator",
        "replayed",
        "alice",
    )
    assert not store.operator.replay(order_id, now=later, actor="alice", max_age_seconds=300)


def test_dismiss_and_cancel_only_from_their_states(store):
    dead = dead_order(store)
    pending = enqueue(store, symbol="TCS")
    assert not store.operator.cancel(dead, now=T0, actor="bob", note=None)
    assert not store.operator.dismiss(pending, now=T0, actor="bob", note=None)
    assert store.operator.dismiss(dead, now=T0, actor="bob", note="fat finger, ignore")
    assert store.operator.cancel(pending, now=T0, actor="bob", note=None)
    assert store.reads.get_order(dead)["state"] == "dismissed"
    assert store.reads.get_order(pending)["state"] == "cancelled"
    assert store.reads.list_attempts(dead)[-1]["message"] == "fat finger, ignore"
    assert claim(store) is None


def test_later_sent_orders_for_the_same_instrument_are_reported(store):
    dead = dead_order(store, symbol="SBIN")
    enqueue(store, symbol="SBIN")
    enqueue(store, symbol="TCS")
    for _ in range(2):
        claimed = claim(store)
        store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid=str(claimed.id))
    later = store.reads.later_orders_gone_ahead(dead)
    assert [row["symbol"] for row in later] == ["SBIN"]


def test_filters_and_counts(store):
    dead_order(store, symbol="SBIN")
    enqueue(store, symbol="TCS")
    assert store.reads.count_orders(states=["dead"], reason="rejected") == 1
    assert [r["symbol"] for r in store.reads.list_orders(symbol="TCS")] == ["TCS"]
    assert store.reads.count_orders(strategy="S1") == 2
    assert store.reads.count_orders(since=T0 + timedelta(seconds=1)) == 0
    stats = store.reads.stats(now=T0 + timedelta(seconds=30), day_start=T0 - timedelta(hours=1))
    assert stats["oldest_pending_age_seconds"] == 30 and stats["dead"] == 1


def test_a_replayed_order_waits_for_a_later_one_in_doubt(store):
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    dead = dead_order(store, symbol="SBIN")
    later = enqueue(store, symbol="SBIN", action="SELL")
    claim_and_stamp(store)  # the later order is on the wire...
    after = T0 + timedelta(seconds=10)
    store.lifecycle.recover_stale_sending(
        now=after, heartbeat_timeout=5, check_at=after
    )  # ...in doubt
    assert [r["id"] for r in store.reads.later_orders_gone_ahead(dead)] == [later]
    store.operator.replay(dead, now=after, actor="op", max_age_seconds=300)
    assert claim(store, at=after) is None  # not while the later one is in doubt


def test_the_seed_named_module_functions_work_on_the_runtimes_store(tmp_path):
    """The proposal's names are the module's public face (docs/design.md, "Layout"),
    calls over the store the runtime owns."""
    from database import order_queue_db as q
    from services.order_queue import runtime
    from services.order_queue.settings import OrderQueueSettings

    runtime.build(
        OrderQueueSettings(database_url=f"sqlite:///{tmp_path}/face.db", api_key_pepper=TEST_PEPPER)
    )
    q.init_db()
    runtime.current().store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    sent_id = q.enqueue_order("placeorder", order(), now=T0)
    doubt_id = q.enqueue_order("placeorder", order(symbol="TCS"), now=T0)
    first = q.mark_processing("d1", now=T0, lease_seconds=30, limits=LIMITS).order
    assert q.mark_sent(first, now=T0, actor="d1", broker_orderid="9")
    on_the_wire = q.mark_processing("d1", now=T0, lease_seconds=30, limits=LIMITS).order
    assert (
        runtime.current()
        .store.claims.stamp_send(on_the_wire, clock=lambda: T0, lease_seconds=30)
        .go
    )
    later = T0 + timedelta(seconds=30)
    assert q.recover_stale_processing_orders(now=later, heartbeat_timeout=5, check_at=later) == [
        doubt_id
    ]
    depth = q.queue_depth()
    assert depth["sent"]["regular"] == 1 and depth["in_doubt"]["regular"] == 1
    assert first.id == sent_id and q.get_failed_orders() == []
    runtime.current().store.dispose()


def test_the_queue_file_is_created_private(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/private/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    store.lifecycle.enqueue("placeorder", order(), now=T0, max_age_seconds=None)
    for name in ("order_queue.db", "order_queue.db-wal"):
        assert (tmp_path / "private" / name).stat().st_mode & 0o777 == 0o600, name
    store.dispose()


def test_an_app_role_that_does_not_own_the_tables_cannot_switch_the_guards_off(postgres_schema_url):
    """The owner makes the schema; the app runs as a role with data rights only: it
    queues and claims, but cannot disable or drop a trigger, nor skip triggers with
    session_replication_role."""
    import uuid

    from sqlalchemy import create_engine

    owner = QueueStore(postgres_schema_url, sealing=TEST_SEALING)
    owner.schema.create()
    role = f"oq_app_{uuid.uuid4().hex[:8]}"
    schema = postgres_schema_url.split("search_path%3D")[1]
    admin = create_engine(postgres_schema_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(
            text(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'  # noqa: E501
            )
        )
        conn.execute(text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
    app_url = postgres_schema_url.replace("postgres@", f"{role}@")
    app_store = QueueStore(app_url, sealing=TEST_SEALING)
    try:
        app_store.schema.create()  # at every start: leaves the owner's triggers alone
        order_id = enqueue(app_store)
        assert claim(app_store).id == order_id
        for statement in (
            "ALTER TABLE order_queue DISABLE TRIGGER ALL",
            "DROP TRIGGER order_queue_guard ON order_queue",
            "SET session_replication_role = replica",
        ):
            with pytest.raises(QueueStorageError, match="owner|permission denied"):
                raw(app_store, statement)
        with pytest.raises(QueueStorageError, match="cannot be deleted"):
            raw(app_store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    finally:
        app_store.dispose()
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_a_per_minute_lane_counts_over_its_own_window(store):
    per_minute = RateLimits(smart=10, regular=2, window=1.0, regular_window=60.0)
    ids = [enqueue(store, symbol=f"M{i}") for i in range(3)]
    assert [claim(store, limits=per_minute).id for _ in range(2)] == ids[:2]
    assert claim(store, at=T0 + timedelta(seconds=30), limits=per_minute) is None
    assert claim(store, at=T0 + timedelta(seconds=61), limits=per_minute).id == ids[2]


def test_an_earlier_version_in_flight_order_counts_as_sent_after_the_upgrade(tmp_path):
    """A database from before the send stamp: an order it left on the wire may have
    been sent, so the upgrade stamps it at its dispatch time and recovery puts it in
    doubt, never straight back to pending."""
    url = f"sqlite:///{tmp_path}/old.db"
    store = QueueStore(url, sealing=TEST_SEALING)
    store.schema.create()
    store.dispatchers.register_dispatcher("d1", host="h", pid=1, now=T0)
    order_id = enqueue(store)
    claim_and_stamp(store)
    with store.engine.begin() as conn:  # as the earlier version left it
        conn.exec_driver_sql("DROP INDEX ix_order_queue_lane_sent")
        conn.exec_driver_sql("ALTER TABLE order_queue DROP COLUMN sent_at")
    store.dispose()
    upgraded = QueueStore(url, sealing=TEST_SEALING)
    upgraded.schema.create()
    row = upgraded.reads.get_order(order_id)
    assert row["sent_at"] == row["dispatched_at"] == T0
    later = T0 + timedelta(seconds=10)
    assert upgraded.lifecycle.recover_stale_sending(
        now=later, heartbeat_timeout=5, check_at=later
    ) == [order_id]
    upgraded.dispose()


def test_the_door_flag_of_an_earlier_version_survives_the_rename(store):
    """Earlier versions called the door a fence: the upgrade renames the column and keeps
    its values, so an order sent behind the door is still known to be."""
    enqueue(store)
    claimed = claim(store)
    assert store.claims.stamp_send(
        claimed, clock=lambda: T0, lease_seconds=30, door_expected=True
    ).go
    with store.engine.begin() as conn:  # as the earlier version left it
        conn.exec_driver_sql(
            "ALTER TABLE order_queue RENAME COLUMN door_expected TO fence_expected"
        )
    store.schema.create()
    [row] = store.reads.list_orders(states=["sending"])
    assert row["door_expected"] is True
    with store.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("order_queue")}
    assert "fence_expected" not in columns


def test_a_plain_connection_cannot_replace_a_dead_order_or_an_attempt(tmp_path):
    """A sqlite3 console has no recursive_triggers: the schema refuses the insert itself."""
    import sqlite3

    store = QueueStore(f"sqlite:///{tmp_path}/queue.db", sealing=TEST_SEALING)
    store.schema.create()
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_dead(
        claimed,
        now=T0,
        actor="d1",
        reason=DeadReason.REJECTED,
        outcome="rejected",
        error="RMS",
        http_status=400,
    )
    store.dispose()
    console = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    assert console.execute("PRAGMA recursive_triggers").fetchone() == (0,)
    with pytest.raises(sqlite3.DatabaseError, match="never replaced"):
        console.execute(
            "INSERT OR REPLACE INTO order_queue SELECT * FROM order_queue WHERE id = ?",
            (claimed.id,),
        )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        console.execute(
            "INSERT OR REPLACE INTO order_queue_attempts SELECT * FROM order_queue_attempts"
        )
    assert console.execute("SELECT state, dead_reason FROM order_queue").fetchall() == [
        ("dead", "rejected")
    ]
    console.close()


@pytest.mark.parametrize(
    "reason, allowed",
    [(DeadReason.REJECTED, False), (DeadReason.EXPIRED, False), (DeadReason.IN_DOUBT, True)],
)
def test_only_an_order_dead_in_doubt_may_be_marked_sent(store, reason, allowed):
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_dead(claimed, now=T0, actor="d1", reason=reason, outcome="x", error="e")
    move = "UPDATE order_queue SET state = 'sent' WHERE id = :id"
    if allowed:  # the operator's settle "placed, broker order id X"
        raw(store, move, id=claimed.id)
        assert store.reads.get_order(claimed.id)["state"] == "sent"
    else:  # never placed: "sent" would let the retention purge erase it
        with pytest.raises(QueueStorageError, match="not part of the order lifecycle"):
            raw(store, move, id=claimed.id)
        assert store.reads.get_order(claimed.id)["state"] == "dead"
