"""The face's ``init_db`` and the seed's names (``services/order_queue/seed_names.py``):
calls over the runtime's store."""

from datetime import timedelta

from tests.conftest import TEST_PEPPER
from tests.support.store_steps import (
    LIMITS,
    T0,
    order,
)


def test_the_seed_named_module_functions_work_on_the_runtimes_store(tmp_path, monkeypatch):
    """The proposal's names (docs/design.md, "Layout") are calls over the store the
    runtime owns; the face's ``init_db`` creates its schema."""
    from database import order_queue_db
    from services.order_queue import runtime
    from services.order_queue import seed_names as q
    from services.order_queue.settings import OrderQueueSettings

    monkeypatch.setattr(runtime, "_current", None)  # this test's runtime goes with it
    runtime.build(
        OrderQueueSettings(database_url=f"sqlite:///{tmp_path}/face.db", api_key_pepper=TEST_PEPPER)
    )
    order_queue_db.init_db()
    runtime.current().store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
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
