"""The queue's two clocks: monotonic time for timers inside this process, and one
shared wall clock for every moment another process reads (leases, due times, expiry,
send stamps).

Processes on several machines share a PostgreSQL queue; their own wall clocks may
disagree by more than a lease is long.  So the shared clock is the database server's:
``now()`` is this machine's UTC time corrected by the offset to the server's clock,
measured at most every ``SYNC_SECONDS`` (one query; between syncs no round trip).  The
send stamp reads the server's clock itself, under the lane's lock (``claims``).  On
SQLite every process is on this machine, and the offset stays zero.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from database.order_queue_db import utcnow

#: How often the offset to the shared clock is measured again.
SYNC_SECONDS = 30.0


class Clock:
    """``monotonic()`` for timers, ``now()`` (naive UTC) for anything stored."""

    def __init__(self, read_shared: Callable[[], datetime] | None = None, *,
                 local: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic):
        self._read_shared = read_shared
        self._local = local
        self.monotonic = monotonic
        self._offset = timedelta(0)
        self._synced_at: float | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The shared clock's time (this machine's, where nothing else shares it)."""
        if self._read_shared is not None and self._sync_due():
            self.sync()
        return self._local() + self._offset

    def sync(self) -> timedelta:
        """Measure the offset to the shared clock now and return it.  A failed read
        keeps the last offset (the database may be briefly unreachable)."""
        before = self._local()
        try:
            shared = self._read_shared()
        except Exception:
            with self._lock:
                self._synced_at = self.monotonic()
            return self._offset
        after = self._local()
        with self._lock:
            self._offset = shared - (before + (after - before) / 2)
            self._synced_at = self.monotonic()
        return self._offset

    def _sync_due(self) -> bool:
        with self._lock:
            if self._synced_at is None or self.monotonic() - self._synced_at >= SYNC_SECONDS:
                self._synced_at = self.monotonic()  # one caller syncs, the others go on
                return True
        return False
