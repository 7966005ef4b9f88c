"""The seed proposal's names, as calls over this process's runtime's store.

OpenAlgo's database modules expose plain functions over a module-level engine; the
proposal this queue grew from named its operations that way.  They are kept here, each
saying what it maps to: ``mark_processing`` is a claim, ``mark_failed`` returns an order
to pending for a retry (``mark_for_retry``), ``get_failed_orders`` lists dead orders,
``recover_stale_processing_orders`` is recovery of a dead dispatcher's orders.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from database.order_queue.model import OrderState
from database.order_queue.store import QueueStore
from database.order_queue.values import (
    ClaimedOrder,
    ClaimResult,
    RateLimits,
)
from services.order_queue import runtime


def _store() -> QueueStore:
    return runtime.current().store


def enqueue_order(
    endpoint: str,
    payload: dict[str, Any],
    *,
    now: datetime | None = None,
    max_age_seconds: float | None = None,
    deadline: datetime | None = None,
) -> int:
    """Commit an order as PENDING (``Intake.enqueue``), at the runtime's clock's
    now unless told."""
    queue = runtime.current()
    return queue.store.intake.enqueue(
        endpoint,
        payload,
        now=now or queue.clock.now(),
        max_age_seconds=max_age_seconds,
        deadline=deadline,
    )


def mark_processing(
    owner: str, *, now: datetime, lease_seconds: float, limits: RateLimits
) -> ClaimResult:
    """The seed's name for a claim: lease the next sendable order as SENDING
    (``Claims.claim_next``)."""
    return _store().claims.claim_next(owner, now=now, lease_seconds=lease_seconds, limits=limits)


def mark_sent(order: ClaimedOrder, **kwargs) -> bool:
    """SENDING → SENT under the order's lease (``Lifecycle.mark_sent``)."""
    return _store().lifecycle.mark_sent(order, **kwargs)


def mark_failed(order: ClaimedOrder, **kwargs) -> bool:
    """The seed's name for a retry: SENDING → PENDING, due again at ``retry_at``
    (``Lifecycle.mark_for_retry``; the dispatcher dead-letters instead once the
    retries are spent)."""
    return _store().lifecycle.mark_for_retry(order, **kwargs)


def recover_stale_processing_orders(
    *, now: datetime, heartbeat_timeout: float, check_at: datetime
) -> list[int]:
    """Orders whose dispatcher died mid-send: IN_DOUBT when their send was stamped (the
    request may have left), PENDING when it never was (``Recovery.recover_stale_sending``)."""
    return _store().recovery.recover_stale_sending(
        now=now, heartbeat_timeout=heartbeat_timeout, check_at=check_at
    )


def queue_depth() -> dict[str, dict[str, int]]:
    """Orders per lane and state (``Reads.depth``)."""
    return _store().reads.depth()


def get_failed_orders(limit: int = 100) -> list[dict[str, Any]]:
    """The seed's name for dead-lettered orders awaiting a decision, newest first
    (``Reads.list_orders`` on DEAD)."""
    return _store().reads.list_orders(states=[OrderState.DEAD.value], limit=limit)
