"""The dispatcher against a real HTTP fake broker on 127.0.0.1, on both backends.

The dispatcher with its sender, reconciler and recorder together (every outcome,
pacing, reconciliation, stop), each test a short scenario.
"""

import time
from datetime import datetime, timedelta

import pytest

from database.order_queue.api_keys import KeySealing
from database.order_queue_db import OrderState
from services.order_queue.clock import Clock
from services.order_queue.dispatcher import Dispatcher
from services.order_queue.ist import IST
from services.order_queue.settings import OrderQueueSettings
from tests.support.fake_broker import (
    AcceptThenHang,
    BookThenFail,
    Drop,
    Hold,
    Reject,
    Stall,
    Status,
)
from tests.support.store_steps import order

KEY = "k" * 64
OTHER_KEY = "o" * 64
FINAL = {OrderState.SENT.value, OrderState.DEAD.value}


def payload(symbol="SBIN", action="BUY", apikey=KEY, **extra):
    """An order of this module's account unless told otherwise (``store_steps.order``)."""
    return order(symbol, action, apikey, **extra)


def smart(symbol="SBIN", action="SELL", apikey=KEY):
    return payload(
        symbol,
        action,
        apikey,
        quantity="0",
        position_size="0",
        price="0",
        trigger_price="0",
        disclosed_quantity="0",
    )


@pytest.fixture
def settings(broker):
    return OrderQueueSettings(
        host_server=broker.base_url,
        connect_timeout=0.5,
        read_timeout=0.6,
        retry_base_seconds=0.05,
        retry_cap_seconds=0.2,
        reconcile_checks=3,
        reconcile_interval_seconds=0.2,
        heartbeat_seconds=0.2,
        heartbeat_timeout_seconds=1.0,
        poll_seconds=0.5,
        shutdown_timeout_seconds=5,
        broker_settle_seconds=0.3,
        orderbook_wait_seconds=1.0,
        upstream_timeout_seconds=0,
    )  # the fake broker books stalled orders within the lease


@pytest.fixture
def dispatch(store, settings):
    """Start a dispatcher on ``store``; stopped after the test."""
    started = []

    def start(**overrides):
        effective = OrderQueueSettings(**{**settings.__dict__, **overrides})
        dispatcher = Dispatcher(store, effective)
        dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        dispatcher.stop(timeout=5)


def enqueue(store, endpoint="placeorder", body=None):
    from database.order_queue_db import utcnow

    return store.intake.enqueue(endpoint, body or payload(), now=utcnow(), max_age_seconds=300)


def wait_final(store, order_id, timeout=10.0, states=FINAL):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.reads.get_order(order_id)
        if row["state"] in states:
            return row
        time.sleep(0.02)
    raise AssertionError(f"order {order_id} stuck in {store.reads.get_order(order_id)['state']}")


def test_delivers_the_exact_payload_and_stores_the_orderid(store, broker, dispatch):
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    [received] = broker.received
    assert received.endpoint == "placeorder"
    assert received.body == payload()  # the decrypted key and every field, unchanged
    assert row["state"] == "sent" and row["broker_orderid"] == received.orderid
    assert row["attempts"] == 1


def test_resumes_pending_work_on_start_without_a_wake(store, broker, dispatch):
    ids = [enqueue(store, body=payload(symbol=f"S{i}")) for i in range(3)]
    dispatch()
    assert [wait_final(store, i)["state"] for i in ids] == ["sent"] * 3


@pytest.mark.parametrize(
    "behaviours, state, reason, attempts, broker_hits",
    [
        ([Status(408)] * 3, "dead", "retries_exhausted", 3, 3),
        ([Status(408), Status(425)], "sent", None, 3, 3),
        # The API's own limiter refused it before any order code ran: no attempt spent.
        ([Status(429)] * 4, "sent", None, 1, 5),
        ([Status(400, {"status": "error", "message": "Invalid symbol"})], "dead", "rejected", 1, 1),
        ([Status(401)], "dead", "credentials", 1, 1),
        (
            [Status(403, {"status": "error", "message": "Invalid openalgo apikey"})],
            "dead",
            "credentials",
            1,
            1,
        ),
        ([Status(422)], "dead", "rejected", 1, 1),
        ([Reject("RMS: margin exceeds")], "dead", "rejected", 1, 1),
        ([Status(200, "<html>gateway</html>")], "sent", None, 2, 2),
    ],
)
def test_outcome_matrix(store, broker, dispatch, behaviours, state, reason, attempts, broker_hits):
    broker.script(*behaviours)
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert (row["state"], row["dead_reason"]) == (state, reason)
    assert row["attempts"] == attempts
    assert len(broker.received) == broker_hits
    assert len(broker.orders()) == (1 if state == "sent" else 0)


def test_rejection_message_is_kept_for_the_operator(store, broker, dispatch):
    broker.script(Reject("RMS: margin exceeds"))
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert "margin exceeds" in row["last_error"]
    [attempt] = store.reads.list_attempts(order_id)
    assert attempt["outcome"] == "rejected" and attempt["http_status"] == 200


def test_a_broker_error_that_echoes_the_request_keeps_no_plain_key(store, broker, dispatch):
    broker.script(Reject(f"bad request: apikey={KEY} symbol=SBIN"))
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    stored = row["last_error"] + " ".join(
        a["message"] or "" for a in store.reads.list_attempts(order_id)
    )
    assert KEY not in stored and "symbol=SBIN" in stored


def test_connection_refused_retries_until_the_broker_is_back(store, broker, dispatch):
    broker.refuse()
    order_id = enqueue(store)
    dispatch()
    deadline = time.monotonic() + 10
    while len(store.reads.list_attempts(order_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    row = store.reads.get_order(order_id)
    assert row["state"] in ("pending", "sending") and row["attempts"] == 0
    assert {a["outcome"] for a in store.reads.list_attempts(order_id)} == {"not_sent"}
    broker.resume()
    row = wait_final(store, order_id)
    assert row["state"] == "sent" and len(broker.orders()) == 1


def test_timeout_after_send_is_reconciled_not_resent(store, broker, dispatch):
    broker.script(Stall(1.0))  # books the order after our 0.6 s read timeout
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert row["state"] == "sent"
    assert len(broker.received) == 1  # never sent twice
    assert row["broker_orderid"] == broker.orders()[0].orderid
    outcomes = [a["outcome"] for a in store.reads.list_attempts(order_id)]
    assert outcomes[0] == "unknown" and outcomes[-1] == "found_at_broker"


def test_accept_then_hang_is_adopted_from_the_orderbook(store, broker, dispatch):
    hang = AcceptThenHang(0.3)
    broker.script(hang)
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert row["state"] == "sent" and len(broker.received) == 1
    assert row["broker_orderid"] == broker.book[0]["orderid"]


def test_dropped_request_is_sent_again_after_the_orderbook_shows_nothing(store, broker, dispatch):
    broker.script(Drop())
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert row["state"] == "sent"
    assert len(broker.received) == 2 and len(broker.orders()) == 1
    assert broker.orderbook_requests >= 3  # bounded number of checks before resending


def test_ambiguous_orderbook_goes_to_a_human(store, broker, dispatch):
    broker.script(Drop())
    stamped_after_send = (datetime.now(IST) + timedelta(seconds=30)).strftime("%d-%b-%Y %H:%M:%S")
    for _ in range(2):
        broker.add_book_entry(
            {
                "symbol": "SBIN",
                "exchange": "NSE",
                "action": "BUY",
                "quantity": "10",
                "product": "MIS",
                "pricetype": "MARKET",
                "timestamp": stamped_after_send,
            }
        )
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert (row["state"], row["dead_reason"]) == ("dead", "in_doubt")
    assert "ambiguous" in row["last_error"]
    assert len(broker.received) == 1


def test_a_5xx_after_booking_ends_with_one_order_adopted(store, broker, dispatch):
    broker.script(BookThenFail(500))
    order_id = enqueue(store)
    dispatch(upstream_timeout_seconds=120)  # an answered 5xx needs no long wait
    row = wait_final(store, order_id)
    [booked] = broker.orders()
    assert row["state"] == "sent" and row["broker_orderid"] == booked.orderid
    assert len(broker.received) == 1
    assert [a["outcome"] for a in store.reads.list_attempts(order_id)] == [
        "unknown",
        "found_at_broker",
    ]


def test_a_5xx_from_an_api_without_the_door_waits_the_long_bound_then_is_sent_once(
    store, broker, dispatch
):
    """Nothing the sender is answered ends a request (a gateway's 5xx looks the same),
    and an API without the door keeps no record: only the long bound is known."""
    broker.script(Status(500))
    order_id = enqueue(store)
    started = time.monotonic()
    dispatcher = dispatch(upstream_timeout_seconds=4)
    long_bound = dispatcher.settings.in_progress_seconds
    row = wait_final(store, order_id, timeout=long_bound + 20)
    assert row["state"] == "sent" and len(broker.orders()) == 1
    assert len(broker.received) == 2
    assert time.monotonic() - started >= long_bound  # not after the settle time (0.3 s)


def test_an_api_that_keeps_failing_spends_the_retry_budget(store, broker, dispatch):
    broker.script(Status(500), Status(502), Status(503))
    order_id = enqueue(store)
    long_bound = dispatch().settings.in_progress_seconds  # no door: each 5xx waits it
    row = wait_final(store, order_id, timeout=3 * long_bound + 60)
    assert (row["state"], row["dead_reason"]) == ("dead", "retries_exhausted")
    assert len(broker.received) == 3 and broker.orders() == []


def test_an_unavailable_orderbook_holds_the_order_with_backoff_then_asks_a_human(
    store, broker, dispatch
):
    broker.script(Drop())
    broker.orderbook_behaviour = Status(403)  # OpenAlgo's semi_auto mode
    order_id = enqueue(store)
    dispatch(orderbook_wait_seconds=2.0)
    # The orderbook answered 403 twice: the order is held for another look, not given up.
    assert broker.wait_until(lambda: broker.orderbook_requests >= 2, timeout=10)
    assert store.reads.get_order(order_id)["state"] == "in_doubt"
    row = wait_final(store, order_id)
    assert (row["state"], row["dead_reason"]) == ("dead", "in_doubt")
    tries = [a for a in store.reads.list_attempts(order_id) if a["kind"] == "reconcile"]
    assert len(tries) >= 3  # asked again, with growing pauses
    assert len(broker.received) == 1


def test_unreachable_orderbook_goes_to_a_human(store, broker, dispatch):
    broker.script(Drop())
    broker.orderbook_behaviour = Status(500)
    order_id = enqueue(store)
    dispatch()
    row = wait_final(store, order_id)
    assert (row["state"], row["dead_reason"]) == ("dead", "in_doubt")
    assert len(broker.received) == 1


def test_rate_limits_hold_at_the_broker(store, broker, dispatch, frozen_heap):
    regular = [enqueue(store, body=payload(symbol=f"R{i}")) for i in range(25)]
    smart_ids = [enqueue(store, "placesmartorder", smart(symbol=f"X{i}")) for i in range(3)]
    dispatch(workers=8, smart_rate=1)
    for order_id in regular + smart_ids:
        wait_final(store, order_id, timeout=20)
    assert broker.max_in_window("placeorder", window=1.0) <= 10
    assert broker.max_in_window("placesmartorder", window=1.0) <= 1
    assert len(broker.orders()) == 28


def test_smart_orders_are_claimed_first(store, broker, dispatch):
    """One sender, so arrivals follow claims (with several, a later claim may overtake
    an earlier one on the wire)."""
    for i in range(3):
        enqueue(store, body=payload(symbol=f"R{i}"))
    enqueue(store, "placesmartorder", smart(symbol="X0"))
    dispatch(workers=1)
    assert broker.wait_for(4, timeout=10)
    assert [r.endpoint for r in broker.received][0] == "placesmartorder"


def test_thirty_exits_on_thirty_symbols_go_out_at_the_smart_lanes_budget(
    store, broker, dispatch, frozen_heap
):
    """A flatten of 30 instruments is not paced one per second: only two smart orders
    for the same instrument wait for each other."""
    ids = [enqueue(store, "placesmartorder", smart(symbol=f"F{i}")) for i in range(30)]
    dispatch(workers=8)
    for order_id in ids:
        wait_final(store, order_id, timeout=40)
    assert broker.max_in_window("placesmartorder", window=1.0) <= 10
    arrivals = [request.wall_time for request in broker.received]
    assert max(arrivals) - min(arrivals) < 15  # paced one per second they would span 29 s


def test_rate_limit_is_per_account(store, broker, dispatch, frozen_heap):
    for i in range(12):
        enqueue(store, body=payload(symbol=f"A{i}"))
        enqueue(store, body=payload(symbol=f"A{i}", apikey=OTHER_KEY))
    dispatch(workers=8)
    assert broker.wait_for(20, timeout=3)  # both accounts get their 10 in the first second
    assert broker.max_in_window("placeorder", window=1.0, key="apikey") <= 10


def test_an_exit_never_overtakes_the_entry_before_it(store, broker, dispatch):
    broker.script(Stall(0.3))
    entry = enqueue(store, body=payload(symbol="SBIN", action="BUY"))
    exit_ = enqueue(store, "placesmartorder", smart(symbol="SBIN"))
    dispatch(read_timeout=2.0)
    wait_final(store, exit_)
    assert [r.body["action"] for r in broker.received] == ["BUY", "SELL"]
    assert store.reads.get_order(entry)["state"] == "sent"


def test_undecryptable_key_is_dead_lettered_as_credentials(store, broker, dispatch, monkeypatch):
    order_id = enqueue(store)
    # The process restarted with another API_KEY_PEPPER than the key was sealed with.
    monkeypatch.setattr(store, "sealing", KeySealing("another pepper of at least 32 characters"))
    dispatch()
    row = wait_final(store, order_id)
    assert (row["state"], row["dead_reason"]) == ("dead", "credentials")
    assert broker.received == []


def test_stop_lets_the_in_flight_request_finish(store, broker, dispatch):
    broker.script(Stall(0.5))
    first = enqueue(store, body=payload(symbol="A"))
    dispatcher = dispatch(read_timeout=2.0, workers=1)
    assert broker.wait_for(1, timeout=5)
    second = enqueue(store, body=payload(symbol="B"))
    assert dispatcher.stop(timeout=5)
    assert store.reads.get_order(first)["state"] == "sent"
    assert store.reads.get_order(second)["state"] == "pending"  # left for the next start


def test_a_dispatcher_that_lost_its_lease_cannot_overwrite_the_new_owner(
    store, broker, dispatch, caplog
):
    """Force the race: A's request hangs at the broker while A falls silent (no
    heartbeat); B takes the order over, reconciles it, adopts the broker's orderid; then
    A's answer arrives and must change nothing."""
    broker.default = Hold()
    order_id = enqueue(store)
    slow = dispatch(heartbeat_seconds=60, heartbeat_timeout_seconds=120, read_timeout=10)
    assert broker.wait_for(1, timeout=5)
    dispatch(heartbeat_seconds=0.2, heartbeat_timeout_seconds=1.0)  # B judges A dead
    row = wait_final(store, order_id)
    assert row["state"] == "sent" and row["broker_orderid"] == broker.book[0]["orderid"]
    with caplog.at_level("WARNING"):
        broker.release_held()  # A finally hears "accepted"
        deadline = time.monotonic() + 5
        while "lost its lease" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "check the broker for a duplicate" in caplog.text  # loud, at ERROR
    row = store.reads.get_order(order_id)
    assert row["state"] == "sent" and row["broker_orderid"] == broker.book[0]["orderid"]
    trail = [
        (a["kind"], a["outcome"], a["actor"], a["broker_orderid"])
        for a in store.reads.list_attempts(order_id)
    ]
    assert [t[:2] for t in trail] == [
        ("recovery", "in_doubt"),
        ("reconcile", "found_at_broker"),
        ("send", "accepted_after_lease_lost"),
    ]
    assert trail[1][2] != slow.id and trail[2][2] == slow.id  # evidence kept, state not
    assert trail[2][3] == broker.book[0]["orderid"] and len(broker.received) == 1


def test_a_sender_that_lost_its_lease_before_sending_does_not_send(store, broker, settings, caplog):
    """The claim is made, then the sender is held up past its lease (a long pause) and
    recovery takes the order back (never stamped: straight to PENDING, for any
    dispatcher to claim afresh): the late sender must not send it."""
    from database.order_queue_db import utcnow

    order_id = enqueue(store)
    dispatcher = Dispatcher(store, settings)
    claimed_at = utcnow()
    order = store.claims.claim_next(
        dispatcher.id, now=claimed_at, lease_seconds=1, limits=dispatcher.limits
    ).order
    assert (
        store.recovery.recover_stale_sending(
            now=claimed_at + timedelta(seconds=2), heartbeat_timeout=60, check_at=claimed_at
        )
        == []
    )
    with caplog.at_level("ERROR"):
        dispatcher.sender.send(order)
    assert broker.received == []
    assert store.reads.get_order(order_id)["state"] == "pending"
    assert "lease lost before sending" in caplog.text
    dispatcher.client.close()


def test_send_time_not_claim_time_counts_for_rate_and_reconciliation(store, broker, settings):
    """A request that leaves well after its claim is stamped when it leaves."""
    from database.order_queue_db import utcnow

    order_id = enqueue(store)
    # This dispatcher's clock runs 30 s after the claim: the send happens "later".
    dispatcher = Dispatcher(
        store, settings, clock=Clock(wall=lambda: utcnow() + timedelta(seconds=30))
    )
    claimed_at = utcnow()
    order = store.claims.claim_next(
        dispatcher.id, now=claimed_at, lease_seconds=60, limits=dispatcher.limits
    ).order
    dispatcher.sender.send(order)
    row = store.reads.get_order(order_id)
    assert row["state"] == "sent" and len(broker.received) == 1
    assert row["claimed_at"] == claimed_at
    # The stamp is the sender's time, or on a database shared across machines the
    # database server's (``claims.stamp_send``).
    later = timedelta(0) if store.backend.spans_machines else timedelta(seconds=30)
    assert row["sent_at"] >= claimed_at + later
    dispatcher.client.close()


def test_an_order_the_broker_lists_after_our_lease_is_adopted_not_resent(store, broker, dispatch):
    """Our request times out, but the API goes on placing the order (OpenAlgo's broker
    client waits far longer than ours): it is listed only after our lease has passed.
    It must be adopted once listed, never sent a second time."""
    broker.default = Stall(7.5)  # booked 7.5 s after it arrived; our lease is 6.1 s
    order_id = enqueue(store)
    dispatcher = dispatch(upstream_timeout_seconds=4)  # no resend before 9 s after the send
    row = wait_final(store, order_id, timeout=30)
    assert dispatcher.stop(timeout=10)  # nothing more can leave...
    assert broker.wait_idle()  # ...nor arrive
    assert len(broker.received) == 1, store.reads.list_attempts(order_id)  # one request, ever
    assert row["state"] == "sent" and row["broker_orderid"] == broker.book[0]["orderid"]


def test_a_stopped_dispatcher_with_a_request_in_flight_is_not_resent(store, broker, dispatch):
    """SIGTERM with a slow request on the wire, another dispatcher takes over: the order
    must not be sent again while the first request may still be answered."""
    broker.default = Stall(2.5)  # the broker books the order only after 2.5 s
    order_id = enqueue(store)
    first = dispatch(read_timeout=3.0, heartbeat_timeout_seconds=1.0)
    assert broker.wait_for(1, timeout=5)
    assert not first.stop(timeout=0.3)  # gives up waiting; the request is still out
    second = dispatch(read_timeout=3.0, heartbeat_timeout_seconds=1.0)
    row = wait_final(store, order_id, timeout=20)
    assert second.stop(timeout=10) and first.stop(timeout=10)  # nothing more can leave...
    assert broker.wait_idle()  # ...nor arrive
    assert row["state"] == "sent" and len(broker.book) == 1, store.reads.list_attempts(order_id)


def test_a_retention_backlog_is_purged_in_batches_while_orders_still_go_out(
    store, broker, dispatch
):
    """A year of finished orders past retention, found at start: the dispatcher removes
    them a batch per pass, and a new order is sent meanwhile, not after the backlog."""
    from sqlalchemy import insert

    from database.order_queue_db import PURGE_BATCH, orders, utcnow
    from tests.support.rows import finished_order_row

    row = finished_order_row(utcnow() - timedelta(days=400))
    backlog = 3 * PURGE_BATCH + 7
    with store.engine.begin() as conn:
        conn.execute(insert(orders), [row] * backlog)
    dispatcher = dispatch()
    order_id = enqueue(store)
    assert wait_final(store, order_id)["state"] == "sent"
    deadline = time.monotonic() + 15
    while len(store.reads.list_orders(limit=10_000)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["id"] for r in store.reads.list_orders(limit=10_000)] == [order_id]
    assert dispatcher.alive
