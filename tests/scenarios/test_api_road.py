"""The road orders take to the API, run for real (``api_road.py``): inside the app that
serves the API no order needs the network; an address another process answers gets
HTTP as before; a worker reaches a unix socket.  On SQLite and PostgreSQL."""

import time

import pytest

from blueprints import order_queue
from database import paper_broker_db
from database.host_db import db_session
from services.order_queue import runtime
from services.order_queue.api_road import Road
from tests.conftest import make_app
from tests.support.app_process import free_port
from tests.support.helpers import add_strategy, post, served

SIGNAL = {"symbol": "SBIN", "action": "BUY"}


def booked() -> int:
    try:
        return db_session.query(paper_broker_db.PaperOrder).count()
    finally:
        db_session.remove()


def sent_order(timeout: float = 30.0) -> dict:
    store = runtime.current().store
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.reads.list_orders()
        if rows and rows[0]["state"] == "sent":
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"not sent: {store.reads.list_orders()}")


@pytest.fixture
def host(tmp_path, queue_url):
    """``build(**config)``: the host app on ``queue_url`` with a strategy; stopped after."""

    def build(**config):
        app = make_app(tmp_path, ORDER_QUEUE_DATABASE_URL=queue_url, **config)
        return app, add_strategy(app.test_cli_runner())["webhook_id"]

    yield build
    runtime.stop_current(timeout=5)
    runtime.current().store.dispose()


def test_inside_the_app_a_public_host_server_is_never_dialled(host):
    """OpenAlgo behind nginx: HOST_SERVER is its https domain, which does not even
    resolve here.  The order still reaches the API, through its door, in-process."""
    app, webhook_id = host(HOST_SERVER="https://openalgo.invalid")
    order_queue.start(app)
    assert post(app.test_client(), webhook_id, SIGNAL).status_code == 200

    row = sent_order()
    assert booked() == 1 and row["broker_orderid"]
    dispatcher = runtime.current().dispatcher
    assert row["host_instance"] == dispatcher.id  # the door took it and kept its answer
    assert row["host_answer_status"] == 200
    health = app.test_client().get("/order-queue/api/health").get_json()
    assert health["process"]["api_road"].startswith("in-process")


def test_a_loopback_host_server_this_process_serves_is_taken_in_process(host):
    port = free_port()
    app, webhook_id = host(HOST_SERVER=f"http://127.0.0.1:{port}")
    server = served(app, port)
    try:
        order_queue.start(app)
        assert post(app.test_client(), webhook_id, SIGNAL).status_code == 200
        sent_order()
        assert runtime.current().dispatcher.road.road is Road.IN_PROCESS
        assert booked() == 1
    finally:
        server.stop()


def test_a_loopback_host_server_another_process_answers_gets_http(host, broker):
    app, webhook_id = host(HOST_SERVER=broker.base_url)
    order_queue.start(app)
    assert post(app.test_client(), webhook_id, SIGNAL).status_code == 200
    assert broker.wait_for(1, timeout=10)
    sent_order()
    assert runtime.current().dispatcher.road.road is Road.HTTP
    assert booked() == 0  # the host's own paper broker saw nothing


def test_a_worker_reaches_the_api_on_a_unix_socket(host, tmp_path):
    """install.sh binds gunicorn to a unix socket and opens no TCP port: a worker (or
    the drain) is pointed at the socket with ORDER_QUEUE_API_URL=unix:/path."""
    socket_path = tmp_path / "openalgo.sock"
    app, webhook_id = host(
        HOST_SERVER="https://openalgo.invalid", ORDER_QUEUE_API_URL=f"unix:{socket_path}"
    )
    server = served(app, f"unix://{socket_path}")
    try:
        runtime.current().start_dispatcher()  # the worker's start: HTTP, never in-process
        assert post(app.test_client(), webhook_id, SIGNAL).status_code == 200
        row = sent_order()
        assert runtime.current().dispatcher.road.road is Road.HTTP
        assert booked() == 1 and row["host_answer_status"] == 200
    finally:
        server.stop()
