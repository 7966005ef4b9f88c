"""A gateway in front of the API (nginx, a CDN) answers for itself when the API is slow
or gone: only OpenAlgo's own record (the door's receipt and kept answer) may end a
request (docs/design.md, "Which answers end a request").

The host app is served by a real HTTP server on loopback; a real reverse proxy
(``tests/support/gateway.py``) stands in front of it, and the dispatcher posts through
the proxy over HTTP (``ORDER_QUEUE_API_URL``), as a worker outside OpenAlgo's process
would.  The host's paper broker books each order; its table is counted.  On SQLite and
PostgreSQL.
"""

import time

import pytest
from flask import jsonify, request

from database import paper_broker_db
from database.host_db import db_session
from services.order_queue import runtime
from tests.conftest import make_app
from tests.support.app_process import free_port
from tests.support.gateway import Gateway
from tests.support.helpers import add_strategy, post, served

SETTLE = 30.0


def booked() -> int:
    try:
        return db_session.query(paper_broker_db.PaperOrder).count()
    finally:
        db_session.remove()


def settled(timeout: float = SETTLE) -> list[dict]:
    """The queue's orders once none is unfinished (pending, sending, in doubt)."""
    store = runtime.current().store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.reads.list_orders()
        if rows and all(row["state"] not in ("pending", "sending", "in_doubt") for row in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"orders still unfinished: {store.reads.list_orders()}")


@pytest.fixture
def behind_gateway(tmp_path, queue_url):
    """``start(read_timeout, prepare, **config)``: the host app served on a port, a gateway in
    front of it, the dispatcher posting through the gateway; returns (app, gateway,
    server, webhook id)."""
    started = []

    def start(read_timeout: float, prepare=None, **config):
        port = free_port()
        gateway = Gateway(port, read_timeout=read_timeout).__enter__()
        app = make_app(
            tmp_path,
            ORDER_QUEUE_DATABASE_URL=queue_url,
            ORDER_QUEUE_API_URL=gateway.base_url,
            ORDER_QUEUE_BROKER_SETTLE_SECONDS=1,
            ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS=60,
            ORDER_QUEUE_MAX_RETRIES=3,
            **config,
        )
        if prepare is not None:
            prepare(app)  # before the first request, as Flask requires
        server = served(app, port)
        webhook_id = add_strategy(app.test_cli_runner())["webhook_id"]
        runtime.current().start_dispatcher()
        started.append((gateway, server))
        return app, gateway, server, webhook_id

    yield start
    runtime.stop_current(timeout=5)
    runtime.current().store.dispose()
    for gateway, server in started:
        server.stop()
        gateway.__exit__()


def test_a_gateway_timeout_while_the_api_books_later_is_adopted_not_sent_again(behind_gateway):
    """nginx gives up after 1 s with an HTML 504; OpenAlgo books the order at 4 s.  The
    504 ends nothing: the door's kept answer settles the order as placed, once."""
    app, gateway, _server, webhook_id = behind_gateway(1.0, PAPER_BROKER_LATENCY_MS=4000)
    assert (
        post(app.test_client(), webhook_id, {"symbol": "SBIN", "action": "BUY"}).status_code == 200
    )

    [row] = settled()
    assert gateway.statuses("/placeorder") == [504]
    assert booked() == 1
    assert row["state"] == "sent" and row["broker_orderid"]


def test_a_gateway_502_while_nothing_listens_is_sent_once_after_the_restart(behind_gateway):
    """OpenAlgo restarts behind nginx: its HTML 502s say the request never got in (no
    receipt at the door), so the order waits for the API, spends no retries on the
    gateway, and is sent once when OpenAlgo is back."""
    app, gateway, server, webhook_id = behind_gateway(10.0)
    client = app.test_client()
    assert post(client, webhook_id, {"symbol": "SBIN", "action": "BUY"}).status_code == 200
    settled()  # the first order went through the door: its header is known
    server.stop()
    assert post(client, webhook_id, {"symbol": "SBIN", "action": "BUY"}).status_code == 200
    deadline = time.monotonic() + SETTLE
    while gateway.statuses("/placeorder").count(502) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gateway.statuses("/placeorder").count(502) >= 4  # more than the retry budget
    server.start()

    rows = settled()
    assert booked() == 2
    assert [row["state"] for row in rows] == ["sent", "sent"]


def test_openalgos_own_500_after_booking_is_still_one_order(behind_gateway):
    """OpenAlgo's broker module raises after the broker booked the order: its 500 is
    OpenAlgo's own (kept at the door), the orderbook shows the order, it is adopted."""
    failed = []

    def broker_module_raises_after_booking(app):
        @app.after_request
        def answer_500(response):
            if request.path.endswith("/placeorder") and response.status_code == 200:
                if not failed:
                    failed.append(response.get_json().get("orderid"))
                    failure = jsonify(status="error", message="broker module raised")
                    failure.status_code = 500
                    return failure
            return response

    app, gateway, _server, webhook_id = behind_gateway(
        10.0, prepare=broker_module_raises_after_booking
    )
    assert (
        post(app.test_client(), webhook_id, {"symbol": "SBIN", "action": "BUY"}).status_code == 200
    )

    [row] = settled()
    assert gateway.statuses("/placeorder") == [500]
    assert booked() == 1
    assert row["state"] == "sent" and row["broker_orderid"] == failed[0]
