"""Pacing decisions, as pure functions: how long to back off before a retry, whether a
send stamp is still fresh enough to send on, and how long the loop may sleep.

Kept apart from the threads that act on them so each rule is tested without a clock,
a database or a broker (``tests/unit/test_pacing.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    floor: float,
    draw: Callable[[float, float], float] = random.uniform,
) -> float:
    """The pause before retry number ``attempt`` (1 for the first): exponential from
    ``base``, capped at ``cap``, with full jitter in the upper half; never shorter than
    ``floor`` (the rate window, so an order's earlier send has always left the window
    it is counted in)."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return max(ceiling * draw(0.5, 1.0), floor)


def stamp_is_timely(taken_at: float, now: float, tolerance: float) -> bool:
    """A request may leave on its send stamp only within half the tolerance of the
    moment the stamp's time was read (monotonic seconds); the other half covers the
    trip to the API.  So no request reaches the broker later than the window it was
    counted in allows."""
    return now - taken_at <= tolerance / 2


def loop_wait_seconds(poll_seconds: float, next_due_at: datetime | None, now: datetime) -> float:
    """How long the dispatcher loop may sleep when nothing wakes it: until the next
    order, retry, rate window or lease falls due, at most ``poll_seconds``, and never
    zero (a due moment just passed still yields the thread for a millisecond)."""
    if next_due_at is None:
        return poll_seconds
    return min(poll_seconds, max((next_due_at - now).total_seconds(), 0.001))
