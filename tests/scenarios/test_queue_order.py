"""``queue_order(endpoint, payload)``: upstream's face, durable underneath."""

import pytest

from blueprints import order_queue
from services.order_queue import runtime
from services.order_queue_service import queue_order
from tests.conftest import make_app

KEY = "q" * 64


def payload(symbol="SBIN"):
    return {
        "apikey": KEY,
        "strategy": "S1",
        "symbol": symbol,
        "exchange": "NSE",
        "product": "MIS",
        "action": "BUY",
        "pricetype": "MARKET",
        "quantity": "1",
    }


def test_returns_none_after_the_row_is_committed(app):
    assert queue_order("placeorder", payload()) is None
    [row] = runtime.current().store.reads.list_orders()
    assert row["state"] == "pending" and row["endpoint"] == "placeorder"


@pytest.mark.parametrize("endpoint", ["cancelorder", "placesmartorder2", "modifyorder"])
def test_other_endpoints_raise_value_error_and_store_nothing(app, endpoint):
    with pytest.raises(ValueError):
        queue_order(endpoint, payload())
    assert runtime.current().store.reads.list_orders() == []


def test_enqueue_wakes_the_dispatcher_instead_of_waiting_for_a_poll(tmp_path, broker):
    app = make_app(
        tmp_path,
        HOST_SERVER=broker.base_url,
        ORDER_QUEUE_POLL_SECONDS=60,
        ORDER_QUEUE_HEARTBEAT_SECONDS=60,
        ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS=120,
    )
    order_queue.start(app)
    try:
        queue_order("placeorder", payload("FIRST"))
        assert broker.wait_for(1, timeout=10)
        queue_order("placeorder", payload("SECOND"))  # the loop is now asleep for 60 s
        assert broker.wait_for(2, timeout=10)
    finally:
        runtime.stop_current(timeout=5)
