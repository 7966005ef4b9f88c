"""The queue's clocks (docs/design.md, "Time").

- ``monotonic()``: timers inside this process.
- ``now()``: the queue's time, for every moment stored or compared with a stored one
  (leases, due times, send stamps, rate windows, age limits).  It is *steady*: this
  machine's UTC time when the clock was made, carried forward by the monotonic clock, so
  an NTP step of the wall clock by minutes neither holds orders for the size of the step
  nor opens a rate window early.  Processes on several machines share a PostgreSQL
  queue, and their own clocks may disagree by more than a lease is long: there ``now()``
  is corrected to the database server's clock, measured at most every ``SYNC_SECONDS``
  (one query; between syncs no round trip), and the send stamp reads the server's clock
  itself, under the account lane's lock (``claims``).
- ``to_wall()`` / ``from_wall()``: a moment between the queue's time and the time the
  outside world keeps (the broker's orderbook timestamps, IST squareoff times).  On
  SQLite they differ by the steps this machine's clock took since the clock was made;
  on PostgreSQL the database server's clock is both, and they are the same.

A step is logged once and reported by ``warnings()`` (health and the page), as is a
machine whose clock disagrees with the database server's.  A new process starts from
the wall clock as it then reads: moments stored before a step by a process that has
since exited stay as they were taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from database.order_queue.model import utcnow
from utils.logging import get_logger

logger = get_logger(__name__)

#: How often the offset to the shared clock is measured again.
SYNC_SECONDS = 30.0
#: Reads per measurement; the one with the shortest round trip is kept (NTP's rule: the
#: offset is known to within half the round trip, and a read that queued behind other
#: store calls before reaching the server says little).
SYNC_READS = 3
#: A measurement whose best round trip is longer than this is not trusted over the last.
SYNC_MAX_ROUND_TRIP = 0.25
#: The wall clock moving this far from the steady one counts as a step.  The orderbook
#: match works to the second, so a second is where a difference starts to matter.
STEP_SECONDS = 1.0


class Clock:
    """``monotonic()`` for timers, ``now()`` (naive UTC, steady) for anything stored."""

    def __init__(
        self,
        read_shared: Callable[[], datetime] | None = None,
        *,
        wall: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._read_shared = read_shared
        self._wall = wall
        self.monotonic = monotonic
        self._anchor = (wall(), monotonic())
        self._offset = timedelta(0)  # shared clock minus steady local time
        self._measured = False
        self._synced_at: float | None = None
        self._lock = threading.Lock()
        self._stepped = timedelta(0)  # wall minus steady local time, steps summed
        self._last_step: tuple[timedelta, datetime] | None = None  # size, wall moment
        self._disagreement = timedelta(0)  # this machine's wall clock minus the shared one

    def now(self) -> datetime:
        """The queue's time: steady, on the shared clock where there is one."""
        if self._read_shared is not None and self._sync_due():
            self.sync()
        return self.read()

    def read(self) -> datetime:
        """``now()`` without measuring the offset again: safe inside a store call, which
        must not make another (under a green server store calls take turns)."""
        return self._steady() + self._offset

    def to_wall(self, moment: datetime) -> datetime:
        """``moment`` (the queue's time) as the outside world's clock reads it."""
        return moment + self._wall_correction()

    def from_wall(self, moment: datetime) -> datetime:
        """A moment of the outside world's clock on the queue's time."""
        return moment - self._wall_correction()

    def warnings(self) -> list[str]:
        """What an operator should know about time on this machine."""
        said = []
        stepped = self._stepped.total_seconds()
        if abs(stepped) >= STEP_SECONDS and self._last_step is not None:
            said.append(
                f"this machine's clock stepped by {stepped:+.0f} s since the app started "
                f"(last at {self._last_step[1]:%Y-%m-%d %H:%M:%S} UTC): the queue keeps "
                f"counting on its steady clock, so no order, lease or rate window moved; "
                f"times shown here differ from the wall clock by that much until a restart"
            )
        apart = self._disagreement.total_seconds()
        if self._read_shared is not None and abs(apart) >= STEP_SECONDS:
            said.append(
                f"this machine's clock is {abs(apart):.1f} s "
                f"{'ahead of' if apart > 0 else 'behind'} the database server's: the queue "
                f"goes by the database's; sync both with NTP (the broker's orderbook is "
                f"matched to the second)"
            )
        return said

    def sync(self) -> timedelta:
        """Measure the offset to the shared clock now and return it.  A failed read, or
        one too slow to trust once an offset is known, keeps the last offset (the
        database may be briefly unreachable or busy)."""
        best: tuple[timedelta, timedelta, timedelta] | None = None  # trip, offset, wall
        for _ in range(SYNC_READS):
            before, wall_before = self._steady(), self._wall()
            try:
                # now() calls this only with a shared clock (and without one the call
                # fails into the except below, as calling None did).
                assert self._read_shared is not None
                shared = self._read_shared()
            except Exception:
                break
            trip = self._steady() - before
            sample = (trip, shared - (before + trip / 2), wall_before + trip / 2 - shared)
            best = sample if best is None or sample[0] < best[0] else best
        with self._lock:
            self._synced_at = self.monotonic()
            trusted = best is not None and (
                best[0].total_seconds() <= SYNC_MAX_ROUND_TRIP or not self._measured
            )
            if trusted:
                assert best is not None  # trusted only with a measurement
                self._offset, self._disagreement, self._measured = best[1], best[2], True
            return self._offset

    def _steady(self) -> datetime:
        wall_then, ticks_then = self._anchor
        steady = wall_then + timedelta(seconds=self.monotonic() - ticks_then)
        self._notice_step(steady)
        return steady

    def _notice_step(self, steady: datetime) -> None:
        """Log once when the wall clock has moved away from the steady one."""
        wall = self._wall()
        if abs(((wall - steady) - self._stepped).total_seconds()) < STEP_SECONDS:
            return
        with self._lock:  # another thread may have noticed it first
            moved = (wall - steady) - self._stepped
            if abs(moved.total_seconds()) < STEP_SECONDS:
                return
            self._stepped += moved
            self._last_step = (moved, wall)
        logger.warning(
            "this machine's clock stepped by %+.1f s (now %s UTC); the order "
            "queue keeps its steady time: no order, lease or rate window moves",
            moved.total_seconds(),
            f"{wall:%Y-%m-%d %H:%M:%S}",
        )

    def _wall_correction(self) -> timedelta:
        # On a shared clock the database server's time is the outside world's too.
        if self._read_shared is not None:
            return timedelta(0)
        self._steady()  # a step taken since the last reading counts already
        return self._stepped

    def _sync_due(self) -> bool:
        with self._lock:
            if self._synced_at is None or self.monotonic() - self._synced_at >= SYNC_SECONDS:
                self._synced_at = self.monotonic()  # one caller syncs, the others go on
                return True
        return False
