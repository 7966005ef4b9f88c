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
#: Reads per measurement; the one with the shortest round trip is kept (NTP's rule: the
#: offset is known to within half the round trip, and a read that queued behind other
#: store calls before reaching the server says little).
SYNC_READS = 3
#: A measurement whose best round trip is longer than this is not trusted over the last.
SYNC_MAX_ROUND_TRIP = 0.25


class Clock:
    """``monotonic()`` for timers, ``now()`` (naive UTC) for anything stored."""

    def __init__(self, read_shared: Callable[[], datetime] | None = None, *,
                 local: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic):
        self._read_shared = read_shared
        self._local = local
        self.monotonic = monotonic
        self._offset = timedelta(0)
        self._measured = False
        self._synced_at: float | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The shared clock's time (this machine's, where nothing else shares it)."""
        if self._read_shared is not None and self._sync_due():
            self.sync()
        return self._local() + self._offset

    def sync(self) -> timedelta:
        """Measure the offset to the shared clock now and return it.  A failed read, or
        one too slow to trust once an offset is known, keeps the last offset (the
        database may be briefly unreachable or busy)."""
        best: tuple[timedelta, timedelta] | None = None  # (round trip, offset)
        for _ in range(SYNC_READS):
            before = self._local()
            try:
                shared = self._read_shared()
            except Exception:
                break
            after = self._local()
            sample = (after - before, shared - (before + (after - before) / 2))
            best = sample if best is None or sample[0] < best[0] else best
        with self._lock:
            self._synced_at = self.monotonic()
            trusted = best is not None and (
                best[0].total_seconds() <= SYNC_MAX_ROUND_TRIP or not self._measured)
            if trusted:
                self._offset, self._measured = best[1], True
            return self._offset

    def _sync_due(self) -> bool:
        with self._lock:
            if self._synced_at is None or self.monotonic() - self._synced_at >= SYNC_SECONDS:
                self._synced_at = self.monotonic()  # one caller syncs, the others go on
                return True
        return False
