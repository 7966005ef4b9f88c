"""Tests for the fake broker, over its real socket.

Other tests trust the fake to misbehave exactly as told and to record exactly
what arrived, so each behaviour is checked here the way the order queue will
meet it: an httpx call with explicit timeouts, one short test per behaviour the fake
offers.
"""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.fake_broker import (
    IST,
    Accept,
    AcceptThenHang,
    Drop,
    FakeBroker,
    Hold,
    Reject,
    Stall,
    Status,
    peak_count,
)

ROOT = Path(__file__).resolve().parents[2]
ORDER = {
    "apikey": "key-a",
    "strategy": "S1",
    "symbol": "SBIN",
    "exchange": "NSE",
    "action": "BUY",
    "product": "MIS",
    "pricetype": "MARKET",
    "quantity": "10",
}
SMART_ORDER = ORDER | {
    "position_size": "5",
    "price": "0",
    "trigger_price": "0",
    "disclosed_quantity": "0",
}


@pytest.fixture
def broker():
    with FakeBroker() as b:
        yield b


@pytest.fixture(scope="module")
def client():
    """Shared: building an httpx client (its TLS context) costs ~40 ms."""
    with httpx.Client(timeout=httpx.Timeout(2.0)) as c:
        yield c


def place(client, broker, body=ORDER, endpoint="placeorder", **kwargs):
    return client.post(f"{broker.base_url}/api/v1/{endpoint}", json=body, **kwargs)


def orderbook(client, broker):
    return client.post(f"{broker.base_url}/api/v1/orderbook", json={"apikey": "key-a"})


def in_background(func):
    """Run ``func`` in a thread; the returned getter joins and re-raises."""
    outcome = {}

    def target():
        try:
            outcome["value"] = func()
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result(timeout=3.0):
        thread.join(timeout)
        assert not thread.is_alive(), "background request did not finish"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result


# accept and recording ------------------------------------------------------


def test_default_accepts_with_unique_numeric_orderids(broker, client):
    before = time.time()
    first = place(client, broker)
    second = place(client, broker, SMART_ORDER, "placesmartorder")

    assert first.status_code == second.status_code == 200
    ids = [first.json()["orderid"], second.json()["orderid"]]
    assert first.json()["status"] == "success"
    assert all(i.isdigit() for i in ids) and ids[0] != ids[1]

    one, two = broker.received
    assert (one.endpoint, one.path) == ("placeorder", "/api/v1/placeorder")
    assert (two.endpoint, two.path) == ("placesmartorder", "/api/v1/placesmartorder")
    assert one.body == ORDER and two.body == SMART_ORDER
    assert [one.orderid, two.orderid] == ids
    assert one.status == two.status == 200
    assert one.monotonic <= two.monotonic <= time.monotonic()
    assert before <= one.wall_time <= time.time()
    assert [r.orderid for r in broker.orders()] == ids


def test_received_is_a_snapshot(broker, client):
    place(client, broker)
    broker.received[0].status = 999
    broker.received.clear()
    assert broker.received[0].status == 200


def test_wait_for_blocks_until_count_or_timeout(broker, client):
    assert broker.wait_for(1, timeout=0.05) is False
    pending = in_background(lambda: place(client, broker))
    assert broker.wait_for(1, timeout=2.0) is True
    pending()


def test_wait_idle_waits_for_a_request_still_being_served(broker, client):
    assert broker.wait_idle(timeout=0.5) is True  # nobody connected
    broker.default = Hold()
    pending = in_background(lambda: place(client, broker))
    assert broker.wait_for(1, timeout=2.0)
    assert broker.wait_idle(timeout=0.1) is False  # held: its answer (and booking) is to come
    broker.release_held()
    assert broker.wait_idle(timeout=2.0) is True
    assert pending().status_code == 200 and len(broker.book) == 1


def test_wait_idle_sees_a_connection_not_yet_served(broker):
    import socket

    with socket.create_connection(("127.0.0.1", broker.port)) as raw:
        raw.sendall(b"POST /api/v1/placeorder HTTP/1.0\r\nContent-Length: 2\r\n\r\n")
        # The body is still to come: the connection is open, the request not yet served.
        assert broker.wait_idle(timeout=0.2) is False
        raw.sendall(b"{}")
        raw.recv(1024)
    assert broker.wait_idle(timeout=2.0) is True


def test_invalid_json_is_recorded_and_answered_400_without_using_the_script(broker, client):
    broker.script(Status(503))
    bad = client.post(f"{broker.base_url}/api/v1/placeorder", content=b"not json")
    assert bad.status_code == 400
    assert place(client, broker).status_code == 503
    assert [r.body for r in broker.received] == [None, ORDER]


def test_unknown_path_is_404_and_not_recorded(broker, client):
    response = client.post(f"{broker.base_url}/api/v1/nope", json={})
    assert response.status_code == 404
    assert broker.received == []


# programmed behaviours -------------------------------------------------------


def test_status_and_reject_answer_without_booking(broker, client):
    broker.script(
        Status(429),
        Status(500, body="<html>upstream exploded</html>"),
        Status(400, {"status": "error", "message": "Invalid quantity"}),
        Reject("Invalid symbol"),
    )
    responses = [place(client, broker) for _ in range(4)]

    assert [r.status_code for r in responses] == [429, 500, 400, 200]
    assert responses[0].json() == {"status": "error", "message": "Too Many Requests"}
    assert responses[1].text == "<html>upstream exploded</html>"
    assert responses[2].json() == {"status": "error", "message": "Invalid quantity"}
    assert responses[3].json() == {"status": "error", "message": "Invalid symbol"}
    assert [r.status for r in broker.received] == [429, 500, 400, 200]
    assert broker.orders() == [] and broker.book == []


def test_script_is_fifo_then_falls_back_to_default(broker, client):
    broker.script(Status(503), Status(502))
    broker.default = Reject("market closed")
    codes = [place(client, broker).status_code for _ in range(3)]
    assert codes == [503, 502, 200]
    assert broker.received[2].orderid is None


def test_behaviour_for_wins_and_leaves_the_script_alone(broker, client):
    broker.behaviour_for = lambda body: Reject("bad") if body["symbol"] == "BAD" else None
    broker.script(Status(500))

    assert place(client, broker, ORDER | {"symbol": "BAD"}).json()["status"] == "error"
    assert place(client, broker).status_code == 500
    assert place(client, broker).json()["status"] == "success"


def test_stall_delays_the_answer(broker, client):
    broker.script(Stall(0.3), Stall(0.1, then=Status(502)))
    start = time.monotonic()
    assert place(client, broker).status_code == 200
    assert time.monotonic() - start >= 0.3
    assert place(client, broker).status_code == 502


def test_stall_past_client_timeout_still_books_the_order(broker, client):
    broker.script(Stall(0.4))
    with pytest.raises(httpx.ReadTimeout):
        place(client, broker, timeout=httpx.Timeout(2.0, read=0.1))
    assert broker.wait_until(lambda: len(broker.orders()) == 1, timeout=2.0)


def test_accept_then_hang_books_but_never_answers(broker, client):
    broker.script(AcceptThenHang(0.2))
    start = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        place(client, broker)
    assert time.monotonic() - start >= 0.2

    (record,) = broker.received
    assert record.accepted and record.status is None
    assert [row["orderid"] for row in broker.book] == [record.orderid]


def test_accept_then_hang_release_closes_early(broker, client):
    hang = AcceptThenHang(30)
    broker.script(hang)
    pending = in_background(lambda: place(client, broker))
    assert broker.wait_until(lambda: len(broker.orders()) == 1, timeout=2.0)

    hang.release()
    with pytest.raises(httpx.RemoteProtocolError):
        pending()


def test_accept_then_hang_outlasts_client_read_timeout(broker, client):
    broker.script(AcceptThenHang(5))
    with pytest.raises(httpx.ReadTimeout):
        place(client, broker, timeout=httpx.Timeout(2.0, read=0.2))
    assert len(broker.orders()) == 1


def test_hold_answers_after_release_without_blocking_others(broker, client):
    broker.script(Hold())
    held = in_background(lambda: place(client, broker))
    assert broker.wait_until(lambda: len(broker.orders()) == 1, timeout=2.0)

    assert place(client, broker).status_code == 200  # served while one is held
    assert broker.received[0].status is None

    broker.release_held()
    response = held()
    assert response.status_code == 200
    assert response.json()["orderid"] == broker.received[0].orderid
    assert broker.received[0].status == 200


def test_stop_releases_held_requests(client):
    broker = FakeBroker().start()
    broker.script(Hold())
    held = in_background(lambda: place(client, broker))
    assert broker.wait_for(1, timeout=2.0)
    broker.stop()
    assert held().status_code == 200


def test_stop_closes_hanging_connections(client):
    broker = FakeBroker().start()
    broker.script(AcceptThenHang(30))
    pending = in_background(lambda: place(client, broker))
    assert broker.wait_until(lambda: len(broker.orders()) == 1, timeout=2.0)
    broker.stop()
    with pytest.raises(httpx.RemoteProtocolError):
        pending(timeout=1.0)


def test_drop_closes_without_answer_or_order(broker, client):
    broker.script(Drop())
    with pytest.raises(httpx.RemoteProtocolError):
        place(client, broker)
    (record,) = broker.received
    assert record.status is None and not record.accepted
    assert broker.book == []


# orderbook -------------------------------------------------------------------


def test_orderbook_has_openalgo_shape(broker, client):
    place(client, broker)
    place(
        client,
        broker,
        ORDER
        | {
            "action": "SELL",
            "pricetype": "SL",
            "price": "512.5",
            "trigger_price": "510",
            "quantity": "3",
        },
    )
    smart = place(client, broker, SMART_ORDER | {"quantity": "7"}, "placesmartorder")

    response = orderbook(client, broker)
    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "success"
    market, stop_loss, smart_row = payload["data"]["orders"]

    assert market == {
        "action": "BUY",
        "symbol": "SBIN",
        "exchange": "NSE",
        "orderid": broker.received[0].orderid,
        "product": "MIS",
        "quantity": "10",
        "price": 0.0,
        "pricetype": "MARKET",
        "order_status": "complete",
        "trigger_price": 0.0,
        "timestamp": market["timestamp"],
    }
    stamp = datetime.strptime(market["timestamp"], "%d-%b-%Y %H:%M:%S").replace(tzinfo=IST)
    assert abs(datetime.now(IST) - stamp) < timedelta(minutes=1)

    assert (stop_loss["action"], stop_loss["quantity"]) == ("SELL", "3")
    assert (stop_loss["price"], stop_loss["trigger_price"]) == (512.5, 510.0)
    assert stop_loss["order_status"] == "open"
    assert smart_row["orderid"] == smart.json()["orderid"]
    assert (smart_row["action"], smart_row["quantity"]) == ("BUY", "7")

    assert payload["data"]["statistics"] == {
        "total_buy_orders": 2.0,
        "total_sell_orders": 1.0,
        "total_completed_orders": 2.0,
        "total_open_orders": 1.0,
        "total_rejected_orders": 0.0,
    }
    assert broker.orderbook_requests == 1
    assert len(broker.received) == 3  # orderbook calls are not order requests


def test_orderbook_can_fail_or_drop(broker, client):
    broker.orderbook_behaviour = Status(500)
    assert orderbook(client, broker).status_code == 500
    broker.orderbook_behaviour = Drop()
    with pytest.raises(httpx.RemoteProtocolError):
        orderbook(client, broker)
    broker.orderbook_behaviour = Accept()
    assert orderbook(client, broker).json()["data"]["orders"] == []
    assert broker.orderbook_requests == 3


def test_add_book_entry_fills_defaults(broker, client):
    accepted = place(client, broker).json()["orderid"]
    injected = broker.add_book_entry({"symbol": "SBIN", "quantity": "10", "strategy_tag": "x"})

    rows = orderbook(client, broker).json()["data"]["orders"]
    assert [r["orderid"] for r in rows] == [accepted, injected["orderid"]]
    assert rows[1] | {"orderid": None, "timestamp": None} == {
        "action": "BUY",
        "symbol": "SBIN",
        "exchange": "NSE",
        "orderid": None,
        "product": "MIS",
        "quantity": "10",
        "price": 0.0,
        "pricetype": "MARKET",
        "order_status": "complete",
        "trigger_price": 0.0,
        "timestamp": None,
        "strategy_tag": "x",
    }
    assert broker.received[0].orderid == accepted  # injection is not a request


# lifecycle ---------------------------------------------------------------------


def test_refuse_then_resume_on_the_same_port(broker, client):
    url = broker.base_url
    broker.refuse()
    with pytest.raises(httpx.ConnectError):
        place(client, broker)
    broker.resume()
    assert broker.base_url == url
    assert place(client, broker).status_code == 200
    assert len(broker.received) == 1


def test_restart_on_a_chosen_port(client):
    with FakeBroker() as first:
        port = first.port
        place(client, first)
    with FakeBroker(port=port) as second:
        assert second.base_url == f"http://127.0.0.1:{port}"
        assert place(client, second).status_code == 200
        assert len(second.received) == 1


def test_reset_forgets_requests_script_and_book(broker, client):
    broker.script(Status(500), Status(500))
    place(client, broker)
    orderbook(client, broker)
    broker.add_book_entry({"symbol": "X"})
    broker.reset()
    assert (broker.received, broker.book, broker.orderbook_requests) == ([], [], 0)
    assert place(client, broker).status_code == 200


# analysis helpers ----------------------------------------------------------------


def test_peak_count_uses_half_open_windows():
    times = [0.0, 0.5, 1.0, 1.5]
    assert peak_count(times, 1.0) == 2
    assert peak_count(times, 1.01) == 3
    assert peak_count(reversed(times), 10) == 4
    assert peak_count([], 1.0) == 0


def test_max_in_window_filters_by_endpoint_and_key(broker, client):
    for apikey in ["a", "a", "a", "b"]:
        place(client, broker, ORDER | {"apikey": apikey})
    place(client, broker, SMART_ORDER | {"apikey": "b"}, "placesmartorder")

    assert broker.max_in_window(window=60) == 5
    assert broker.max_in_window(window=1e-9) == 1
    assert broker.max_in_window(endpoint="placeorder", window=60) == 4
    assert broker.max_in_window(endpoint="placesmartorder", window=60) == 1
    assert broker.max_in_window(window=60, key="apikey") == 3
    assert (
        broker.max_in_window(
            endpoint="placeorder", window=60, key=lambda body: body["apikey"] == "b"
        )
        == 3
    )
    assert broker.count_by("apikey") == {"a": 3, "b": 2}
    assert broker.count_by(lambda body: body["symbol"]) == {"SBIN": 5}


def test_max_in_window_counts_rejected_requests_too(broker, client):
    broker.default = Status(429)
    place(client, broker)
    place(client, broker)
    assert broker.max_in_window(window=60) == 2


# concurrency -------------------------------------------------------------------


def test_concurrent_requests_are_all_recorded(broker, client):
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(
            pool.map(lambda i: place(client, broker, ORDER | {"quantity": str(i)}), range(50))
        )

    assert all(r.status_code == 200 for r in responses)
    assert broker.wait_for(50, timeout=0)
    assert sorted(int(r.body["quantity"]) for r in broker.received) == list(range(50))
    ids = {r.json()["orderid"] for r in responses}
    assert len(ids) == 50
    assert {row["orderid"] for row in broker.book} == ids


# separate process --------------------------------------------------------------


def test_runs_as_a_subprocess_and_logs_each_order(tmp_path, client):
    log = tmp_path / "orders.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_broker", "--port", "0", "--log", str(log)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        ids = [
            client.post(f"{base_url}/api/v1/placeorder", json=ORDER | {"quantity": str(q)}).json()[
                "orderid"
            ]
            for q in (1, 2, 3)
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=5)

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["orderid"] for line in lines] == ids
    assert [line["body"]["quantity"] for line in lines] == ["1", "2", "3"]
    assert {line["endpoint"] for line in lines} == {"placeorder"}
