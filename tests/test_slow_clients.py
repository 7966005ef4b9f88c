"""Clients that send their webhook bodies slowly hold no database connection and cost
the others nothing: the real app (dev server), 15 trickling clients, 30 ordinary ones."""

import json
import socket
import threading
import time

import httpx

from tests.app_process import AppProcess
from tests.conftest import TEST_PEPPER


def trickle(port: int, path: str, stop: threading.Event) -> None:
    """Announce a 200-byte body and send it a byte a second."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 200\r\n\r\n".encode())
        while not stop.wait(1.0):
            try:
                sock.sendall(b" ")
            except OSError:
                return


def test_fifteen_slow_clients_cost_the_others_nothing(tmp_path, broker):
    app = AppProcess(tmp_path, broker.base_url, TEST_PEPPER)
    webhook_id = json.loads(app.flask("strategy", "add", "--name", "Slow", "--symbol", "SBIN",
                                      "--quantity", "1"))["webhook_id"]
    path = f"/strategy/webhook/{webhook_id}"
    stop = threading.Event()
    app.start()
    try:
        slow = [threading.Thread(target=trickle, args=(app.port, path, stop), daemon=True)
                for _ in range(15)]
        for client in slow:
            client.start()
        time.sleep(1.0)
        answers = []
        with httpx.Client(timeout=10) as client:
            for n in range(30):
                answers.append(client.post(f"{app.base_url}{path}",
                                           json={"symbol": "SBIN", "action": "BUY",
                                                 "position_size": str(n + 1)}).status_code)
        assert broker.wait_for(30, timeout=20)
        health = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()
    finally:
        stop.set()
        app.stop()
    assert answers == [200] * 30
    assert sum(health["depth"]["dead"].values()) == 0
