"""Room kept on the queue's disk for the orders already stored.

A full disk refuses every SQLite write, a claim and an outcome mark as much as an
enqueue: the orders already acknowledged would stop going out exactly when a trader
needs them to.  So the queue keeps a reserve file beside its database
(``ORDER_QUEUE_DISK_RESERVE_MB``, 16 by default).  The first write refused for a full
disk deletes it; from then on enqueues are refused at once (the webhook answers 503,
nothing stored) and the room goes to the dispatcher's claims and marks.  Once the disk
has room for the reserve and as much again, the reserve is made anew and intake resumes
by itself, without a restart.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from datetime import datetime

#: SQLite's words for SQLITE_FULL, as the driver reports them.
DISK_FULL_TEXT = "database or disk is full"


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether a storage error means the disk (or the file system's quota) is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if DISK_FULL_TEXT in str(exc):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return False


class DiskReserve:
    """The reserve file of one SQLite database, and whether its disk is full now."""

    def __init__(self, database_path: str, size_bytes: int):
        self.path = f"{database_path}-reserve"
        self.size_bytes = size_bytes
        self.full_since: datetime | None = None
        self._lock = threading.Lock()

    def keep(self) -> bool:
        """Make the reserve if it is missing and the disk has room for it twice over;
        True when it is in place."""
        if self.size_bytes <= 0:
            return False
        with self._lock:
            if os.path.exists(self.path):
                return True
            if self._free_bytes() < 2 * self.size_bytes:
                return False
            descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            try:
                _allocate(descriptor, self.size_bytes)
            except OSError:
                os.close(descriptor)
                os.unlink(self.path)
                return False
            os.close(descriptor)
            return True

    def on_full(self, now: datetime) -> None:
        """A write was refused for a full disk: hand the reserve over to the writes of
        the orders already stored, and refuse new ones until there is room again."""
        with self._lock:
            if self.full_since is None:
                self.full_since = now
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def admits_new_orders(self) -> bool:
        """False while the disk is full; once it has room again the reserve is made
        anew and new orders are admitted."""
        if self.full_since is None:
            return True
        if self.size_bytes > 0 and not self.keep():
            return False
        if self.size_bytes <= 0 and self._free_bytes() == 0:
            return False
        self.full_since = None
        return True

    def _free_bytes(self) -> int:
        return shutil.disk_usage(os.path.dirname(self.path) or ".").free


def _allocate(descriptor: int, size: int) -> None:
    """Really take ``size`` bytes of the disk (a sparse file would take none): the
    system call where there is one (Linux), else zeros written out (macOS)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(descriptor, 0, size)
        return
    chunk = b"\0" * (1024 * 1024)
    for offset in range(0, size, len(chunk)):
        os.write(descriptor, chunk[: size - offset])
    os.fsync(descriptor)
