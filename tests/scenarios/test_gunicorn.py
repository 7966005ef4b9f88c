"""Under the server OpenAlgo really runs on: gunicorn + eventlet, one worker.

The host runs as ``gunicorn --worker-class eventlet --workers 1 --timeout 300
--graceful-timeout 30 wsgi:app`` from an environment with the runtime requirements only
(``tests/support/server_venv.py``), on SQLite and on PostgreSQL.  Its worker is SIGKILLed
mid-burst (gunicorn starts a new one), then the master is SIGTERMed mid-burst and the
server started again; webhooks keep coming all along.  At the end every order answered
200 is at the broker exactly once, and a probe that reads the health endpoint every
100 ms was answered within a second whenever the server was up: a store call that
blocked the event loop (sqlite3 waiting on a lock, psycopg waiting for a NOTIFY) would
stall every request of the worker.
"""

import json
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx

from tests.support.app_process import AppProcess, fire_alerts
from tests.support.fake_broker import Stall
from tests.support.helpers import gunicorn_process, strategy_on_symbols
from tests.support.tcp_proxy import TcpProxy

SYMBOLS = [f"G{i:02d}" for i in range(20)]
PROBE_LIMIT_SECONDS = 1.0


def worker_pids(master_pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


class Probe:
    """Reads the health endpoint every 100 ms; keeps the slowest answer.

    Paused from just before a kill until the restarted server has answered once: a
    request that waits for a worker to boot measures the boot, not a stall."""

    def __init__(self, url: str):
        self.url = url
        self.slowest = 0.0
        self.answered = 0
        self._stop = threading.Event()
        self._turn = threading.Condition()  # guards the two flags below
        self._active = True
        self._in_flight = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pause(self):
        """No probe starts from now on, and one already on its way has finished."""
        with self._turn:
            self._active = False
            assert self._turn.wait_for(lambda: not self._in_flight, timeout=60)

    def resume_when_answering(self, timeout: float = 60):
        wait_for_answer(self.url, timeout)
        with self._turn:
            self._active = True

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(0.1):
                with self._turn:
                    if not self._active:
                        continue
                    self._in_flight = True
                started = time.monotonic()
                try:
                    client.get(self.url)
                    took = time.monotonic() - started
                    self.slowest = max(self.slowest, took)
                    self.answered += 1
                except httpx.HTTPError:
                    pass
                finally:
                    with self._turn:
                        self._in_flight = False
                        self._turn.notify_all()


def strategy_on_every_symbol(app: AppProcess, name: str) -> str:
    return strategy_on_symbols(app, name, SYMBOLS)


def wait_for_acks(acknowledged: set, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(acknowledged) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_worker_sigkill_and_master_sigterm_mid_burst(tmp_path, broker, queue_url):
    broker.default = Stall(0.2)  # requests are in flight at the broker when the kill lands
    app = gunicorn_process(tmp_path, broker.base_url, queue_url)
    url = strategy_on_every_symbol(app, "Gunicorn")
    acknowledged, lock = set(), threading.Lock()
    bursts = [
        [(SYMBOLS[i % len(SYMBOLS)], 1000 * round_ + i) for i in range(60)]
        for round_ in range(1, 4)
    ]
    try:
        app.start(timeout=60)
        with Probe(f"{app.base_url}/order-queue/api/health") as probe:
            # 1. The worker is SIGKILLed mid-burst; gunicorn's master starts another.
            threads = fire_alerts(url, bursts[0], acknowledged, lock)
            wait_for_acks(acknowledged, 25)
            (worker,) = worker_pids(app.process.pid)
            probe.pause()
            subprocess.run(["kill", "-KILL", str(worker)], check=True)
            for thread in threads:
                thread.join()
            # 2. Once the new worker answers, the master is SIGTERMed mid-burst.
            app_deadline = time.monotonic() + 60
            while (
                worker_pids(app.process.pid) in ([], [worker]) and time.monotonic() < app_deadline
            ):
                time.sleep(0.1)
            probe.resume_when_answering()
            threads = fire_alerts(url, bursts[1], acknowledged, lock)
            wait_for_acks(acknowledged, len(acknowledged) + 25)
            probe.pause()
            assert app.terminate(signal.SIGTERM, timeout=40) == 0
            for thread in threads:
                thread.join()
            # 3. Started again: the rest drains, more webhooks come in meanwhile.
            app.start(timeout=60)
            probe.resume_when_answering()
            threads = fire_alerts(url, bursts[2], acknowledged, lock)
            for thread in threads:
                thread.join()
            drained = wait_until_drained(app, acknowledged, broker)
        assert drained, app.log()[-4000:]
    finally:
        app.stop()
    assert broker.wait_idle(), "the broker is still serving requests"  # the book is final
    booked = Counter((entry["symbol"], int(entry["quantity"])) for entry in broker.book)
    fired = {key for burst in bursts for key in burst}
    lost = acknowledged - set(booked)
    duplicated = {key: n for key, n in booked.items() if n > 1}
    print(
        f"\ngunicorn+eventlet: acknowledged={len(acknowledged)} booked={len(booked)} "
        f"lost={len(lost)} duplicated={len(duplicated)} slowest probe={probe.slowest:.3f}s "
        f"probes={probe.answered}"
    )
    assert not lost, sorted(lost)[:10]
    assert not duplicated, duplicated
    assert set(booked) <= fired
    assert len(acknowledged) >= 120
    assert "stopped (drained)" in app.log(), app.log()[-4000:]
    assert "exited with code" not in app.log(), app.log()[-4000:]  # the worker's own exit
    assert probe.answered > 20
    assert probe.slowest < PROBE_LIMIT_SECONDS, f"slowest probe {probe.slowest:.2f}s"


def test_docker_stop_sigterm_then_sigkill_ten_seconds_later(tmp_path, broker, queue_url):
    """``docker compose stop`` with OpenAlgo's compose file: SIGTERM, and SIGKILL to every
    process 10 s later.  Requests stall at the broker past the drain bound, so some are
    on the wire when the stop comes: the default bound lets the server exit by itself
    before the kill, and after the restart every acknowledged order is booked once,
    none left in doubt or dead."""
    broker.default = Stall(8.0)  # longer than the drain bound: the stop cannot wait them out
    app = gunicorn_process(tmp_path, broker.base_url, queue_url)
    url = strategy_on_every_symbol(app, "Docker")
    acknowledged, lock = set(), threading.Lock()
    burst = [(SYMBOLS[i % len(SYMBOLS)], 500 + i) for i in range(40)]
    try:
        app.start(timeout=60)
        threads = fire_alerts(url, burst, acknowledged, lock)
        wait_for_acks(acknowledged, 15)
        assert broker.wait_for(2, timeout=20)  # requests are on the wire, stalled
        app.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        try:
            app.process.wait(10)
            exited_by_itself = True
        except subprocess.TimeoutExpired:
            exited_by_itself = False
            app.kill()
        took = time.monotonic() - stopped_at
        for thread in threads:
            thread.join()
        broker.default = Stall(0.0)
        app.start(timeout=60)
        drained = wait_until_drained(app, acknowledged, broker)
        assert drained, app.log()[-4000:]
        depth = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()["depth"]
    finally:
        app.stop()
    assert broker.wait_idle(), "the broker is still serving requests"  # the book is final
    booked = Counter((entry["symbol"], int(entry["quantity"])) for entry in broker.book)
    print(
        f"\ndocker stop: exited by itself={exited_by_itself} after {took:.1f}s "
        f"acknowledged={len(acknowledged)} booked={len(booked)}"
    )
    assert exited_by_itself, f"still running 10 s after SIGTERM:\n{app.log()[-4000:]}"
    assert acknowledged <= set(booked), sorted(acknowledged - set(booked))[:10]
    assert not {key: n for key, n in booked.items() if n > 1}
    assert sum(depth["dead"].values()) == 0, depth


def wait_until_drained(app: AppProcess, acknowledged: set, broker, timeout: float = 90) -> bool:
    """True once health shows nothing pending, sending or in doubt, and every
    acknowledged order is booked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        booked = {(e["symbol"], int(e["quantity"])) for e in broker.book}
        try:
            depth = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()["depth"]
        except (httpx.HTTPError, KeyError):
            depth = None
        if (
            depth is not None
            and acknowledged <= booked
            and not any(
                sum(depth.get(state, {}).values()) for state in ("pending", "sending", "in_doubt")
            )
        ):
            return True
        time.sleep(0.2)
    return False


def test_health_names_the_server_model(tmp_path, broker):
    app = gunicorn_process(tmp_path, broker.base_url, f"sqlite:///{tmp_path}/order_queue.db")
    try:
        app.start(timeout=60)
        health = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5).json()
    finally:
        app.stop()
    assert health["process"]["server_model"] == "eventlet"
    assert health["process"]["dispatcher_running"] is True


def test_boot_with_the_queue_database_unreachable(tmp_path, broker, postgres_schema_url):
    """PostgreSQL behind a proxy that is down at boot: the host starts anyway, webhooks
    answer 503 with Retry-After, health says why; once the database is reachable the
    dispatcher starts by itself and orders flow."""
    from urllib.parse import urlsplit

    upstream = urlsplit(postgres_schema_url)
    with TcpProxy((upstream.hostname, upstream.port or 5432)) as proxy:
        proxy.cut()
        via_proxy = postgres_schema_url.replace(
            f"{upstream.hostname}:{upstream.port or 5432}", f"127.0.0.1:{proxy.port}"
        )
        app = gunicorn_process(tmp_path, broker.base_url, via_proxy + "&connect_timeout=1")
        webhook_id = json.loads(
            app.flask("strategy", "add", "--name", "Boot", "--symbol", "SBIN", "--quantity", "1")
        )["webhook_id"]
        url = f"{app.base_url}/strategy/webhook/{webhook_id}"
        try:
            app.launch()
            health = wait_for_answer(f"{app.base_url}/order-queue/api/health")
            assert health.status_code == 503
            assert any("waiting for the queue database" in p for p in health.json()["problems"]), (
                health.json()
            )
            refused = httpx.post(url, json={"symbol": "SBIN", "action": "BUY"}, timeout=10)
            assert refused.status_code == 503 and refused.headers["Retry-After"]
            proxy.restore()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answer = httpx.get(f"{app.base_url}/order-queue/api/health", timeout=5)
                if answer.status_code == 200:
                    break
                time.sleep(0.2)
            assert answer.status_code == 200, answer.json()
            accepted = httpx.post(url, json={"symbol": "SBIN", "action": "BUY"}, timeout=10)
            assert accepted.status_code == 200
            assert broker.wait_for(1, timeout=10)
        finally:
            app.stop()
    assert [entry["symbol"] for entry in broker.book] == ["SBIN"]


def wait_for_answer(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=5)
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url}")


def test_a_locked_sqlite_file_stalls_only_the_webhook_that_waits_for_it(tmp_path, broker):
    """Another process holds the queue file's write lock for 3 s.  The webhook that
    needs it waits (and then gets its 200); every other request of the worker is
    answered meanwhile, because the wait runs off the event loop."""
    import sqlite3

    app = gunicorn_process(tmp_path, broker.base_url, f"sqlite:///{tmp_path}/order_queue.db")
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Lock", "--symbol", "SBIN", "--quantity", "1")
    )["webhook_id"]
    try:
        app.start(timeout=60)
        holder = sqlite3.connect(tmp_path / "order_queue.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        answers = []
        webhook = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{app.base_url}/strategy/webhook/{webhook_id}",
                    json={"symbol": "SBIN", "action": "BUY"},
                    timeout=30,
                )
            )
        )
        webhook.start()
        slowest, released_at = 0.0, time.monotonic() + 3.0
        while time.monotonic() < released_at:
            started = time.monotonic()
            httpx.get(f"{app.base_url}/", timeout=30)
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        holder.execute("COMMIT")
        holder.close()
        webhook.join()
        assert broker.wait_for(1, timeout=10)
    finally:
        app.stop()
    assert answers[0].status_code == 200
    assert slowest < PROBE_LIMIT_SECONDS, f"slowest probe {slowest:.2f}s"
