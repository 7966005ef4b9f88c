"""``store.receipts``: what the host's door records of a request, and the answer kept for
the reconciler.  Run against SQLite and PostgreSQL alike."""

from datetime import timedelta

from tests.support.store_steps import (
    T0,
    claim,
    claim_and_stamp,
    claim_in_doubt,
    enqueue,
    mark_for_retry,
)


def put_in_doubt(store, claimed, at):
    assert store.lifecycle.mark_in_doubt(
        claimed, now=at, actor="d1", outcome="unknown", error="no answer", check_at=at
    )
    return claim_in_doubt(store, at)


def test_a_receipt_is_written_only_while_the_sender_holds_the_lease(store):
    enqueue(store)
    claimed = claim_and_stamp(store)
    assert not store.receipts.record_receipt(claimed.id, "another-token", instance="p1", now=T0)
    assert store.receipts.record_receipt(claimed.id, claimed.lease_token, instance="p1", now=T0)
    row = store.reads.get_order(claimed.id)
    assert (row["host_instance"], row["host_received_at"]) == ("p1", T0)


def test_a_request_arriving_after_its_order_was_taken_over_is_refused(store):
    enqueue(store)
    claimed = claim_and_stamp(store)
    later = T0 + timedelta(seconds=10)
    assert store.recovery.recover_stale_sending(now=later, heartbeat_timeout=5, check_at=later)
    assert not store.receipts.record_receipt(
        claimed.id, claimed.lease_token, instance="p1", now=later
    )
    assert store.reads.get_order(claimed.id)["host_received_at"] is None


def test_the_answer_is_kept_for_its_own_receipt_and_read_back_with_the_order(store):
    enqueue(store)
    claimed = claim_and_stamp(store)
    store.receipts.record_receipt(claimed.id, claimed.lease_token, instance="p1", now=T0)
    done = T0 + timedelta(seconds=1)
    # An answer for another receipt of the same order (an earlier send) changes nothing.
    store.receipts.record_host_answer(
        claimed.id, instance="p0", received_at=T0, now=done, status=500, body="old"
    )
    store.receipts.record_host_answer(
        claimed.id, instance="p1", received_at=T0, now=done, status=200, body='{"orderid": "9"}'
    )
    reconciling = put_in_doubt(store, claimed, done)
    assert reconciling is not None and reconciling.id == claimed.id
    receipt = reconciling.receipt
    assert (receipt.instance, receipt.received_at, receipt.done_at) == ("p1", T0, done)
    assert (receipt.answer_status, receipt.answer_body) == (200, '{"orderid": "9"}')


def test_an_order_the_door_never_saw_has_no_receipt_time(store):
    enqueue(store)
    claimed = claim(store)
    assert store.claims.stamp_send(claimed, clock=lambda: T0, lease_seconds=30, door_expected=True)
    receipt = put_in_doubt(store, claimed, T0).receipt
    assert receipt.door_expected and receipt.received_at is None


def test_a_late_acceptance_is_kept_in_the_trail_as_evidence(store):
    order_id = enqueue(store)
    store.receipts.record_late_acceptance(
        order_id, now=T0, actor="d1", broker_orderid="B9", message="accepted after lease lost"
    )
    [attempt] = store.reads.list_attempts(order_id)
    assert (attempt["outcome"], attempt["broker_orderid"]) == ("accepted_after_lease_lost", "B9")
    assert store.reads.get_order(order_id)["state"] == "pending"  # the evidence moves nothing


def test_a_receipt_belongs_to_its_send_and_the_next_claim_leaves_it_alone(store):
    """The door is the only writer of what the host did: a new claim and stamp do not
    touch the receipt's columns, and the next send does not read the earlier one's."""
    enqueue(store)
    first = claim_and_stamp(store)
    store.receipts.record_receipt(first.id, first.lease_token, instance="p1", now=T0)
    store.receipts.record_host_answer(
        first.id, instance="p1", received_at=T0, now=T0, status=503, body="busy"
    )
    mark_for_retry(store, first, retry_at=T0)
    later = T0 + timedelta(seconds=5)
    second = claim_and_stamp(store, at=later)
    assert second.id == first.id and second.receipt.instance is None
    row = store.reads.get_order(first.id)
    assert (row["host_instance"], row["host_answer_status"]) == ("p1", 503)  # as the door wrote
    receipt = put_in_doubt(store, second, later).receipt
    assert (receipt.instance, receipt.done_at, receipt.answer_status) == (None, None, None)
