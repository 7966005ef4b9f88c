"""Helpers several test modules share (fixtures themselves live in ``tests/conftest.py``):
orders driven to a state through the store's own operations, strategies and webhooks on
the host, and an app process under gunicorn + eventlet."""

import json
import threading

from werkzeug.serving import make_server

from database.order_queue_db import RateLimits, utcnow
from services.order_queue import runtime
from tests.conftest import TEST_PEPPER
from tests.support.app_process import AppProcess
from tests.support.server_venv import server_python
from tests.support.store_steps import IN_DOUBT, mark_dead, order

KEY = "w" * 60 + "9XyZ"
UNLIMITED = RateLimits(smart=10**6, regular=10**6, window=1.0)


def payload(symbol="SBIN", action="BUY", strategy="Trend"):
    return order(symbol, action, apikey=KEY, strategy=strategy)


def make_order(state="dead", symbol="SBIN", error="Invalid symbol", strategy="Trend"):
    """An order driven to ``state`` through the store's own operations."""
    store = runtime.current().store
    now = utcnow()
    order_id = store.intake.enqueue(
        "placeorder", payload(symbol, strategy=strategy), now=now, max_age_seconds=300
    )
    if state == "pending":
        return order_id
    claimed = store.claims.claim_next("test", now=now, lease_seconds=30, limits=UNLIMITED).order
    assert claimed.id == order_id
    if state == "dead":
        mark_dead(store, claimed, now=now, actor="test", error=error)
    elif state == "dead_in_doubt":
        mark_dead(store, claimed, now=now, actor="test", **IN_DOUBT)
    elif state == "sent":
        store.lifecycle.mark_sent(claimed, now=now, actor="test", broker_orderid=f"B{order_id}")
    return order_id


def add_strategy(runner, *extra, name="Trend", symbol="SBIN", quantity="10", mode="LONG"):
    result = runner.invoke(
        args=[
            "strategy",
            "add",
            "--name",
            name,
            "--symbol",
            symbol,
            "--exchange",
            "NSE",
            "--quantity",
            quantity,
            "--product",
            "MIS",
            "--mode",
            mode,
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def post(client, webhook_id, body):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        f"/strategy/webhook/{webhook_id}", data=data, content_type="application/json"
    )


def gunicorn_process(workdir, host_server, queue_url, **settings) -> AppProcess:
    process = AppProcess(
        workdir,
        host_server,
        TEST_PEPPER,
        ORDER_QUEUE_DATABASE_URL=queue_url,
        ORDER_QUEUE_WORKERS="4",
        LOG_LEVEL="INFO",
        **settings,
    )
    python = server_python()
    process.command = [
        str(python),
        "-m",
        "gunicorn",
        "--worker-class",
        "eventlet",
        "--workers",
        "1",
        "--timeout",
        "300",
        "--graceful-timeout",
        "30",
        "--bind",
        f"127.0.0.1:{process.port}",
        "wsgi:app",
    ]
    return process


def strategy_on_symbols(app: AppProcess, name: str, symbols: list[str]) -> str:
    """A strategy of ``app`` mapping every one of ``symbols``; returns its webhook URL."""
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", name, "--symbol", symbols[0], "--quantity", "1")
    )["webhook_id"]
    if symbols[1:]:
        app.flask(
            "strategy",
            "map",
            "--name",
            name,
            "--quantity",
            "1",
            *(arg for symbol in symbols[1:] for arg in ("--symbol", symbol)),
        )
    return f"{app.base_url}/strategy/webhook/{webhook_id}"


class served:  # noqa: N801 (used like a function: served(app, port))
    """``app`` served by a real threaded HTTP server on 127.0.0.1:``port`` (or a unix
    socket: ``unix://path``), in this process; ``stop()`` and ``start()`` again on the
    same address, as a restarting host."""

    def __init__(self, app, port: int | str):
        self.app, self.port = app, port
        self.start()

    def start(self) -> None:
        host = self.port if isinstance(self.port, str) else "127.0.0.1"
        self._server = make_server(
            host, 0 if isinstance(self.port, str) else self.port, self.app, threaded=True
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
