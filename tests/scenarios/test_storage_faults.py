"""Storage faults: the webhook answers 503 and logs at ERROR, nothing half-written, the
app keeps serving and recovers when the fault clears.  Real files, real locks, a real
read-only mount."""

import logging
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

from services.order_queue import runtime
from tests.conftest import TEST_SEALING, make_app
from tests.support.helpers import add_strategy, post
from tests.support.tcp_proxy import TcpProxy

ALERT = {"symbol": "SBIN", "action": "BUY"}


def setup_app(tmp_path, queue_dir, **settings):
    queue_dir.mkdir(exist_ok=True)
    app = make_app(
        tmp_path, ORDER_QUEUE_DATABASE_URL=f"sqlite:///{queue_dir}/order_queue.db", **settings
    )
    strategy = add_strategy(app.test_cli_runner())
    return app.test_client(), strategy["webhook_id"]


def assert_refused(client, webhook_id, caplog):
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        response = post(client, webhook_id, ALERT)
    assert response.status_code == 503
    assert "NOT queued" in response.get_json()["error"]
    assert any(
        r.levelno == logging.ERROR and "NOT queued" in r.getMessage() for r in caplog.records
    )


def stored_count(queue_dir):
    with sqlite3.connect(queue_dir / "order_queue.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT count(*) FROM order_queue").fetchone()[0]


def test_locked_longer_than_busy_timeout(tmp_path, caplog):
    queue_dir = tmp_path / "queue"
    client, webhook_id = setup_app(tmp_path, queue_dir, ORDER_QUEUE_SQLITE_BUSY_TIMEOUT_MS=300)
    assert post(client, webhook_id, ALERT).status_code == 200
    other_writer = sqlite3.connect(queue_dir / "order_queue.db", isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    assert_refused(client, webhook_id, caplog)
    assert time.monotonic() - started < 5  # bounded by the busy timeout, not hung
    assert "locked" in caplog.text
    other_writer.execute("ROLLBACK")
    other_writer.close()
    assert post(client, webhook_id, ALERT).status_code == 200
    assert stored_count(queue_dir) == 2


def test_missing_directory_then_restored(tmp_path, caplog):
    queue_dir = tmp_path / "queue"
    client, webhook_id = setup_app(tmp_path, queue_dir)
    assert post(client, webhook_id, ALERT).status_code == 200
    runtime.current().store.engine.dispose()  # a clean copy for the "restore"
    backup = tmp_path / "backup"
    shutil.copytree(queue_dir, backup)
    shutil.rmtree(queue_dir)
    assert_refused(client, webhook_id, caplog)
    assert "missing" in caplog.text
    assert client.get("/order-queue/api/health").status_code == 503  # visible to monitors
    shutil.copytree(backup, queue_dir)  # the volume comes back
    assert post(client, webhook_id, ALERT).status_code == 200
    assert stored_count(queue_dir) == 2


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _mount_or_skip(*args, needed_for: str) -> None:
    """Mount, or skip the test where mounting is refused (never in CI, which runs as root)."""
    result = _mount(*args)
    if result.returncode != 0:
        if os.getenv("CI", "").lower() == "true":
            pytest.fail(f"CI needs mount permission for {needed_for}: {result.stderr}")
        pytest.skip(f"cannot mount here (needs root): {result.stderr.strip()}")


@pytest.fixture
def bind_mount(tmp_path):
    """``view`` shows ``real`` through a bind mount that can be made read-only."""
    real, view = tmp_path / "real", tmp_path / "view"
    real.mkdir()
    view.mkdir()
    _mount_or_skip("--bind", str(real), str(view), needed_for="the read-only test")
    yield view
    subprocess.run(["umount", "-l", str(view)], capture_output=True)


def test_read_only_volume_then_writable_again(tmp_path, bind_mount, caplog):
    client, webhook_id = setup_app(tmp_path, bind_mount)
    assert post(client, webhook_id, ALERT).status_code == 200
    runtime.current().store.engine.dispose()  # connections reopen while read-only
    result = _mount("-o", "remount,bind,ro", str(bind_mount))
    assert result.returncode == 0, result.stderr
    assert_refused(client, webhook_id, caplog)
    assert_refused(client, webhook_id, caplog)  # stays refused, never a false 200
    assert _mount("-o", "remount,bind,rw", str(bind_mount)).returncode == 0
    assert post(client, webhook_id, ALERT).status_code == 200
    assert stored_count(bind_mount) == 2


def test_postgres_link_cut_then_restored(tmp_path, postgres_schema_url, caplog):
    """The queue's PostgreSQL connection dies (server restart, failover, network): open
    connections are reset and new ones refused.  The webhook answers 503 at once rather
    than hanging, and the first webhook after the link returns is stored."""
    from sqlalchemy import create_engine, make_url, text

    real = make_url(postgres_schema_url)
    with TcpProxy((real.host, real.port or 5432)) as proxy:
        via_proxy = real.set(host="127.0.0.1", port=proxy.port)
        app = make_app(
            tmp_path, ORDER_QUEUE_DATABASE_URL=via_proxy.render_as_string(hide_password=False)
        )
        client = app.test_client()
        webhook_id = add_strategy(app.test_cli_runner())["webhook_id"]
        assert post(client, webhook_id, ALERT).status_code == 200
        proxy.cut()
        started = time.monotonic()
        assert_refused(client, webhook_id, caplog)
        assert time.monotonic() - started < 10
        assert client.get("/order-queue/api/health").status_code == 503
        proxy.restore()
        assert post(client, webhook_id, ALERT).status_code == 200
        runtime.current().store.dispose()
    direct = create_engine(postgres_schema_url)
    with direct.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM order_queue")).scalar() == 2
    direct.dispose()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of its own, to fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount_or_skip(
        "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk), needed_for="the disk-full test"
    )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk) -> None:
    """Write a filler file until the disk refuses more."""
    with open(disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def test_a_full_disk_refuses_new_orders_and_still_sends_the_stored_ones(
    tmp_path, small_disk, broker, caplog
):
    from blueprints import order_queue
    from services.order_queue import runtime

    client, webhook_id = setup_app(
        tmp_path, small_disk, HOST_SERVER=broker.base_url, ORDER_QUEUE_DISK_RESERVE_MB="0.5"
    )
    assert (small_disk / "order_queue.db-reserve").stat().st_size == 512 * 1024
    stored = [
        post(client, webhook_id, {"symbol": "SBIN", "action": "BUY", "position_size": str(n)})
        for n in range(5)
    ]
    assert [a.status_code for a in stored] == [200] * 5
    fill(small_disk)
    refused = post(client, webhook_id, ALERT)  # the write that finds the disk full
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert not (small_disk / "order_queue.db-reserve").exists()  # room for what is stored
    caplog.clear()
    again = post(client, webhook_id, ALERT)  # refused at once: the room stays theirs
    assert again.status_code == 503 and "NOT queued" in again.get_json()["error"]
    assert "the queue's disk is full" in caplog.text
    health = client.get("/order-queue/api/health")
    assert health.status_code == 503
    assert any("queue disk full" in p for p in health.get_json()["problems"])
    order_queue.start(client.application)  # the dispatcher writes claims and outcomes
    try:
        assert broker.wait_for(5, timeout=20), "the stored orders did not go out"
        (small_disk / "filler").unlink()  # space comes back
        assert post(client, webhook_id, ALERT).status_code == 200  # no restart needed
        assert (small_disk / "order_queue.db-reserve").exists()
        assert broker.wait_for(6, timeout=20)
    finally:
        runtime.stop_current(timeout=5)
    assert stored_count(small_disk) == 6  # nothing half-written, integrity ok


def test_the_wal_is_cut_back_after_a_long_reader_let_it_grow(tmp_path):
    """A reader that holds its snapshot (a backup, a long report) keeps checkpoints from
    finishing and the WAL grows meanwhile; once it lets go, the WAL goes back to its
    limit instead of keeping the size of that moment on disk for ever."""
    from database.order_queue.backend_sqlite import WAL_SIZE_LIMIT_BYTES
    from database.order_queue.store import QueueStore
    from database.order_queue_db import utcnow
    from tests.support.helpers import payload

    store = QueueStore(f"sqlite:///{tmp_path}/queue.db", sealing=TEST_SEALING)
    store.schema.create()
    wal = tmp_path / "queue.db-wal"
    reader = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM order_queue").fetchone()  # holds its snapshot
    while wal.stat().st_size <= 2 * WAL_SIZE_LIMIT_BYTES:
        for n in range(100):
            store.intake.enqueue("placeorder", payload(f"S{n}"), now=utcnow(), max_age_seconds=300)
    reader.execute("COMMIT")
    reader.close()
    for n in range(1200):  # past the next automatic checkpoint and the WAL's reset
        store.intake.enqueue("placeorder", payload(f"T{n}"), now=utcnow(), max_age_seconds=300)
    assert wal.stat().st_size <= WAL_SIZE_LIMIT_BYTES  # (measured while connections are open)
    store.dispose()
