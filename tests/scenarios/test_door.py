"""The host's door: a dispatched request is placed only while its lease holds, the
receipt and the host's answer are kept for the reconciler (both stores)."""

from datetime import timedelta

from database import auth_db
from database.order_queue_db import RateLimits, utcnow
from services.order_queue import runtime
from services.order_queue.door_probe import DOOR_HEADER, LEASE_HEADER

LIMITS = RateLimits(smart=10, regular=10, window=1.0)


def queued_and_claimed(app):
    with app.app_context():
        apikey = auth_db.ensure_api_key("admin")
    store = runtime.current().store
    payload = {
        "apikey": apikey,
        "strategy": "s",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "BUY",
        "quantity": "1",
        "pricetype": "MARKET",
        "product": "MIS",
    }
    store.intake.enqueue("placeorder", payload, now=utcnow(), max_age_seconds=300)
    order = store.claims.claim_next("d1", now=utcnow(), lease_seconds=30, limits=LIMITS).order
    assert store.claims.stamp_send(order, clock=utcnow, lease_seconds=30, door_expected=True).go
    return store, order, payload


def row(store, order_id):
    return store.reads.get_order(order_id)


def test_a_probe_learns_of_the_door_without_touching_anything(client):
    answer = client.post("/api/v1/placeorder", json={}, headers={LEASE_HEADER: "probe"})
    assert answer.status_code == 204 and answer.headers[DOOR_HEADER]


def test_the_current_lease_is_admitted_with_a_receipt_and_its_answer_kept(app, client):
    store, order, payload = queued_and_claimed(app)
    answer = client.post(
        "/api/v1/placeorder",
        json=payload,
        headers={LEASE_HEADER: f"{order.id}:{order.lease_token}"},
    )
    assert answer.status_code == 200 and answer.headers[DOOR_HEADER]
    kept = store.reads.get_order(order.id)
    assert kept["host_instance"] and kept["host_received_at"] and kept["host_done_at"]
    assert kept["host_answer_status"] == 200
    assert answer.get_json()["orderid"] in kept["host_answer_body"]


def test_a_stale_lease_is_refused_and_nothing_is_placed(app, client):
    store, order, payload = queued_and_claimed(app)
    store.lifecycle.mark_in_doubt(
        order,
        now=utcnow(),
        actor="d1",
        outcome="unknown",
        error="read timeout",
        check_at=utcnow() + timedelta(seconds=1),
        latency_ms=1.0,
    )
    late = client.post(
        "/api/v1/placeorder",
        json=payload,
        headers={LEASE_HEADER: f"{order.id}:{order.lease_token}"},
    )
    assert late.status_code == 409 and late.headers[DOOR_HEADER]
    assert store.reads.get_order(order.id)["host_received_at"] is None
    book = client.post("/api/v1/orderbook", json={"apikey": payload["apikey"]}).get_json()
    assert book["data"]["orders"] == []


def test_a_malformed_lease_header_is_a_400(client):
    answer = client.post("/api/v1/placeorder", json={}, headers={LEASE_HEADER: "x:y"})
    assert answer.status_code == 400 and LEASE_HEADER in answer.get_json()["message"]


def test_without_the_queues_runtime_the_door_refuses_with_503_and_nothing_is_placed(
    app, client, monkeypatch
):
    """The door fails closed with the 503 it promises, not a 500 from its own crash."""
    store, order, payload = queued_and_claimed(app)
    with monkeypatch.context() as patched:
        patched.setattr(runtime, "_current", None)
        answer = client.post(
            "/api/v1/placeorder",
            json=payload,
            headers={LEASE_HEADER: f"{order.id}:{order.lease_token}"},
        )
    assert answer.status_code == 503 and answer.headers[DOOR_HEADER]
    assert "not placed" in answer.get_json()["message"]
    assert client.post("/api/v1/orderbook", json=payload).get_json()["data"]["orders"] == []
