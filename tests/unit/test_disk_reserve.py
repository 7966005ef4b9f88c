"""The disk reserve: made only with room to spare, given up when the disk is full, made
again once there is room (a real file on this machine's disk)."""

import errno
from datetime import datetime

from database.order_queue import disk_reserve
from database.order_queue.disk_reserve import DiskReserve, is_disk_full

NOW = datetime(2026, 12, 2, 9, 0)


def test_the_reserve_takes_real_space_and_is_given_up_when_the_disk_is_full(tmp_path):
    reserve = DiskReserve(str(tmp_path / "queue.db"), 256 * 1024)
    assert reserve.keep() and (tmp_path / "queue.db-reserve").stat().st_blocks * 512 >= 256 * 1024
    reserve.on_full(NOW)
    assert not (tmp_path / "queue.db-reserve").exists() and reserve.full_since == NOW
    assert reserve.admits_new_orders()  # this disk has room: made again, intake resumes
    assert (tmp_path / "queue.db-reserve").exists() and reserve.full_since is None


def test_without_the_system_call_zeros_are_written(tmp_path, monkeypatch):
    monkeypatch.delattr(disk_reserve.os, "posix_fallocate", raising=False)
    assert DiskReserve(str(tmp_path / "queue.db"), 3 * 1024 * 1024 + 5).keep()
    assert (tmp_path / "queue.db-reserve").stat().st_size == 3 * 1024 * 1024 + 5


def test_a_full_disk_is_told_from_the_error():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(Exception("database or disk is full"))
    assert not is_disk_full(Exception("database is locked"))
