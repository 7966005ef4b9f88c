"""Run the real app (``python app.py``) as a subprocess on loopback, for crash tests."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """One app process with its own databases under ``workdir``.

    ``stdin`` is /dev/null and stdout goes to a file, as under nohup or systemd.
    """

    def __init__(
        self,
        workdir: Path,
        host_server: str,
        pepper: str,
        *,
        command: list[str] | None = None,
        **settings: str,
    ):
        self.workdir = Path(workdir)
        self.command = command or [sys.executable, "app.py"]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FLASK_PORT": str(self.port),
            "APP_KEY": "crash-test-app-key",
            "API_KEY_PEPPER": pepper,
            "HOST_SERVER": host_server,
            "DATABASE_URL": f"sqlite:///{self.workdir}/openalgo.db",
            "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{self.workdir}/order_queue.db",
            "ORDER_QUEUE_HEARTBEAT_SECONDS": "0.2",
            "ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS": "1.5",
            "ORDER_QUEUE_RECONCILE_INTERVAL_SECONDS": "0.3",
            # The fake broker is the API itself and books every stalled order within the
            # lease, so the lease alone bounds how late an order can appear.
            "ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "app.log"

    def flask(self, *args: str) -> str:
        """Run ``flask --app app ...`` with this app's environment; return stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def start(self, timeout: float = 30, ready_line: str | None = None) -> "AppProcess":
        """Start and wait until healthy (or, for a worker, until ``ready_line`` is logged)."""
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log()}")
            if ready_line is not None:
                if ready_line in self.log():
                    return self
            else:
                try:
                    if (
                        httpx.get(f"{self.base_url}/order-queue/api/health", timeout=1).status_code
                        == 200
                    ):
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"app did not become healthy:\n{self.log()}")

    def launch(self) -> None:
        """Start the process without waiting for it."""
        log = open(self.log_path, "a")
        # A session of its own: a kill reaches every process of the server at once, as
        # when a container is killed (a WSGI server's master and its workers).
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL to every process of the server: no handler runs, nothing is flushed."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def fire_alerts(
    url: str,
    keys: list[tuple[str, int]],
    acknowledged: set,
    lock,
    *,
    threads: int = 6,
    timeout: float = 10,
) -> list[threading.Thread]:
    """POST each ``(symbol, quantity)`` BUY alert from ``threads`` clients, remembering
    those answered 200 (a connection cut by a kill is not acknowledged); returns the
    started client threads."""

    def client(chunk):
        with httpx.Client(timeout=timeout) as http:
            for symbol, quantity in chunk:
                try:
                    answer = http.post(
                        url,
                        json={"symbol": symbol, "action": "BUY", "position_size": str(quantity)},
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    with lock:
                        acknowledged.add((symbol, quantity))

    started = [threading.Thread(target=client, args=(keys[i::threads],)) for i in range(threads)]
    for thread in started:
        thread.start()
    return started
