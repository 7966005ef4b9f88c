"""Sending one claimed order to a real HTTP fake broker, without the dispatcher's loop."""

import threading

import httpx
import pytest

from database.order_queue_db import RateLimits
from services.order_queue.alerts import Alerter
from services.order_queue.clock import Clock
from services.order_queue.door_probe import DoorProbe
from services.order_queue.recording import OutcomeRecorder
from services.order_queue.sending import Sender
from services.order_queue.settings import OrderQueueSettings
from tests.support.fake_broker import Reject

KEY = "s" * 60 + "Wxyz"
LIMITS = RateLimits(smart=10, regular=10, window=1.0, tolerance=0.05)
ORDER = {
    "apikey": KEY,
    "strategy": "S1",
    "symbol": "SBIN",
    "exchange": "NSE",
    "product": "MIS",
    "action": "BUY",
    "pricetype": "MARKET",
    "quantity": "10",
}


@pytest.fixture
def parts(store, broker):
    settings = OrderQueueSettings(host_server=broker.base_url, read_timeout=2.0)
    clock, stopping = Clock(), threading.Event()
    with httpx.Client(base_url=broker.base_url, timeout=2.0) as client:
        door = DoorProbe(client)
        sender = Sender(
            store=store,
            settings=settings,
            clock=clock,
            client=client,
            door=door,
            recorder=OutcomeRecorder(store, settings, clock, "sender-test", Alerter(settings)),
            limits=LIMITS,
            stopping=stopping,
        )
        yield sender, stopping


def claimed(store):
    store.intake.enqueue("placeorder", ORDER, now=Clock().now(), max_age_seconds=300)
    return store.claims.claim_next(
        "sender-test", now=Clock().now(), lease_seconds=30, limits=LIMITS
    ).order


def test_the_broker_gets_the_key_and_the_order_is_sent_after_asking_the_door(store, broker, parts):
    sender, _ = parts
    assert not sender.door.known
    order = claimed(store)
    sender.send(order)
    assert sender.door.known and not sender.door.host_has_door  # the fake broker has no door
    [arrived] = broker.received
    assert arrived.body["apikey"] == KEY and arrived.body["symbol"] == "SBIN"
    assert store.reads.get_order(order.id)["state"] == "sent"


def test_a_broker_error_that_echoes_the_key_is_kept_masked(store, broker, parts):
    sender, _ = parts
    broker.script(Reject(f"invalid apikey {KEY}"))
    order = claimed(store)
    sender.send(order)
    row = store.reads.get_order(order.id)
    assert (row["state"], row["dead_reason"]) == ("dead", "rejected")
    assert KEY not in row["last_error"] and "****Wxyz" in row["last_error"]


def test_a_stopping_dispatcher_sends_nothing_and_puts_the_order_back(store, broker, parts):
    sender, stopping = parts
    order = claimed(store)
    stopping.set()
    sender.send(order)
    assert broker.received == []
    row = store.reads.get_order(order.id)
    assert (row["state"], row["attempts"]) == ("pending", 0)
    assert store.reads.list_attempts(order.id)[-1]["outcome"] == "not_sent"
