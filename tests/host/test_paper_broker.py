"""The paper broker answers OpenAlgo's /api/v1 order endpoints with OpenAlgo's shapes."""

import json
import re
import threading
from datetime import datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from blueprints.paper_broker import paper_broker_bp
from database import auth_db, host_db, paper_broker_db
from database.host_db import db_session

PEPPER = "a3f1" * 16


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("API_KEY_PEPPER", PEPPER)
    host_db.configure(f"sqlite:///{tmp_path}/host.db")
    auth_db.init_db()
    paper_broker_db.init_db()
    app = Flask(__name__)
    app.register_blueprint(paper_broker_bp)

    @app.teardown_appcontext
    def _remove_session(_exc):
        db_session.remove()

    yield app
    db_session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def apikey(app):
    return auth_db.ensure_api_key("admin")


def order(apikey, **overrides):
    payload = {
        "apikey": apikey,
        "strategy": "test",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "BUY",
        "quantity": "10",
        "pricetype": "MARKET",
        "product": "MIS",
        "price": "0",
        "trigger_price": "0",
    }
    payload.update(overrides)
    return payload


def smart(apikey, position_size, **overrides):
    return order(apikey, position_size=str(position_size), **overrides)


def orders_of(client, apikey):
    response = client.post("/api/v1/orderbook", json={"apikey": apikey})
    assert response.status_code == 200
    return response.get_json()["data"]["orders"]


def position(user="admin"):
    return paper_broker_db.get_position(user, "SBIN", "NSE", "MIS")


def test_placeorder_returns_numeric_orderid_listed_in_orderbook(client, apikey):
    response = client.post("/api/v1/placeorder", json=order(apikey))

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"status", "orderid"} and body["status"] == "success"
    assert re.fullmatch(r"\d{15}", body["orderid"])
    book = client.post("/api/v1/orderbook", json={"apikey": apikey}).get_json()
    assert book["status"] == "success"
    [listed] = book["data"]["orders"]
    assert set(listed) == {
        "action",
        "symbol",
        "exchange",
        "orderid",
        "product",
        "quantity",
        "price",
        "pricetype",
        "order_status",
        "trigger_price",
        "timestamp",
    }
    assert listed["orderid"] == body["orderid"]
    assert listed["quantity"] == "10"
    datetime.strptime(listed["timestamp"], "%d-%b-%Y %H:%M:%S")
    assert book["data"]["statistics"] == {
        "total_buy_orders": 1,
        "total_sell_orders": 0,
        "total_completed_orders": 1,
        "total_open_orders": 0,
        "total_rejected_orders": 0,
    }


def test_timestamp_is_in_india_time(client, apikey):
    client.post("/api/v1/placeorder", json=order(apikey))
    [listed] = orders_of(client, apikey)
    stamp = datetime.strptime(listed["timestamp"], "%d-%b-%Y %H:%M:%S")
    created = db_session.scalar(select(paper_broker_db.PaperOrder.created_at))
    # created_at is naive UTC; India is UTC+05:30 all year and the stamp drops microseconds.
    assert stamp - created.replace(microsecond=0) == timedelta(hours=5, minutes=30)


def test_market_order_fills_at_once_with_price_zero(client, apikey):
    client.post("/api/v1/placeorder", json=order(apikey, price="512.5"))

    [listed] = orders_of(client, apikey)
    assert listed["order_status"] == "complete"
    assert listed["price"] == 0.0
    assert listed["pricetype"] == "MARKET"
    assert position() == 10


def test_limit_order_stays_open_with_its_price(client, apikey):
    client.post(
        "/api/v1/placeorder", json=order(apikey, pricetype="LIMIT", price="512.5", action="SELL")
    )

    [listed] = orders_of(client, apikey)
    assert listed["order_status"] == "open"
    assert listed["price"] == 512.5
    assert listed["action"] == "SELL"
    assert position() == 0


def test_sl_order_keeps_trigger_price(client, apikey):
    client.post(
        "/api/v1/placeorder", json=order(apikey, pricetype="SL", price=101, trigger_price=100.5)
    )

    [listed] = orders_of(client, apikey)
    assert (listed["order_status"], listed["price"], listed["trigger_price"]) == (
        "open",
        101.0,
        100.5,
    )


@pytest.mark.parametrize(
    "start, target, quantity, action, expected",
    [
        (0, 0, 5, "BUY", ("BUY", "5", 5)),  # flat, no target: open in action direction
        (0, 0, 5, "SELL", ("SELL", "5", -5)),
        (0, 10, 10, "BUY", ("BUY", "10", 10)),  # open long from flat
        (0, -10, 10, "SELL", ("SELL", "10", -10)),  # open short from flat
        (10, 25, 15, "BUY", ("BUY", "15", 25)),  # increase
        (10, -5, 15, "SELL", ("SELL", "15", -5)),  # reverse long -> short
        (-5, 5, 10, "BUY", ("BUY", "10", 5)),  # reverse short -> long
        (10, 0, 0, "SELL", ("SELL", "10", 0)),  # exit long
    ],
)
def test_smart_order_trades_to_target(client, apikey, start, target, quantity, action, expected):
    if start:
        client.post(
            "/api/v1/placeorder",
            json=order(apikey, action="BUY" if start > 0 else "SELL", quantity=abs(start)),
        )

    response = client.post(
        "/api/v1/placesmartorder", json=smart(apikey, target, quantity=quantity, action=action)
    )

    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "success"
    placed = orders_of(client, apikey)[-1]
    assert placed["orderid"] == body["orderid"]
    assert (placed["action"], placed["quantity"], position()) == expected


def test_smart_order_matching_position_needs_no_action(client, apikey):
    client.post("/api/v1/placeorder", json=order(apikey, quantity=10))

    response = client.post("/api/v1/placesmartorder", json=smart(apikey, 10))

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "success",
        "message": "No action needed. Position size matches current position",
    }
    assert len(orders_of(client, apikey)) == 1


def test_smart_exit_without_position_places_nothing(client, apikey):
    response = client.post(
        "/api/v1/placesmartorder", json=smart(apikey, 0, quantity="0", action="SELL")
    )

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "success",
        "message": "No OpenPosition Found. Not placing Exit order.",
    }
    assert orders_of(client, apikey) == []


def test_smart_limit_order_does_not_move_position(client, apikey):
    client.post("/api/v1/placesmartorder", json=smart(apikey, 10, pricetype="LIMIT", price="99.5"))

    [listed] = orders_of(client, apikey)
    assert (listed["order_status"], position()) == ("open", 0)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": None}, "symbol"),
        ({"exchange": "NYSE"}, "exchange"),
        ({"exchange": None}, "exchange"),
        ({"action": "HOLD"}, "action"),
        ({"pricetype": "STOP"}, "pricetype"),
        ({"product": "BO"}, "product"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "1.5"}, "quantity"),
        ({"quantity": "ten"}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": "99999999999999999999"}, "quantity"),
        ({"price": "abc"}, "price"),
        ({"price": "-1"}, "price"),
        ({"trigger_price": "nan"}, "trigger_price"),
        ({"pricetype": "LIMIT", "price": "0"}, "price"),
        ({"pricetype": "SL", "price": "0", "trigger_price": "10"}, "price"),
        ({"pricetype": "SL", "price": "10", "trigger_price": "0"}, "trigger_price"),
        ({"pricetype": "SL-M", "trigger_price": "0"}, "trigger_price"),
    ],
)
def test_placeorder_rejects_bad_field_naming_it(client, apikey, overrides, field):
    response = client.post("/api/v1/placeorder", json=order(apikey, **overrides))

    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == "error"
    assert f"'{field}'" in body["message"]
    assert orders_of(client, apikey) == []


def test_missing_field_is_named(client, apikey):
    payload = order(apikey)
    del payload["symbol"]

    response = client.post("/api/v1/placeorder", json=payload)

    assert response.status_code == 400
    assert "'symbol'" in response.get_json()["message"]


def test_defaults_apply_to_pricetype_and_product(client, apikey):
    payload = order(apikey)
    del payload["pricetype"], payload["product"], payload["price"], payload["trigger_price"]

    assert client.post("/api/v1/placeorder", json=payload).status_code == 200
    [listed] = orders_of(client, apikey)
    assert (listed["pricetype"], listed["product"]) == ("MARKET", "MIS")


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"position_size": "abc"}, "position_size"),
        ({"position_size": None}, "position_size"),
        ({"position_size": "-99999999999999999999"}, "position_size"),
        ({"quantity": "-1"}, "quantity"),
    ],
)
def test_placesmartorder_rejects_bad_field_naming_it(client, apikey, overrides, field):
    payload = smart(apikey, 10)
    payload.update(overrides)

    response = client.post("/api/v1/placesmartorder", json=payload)

    assert response.status_code == 400
    assert f"'{field}'" in response.get_json()["message"]


@pytest.mark.parametrize(
    "path", ["/api/v1/placeorder", "/api/v1/placesmartorder", "/api/v1/orderbook"]
)
def test_non_object_body_is_rejected(client, apikey, path):
    assert client.post(path, data="not json", content_type="application/json").status_code == 400
    assert client.post(path, json=[1, 2]).status_code == 400


@pytest.mark.parametrize(
    "path", ["/api/v1/placeorder", "/api/v1/placesmartorder", "/api/v1/orderbook"]
)
@pytest.mark.parametrize("key", ["wrong", None, 12345])
def test_bad_apikey_is_forbidden(client, apikey, path, key):
    payload = smart(apikey, 10)
    if key is None:
        del payload["apikey"]
    else:
        payload["apikey"] = key

    response = client.post(path, json=payload)

    assert response.status_code == 403
    assert response.get_json() == {"status": "error", "message": "Invalid openalgo apikey"}


def test_orderbook_shows_only_the_callers_orders(client, apikey):
    other_key = auth_db.ensure_api_key("other")
    client.post("/api/v1/placeorder", json=order(apikey))
    client.post("/api/v1/placeorder", json=order(other_key, action="SELL", quantity="3"))

    [mine] = orders_of(client, apikey)
    [theirs] = orders_of(client, other_key)
    assert mine["action"] == "BUY" and theirs["action"] == "SELL"
    assert (position("admin"), position("other")) == (10, -3)


def test_placed_order_is_logged_without_apikey(client, apikey, caplog):
    caplog.set_level("INFO")
    orderid = client.post("/api/v1/placeorder", json=order(apikey)).get_json()["orderid"]

    assert orderid in caplog.text and "SBIN" in caplog.text
    assert apikey not in caplog.text


def test_orderids_unique_under_concurrent_requests(app, apikey):
    threads, per_thread = 8, 25
    orderids, failures = [], []
    lock = threading.Lock()

    def worker():
        client = app.test_client()
        for _ in range(per_thread):
            response = client.post("/api/v1/placesmartorder", json=smart(apikey, 0, quantity="1"))
            with lock:
                if response.status_code == 200:
                    orderids.append(response.get_json()["orderid"])
                else:
                    failures.append(response.get_data(as_text=True))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()

    assert failures == []
    assert len(orderids) == len(set(orderids)) == threads * per_thread
    # Target 0 with quantity 1 buys 1 when flat and sells 1 when long, so if no two
    # requests read the same position the book alternates BUY/SELL of 1 and ends flat.
    book = paper_broker_db.get_orderbook("admin")
    assert [(o["action"], o["quantity"]) for o in book] == [("BUY", "1"), ("SELL", "1")] * (
        threads * per_thread // 2
    )
    assert position() == 0


def test_a_json_body_without_its_content_type_is_read_as_json(client, apikey):
    """curl's -d sends application/x-www-form-urlencoded unless told otherwise."""
    client.post("/api/v1/placeorder", json=order(apikey))
    answer = client.post(
        "/api/v1/orderbook",
        data=json.dumps({"apikey": apikey}),
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200, answer.get_json()
