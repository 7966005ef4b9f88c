"""A SIGKILLed app loses nothing and doubles nothing: the next one finishes the work."""

import json
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import TEST_PEPPER
from tests.support.app_process import AppProcess
from tests.support.fake_broker import Accept, Hold

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]


@pytest.fixture
def app_process(tmp_path, broker):
    process = AppProcess(tmp_path, broker.base_url, TEST_PEPPER, ORDER_QUEUE_WORKERS="4")
    yield process
    process.stop()


def test_sigkill_with_orders_pending_then_restart_delivers_each_once(app_process, broker):
    created = json.loads(
        app_process.flask(
            "strategy", "add", "--name", "Restart", "--symbol", SYMBOLS[0], "--quantity", "1"
        )
    )
    app_process.flask(
        "strategy",
        "map",
        "--name",
        "Restart",
        "--quantity",
        "1",
        *(arg for symbol in SYMBOLS[1:] for arg in ("--symbol", symbol)),
    )
    broker.default = Hold()  # the broker books orders but does not answer yet
    app_process.start()
    url = f"{app_process.base_url}/strategy/webhook/{created['webhook_id']}"
    for symbol in SYMBOLS:
        response = httpx.post(url, json={"symbol": symbol, "action": "BUY"}, timeout=5)
        assert response.status_code == 200
    assert broker.wait_for(4, timeout=10)  # four requests in flight, the rest pending
    app_process.kill()
    broker.release_held()
    broker.default = Accept()
    in_flight_at_kill = len(broker.book)
    assert 0 < in_flight_at_kill < len(SYMBOLS)

    app_process.start()  # no new webhook: the restarted app finishes on its own
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = httpx.get(f"{app_process.base_url}/order-queue/api/health", timeout=5).json()
        if health["depth"]["sent"]["regular"] == len(SYMBOLS):
            break  # nothing is unfinished: every order is recorded as sent
        time.sleep(0.1)
    app_process.stop()
    assert broker.wait_idle(), "the broker is still serving requests"  # the book is final
    assert health["depth"]["sent"]["regular"] == len(SYMBOLS), app_process.log()
    per_symbol = Counter(entry["symbol"] for entry in broker.book)
    assert sorted(per_symbol) == SYMBOLS, app_process.log()
    assert set(per_symbol.values()) == {1}, per_symbol
