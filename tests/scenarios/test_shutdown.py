"""Graceful shutdown of the real app process: SIGTERM / SIGINT stop claiming, let the
in-flight request finish, leave the rest pending, exit 0, and chain to earlier handlers."""

import json
import signal
import sqlite3
import sys
import textwrap
import time

import httpx
import pytest

from tests.conftest import TEST_PEPPER
from tests.support.app_process import ROOT, AppProcess
from tests.support.fake_broker import Stall

SYMBOLS = ["A1", "A2", "A3", "A4", "A5"]


def fire_alerts(process):
    created = json.loads(
        process.flask(
            "strategy", "add", "--name", "Stop", "--symbol", SYMBOLS[0], "--quantity", "1"
        )
    )
    process.flask(
        "strategy",
        "map",
        "--name",
        "Stop",
        "--quantity",
        "1",
        *(arg for symbol in SYMBOLS[1:] for arg in ("--symbol", symbol)),
    )
    return created["webhook_id"]


def states(process):
    with sqlite3.connect(process.workdir / "order_queue.db") as conn:
        return dict(conn.execute("SELECT symbol, state FROM order_queue").fetchall())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_in_flight_order_and_leaves_the_rest(tmp_path, broker, signum):
    broker.default = Stall(1.0)
    process = AppProcess(
        tmp_path,
        broker.base_url,
        TEST_PEPPER,
        ORDER_QUEUE_WORKERS="1",
        ORDER_QUEUE_READ_TIMEOUT="5",
    )
    webhook_id = fire_alerts(process)
    process.start()
    try:
        for symbol in SYMBOLS:
            response = httpx.post(
                f"{process.base_url}/strategy/webhook/{webhook_id}",
                json={"symbol": symbol, "action": "BUY"},
                timeout=5,
            )
            assert response.status_code == 200
        assert broker.wait_for(1, timeout=10)
        started = time.monotonic()
        assert process.terminate(signum, timeout=20) == 0, process.log()
        assert time.monotonic() - started < 10
    finally:
        process.stop()
    final = states(process)
    assert final[SYMBOLS[0]] == "sent"  # the request on the wire was allowed to finish
    assert sorted(final.values()).count("pending") >= 3  # the rest wait for the next start
    assert "sending" not in final.values()
    assert len(broker.received) == sum(1 for s in final.values() if s == "sent")
    assert "dispatcher" in process.log() and "stopped (drained)" in process.log()


WSGI_WRAPPER = textwrap.dedent("""
    import os, signal, sys
    marker = sys.argv[1]

    def earlier_handler(signum, frame):
        with open(marker, "w") as handle:
            handle.write("earlier handler ran")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, earlier_handler)  # as a WSGI server would, before import
    sys.path.insert(0, sys.argv[2])
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import wsgi

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server("127.0.0.1", int(os.environ["FLASK_PORT"]), wsgi.app,
                handler_class=QuietHandler).serve_forever()
""")


def test_wsgi_import_path_stops_gracefully_and_runs_the_earlier_handler(tmp_path, broker):
    script, marker = tmp_path / "serve.py", tmp_path / "marker"
    script.write_text(WSGI_WRAPPER)
    process = AppProcess(
        tmp_path,
        broker.base_url,
        TEST_PEPPER,
        command=[sys.executable, str(script), str(marker), str(ROOT)],
    )
    webhook_id = fire_alerts(process)
    process.start()
    try:
        response = httpx.post(
            f"{process.base_url}/strategy/webhook/{webhook_id}",
            json={"symbol": "A1", "action": "BUY"},
            timeout=5,
        )
        assert response.status_code == 200
        assert broker.wait_for(1, timeout=10)
        assert process.terminate(signal.SIGTERM, timeout=20) == 0, process.log()
    finally:
        process.stop()
    assert marker.read_text() == "earlier handler ran"
    assert "stopped (drained)" in process.log()
    assert states(process) == {"A1": "sent"}
