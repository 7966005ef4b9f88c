"""Webhook → committed row → broker, the Strategy Manager's rules, and bad input."""

import logging
import time
from datetime import datetime, timedelta

import pytest

from blueprints import order_queue
from blueprints.strategy import (
    IST,
    follow_strategy_changes,
    squareoff_positions,
    start_scheduler,
    stop_scheduler,
)
from database.auth_db import get_api_key_for_tradingview
from services.order_queue import runtime
from tests.conftest import make_app
from tests.support.helpers import add_strategy, post


def queued():
    return runtime.current().store.reads.list_orders()


def test_webhook_order_reaches_the_broker_with_the_exact_payload(tmp_path, broker):
    app = make_app(tmp_path, HOST_SERVER=broker.base_url)
    runner, client = app.test_cli_runner(), app.test_client()
    strategy = add_strategy(runner)
    order_queue.start(app)
    try:
        response = post(client, strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"})
        assert response.status_code == 200
        assert response.get_json()["message"] == "Order queued successfully for SBIN"
        [row] = queued()  # committed before the 200
        assert broker.wait_for(1, timeout=5)
        deadline = time.monotonic() + 5
        while runtime.current().store.reads.get_order(row["id"])["state"] != "sent":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with app.app_context():
            api_key = get_api_key_for_tradingview("admin")
        [received] = broker.received
        assert received.endpoint == "placeorder"
        assert received.body == {
            "apikey": api_key,
            "symbol": "SBIN",
            "exchange": "NSE",
            "product": "MIS",
            "strategy": "Trend",
            "action": "BUY",
            "pricetype": "MARKET",
            "quantity": "10",
        }
        stored = runtime.current().store.reads.get_order(row["id"])
        assert stored["broker_orderid"] == received.orderid
    finally:
        order_queue.runtime.stop_current(timeout=5)


SMART_EXIT = {
    "quantity": "0",
    "position_size": "0",
    "price": "0",
    "trigger_price": "0",
    "disclosed_quantity": "0",
}


@pytest.mark.parametrize(
    "mode, signal, endpoint, expected",
    [
        ("LONG", {"action": "BUY"}, "placeorder", {"action": "BUY", "quantity": "10"}),
        (
            "LONG",
            {"action": "buy", "position_size": 5},
            "placeorder",
            {"action": "BUY", "quantity": "5"},
        ),
        ("LONG", {"action": "SELL"}, "placesmartorder", {"action": "SELL", **SMART_EXIT}),
        ("SHORT", {"action": "SELL"}, "placeorder", {"action": "SELL", "quantity": "10"}),
        ("SHORT", {"action": "BUY"}, "placesmartorder", {"action": "BUY", **SMART_EXIT}),
        (
            "BOTH",
            {"action": "BUY", "position_size": 10},
            "placesmartorder",
            {
                "action": "BUY",
                "quantity": "10",
                "position_size": "10",
                "price": "0",
                "trigger_price": "0",
                "disclosed_quantity": "0",
            },
        ),
        (
            "BOTH",
            {"action": "SELL", "position_size": "-10"},
            "placesmartorder",
            {
                "action": "SELL",
                "quantity": "10",
                "position_size": "-10",
                "price": "0",
                "trigger_price": "0",
                "disclosed_quantity": "0",
            },
        ),
        (
            "BOTH",
            {"action": "SELL", "position_size": 0},
            "placesmartorder",
            {"action": "SELL", **SMART_EXIT},
        ),
    ],
)
def test_mode_chooses_endpoint_and_payload(app, runner, client, mode, signal, endpoint, expected):
    strategy = add_strategy(runner, mode=mode)
    response = post(client, strategy["webhook_id"], {"symbol": "SBIN", **signal})
    assert response.status_code == 200, response.get_json()
    [row] = queued()
    assert row["endpoint"] == endpoint
    assert row["payload"] == {
        "symbol": "SBIN",
        "exchange": "NSE",
        "product": "MIS",
        "strategy": "Trend",
        "pricetype": "MARKET",
        **expected,
    }


def ist(hour, minute):
    return IST.localize(datetime(2026, 11, 23, hour, minute))


@pytest.mark.parametrize(
    "at, action, status, error",
    [
        (ist(9, 20), "BUY", 400, "Entry orders not allowed before start time"),
        (ist(9, 20), "SELL", 400, "Exit orders not allowed before start time"),
        (ist(10, 0), "BUY", 200, None),
        (ist(14, 30), "BUY", 400, "Entry orders not allowed after end time"),
        (ist(14, 30), "SELL", 200, None),
        (ist(15, 5), "SELL", 400, "Exit orders not allowed after square off time"),
    ],
)
def test_intraday_windows(tmp_path, at, action, status, error):
    app = make_app(tmp_path, HOST_CLOCK=lambda: at)
    strategy = add_strategy(
        app.test_cli_runner(),
        "--intraday",
        "--start",
        "09:30",
        "--end",
        "14:00",
        "--squareoff",
        "15:00",
    )
    response = post(app.test_client(), strategy["webhook_id"], {"symbol": "SBIN", "action": action})
    assert response.status_code == status
    if error:
        assert response.get_json()["error"] == error
        assert queued() == []
    else:
        assert len(queued()) == 1


BAD_INPUT = [
    ("not json", "hello", 400, "not valid JSON"),
    ("empty body", "", 400, "No data"),
    ("JSON array", [{"symbol": "SBIN", "action": "BUY"}], 400, "JSON object"),
    ("JSON null", "null", 400, "JSON object"),
    ("JSON string", '"BUY SBIN"', 400, "JSON object"),
    ("huge body", {"symbol": "SBIN", "action": "BUY", "pad": "x" * 20000}, 413, "too large"),
    ("missing symbol", {"action": "BUY"}, 400, "symbol"),
    ("missing action", {"symbol": "SBIN"}, 400, "action"),
    ("symbol number", {"symbol": 500112, "action": "BUY"}, 400, "symbol"),
    ("symbol unicode", {"symbol": "SBİN", "action": "BUY"}, 400, "symbol"),
    ("symbol emoji", {"symbol": "SB📈", "action": "BUY"}, 400, "symbol"),
    ("symbol SQL", {"symbol": "SBIN'; DROP TABLE order_queue;--", "action": "BUY"}, 400, "symbol"),
    ("symbol too long", {"symbol": "S" * 41, "action": "BUY"}, 400, "symbol"),
    ("unmapped symbol", {"symbol": "TCS", "action": "BUY"}, 400, "No mapping found"),
    ("action unknown", {"symbol": "SBIN", "action": "HOLD"}, 400, "action"),
    ("action number", {"symbol": "SBIN", "action": 1}, 400, "action"),
    (
        "position_size text",
        {"symbol": "SBIN", "action": "BUY", "position_size": "ten"},
        400,
        "position_size",
    ),
    (
        "position_size float",
        {"symbol": "SBIN", "action": "BUY", "position_size": 1.5},
        400,
        "position_size",
    ),
    ("quantity negative", {"symbol": "SBIN", "action": "BUY", "quantity": -5}, 400, "quantity"),
    ("quantity float", {"symbol": "SBIN", "action": "BUY", "quantity": 2.5}, 400, "quantity"),
    ("quantity string", {"symbol": "SBIN", "action": "BUY", "quantity": "ten"}, 400, "quantity"),
    ("quantity bool", {"symbol": "SBIN", "action": "BUY", "quantity": True}, 400, "quantity"),
    ("quantity zero", {"symbol": "SBIN", "action": "BUY", "quantity": "0"}, 400, "quantity"),
]


@pytest.mark.parametrize("case, body, status, error", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_4xx_naming_the_problem_and_stores_nothing(
    app, runner, client, case, body, status, error
):
    strategy = add_strategy(runner)
    response = post(client, strategy["webhook_id"], body)
    assert response.status_code == status, (case, response.data)
    assert error in response.get_json()["error"]
    assert queued() == []


def test_both_mode_rules(app, runner, client):
    strategy = add_strategy(runner, mode="BOTH")
    cases = [
        ({"symbol": "SBIN", "action": "BUY"}, "position_size"),
        ({"symbol": "SBIN", "action": "BUY", "position_size": -1}, "must be >= 0"),
        ({"symbol": "SBIN", "action": "SELL", "position_size": 1}, "must be <= 0"),
    ]
    for body, error in cases:
        response = post(client, strategy["webhook_id"], body)
        assert response.status_code == 400 and error in response.get_json()["error"]
    assert queued() == []


def test_unknown_webhook_and_inactive_strategy(app, runner, client):
    assert post(client, "nope", {"symbol": "SBIN", "action": "BUY"}).status_code == 404
    strategy = add_strategy(runner)
    runner.invoke(args=["strategy", "toggle", "--name", "Trend", "--inactive"])
    response = post(client, strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"})
    assert response.status_code == 400 and "inactive" in response.get_json()["error"]
    assert queued() == []


def test_tradingview_text_plain_body_is_accepted(app, runner, client):
    strategy = add_strategy(runner)
    response = client.post(
        f"/strategy/webhook/{strategy['webhook_id']}",
        data='{"symbol": "SBIN", "action": "BUY"}',
        content_type="text/plain",
    )
    assert response.status_code == 200 and len(queued()) == 1


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)  # removes the SQLite file
def test_storage_failure_answers_503_and_logs_error(app, runner, client, tmp_path, caplog):
    strategy = add_strategy(runner)
    (tmp_path / "order_queue.db").unlink()
    with caplog.at_level(logging.ERROR):
        response = post(client, strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"})
    assert response.status_code == 503
    assert "NOT queued" in response.get_json()["error"]
    assert any(
        r.levelno == logging.ERROR and "NOT queued" in r.getMessage() for r in caplog.records
    )


def test_squareoff_queues_a_flatten_for_every_mapped_symbol(app, runner):
    strategy = add_strategy(
        runner, "--intraday", "--start", "09:30", "--end", "14:00", "--squareoff", "15:10"
    )
    runner.invoke(
        args=["strategy", "map", "--name", "Trend", "--symbol", "INFY", "--quantity", "5"]
    )
    with app.app_context():
        assert squareoff_positions(strategy["strategy_id"]) == 2
    rows = sorted(queued(), key=lambda r: r["symbol"])
    assert [
        (r["endpoint"], r["symbol"], r["payload"]["position_size"], r["payload"]["quantity"])
        for r in rows
    ] == [("placesmartorder", "INFY", "0", "0"), ("placesmartorder", "SBIN", "0", "0")]


def test_squareoff_rides_out_a_locked_queue_database(tmp_path, caplog):
    """The scheduler has nobody to answer 503 to: a queue database held by another
    writer for longer than the busy timeout delays the flattens, it does not lose them."""
    import sqlite3
    import threading

    app = make_app(tmp_path, ORDER_QUEUE_SQLITE_BUSY_TIMEOUT_MS=200)
    runner = app.test_cli_runner()
    strategy = add_strategy(
        runner, "--intraday", "--start", "09:30", "--end", "14:00", "--squareoff", "15:10"
    )
    runner.invoke(
        args=["strategy", "map", "--name", "Trend", "--symbol", "INFY", "--quantity", "5"]
    )
    holder = sqlite3.connect(
        tmp_path / "order_queue.db", isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(1.5, lambda: holder.execute("ROLLBACK")).start()
    with caplog.at_level(logging.ERROR), app.app_context():
        assert squareoff_positions(strategy["strategy_id"]) == 2
    assert "trying again" in caplog.text  # it was refused at first, and said so
    assert sorted(r["symbol"] for r in queued()) == ["INFY", "SBIN"]
    holder.close()


def test_a_strategy_created_while_running_gets_an_ist_cron_squareoff(app, runner):
    scheduler = start_scheduler()
    try:
        strategy = add_strategy(
            runner, "--intraday", "--start", "09:30", "--end", "14:00", "--squareoff", "15:10"
        )
        follow_strategy_changes()  # what OpenAlgo's page does on create
        job = scheduler.get_job(f"squareoff_{strategy['strategy_id']}")
        assert job is not None
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("15", "10")
        assert str(job.trigger.timezone) == "Asia/Kolkata"
    finally:
        stop_scheduler()


def test_squareoff_deadline_is_today_at_squareoff_ist(app, runner):
    from blueprints.strategy import squareoff_deadline

    add_strategy(runner, "--intraday", "--start", "09:30", "--end", "14:00", "--squareoff", "15:10")
    add_strategy(runner, name="Positional")
    morning_utc = datetime(2026, 11, 23, 4, 0)  # 09:30 IST
    assert squareoff_deadline({"strategy": "Trend"}, morning_utc) == datetime(2026, 11, 23, 9, 40)
    assert squareoff_deadline({"strategy": "Positional"}, morning_utc) is None
    assert squareoff_deadline({"strategy": "Unknown"}, morning_utc) is None


def test_entry_still_queued_at_squareoff_is_expired_not_sent(tmp_path, broker, monkeypatch):
    from services.order_queue import deadlines

    broker.refuse()  # the API is down, so the entry waits in the queue
    # No catch-up at start: between 15:10 and 15:30 IST by the real clock, the start would
    # otherwise run this strategy's squareoff and queue a flatten beside the entry.
    app = make_app(tmp_path, HOST_SERVER=broker.base_url, ORDER_QUEUE_SQUAREOFF_CATCHUP_MINUTES="0")
    strategy = add_strategy(
        app.test_cli_runner(),
        "--intraday",
        "--start",
        "09:30",
        "--end",
        "14:00",
        "--squareoff",
        "15:10",
    )
    # The squareoff is two seconds away (the real clock decides "now" in the queue).
    monkeypatch.setitem(
        deadlines._providers,
        "strategy",
        lambda payload, now: now + timedelta(seconds=2),
    )
    app.config["HOST_CLOCK"] = lambda: IST.localize(datetime(2026, 11, 23, 10, 0))
    assert (
        post(
            app.test_client(), strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"}
        ).status_code
        == 200
    )
    order_queue.start(app)
    try:
        deadline = time.monotonic() + 10
        while queued()[0]["state"] != "dead":
            assert time.monotonic() < deadline, queued()
            time.sleep(0.05)
        broker.resume()
        [row] = queued()
        assert row["dead_reason"] == "expired"
        order_queue.runtime.stop_current(timeout=5)  # nothing more can leave...
        assert broker.wait_idle()  # ...nor arrive
        assert broker.orders() == []
    finally:
        order_queue.runtime.stop_current(timeout=5)


@pytest.mark.parametrize(
    "path", ["/strategy/webhook/{hook}", "/api/v1/placeorder", "/api/v1/orderbook"]
)
def test_json_nested_a_thousand_deep_is_a_400_not_a_500(client, path):
    deep = "[" * 5000 + "]" * 5000
    answer = client.post(path.format(hook="anything"), data=deep, content_type="application/json")
    assert answer.status_code == 400, answer.data


@pytest.mark.parametrize("size", ["١٢", "１２", 10**10, "-99999999999", 1e300])
def test_position_size_must_be_a_plain_bounded_number(client, runner, size):
    webhook_id = add_strategy(runner, mode="BOTH")["webhook_id"]
    answer = post(client, webhook_id, {"symbol": "SBIN", "action": "BUY", "position_size": size})
    assert answer.status_code == 400 and "position_size" in answer.get_json()["error"]
    assert queued() == []


def test_a_webhook_refused_by_the_rate_limit_is_an_honest_429_and_counted(tmp_path):
    """OpenAlgo redirects a refused webhook to its HTML page /rate-limited (a sender that
    follows it sees 200): on the webhook path it is a 429 with JSON and Retry-After."""
    app = make_app(tmp_path, WEBHOOK_RATE_LIMIT="3 per minute")
    client = app.test_client()
    strategy = add_strategy(app.test_cli_runner())
    answers = [
        post(client, strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"}) for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "60"
    assert "NOT taken" in refused.get_json()["error"]
    assert len(queued()) == 3  # nothing was queued for the refused ones
    # Elsewhere the host's own answer stands (OpenAlgo's redirect outside /api/).
    assert client.get("/rate-limited").status_code == 200
    stats = order_queue.reports.stats_report(order_queue.runtime.current())
    assert stats["webhooks_refused"]["count"] == 2


def test_a_changed_pepper_answers_503_saying_what_to_do(tmp_path, monkeypatch):
    from services.order_queue import runtime

    app = make_app(tmp_path)
    strategy = add_strategy(app.test_cli_runner())
    order_queue.start(app)  # seals the queue's pepper check with the first pepper
    runtime.stop_current(timeout=5)
    monkeypatch.setenv("API_KEY_PEPPER", "b" * 64)
    app = make_app(tmp_path)
    order_queue.start(app)
    try:
        answer = post(
            app.test_client(), strategy["webhook_id"], {"symbol": "SBIN", "action": "BUY"}
        )
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert "put the previous API_KEY_PEPPER back in .env" in answer.get_json()["error"]
        health = app.test_client().get("/order-queue/api/health")
        assert health.status_code == 503
        assert any("API_KEY_PEPPER" in p for p in health.get_json()["problems"])
    finally:
        runtime.stop_current(timeout=5)


def test_a_lowercase_symbol_is_the_upper_case_one(app, runner, client):
    strategy = add_strategy(runner)
    answer = post(client, strategy["webhook_id"], {"symbol": " sbin ", "action": "buy"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["message"] == "Order queued successfully for SBIN"
    assert [row["symbol"] for row in queued()] == ["SBIN"]
