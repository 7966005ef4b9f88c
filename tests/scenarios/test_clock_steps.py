"""NTP steps this machine's clock by minutes while orders flow: nothing is held for the
size of the step, the rate budget holds, an order past its age limit is not sent late,
and the orderbook match still finds an order the broker booked before the step.

The real app runs under libfaketime (Debian's ``faketime``) reading its offset from a
file the test rewrites: the wall clock steps, the monotonic clock does not, as with NTP.
The fake broker keeps the true time."""

import glob
import os
import sqlite3
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import TEST_PEPPER
from tests.support.app_process import AppProcess
from tests.support.fake_broker import AcceptThenHang, peak_count
from tests.support.helpers import strategy_on_symbols

SYMBOLS = [f"SYM{i:02d}" for i in range(30)]


def faketime_library() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        reason = "libfaketime not installed (Debian package faketime)"
        if os.getenv("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found[0]


class SteppedApp:
    """The app under a wall clock the test steps (``step_to``), seconds from the truth."""

    def __init__(self, tmp_path, broker, offset: int = 0, **settings: str):
        self.offset_file = tmp_path / "faketime-offset"
        self.step_to(offset)
        self.process = AppProcess(
            tmp_path,
            broker.base_url,
            TEST_PEPPER,
            ORDER_QUEUE_WORKERS="4",
            LD_PRELOAD=faketime_library(),
            FAKETIME_TIMESTAMP_FILE=str(self.offset_file),
            # The file is read again at most once a second: a step lands within a second,
            # as NTP's does, without a file read on every clock call (which made the app
            # CPU-bound on a loaded machine, slower than the rates it is judged by).
            FAKETIME_CACHE_DURATION="1",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
            **settings,
        )

    def step_to(self, offset: int) -> None:
        self.offset_file.write_text(f"{offset:+d}\n")

    def queue_rows(self) -> list[tuple]:
        with sqlite3.connect(self.process.workdir / "order_queue.db") as conn:
            return conn.execute(
                "SELECT id, state, dead_reason FROM order_queue ORDER BY id"
            ).fetchall()

    def health(self) -> dict:
        return httpx.get(f"{self.process.base_url}/order-queue/api/health", timeout=5).json()


@pytest.fixture
def stepped(tmp_path, broker, request):
    marker = request.node.get_closest_marker("clock")
    app = SteppedApp(tmp_path, broker, **(marker.kwargs if marker else {}))
    yield app
    app.process.stop()


def fire(url: str, symbols: list[str]) -> None:
    with httpx.Client(timeout=10) as client:
        for symbol in symbols:
            assert client.post(url, json={"symbol": symbol, "action": "BUY"}).status_code == 200


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_steps_back_and_forward_hold_nothing_and_keep_the_rate_budget(stepped, broker):
    """Thirty orders for one account (ten a second), the clock stepped back five minutes
    a moment into the burst; thirty more, stepped forward ten minutes."""
    url = strategy_on_symbols(stepped.process, "Steps", SYMBOLS)
    stepped.process.start()
    for burst, offset in enumerate((-300, +300), start=1):
        fire(url, SYMBOLS)
        assert broker.wait_for(30 * (burst - 1) + 12, timeout=15)
        stepped.step_to(offset)
        stepped_at = time.monotonic()
        # Thirty orders at ten a second: about two seconds left, never the step's size.
        expected = 30 * burst
        assert wait_until(lambda n=expected: len(broker.orders()) >= n, timeout=60), (
            stepped.process.log()[-3000:]
        )
        assert time.monotonic() - stepped_at < 60  # a fifth of the step: it moved no window
    assert wait_until(lambda: {row[1] for row in stepped.queue_rows()} == {"sent"}, timeout=15)
    # The app sees a step at its next read of the wall clock after libfaketime re-reads
    # the offset (at most once a second here), which may come after the last send.
    assert wait_until(lambda: second_step_shown(stepped.health()["warnings"]), timeout=15), (
        stepped.health()["warnings"]
    )
    stepped.process.stop()  # nothing more can leave the app...
    assert broker.wait_idle()  # ...nor arrive: a duplicate would be in the book now
    per_symbol = Counter(r.body["symbol"] for r in broker.orders())
    assert set(per_symbol.values()) == {2} and len(per_symbol) == 30
    assert peak_count([r.monotonic for r in broker.received], 1.0) <= 10


def second_step_shown(warnings: list[str]) -> bool:
    """Health names the step forward (by itself, or as the net step since the start)."""
    return any("stepped by +600 s" in w or "stepped by +300 s" in w for w in warnings)


@pytest.mark.clock(ORDER_QUEUE_MAX_AGE_SECONDS="12")
def test_an_order_waiting_across_a_step_back_expires_on_time_not_late(stepped, broker):
    """The broker is down; the clock steps back five minutes: the order still expires
    twelve seconds after it was taken, and is never sent."""
    url = strategy_on_symbols(stepped.process, "Expiry", SYMBOLS[:1])
    stepped.process.start()
    broker.refuse()
    taken = time.monotonic()
    fire(url, SYMBOLS[:1])
    stepped.step_to(-300)
    assert wait_until(lambda: stepped.queue_rows()[0][1:] == ("dead", "expired"), timeout=60), (
        stepped.queue_rows()
    )
    assert time.monotonic() - taken < 60  # twelve seconds, not the step's 300 more
    broker.resume()
    stepped.process.stop()  # nothing more can leave the app...
    assert broker.wait_idle()  # ...nor arrive
    assert broker.received == []


@pytest.mark.clock(offset=+300)
def test_an_order_in_doubt_across_a_step_back_is_found_not_sent_again(stepped, broker):
    """The machine's clock ran five minutes fast; the broker books an order and hangs up;
    NTP corrects the clock before the orderbook is read.  The broker's timestamp (true
    time) must still match the send, or the order would go out twice."""
    url = strategy_on_symbols(stepped.process, "Doubt", SYMBOLS[:1])
    hang = AcceptThenHang(30)
    broker.default = hang
    stepped.process.start()
    fire(url, SYMBOLS[:1])
    assert broker.wait_for(1, timeout=10)
    stepped.step_to(0)
    time.sleep(1.5)  # past the app's second of clock caching: NTP has corrected it
    hang.release()  # the connection resets: the outcome is unknown
    assert wait_until(lambda: stepped.queue_rows()[0][1] == "sent", timeout=30), (
        stepped.process.log()[-3000:]
    )
    stepped.process.stop()  # nothing more can leave the app...
    assert broker.wait_idle()  # ...nor arrive: a second send would be here now
    assert len(broker.received) == 1
    detail = stepped.process.flask("order-queue", "show", str(stepped.queue_rows()[0][0]))
    assert broker.orders()[0].orderid in detail
