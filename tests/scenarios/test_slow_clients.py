"""Clients that send their webhook bodies slowly hold no database connection and cost
the others nothing, and are cut off (408) once their time is up: the real app, under
the dev server and under gunicorn + eventlet, 15 trickling clients, 30 ordinary ones."""

import json
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import TEST_PEPPER
from tests.support.app_process import AppProcess
from tests.support.helpers import gunicorn_process

BODY_SECONDS = 4


def trickle(port: int, path: str, stop: threading.Event, answers: list) -> None:
    """Announce a 200-byte body, send it a byte a second, and keep what comes back."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(1.0)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 200\r\n\r\n".encode()
        )
        while not stop.is_set():
            try:
                sock.sendall(b" ")
                answer = sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            while answer and b"\r\n" not in answer:  # the whole status line
                answer += sock.recv(64)
            answers.append(answer.split(b"\r\n")[0])
            return


@pytest.mark.parametrize("server", ["dev", "gunicorn"])
def test_fifteen_slow_clients_cost_the_others_nothing(tmp_path, broker, server):
    settings = {"REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS)}
    if server == "dev":
        app = AppProcess(tmp_path, broker.base_url, TEST_PEPPER, **settings)
    else:
        app = gunicorn_process(
            tmp_path, broker.base_url, f"sqlite:///{tmp_path}/order_queue.db", **settings
        )
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Slow", "--symbol", "SBIN", "--quantity", "1")
    )["webhook_id"]
    path = f"/strategy/webhook/{webhook_id}"
    stop, cut_off = threading.Event(), []
    app.start(timeout=60)
    try:
        slow = [
            threading.Thread(target=trickle, args=(app.port, path, stop, cut_off), daemon=True)
            for _ in range(15)
        ]
        for client in slow:
            client.start()
        time.sleep(1.0)
        answers = []
        with httpx.Client(timeout=10) as client:
            for n in range(30):
                answers.append(
                    client.post(
                        f"{app.base_url}{path}",
                        json={"symbol": "SBIN", "action": "BUY", "position_size": str(n + 1)},
                    ).status_code
                )
        assert broker.wait_for(30, timeout=20)
        health = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()
        for client in slow:  # each is cut off once its time is up
            client.join(timeout=BODY_SECONDS + 10)
    finally:
        stop.set()
        app.stop()
    assert answers == [200] * 30
    assert sum(health["depth"]["dead"].values()) == 0
    assert not any(client.is_alive() for client in slow)
    assert cut_off == [b"HTTP/1.1 408 REQUEST TIMEOUT"] * 15
