"""Writing verdicts down: each outcome lands in the store as the lifecycle says, on
both backends, with no network."""

from datetime import timedelta

import pytest

from database.order_queue_db import RateLimits
from services.order_queue.alerts import Alerter
from services.order_queue.clock import Clock
from services.order_queue.outcome import Outcome, Verdict
from services.order_queue.recording import OutcomeRecorder, describe
from services.order_queue.settings import OrderQueueSettings

UNLIMITED = RateLimits(smart=10**6, regular=10**6, window=1.0)
ORDER = {
    "apikey": "r" * 64,
    "strategy": "S1",
    "symbol": "SBIN",
    "exchange": "NSE",
    "product": "MIS",
    "action": "BUY",
    "pricetype": "MARKET",
    "quantity": "10",
}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def recorder(store, clock):
    return OutcomeRecorder(
        store,
        OrderQueueSettings(max_retries=2, rate_window_seconds=1.0, reconcile_interval_seconds=3.0),
        clock,
        actor="test-dispatcher",
        alerter=Alerter(),  # no channel configured: raises nothing
    )


def claimed(store, clock):
    store.intake.enqueue("placeorder", ORDER, now=clock.now(), max_age_seconds=300)
    return store.claims.claim_next(
        "test-dispatcher", now=clock.now(), lease_seconds=30, limits=UNLIMITED
    ).order


def test_accepted_is_sent_with_the_broker_order_id(store, clock, recorder):
    order = claimed(store, clock)
    recorder.apply(order, Verdict(Outcome.ACCEPTED, 200, orderid="B7"), latency_ms=12.0)
    row = store.reads.get_order(order.id)
    assert (row["state"], row["broker_orderid"], row["attempts"]) == ("sent", "B7", 1)
    assert store.reads.list_attempts(order.id)[-1]["actor"] == "test-dispatcher"


def test_not_sent_goes_back_without_using_the_budget_and_not_before_the_window(
    store, clock, recorder
):
    order = claimed(store, clock)
    recorder.apply(order, Verdict(Outcome.NOT_SENT, message="refused"), latency_ms=0.0)
    row = store.reads.get_order(order.id)
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert row["available_at"] >= clock.now() + timedelta(seconds=0.9)


def test_transient_retries_until_the_budget_is_spent(store, clock, recorder):
    order = claimed(store, clock)
    recorder.apply(order, Verdict(Outcome.TRANSIENT, 408, message="slow down"), 5.0)
    assert store.reads.get_order(order.id)["state"] == "pending"
    again = store.claims.claim_next(
        "test-dispatcher",
        now=clock.now() + timedelta(seconds=60),
        lease_seconds=30,
        limits=UNLIMITED,
    ).order
    recorder.apply(again, Verdict(Outcome.TRANSIENT, 408, message="slow down"), 5.0)
    row = store.reads.get_order(order.id)
    assert (row["state"], row["dead_reason"], row["attempts"]) == ("dead", "retries_exhausted", 2)


def test_throttled_goes_back_without_using_the_budget_after_retry_after(store, clock, recorder):
    order = claimed(store, clock)
    before = clock.now()
    recorder.apply(
        order,
        Verdict(Outcome.THROTTLED, 429, message="10 per 1 second", retry_after=3.0),
        latency_ms=2.0,
    )
    row = store.reads.get_order(order.id)
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert row["available_at"] >= before + timedelta(seconds=3)
    [attempt] = store.reads.list_attempts(order.id)
    assert (attempt["outcome"], attempt["http_status"]) == ("throttled", 429)


@pytest.mark.parametrize(
    "verdict, state, reason",
    [
        (Verdict(Outcome.UNKNOWN, 502, message="bad gateway"), "in_doubt", None),
        (Verdict(Outcome.REJECTED, 400, message="RMS"), "dead", "rejected"),
        (Verdict(Outcome.CREDENTIALS, 403, message="invalid key"), "dead", "credentials"),
    ],
)
def test_each_outcome_lands_in_its_state(store, clock, recorder, verdict, state, reason):
    order = claimed(store, clock)
    recorder.apply(order, verdict, latency_ms=5.0)
    row = store.reads.get_order(order.id)
    assert (row["state"], row["dead_reason"]) == (state, reason)
    assert row["last_error"] == describe(verdict)


def test_an_acceptance_after_the_lease_was_lost_is_kept_as_evidence(store, clock, recorder):
    order = claimed(store, clock)
    store.recovery.recover_stale_sending(
        now=clock.now() + timedelta(seconds=60), heartbeat_timeout=1, check_at=clock.now()
    )
    recorder.apply(order, Verdict(Outcome.ACCEPTED, 200, orderid="LATE1"), latency_ms=9000.0)
    trail = store.reads.list_attempts(order.id)
    assert trail[-1]["outcome"] == "accepted_after_lease_lost"
    assert trail[-1]["broker_orderid"] == "LATE1"
    assert store.reads.get_order(order.id)["state"] != "sent"  # the newer owner decides


def test_describe_names_the_status_when_there_is_one():
    assert describe(Verdict(Outcome.UNKNOWN, 503, message="busy")) == "HTTP 503: busy"
    assert describe(Verdict(Outcome.UNKNOWN)) == "unknown"
