"""Alerts beyond the page reach a real HTTP receiver on loopback, once per key, without
ever waiting for it."""

import pytest

from database.order_queue_db import utcnow
from services.order_queue.alerts import Alerter
from services.order_queue.settings import OrderQueueSettings
from tests.support.alert_receiver import Receiver


@pytest.fixture
def receiver(monkeypatch):
    hook = Receiver()
    hook.settings = OrderQueueSettings(
        alert_webhook_url=hook.url, alert_telegram_chat_id="42", alert_repeat_seconds=60
    )
    yield hook
    hook.release.set()
    hook.server.shutdown()


def test_an_alert_reaches_the_receiver_once_per_key(receiver):
    alerter = Alerter(receiver.settings)
    assert alerter.raise_alert("dead", "7", "order #7 SBIN dead-lettered: rejected")
    assert not alerter.raise_alert("dead", "7", "order #7 SBIN dead-lettered: rejected")
    assert alerter.raise_alert("dead", "8", "order #8 TCS dead-lettered: expired")
    assert receiver.wait_for(2)
    first = receiver.bodies[0]
    assert first["text"] == first["content"] == "order #7 SBIN dead-lettered: rejected"
    assert first["event"] == "dead" and first["chat_id"] == "42"
    assert alerter.wait_delivered(5.0)  # everything raised has reached its channel
    assert len(receiver.bodies) == 2


def test_a_hanging_receiver_never_holds_up_the_caller(receiver):
    receiver.release.clear()  # the receiver takes the request and does not answer
    alerter = Alerter(receiver.settings)
    assert alerter.raise_alert("dead", "1", "first")
    for n in range(2, 50):
        alerter.raise_alert("dead", str(n), "more")  # returns at once every time
    assert receiver.bodies == []
    receiver.release.set()
    assert receiver.wait_for(20)


def test_a_dead_lettered_order_is_alerted(receiver, store, broker):
    from services.order_queue.dispatcher import Dispatcher
    from tests.support.fake_broker import Reject

    broker.script(Reject("RMS: margin exceeds"))
    store.intake.enqueue(
        "placeorder",
        {
            "apikey": "k" * 64,
            "strategy": "Trend",
            "symbol": "SBIN",
            "exchange": "NSE",
            "action": "BUY",
            "quantity": "1",
        },
        now=utcnow(),
        max_age_seconds=300,
    )
    dispatcher = Dispatcher(
        store,
        OrderQueueSettings(host_server=broker.base_url),
        alerter=Alerter(receiver.settings),
    )
    dispatcher.start()
    try:
        assert receiver.wait_for(1)
    finally:
        dispatcher.stop(timeout=5)
    assert "SBIN" in receiver.bodies[0]["text"] and "rejected" in receiver.bodies[0]["text"]
    assert "margin exceeds" in receiver.bodies[0]["text"]
