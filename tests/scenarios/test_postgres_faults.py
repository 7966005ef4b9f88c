"""PostgreSQL restarts or drops us mid-burst: the app's sessions are terminated with
``pg_terminate_backend`` again and again (in the middle of claims, send stamps and
outcome writes, wherever they land) and the server itself is restarted once, while
webhooks flow; under the dev server and gunicorn + eventlet.  Every order answered 200
reaches the broker exactly once, and the dispatcher is back by itself."""

import subprocess
import threading
import time
import uuid
from collections import Counter

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES_URL, TEST_PEPPER
from tests.scenarios.test_gunicorn import SYMBOLS, strategy_on_every_symbol, wait_until_drained
from tests.support.app_process import AppProcess, fire_alerts
from tests.support.fake_broker import Stall
from tests.support.helpers import gunicorn_process

ADMIN_URL = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")


class SessionKiller(threading.Thread):
    """Terminates every session named ``application_name`` every ``every`` seconds, and
    restarts the server once, as soon as ``restart_when()`` says (mid-burst)."""

    def __init__(self, application_name: str, restart_when, every: float = 0.3):
        super().__init__(daemon=True)
        self.name_to_kill, self.every, self.restart_when = application_name, every, restart_when
        self.stop_event = threading.Event()
        self.terminated = 0
        self.restarted = False

    def run(self):
        while not self.stop_event.wait(self.every):
            if not self.restarted and self.restart_when():
                restart = subprocess.run(
                    ["pg_ctlcluster", "15", "main", "restart"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                self.restarted = restart.returncode == 0
                continue
            try:
                with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                    self.terminated += conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = %s",
                        (self.name_to_kill,),
                    ).fetchone()[0]
            except psycopg.Error:
                pass  # the server is restarting

    def stop(self):
        self.stop_event.set()
        self.join(90)


@pytest.mark.parametrize("server", ["dev", "gunicorn"])
def test_sessions_terminated_and_the_server_restarted_mid_burst(
    tmp_path, broker, postgres_schema_url, server
):
    if subprocess.run(["which", "pg_ctlcluster"], capture_output=True).returncode != 0:
        pytest.skip("needs Debian's pg_ctlcluster to restart the server")
    application_name = f"oq_fault_{uuid.uuid4().hex[:8]}"
    queue_url = f"{postgres_schema_url}&application_name={application_name}"
    broker.default = Stall(0.05)  # requests are on the wire when sessions die
    if server == "gunicorn":
        app = gunicorn_process(tmp_path, broker.base_url, queue_url)
    else:
        app = AppProcess(tmp_path, broker.base_url, TEST_PEPPER, ORDER_QUEUE_DATABASE_URL=queue_url)
    url = strategy_on_every_symbol(app, "Faults")
    acknowledged, lock = set(), threading.Lock()
    burst = [(SYMBOLS[i % len(SYMBOLS)], 100 + i) for i in range(150)]
    killer = SessionKiller(application_name, restart_when=lambda: len(acknowledged) >= 50)
    try:
        app.start(timeout=60)
        killer.start()
        threads = fire_alerts(url, burst, acknowledged, lock, threads=3)
        for thread in threads:
            thread.join()
        time.sleep(1.0)
        killer.stop()
        fault_over = time.monotonic()
        drained = wait_until_drained(app, acknowledged, broker, timeout=90)
        back_after = time.monotonic() - fault_over
        assert drained, app.log()[-4000:]
        health = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5)
    finally:
        killer.stop()
        app.stop()
    assert broker.wait_idle(), "the broker is still serving requests"  # the book is final
    booked = Counter((entry["symbol"], int(entry["quantity"])) for entry in broker.book)
    print(
        f"\n{server}: sessions terminated={killer.terminated} restarted={killer.restarted} "
        f"acknowledged={len(acknowledged)} of {len(burst)} booked={len(booked)} "
        f"drained {back_after:.1f}s after the fault ended"
    )
    assert killer.restarted and killer.terminated > 0
    assert acknowledged <= set(booked), sorted(acknowledged - set(booked))[:10]
    assert not {key: n for key, n in booked.items() if n > 1}
    assert health.status_code == 200, health.text
    assert len(acknowledged) >= len(burst) // 2  # 503 only while the database is away
