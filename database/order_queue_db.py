"""The durable order queue's public face, where OpenAlgo's database modules sit.

What the rest of the code (and OpenAlgo's start-up) needs from storage is importable
from here: the model (states, lanes, tables, the values a claim hands out), the
``QueueStore`` and its errors, ``init_db`` for the start-up DB init list, and the seed
proposal's functions over the runtime's store.  The store lives in the
``database/order_queue/`` package, one idea per module:

- ``model``: states, lanes, tables, lifecycle rules, value types.
- ``backends``: the ``Backend`` interface; SQLite and PostgreSQL, their locking, wake-ups
  and triggers.
- ``core``: ``StoreCore`` (the engine, the one transaction gate, the attempt trail) and
  ``StorePart``, what every part below holds it through.
- ``store``: ``QueueStore``, the schema and its upgrades, and one part per concept:
- ``claims``: the claim and the send stamp (where rate windows are kept).
- ``lifecycle``: enqueue, the outcome marks, recovery, expiry.
- ``receipts``: what the host's door records of a request, and the answer kept.
- ``operator_moves``: replay, settle, dismiss, cancel, purge (in batches).
- ``dispatcher_registry``: dispatchers and their heartbeats.
- ``samples``: depth over time, the charts' facts.
- ``reads``: depth, listings, stats, the trail.
- ``squareoff_log``: each squareoff's record per IST day.
- ``disk_reserve``: the room kept for stored orders when the disk fills.
- ``api_keys``: sealing the broker API key; ``green``: store calls off an event loop.

Nothing else in the code base issues SQL against the queue tables.  The lifecycle these
functions move orders through is drawn once, in docs/design.md ("Lifecycle"); the words
are in its glossary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from database.order_queue.model import (
    ALLOWED_TRANSITIONS,
    DATABASE_URL_VARIABLE,
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_DATABASE_URL,
    IDENTITY_COLUMNS,
    LANE_OF_ENDPOINT,
    OWING_STATES,
    UNFINISHED_STATES,
    AlertKey,
    AttemptKind,
    BrokerStatus,
    ClaimedOrder,
    ClaimResult,
    DeadReason,
    DepthSample,
    DispatcherRecord,
    DuplicateAlert,
    Lane,
    OrderAttempt,
    OrderState,
    QueuedOrder,
    QueueMeta,
    QueueStorageError,
    RateLimits,
    Receipt,
    SendStamp,
    attempts,
    dispatchers,
    orders,
    utcnow,
)
from database.order_queue.operator_moves import PURGE_BATCH
from database.order_queue.store import QueueStore

__all__ = [  # the public face: the model, the store, and the seed's functions
    "ALLOWED_TRANSITIONS",
    "DATABASE_URL_VARIABLE",
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_DATABASE_URL",
    "IDENTITY_COLUMNS",
    "LANE_OF_ENDPOINT",
    "OWING_STATES",
    "PURGE_BATCH",
    "UNFINISHED_STATES",
    "AlertKey",
    "AttemptKind",
    "BrokerStatus",
    "ClaimedOrder",
    "ClaimResult",
    "DeadReason",
    "DepthSample",
    "DispatcherRecord",
    "DuplicateAlert",
    "Lane",
    "OrderAttempt",
    "OrderState",
    "QueuedOrder",
    "QueueMeta",
    "QueueStorageError",
    "RateLimits",
    "Receipt",
    "SendStamp",
    "attempts",
    "dispatchers",
    "orders",
    "utcnow",
    "QueueStore",
    "init_db",
    "db_session",
    "enqueue_order",
    "mark_processing",
    "mark_sent",
    "mark_failed",
    "recover_stale_processing_orders",
    "queue_depth",
    "get_failed_orders",
]


# OpenAlgo's database modules expose plain functions over a module-level engine; these
# keep the seed proposal's names over the store the runtime owns.


def _runtime():
    """This process's runtime (``services/order_queue/runtime.py``; imported at call time
    because the runtime is built over this module).  Raises ``QueueStorageError`` before
    the app's ``init_app`` has built it."""
    from services.order_queue import runtime

    return runtime.current()


def _store() -> QueueStore:
    """The runtime's store."""
    return _runtime().store


class _NoThreadSession:
    """OpenAlgo releases every module's ``db_session`` per thread after a request or a
    background job (utils/db_sessions.py).  The queue holds no session between calls:
    each operation borrows a connection and returns it.  So there is nothing to remove."""

    def remove(self) -> None:
        """Nothing is held per thread."""


db_session = _NoThreadSession()


def init_db() -> None:
    """Start-up DB init entry (beside OpenAlgo's others): create the queue schema."""
    _store().schema.create()


def enqueue_order(
    endpoint: str,
    payload: dict[str, Any],
    *,
    now: datetime | None = None,
    max_age_seconds: float | None = None,
    deadline: datetime | None = None,
) -> int:
    """Commit an order as PENDING (``LifecycleMarks.enqueue``), at the runtime's clock's
    now unless told."""
    queue = _runtime()
    return queue.store.lifecycle.enqueue(
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
    """SENDING → SENT under the order's lease (``LifecycleMarks.mark_sent``)."""
    return _store().lifecycle.mark_sent(order, **kwargs)


def mark_failed(order: ClaimedOrder, **kwargs) -> bool:
    """The seed's name for a retry: SENDING → PENDING, due again at ``retry_at``
    (``LifecycleMarks.mark_for_retry``; the dispatcher dead-letters instead once the
    retries are spent)."""
    return _store().lifecycle.mark_for_retry(order, **kwargs)


def recover_stale_processing_orders(
    *, now: datetime, heartbeat_timeout: float, check_at: datetime
) -> list[int]:
    """Orders whose dispatcher died mid-send: IN_DOUBT when their send was stamped (the
    request may have left), PENDING when it never was (``LifecycleMarks.recover_stale_sending``)."""
    return _store().lifecycle.recover_stale_sending(
        now=now, heartbeat_timeout=heartbeat_timeout, check_at=check_at
    )


def queue_depth() -> dict[str, dict[str, int]]:
    """Orders per lane and state (``OrderReads.depth``)."""
    return _store().reads.depth()


def get_failed_orders(limit: int = 100) -> list[dict[str, Any]]:
    """The seed's name for dead-lettered orders awaiting a decision, newest first
    (``OrderReads.list_orders`` on DEAD)."""
    return _store().reads.list_orders(states=[OrderState.DEAD.value], limit=limit)
