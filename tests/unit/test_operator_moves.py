"""``store.operator_moves``: replay, dismiss, cancel and purging.  Run against SQLite and
PostgreSQL alike.
"""

from datetime import timedelta

from tests.support.store_steps import (
    T0,
    claim,
    dead_order,
    enqueue,
    finish,
    raw,
)


def test_replay_puts_a_dead_order_back_in_line_with_a_fresh_expiry(store):
    order_id = dead_order(store)
    later = T0 + timedelta(hours=2)
    assert store.operator_moves.replay(order_id, now=later, actor="alice", max_age_seconds=300)
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
    assert not store.operator_moves.replay(order_id, now=later, actor="alice", max_age_seconds=300)


def test_dismiss_and_cancel_only_from_their_states(store):
    dead = dead_order(store)
    pending = enqueue(store, symbol="TCS")
    assert not store.operator_moves.cancel(dead, now=T0, actor="bob", note=None)
    assert not store.operator_moves.dismiss(pending, now=T0, actor="bob", note=None)
    assert store.operator_moves.dismiss(dead, now=T0, actor="bob", note="fat finger, ignore")
    assert store.operator_moves.cancel(pending, now=T0, actor="bob", note=None)
    assert store.reads.get_order(dead)["state"] == "dismissed"
    assert store.reads.get_order(pending)["state"] == "cancelled"
    assert store.reads.list_attempts(dead)[-1]["message"] == "fat finger, ignore"
    assert claim(store) is None


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
    assert store.operator_moves.purge_finished(older_than=T0 + timedelta(days=30)) == 2
    remaining = {row["id"] for row in store.reads.list_orders()}
    assert remaining == {old_dead, new_sent, pending}
    assert old_dismissed not in remaining and store.reads.list_attempts(old_sent) == []


def test_purge_goes_in_batches_so_a_backlog_never_holds_the_writer_long(store):
    old = [finish(store, "sent", at=T0) for _ in range(5)]
    assert store.operator_moves.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 2
    assert store.operator_moves.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 2
    assert store.operator_moves.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 1
    assert store.operator_moves.purge_finished(older_than=T0 + timedelta(days=30), limit=2) == 0
    assert not {row["id"] for row in store.reads.list_orders()} & set(old)
