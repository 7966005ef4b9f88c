"""Scale-out on PostgreSQL: several dispatcher processes share one queue.

Real worker processes (``flask order-queue worker``), the real PostgreSQL server, a real
HTTP fake broker on loopback.  Runs in CI; skips only when PostgreSQL is unreachable
outside CI.
"""

import signal
import sys
import time
from collections import Counter, defaultdict

import pytest
from sqlalchemy import text

from database.order_queue_db import QueueStore, utcnow
from tests.conftest import TEST_PEPPER, TEST_SEALING
from tests.support.app_process import AppProcess
from tests.support.fake_broker import Stall

ACCOUNTS = [f"{n}" * 64 for n in "123"]
SYMBOLS = [f"N{i:02d}" for i in range(50)]
WORKER = [sys.executable, "-m", "flask", "--app", "app", "order-queue", "worker"]
READY = "order queue worker"


def start_workers(tmp_path, url, broker, count, **settings):
    workers = []
    for n in range(count):
        workdir = tmp_path / f"worker{n}"
        workdir.mkdir()
        worker = AppProcess(
            workdir,
            broker.base_url,
            TEST_PEPPER,
            command=WORKER,
            ORDER_QUEUE_DATABASE_URL=url,
            LOG_LEVEL="WARNING",
            **settings,
        )
        workers.append(worker)
    for worker in workers:
        worker.start(timeout=60, ready_line=READY)
    return workers


def enqueue_orders(store, count):
    """``count`` orders over 3 accounts and 50 instruments; quantity = queue position."""
    for i in range(count):
        store.intake.enqueue(
            "placeorder",
            {
                "apikey": ACCOUNTS[i % 3],
                "strategy": "Scale",
                "symbol": SYMBOLS[(i // 3) % 50],
                "exchange": "NSE",
                "product": "MIS",
                "action": "BUY",
                "pricetype": "MARKET",
                "quantity": str(i + 1),
            },
            now=utcnow(),
            max_age_seconds=900,
        )


def wait_until_delivered(store, broker, count, timeout):
    """Until ``count`` orders are booked and none is unfinished: with no order left
    pending, sending or in doubt, no worker can send one again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = store.reads.depth()
        unfinished = sum(sum(depth.get(s, {}).values()) for s in ("pending", "sending", "in_doubt"))
        if len(broker.book) >= count and unfinished == 0:
            return
        time.sleep(0.2)


def assert_exactly_once_in_order(broker, count):
    assert broker.wait_idle(), "the broker is still serving requests"  # the book is final
    booked = Counter(int(entry["quantity"]) for entry in broker.book)
    assert sorted(booked) == list(range(1, count + 1)), "lost orders"
    assert set(booked.values()) == {1}, "duplicated orders"
    arrivals = defaultdict(list)
    for request in sorted(broker.orders(), key=lambda r: r.monotonic):
        arrivals[(request.body["apikey"], request.body["symbol"])].append(
            int(request.body["quantity"])
        )
    for instrument, quantities in arrivals.items():
        assert quantities == sorted(quantities), f"{instrument} out of order: {quantities}"


@pytest.fixture
def pg_store(postgres_schema_url):
    store = QueueStore(postgres_schema_url, sealing=TEST_SEALING)
    store.schema.create()
    yield store
    store.dispose()


def test_four_workers_deliver_2000_orders_once_within_the_account_limits(
    tmp_path, postgres_schema_url, pg_store, broker, frozen_heap
):
    enqueue_orders(pg_store, 2000)
    workers = start_workers(tmp_path, postgres_schema_url, broker, 4)
    try:
        wait_until_delivered(pg_store, broker, 2000, timeout=240)
    finally:
        for worker in workers:
            worker.stop()
    assert_exactly_once_in_order(broker, 2000)
    assert broker.max_in_window("placeorder", window=1.0, key="apikey") <= 10
    with pg_store.transaction(read_only=True) as conn:
        senders = Counter(
            conn.execute(
                text("SELECT actor FROM order_queue_attempts WHERE outcome = 'accepted'")
            ).scalars()
        )
    assert len(senders) == 4, senders  # every worker took part


def test_sigkill_of_the_busiest_worker_loses_and_doubles_nothing(
    tmp_path, postgres_schema_url, pg_store, broker
):
    broker.default = Stall(0.2)  # requests are on the wire when the worker dies
    enqueue_orders(pg_store, 600)
    workers = start_workers(
        tmp_path, postgres_schema_url, broker, 4, ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS="2"
    )
    try:
        deadline = time.monotonic() + 60
        while len(broker.book) < 150 and time.monotonic() < deadline:
            time.sleep(0.1)
        with pg_store.transaction(read_only=True) as conn:
            busiest_actor = conn.execute(
                text(
                    "SELECT lease_owner FROM order_queue WHERE state = 'sending' "
                    "GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1"
                )
            ).scalar()
        pid = int(busiest_actor.split(":")[1])
        victim = next(w for w in workers if w.process.pid == pid)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed_at = time.monotonic()
        wait_until_delivered(pg_store, broker, 600, timeout=120)
        took_over_within = time.monotonic() - killed_at
    finally:
        for worker in workers:
            worker.stop()
    assert_exactly_once_in_order(broker, 600)
    with pg_store.transaction(read_only=True) as conn:
        states = dict(
            conn.execute(text("SELECT state, count(*) FROM order_queue GROUP BY state")).all()
        )
        recovered = conn.execute(
            text("SELECT count(*) FROM order_queue_attempts WHERE kind = 'recovery'")
        ).scalar()
    assert states == {"sent": 600}
    assert recovered >= 1  # the victim's in-flight orders went through reconciliation
    print(f"\nfailover: busiest worker killed, the rest finished {took_over_within:.1f}s later")


def test_four_workers_starting_at_once_on_an_empty_database(tmp_path, postgres_schema_url, broker):
    workers = []
    for n in range(4):
        workdir = tmp_path / f"worker{n}"
        workdir.mkdir()
        workers.append(
            AppProcess(
                workdir,
                broker.base_url,
                TEST_PEPPER,
                command=WORKER,
                ORDER_QUEUE_DATABASE_URL=postgres_schema_url,
            )
        )
    for worker in workers:  # all four race through create_schema
        worker.launch()
    try:
        deadline = time.monotonic() + 60
        while not all(READY in w.log() for w in workers):
            assert time.monotonic() < deadline, [w.log()[-2000:] for w in workers]
            assert all(w.process.poll() is None for w in workers), [w.log() for w in workers]
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        assert "Traceback" not in worker.log() and " ERROR " not in worker.log(), worker.log()
    store = QueueStore(postgres_schema_url, sealing=TEST_SEALING)
    with store.transaction(read_only=True) as conn:
        tables = conn.execute(
            text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "  # noqa: E501
                "AND table_name LIKE 'order_queue%'"
            )
        ).scalar()
        triggers = conn.execute(
            text(
                "SELECT count(*) FROM information_schema.triggers "
                "WHERE trigger_schema = current_schema()"
            )
        ).scalar()
    store.dispose()
    assert tables == 7 and triggers >= 2  # orders, attempts, dispatchers, meta, samples,
    # squareoffs, alert keys


def test_an_enqueue_in_another_process_wakes_the_worker_at_once(
    tmp_path, postgres_schema_url, pg_store, broker
):
    [worker] = start_workers(
        tmp_path,
        postgres_schema_url,
        broker,
        1,
        ORDER_QUEUE_POLL_SECONDS="60",
        ORDER_QUEUE_HEARTBEAT_SECONDS="30",
        ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS="90",
    )
    try:
        time.sleep(1.0)  # the worker has gone to sleep for up to 60 s
        enqueue_orders(pg_store, 1)  # from this process: only NOTIFY can wake it
        assert broker.wait_for(1, timeout=15), worker.log()
    finally:
        worker.stop()


def test_a_plain_postgresql_url_just_works(postgres_schema_url):
    plain = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://")
    store = QueueStore(plain, sealing=TEST_SEALING)
    store.schema.create()
    order_id = store.intake.enqueue(
        "placeorder",
        {"apikey": ACCOUNTS[0], "symbol": "SBIN", "exchange": "NSE", "action": "BUY"},
        now=utcnow(),
        max_age_seconds=60,
    )
    assert store.reads.get_order(order_id)["state"] == "pending"
    store.dispose()
