"""The default set-up, as inside OpenAlgo: the queue hands orders to its own process's
API in-process (``api_road.py``), as OpenAlgo's dispatcher does.

The host's paper broker takes 200 ms per order (``PAPER_BROKER_LATENCY_MS``), so a
SIGKILL lands between sends and bookings; the process that received those requests
dies with them.  The plugin's door (``services/order_queue/door.py``) recorded which process
received each one, so after the restart the orders in doubt are settled within the
broker's settle time, not the two minutes OpenAlgo's client may wait: every order
answered 200 is booked exactly once, with the default heartbeat, settle and
upstream-timeout settings, long before the upstream timeout could have run out.  Run
under the dev server and under gunicorn + eventlet, on SQLite and PostgreSQL.

The drain time is printed, not held to a tight figure: on an idle machine it is about
the heartbeat timeout plus the settle time (~10 s); the bound below only tells the
door's evidence from the long wait without it, with room for a loaded machine.
"""

import json
import random
import signal
import sqlite3
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import TEST_PEPPER
from tests.support.app_process import AppProcess, fire_alerts
from tests.support.server_venv import server_python

SYMBOLS = [f"H{i:02d}" for i in range(16)]
ROUNDS = 3
#: Half the upstream timeout: without the door's evidence nothing in doubt could settle
#: before the upstream timeout (120 s) had passed since its send.
DRAIN_LIMIT_SECONDS = 60.0
DEFAULTS = {  # the shipped defaults, where tests/support/app_process.py shortens them
    "ORDER_QUEUE_HEARTBEAT_SECONDS": "1",
    "ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS": "5",
    "ORDER_QUEUE_RECONCILE_INTERVAL_SECONDS": "1.5",
    "ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS": "120",
}


class SelfHosted(AppProcess):
    """The host posting to itself, under the dev server or gunicorn + eventlet."""

    def __init__(self, workdir, queue_url, server):
        super().__init__(
            workdir,
            "",
            TEST_PEPPER,
            ORDER_QUEUE_DATABASE_URL=queue_url,
            PAPER_BROKER_LATENCY_MS="200",
            ORDER_QUEUE_MAX_AGE_SECONDS="900",
            **DEFAULTS,
        )
        self.env["HOST_SERVER"] = self.base_url
        self.server = server
        if server == "gunicorn":
            self.command = [
                str(server_python()),
                "-m",
                "gunicorn",
                "--worker-class",
                "eventlet",
                "--workers",
                "1",
                "--graceful-timeout",
                "30",
                "--bind",
                f"127.0.0.1:{self.port}",
                "wsgi:app",
            ]


def booked(workdir) -> Counter:
    with sqlite3.connect(workdir / "openalgo.db") as conn:
        return Counter(conn.execute("SELECT symbol, quantity FROM paper_orders").fetchall())


def unsettled(base_url: str) -> int | None:
    try:
        depth = httpx.get(f"{base_url}/order-queue/api/health", timeout=5).json()["depth"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return sum(sum(depth.get(state, {}).values()) for state in ("pending", "sending", "in_doubt"))


@pytest.mark.parametrize("server", ["dev", "gunicorn"])
def test_sigkill_mid_burst_settles_within_seconds(tmp_path, queue_url, server):
    rng = random.Random(20261128)
    app = SelfHosted(tmp_path, queue_url, server)
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Self", "--symbol", SYMBOLS[0], "--quantity", "1")
    )["webhook_id"]
    app.flask(
        "strategy",
        "map",
        "--name",
        "Self",
        "--quantity",
        "1",
        *(arg for symbol in SYMBOLS[1:] for arg in ("--symbol", symbol)),
    )
    url = f"{app.base_url}/strategy/webhook/{webhook_id}"
    acknowledged, lock = set(), threading.Lock()

    try:
        for round_ in range(ROUNDS):
            app.start(timeout=60)
            keys = [(SYMBOLS[i % len(SYMBOLS)], 100 * (round_ + 1) + i) for i in range(30)]
            threads = fire_alerts(url, keys, acknowledged, lock)
            deadline = time.monotonic() + 20
            while len(booked(tmp_path)) < 5 * (round_ + 1) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            app.kill()
            for thread in threads:
                thread.join()
        app.start(timeout=60)
        restarted = time.monotonic()
        while time.monotonic() - restarted < 2 * DRAIN_LIMIT_SECONDS:
            if acknowledged <= set(booked(tmp_path)) and unsettled(app.base_url) == 0:
                break
            time.sleep(0.1)
        drained_after = time.monotonic() - restarted
        health = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()
        states, road = health["depth"], health["process"]["api_road"]
    finally:
        app.stop()  # the app is its own broker: once it is gone, nothing more is booked
    books = booked(tmp_path)
    lost = acknowledged - set(books)
    duplicated = {key: n for key, n in books.items() if n > 1}
    print(
        f"\nself-hosted {server}: acknowledged={len(acknowledged)} booked={len(books)} "
        f"lost={len(lost)} duplicated={len(duplicated)} drained {drained_after:.1f}s "
        f"after the restart; depth={states}"
    )
    if lost:
        print("\n".join(app.log().splitlines()[-400:]))
    assert not lost, sorted(lost)[:10]
    assert not duplicated, duplicated
    assert not sum(states["dead"].values()), states
    assert drained_after < DRAIN_LIMIT_SECONDS, app.log()[-3000:]
    assert road.startswith("in-process"), road  # the road OpenAlgo's own dispatcher takes


@pytest.mark.parametrize("server", ["dev", "gunicorn"])
def test_sigterm_lets_the_request_to_its_own_api_finish(tmp_path, server):
    """SIGTERM while the queue's request to its own API is being served: the server
    keeps serving until that request is answered, the order ends sent (not in doubt),
    the rest stays pending, the stop is recorded, and the process exits 0 (under
    gunicorn: its worker too, which a handler that blocked the event loop broke)."""
    app = SelfHosted(tmp_path, f"sqlite:///{tmp_path}/order_queue.db", server)
    app.env.update(PAPER_BROKER_LATENCY_MS="1500", ORDER_QUEUE_WORKERS="1")
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Term", "--symbol", SYMBOLS[0], "--quantity", "1")
    )["webhook_id"]
    app.flask(
        "strategy",
        "map",
        "--name",
        "Term",
        "--quantity",
        "1",
        *(arg for symbol in SYMBOLS[1:4] for arg in ("--symbol", symbol)),
    )
    try:
        app.start(timeout=60)
        for symbol in SYMBOLS[:4]:
            answer = httpx.post(
                f"{app.base_url}/strategy/webhook/{webhook_id}",
                json={"symbol": symbol, "action": "BUY"},
                timeout=10,
            )
            assert answer.status_code == 200
        deadline = time.monotonic() + 10  # until the first order is at the paper broker
        while (
            time.monotonic() < deadline
            and not httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()["depth"][
                "sending"
            ]["regular"]
        ):
            time.sleep(0.05)
        time.sleep(0.3)
        started = time.monotonic()
        code = app.terminate(signal.SIGTERM, timeout=40)
        took = time.monotonic() - started
    finally:
        app.stop()
    with sqlite3.connect(tmp_path / "order_queue.db") as conn:
        states = Counter(state for (state,) in conn.execute("SELECT state FROM order_queue"))
        stopped = conn.execute(
            "SELECT count(*) FROM order_queue_dispatchers WHERE stopped_at IS NOT NULL"
        ).fetchone()[0]
    assert code == 0 and "exited with code" not in app.log(), app.log()[-3000:]
    # The signal reaches the worker's Python handler when its event loop next wakes: an
    # order claimed meanwhile is finished too.  None is cut off, none is left in doubt.
    assert set(states) == {"sent", "pending"} and sum(states.values()) == 4, (
        states,
        app.log()[-3000:],
    )
    assert stopped == 1
    assert len(booked(tmp_path)) == states["sent"]
    assert took < 15
