"""Soak: the app under gunicorn + eventlet for a long while at a steady webhook rate, with
the whole server SIGKILLed at intervals, as a trader's box lives through months.

    python -m bench.soak                          # 30 minutes, 5 orders/s, SIGKILL every 3 min
    python -m bench.soak --minutes 2 --kill-every 60

Every 10 s it samples the worker: resident memory, open file descriptors, threads, and
the queue's WAL size.  A leak shows as a figure that climbs from one stretch between kills
to the next at the same age, or within a stretch after warm-up; the table prints, per
stretch, the figures at its start and end.  At the end the queue must have drained with
every acknowledged order at the broker exactly once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TEST_PEPPER  # noqa: E402
from tests.support.fake_broker import FakeBroker  # noqa: E402
from tests.support.helpers import gunicorn_process, strategy_on_symbols  # noqa: E402

SYMBOLS = [f"K{i:02d}" for i in range(20)]
SAMPLE_SECONDS = 10.0


@dataclass
class Sample:
    at: float  # seconds since the soak began
    stretch: int  # how many kills before it
    rss_mb: float
    fds: int
    threads: int
    wal_mb: float


@dataclass
class SoakResult:
    fired: int = 0
    acknowledged: set = field(default_factory=set)
    booked: Counter = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    kills: int = 0
    drained: bool = False

    @property
    def lost(self) -> set:
        return self.acknowledged - set(self.booked)

    @property
    def duplicated(self) -> dict:
        return {key: n for key, n in self.booked.items() if n > 1}


def worker_of(master: int) -> int | None:
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    return pids[0] if pids else None


def sample(pid: int, wal: Path, at: float, stretch: int) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Sample(
        at,
        stretch,
        int(fields["VmRSS"].split()[0]) / 1024,
        fds,
        int(fields["Threads"]),
        wal.stat().st_size / 2**20 if wal.exists() else 0.0,
    )


def soak(work: Path, *, minutes: float, rate: float, kill_every: float) -> SoakResult:
    """Run the soak in ``work``; returns what it saw."""
    result = SoakResult()
    with FakeBroker() as broker:
        app = gunicorn_process(work, broker.base_url, f"sqlite:///{work}/order_queue.db")
        webhook = strategy_on_symbols(app, "Soak", SYMBOLS)
        stop = threading.Event()
        lock = threading.Lock()

        def send():
            n, started = 0, time.monotonic()
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    n += 1
                    key = (SYMBOLS[n % len(SYMBOLS)], n)
                    try:
                        answer = http.post(
                            webhook,
                            json={"symbol": key[0], "action": "BUY", "position_size": str(key[1])},
                        )
                        if answer.status_code == 200:
                            with lock:
                                result.acknowledged.add(key)
                    except httpx.HTTPError:
                        pass
                    result.fired = n
                    stop.wait(max(0.0, started + n / rate - time.monotonic()))

        try:
            app.start(timeout=120)
            sender = threading.Thread(target=send, daemon=True)
            began = time.monotonic()
            sender.start()
            next_kill, next_sample = began + kill_every, began
            while time.monotonic() - began < minutes * 60:
                now = time.monotonic()
                if now >= next_sample:
                    worker = worker_of(app.process.pid)
                    taken = worker and sample(
                        worker, work / "order_queue.db-wal", now - began, result.kills
                    )
                    if taken:
                        result.samples.append(taken)
                    next_sample += SAMPLE_SECONDS
                if now >= next_kill:
                    app.kill()
                    result.kills += 1
                    app.start(timeout=120)
                    next_kill += kill_every
                time.sleep(0.2)
            stop.set()
            sender.join(15)
            result.drained = _wait_drained(app, result, broker)
        finally:
            stop.set()
            app.stop()
        result.booked = Counter((e["symbol"], int(e["quantity"])) for e in broker.book)
    return result


def _wait_drained(app, result: SoakResult, broker, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        booked = {(e["symbol"], int(e["quantity"])) for e in broker.book}
        if result.acknowledged <= booked:
            return True
        time.sleep(0.5)
    return False


def stretches(result: SoakResult) -> list[tuple[Sample, Sample]]:
    """(first, last) sample of each stretch between kills that has two or more."""
    by_stretch: dict[int, list[Sample]] = {}
    for taken in result.samples:
        by_stretch.setdefault(taken.stretch, []).append(taken)
    return [(s[0], s[-1]) for s in by_stretch.values() if len(s) >= 2]


def print_report(result: SoakResult, minutes: float, rate: float, kill_every: float) -> None:
    print(
        f"soak: {minutes:g} min at {rate:g} webhooks/s, SIGKILL every {kill_every:g} s: "
        f"{result.kills} kills, fired {result.fired}, acknowledged {len(result.acknowledged)}, "
        f"booked {len(result.booked)}, lost {len(result.lost)}, "
        f"duplicated {len(result.duplicated)}, drained {result.drained}"
    )
    print(
        "stretch | seconds | RSS MB start->end | fds start->end | threads start->end | WAL MB max"
    )
    for first, last in stretches(result):
        wal = max(s.wal_mb for s in result.samples if s.stretch == first.stretch)
        print(
            f"{first.stretch:>7} | {first.at:>4.0f}-{last.at:<4.0f}| "
            f"{first.rss_mb:>6.1f} -> {last.rss_mb:<6.1f} | {first.fds:>3} -> {last.fds:<3}"
            f"       | {first.threads:>3} -> {last.threads:<3}            | {wal:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=5, help="webhooks per second")
    parser.add_argument("--kill-every", type=float, default=180, help="seconds")
    args = parser.parse_args(argv)
    os.environ.setdefault("API_KEY_PEPPER", TEST_PEPPER)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="oq-soak-") as work:
        result = soak(Path(work), minutes=args.minutes, rate=args.rate, kill_every=args.kill_every)
    print_report(result, args.minutes, args.rate, args.kill_every)
    return 0 if result.drained and not result.lost and not result.duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
