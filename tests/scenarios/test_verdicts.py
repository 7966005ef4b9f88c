"""Every order to its end: the broker's verdict after "sent" (``verdicts.py``), against
the real app, whose paper broker accepts an order and then rejects it where
``PAPER_BROKER_REJECT_SYMBOLS`` says, as a broker's risk checks do; on SQLite and
PostgreSQL, alerts received by a real HTTP receiver."""

import time

import pytest

from blueprints import order_queue
from database import paper_broker_db
from database.auth_db import ensure_api_key, ensure_user
from database.host_db import db_session
from database.order_queue_db import BrokerStatus
from services.order_queue import runtime
from services.order_queue.verdicts import verdict_of
from services.order_queue_service import queue_order
from tests.conftest import make_app
from tests.support.alert_receiver import Receiver
from tests.support.helpers import add_strategy, post


def wait_for_verdict(order_id: int, status: str, timeout: float = 20.0) -> dict:
    store = runtime.current().store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.reads.get_order(order_id)
        if row is not None and row.get("broker_status") == status:
            return row
        time.sleep(0.05)
    raise AssertionError(f"order {order_id}: {store.reads.get_order(order_id)}")


def booked() -> list[tuple[str, str, str]]:
    try:
        return [
            (o.symbol, o.action, o.order_status)
            for o in db_session.query(paper_broker_db.PaperOrder).order_by("id")
        ]
    finally:
        db_session.remove()


@pytest.fixture
def host(tmp_path, queue_url):
    receiver = Receiver()
    app = make_app(
        tmp_path,
        ORDER_QUEUE_DATABASE_URL=queue_url,
        HOST_SERVER="https://openalgo.invalid",  # in-process, as inside OpenAlgo
        ORDER_QUEUE_VERDICT_POLL_SECONDS=0.1,
        ORDER_QUEUE_ALERT_WEBHOOK_URL=receiver.url,
    )
    webhook = add_strategy(app.test_cli_runner())["webhook_id"]
    order_queue.start(app)
    yield app, webhook, receiver
    runtime.stop_current(timeout=5)
    runtime.current().store.dispose()
    receiver.server.shutdown()


def test_a_filled_order_is_complete_and_a_rejected_exit_is_the_loudest_alert(host):
    app, webhook, receiver = host
    client = app.test_client()
    assert post(client, webhook, {"symbol": "SBIN", "action": "BUY"}).status_code == 200
    [entry] = runtime.current().store.reads.list_orders()
    assert wait_for_verdict(entry["id"], "complete")["broker_message"] is None

    app.config["PAPER_BROKER_REJECT_SYMBOLS"] = "SBIN"  # the broker's RMS turns
    assert post(client, webhook, {"symbol": "SBIN", "action": "SELL"}).status_code == 200
    exit_order = next(
        o for o in runtime.current().store.reads.list_orders() if o["id"] != entry["id"]
    )
    row = wait_for_verdict(exit_order["id"], "rejected")
    assert row["state"] == "sent" and "RMS" in row["broker_message"]

    assert receiver.wait_for(1)
    alert = receiver.bodies[0]["text"]
    assert alert.startswith("URGENT: EXIT REJECTED")
    for part in ("SELL", "SBIN", "Trend", row["broker_orderid"], "RMS", "STILL OPEN"):
        assert part in alert, part
    listed = runtime.current().store.verdicts.rejected_after_sent()
    assert [o["id"] for o in listed] == [exit_order["id"]]
    time.sleep(1.0)  # several follow-up rounds: nothing is sent again on its own
    assert booked() == [("SBIN", "BUY", "complete"), ("SBIN", "SELL", "rejected")]
    health = client.get("/order-queue/api/health").get_json()
    verdicts = health["broker_verdicts_today"]
    assert verdicts["complete"] == 1 and verdicts["rejected"] == 1


def test_a_rejected_order_is_listed_for_a_human_who_sends_it_again_or_sets_it_aside(host):
    app, webhook, _receiver = host
    with app.app_context():
        ensure_user("alice", "s3cret-pass")
    client = app.test_client()
    assert (
        client.post(
            "/auth/login", data={"username": "alice", "password": "s3cret-pass"}
        ).status_code
        == 302
    )
    app.config["PAPER_BROKER_REJECT_SYMBOLS"] = "SBIN"
    for action in ("BUY", "BUY"):
        assert post(client, webhook, {"symbol": "SBIN", "action": action}).status_code == 200
    first, second = sorted(o["id"] for o in runtime.current().store.reads.list_orders())
    wait_for_verdict(first, "rejected")
    wait_for_verdict(second, "rejected")
    listed = client.get("/order-queue/api/rejected").get_json()["orders"]
    assert [o["id"] for o in listed] == [second, first]
    assert listed[0]["broker_status"] == "rejected" and "RMS" in listed[0]["broker_message"]

    app.config["PAPER_BROKER_REJECT_SYMBOLS"] = ""  # the circuit limit lifted
    # The first one: a later order for its instrument went out since, so it asks first.
    asked = client.post("/order-queue/api/orders/replay", json={"ids": [first]}).get_json()
    [result] = asked["results"]
    assert result["needs_confirmation"] and result["later_sent"] == [second]
    sent = client.post("/order-queue/api/orders/replay", json={"ids": [second]}).get_json()
    [result] = sent["results"]
    assert result["ok"] and result["message"].startswith("sent again as order")
    copy = int(result["message"].rsplit(" ", 1)[1])
    assert wait_for_verdict(copy, "complete")["payload"]["action"] == "BUY"
    aside = client.post("/order-queue/api/orders/dismiss", json={"ids": [first]}).get_json()
    assert aside["results"][0]["ok"]
    assert client.get("/order-queue/api/rejected").get_json()["orders"] == []
    assert [status for _s, _a, status in booked()] == ["rejected", "rejected", "complete"]


def test_an_open_limit_order_is_open_and_its_cancellation_is_alerted(host):
    app, _webhook, receiver = host
    client = app.test_client()
    with app.app_context():
        key = ensure_api_key("admin")  # the strategy's user, as the webhook uses
    with app.test_request_context():
        queue_order(
            "placeorder",
            {
                "apikey": key,
                "strategy": "Trend",
                "symbol": "INFY",
                "exchange": "NSE",
                "product": "MIS",
                "action": "BUY",
                "pricetype": "LIMIT",
                "price": "1.05",
                "quantity": "3",
            },
        )
    [order] = runtime.current().store.reads.list_orders()
    row = wait_for_verdict(order["id"], "open")
    cancelled = client.post(
        "/api/v1/cancelorder", json={"apikey": key, "orderid": row["broker_orderid"]}
    )
    assert cancelled.status_code == 200
    wait_for_verdict(order["id"], "cancelled")
    assert receiver.wait_for(1)
    text = receiver.bodies[0]["text"]
    assert text.startswith("CANCELLED at the broker") and "INFY" in text and "BUY 3" in text


@pytest.mark.parametrize(
    ("entry", "status", "reason"),
    [
        ({"order_status": "complete"}, BrokerStatus.COMPLETE, None),
        (
            {"order_status": "REJECTED", "rejection_reason": "margin"},
            BrokerStatus.REJECTED,
            "margin",
        ),
        ({"order_status": "canceled"}, BrokerStatus.CANCELLED, None),
        ({"order_status": "trigger pending"}, BrokerStatus.OPEN, None),
        (None, BrokerStatus.UNKNOWN, "not in the broker's orderbook"),
    ],
)
def test_orderbook_words_as_verdicts(entry, status, reason):
    assert verdict_of(entry) == (status, reason)
