"""An alert sent twice is queued once (``services/order_queue/alert_keys.py``): the real
app's Strategy webhook, on SQLite and PostgreSQL."""

import threading
from datetime import timedelta

import httpx
import pytest

from database.order_queue_db import AlertKey, DuplicateAlert, utcnow
from services.order_queue import runtime
from tests.support.app_process import free_port
from tests.support.helpers import add_strategy, post, served
from tests.support.store_steps import order

SIGNAL = {"symbol": "SBIN", "action": "BUY"}


@pytest.fixture
def webhook(runner):
    return add_strategy(runner)["webhook_id"]


def stored() -> list[dict]:
    return runtime.current().store.reads.list_orders()


def test_a_resent_alert_with_a_key_is_queued_once_and_answered_as_the_first(client, webhook):
    first = post(client, webhook, {**SIGNAL, "idempotency_key": "tv-SBIN-1"})
    again = post(client, webhook, {**SIGNAL, "idempotency_key": "tv-SBIN-1"})

    assert first.status_code == 200 and "duplicate" not in first.get_json()
    [row] = stored()
    answer = again.get_json()
    assert again.status_code == 200
    assert answer["duplicate"] is True and answer["order_ids"] == [row["id"]]
    assert answer["message"].startswith(first.get_json()["message"])
    stats = client.get("/order-queue/api/health").get_json()
    assert stats["resent_alerts_refused_today"] == 1


def test_the_header_form_is_a_key_too(client, webhook):
    for _ in range(2):
        answer = client.post(
            f"/strategy/webhook/{webhook}",
            json=SIGNAL,
            headers={"Idempotency-Key": "script-retry-7"},
        )
        assert answer.status_code == 200
    assert len(stored()) == 1 and answer.get_json()["duplicate"] is True


def test_the_same_key_with_another_body_is_a_conflict_and_queues_nothing(client, webhook):
    assert post(client, webhook, {**SIGNAL, "idempotency_key": "k"}).status_code == 200
    other = post(client, webhook, {"symbol": "SBIN", "action": "SELL", "idempotency_key": "k"})
    assert other.status_code == 409 and "conflict" in other.get_json()["message"]
    assert len(stored()) == 1


def test_different_keys_and_no_key_are_separate_alerts(client, webhook):
    for body in (
        {**SIGNAL, "idempotency_key": "a"},
        {**SIGNAL, "idempotency_key": "b"},
        SIGNAL,
        SIGNAL,
    ):
        answer = post(client, webhook, body)
        assert answer.status_code == 200 and "duplicate" not in answer.get_json()
    assert len(stored()) == 4


def test_a_resend_after_a_refusal_that_stored_nothing_is_new(client, webhook):
    refused = post(client, webhook, {"symbol": "NOPE", "action": "BUY", "idempotency_key": "r"})
    assert refused.status_code >= 400 and stored() == []
    assert post(client, webhook, {**SIGNAL, "idempotency_key": "r"}).status_code == 200
    assert len(stored()) == 1


@pytest.mark.parametrize("key", [17, "", "x" * 256])
def test_an_unusable_key_is_a_400_naming_the_field(client, webhook, key):
    answer = post(client, webhook, {**SIGNAL, "idempotency_key": key})
    assert answer.status_code == 400 and "idempotency_key" in answer.get_json()["message"]
    assert stored() == []


def test_eight_copies_at_once_queue_one_order(app, webhook):
    """Eight senders at the same moment, on a real threaded server: one takes the key
    with its order, seven find it and queue nothing."""
    port = free_port()
    server = served(app, port)
    start, answers = threading.Barrier(8), []

    def send():
        start.wait()
        answers.append(
            httpx.post(
                f"http://127.0.0.1:{port}/strategy/webhook/{webhook}",
                json={**SIGNAL, "idempotency_key": "burst-1"},
                timeout=30,
            )
        )

    senders = [threading.Thread(target=send) for _ in range(8)]
    try:
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    finally:
        server.stop()
    [row] = stored()
    assert [a.status_code for a in answers] == [200] * 8
    duplicates = [a.json() for a in answers if a.json().get("duplicate")]
    assert len(duplicates) == 7
    assert all(d["order_ids"] == [row["id"]] for d in duplicates)


def test_a_key_is_taken_with_its_order_or_not_at_all(store):
    """The store's side on both databases: a taken key refuses a copy (nothing stored),
    names a conflict, and is free again once it has expired."""
    now = utcnow()

    def key(body_hash="h", at=now):
        return AlertKey("/strategy/webhook/w", "k1", body_hash, at + timedelta(hours=24))

    first = key()
    store.intake.enqueue("placeorder", order(), now=now, max_age_seconds=300, alert_key=first)
    assert first.key_id is not None
    with pytest.raises(DuplicateAlert) as copy:
        store.intake.enqueue("placeorder", order(), now=now, max_age_seconds=300, alert_key=key())
    assert not copy.value.conflict
    with pytest.raises(DuplicateAlert) as other:
        store.intake.enqueue(
            "placeorder", order(), now=now, max_age_seconds=300, alert_key=key("x")
        )
    assert other.value.conflict
    assert len(store.reads.list_orders()) == 1

    later = now + timedelta(hours=25)  # the first key has expired
    store.intake.enqueue(
        "placeorder", order(), now=later, max_age_seconds=300, alert_key=key(at=later)
    )
    assert len(store.reads.list_orders()) == 2
