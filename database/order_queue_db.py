"""The durable order queue's public face, where OpenAlgo's database modules sit.

What the rest of the code (and OpenAlgo's start-up) needs from storage is importable
from here: the model (states, lanes, tables, the values a claim hands out), the
``QueueStore`` and its errors, ``init_db`` for the start-up DB init list, and the seed
proposal's functions over the configured store.  The store itself lives in the
``database/order_queue/`` package, one idea per module:

- ``model``: states, lanes, tables, lifecycle rules, value types.
- ``backends``: the ``Backend`` interface; SQLite and PostgreSQL, their locking, wake-ups
  and triggers.
- ``core``: ``StoreCore``, the engine, the one transaction gate and the attempt trail.
- ``store``: ``QueueStore``, the schema and its upgrades, the parts below in one object.
- ``claims``: the claim path and the send stamp (where rate windows are kept).
- ``writes``: enqueue, outcome marks, recovery, expiry, dispatcher records.
- ``operator_moves``: replay, settle, dismiss, cancel, purge (in batches).
- ``reads``: depth, listings, stats, the admin page's facts.
- ``squareoff_log``: each squareoff's record per IST day.
- ``disk_reserve``: the room kept for stored orders when the disk fills.
- ``api_keys``: sealing the broker API key; ``green``: store calls off an event loop.

Nothing else in the code base issues SQL against the queue tables.

The lifecycle these functions move orders through is drawn once, in docs/design.md
("Lifecycle").
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, cast

from database.order_queue.green import OffloadedCalls
from database.order_queue.model import (
    ALLOWED_TRANSITIONS,
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_DATABASE_URL,
    IDENTITY_COLUMNS,
    LANE_OF_ENDPOINT,
    OWING_STATES,
    UNFINISHED_STATES,
    AttemptKind,
    ClaimedOrder,
    ClaimResult,
    DeadReason,
    DepthSample,
    DispatcherRecord,
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
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_DATABASE_URL",
    "IDENTITY_COLUMNS",
    "LANE_OF_ENDPOINT",
    "OWING_STATES",
    "PURGE_BATCH",
    "UNFINISHED_STATES",
    "AttemptKind",
    "ClaimedOrder",
    "ClaimResult",
    "DeadReason",
    "DepthSample",
    "DispatcherRecord",
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
    "configure",
    "get_store",
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
# keep the seed proposal's names (enqueue_order, mark_sent, ...) over the configured store.

_store: QueueStore | None = None
_store_lock = threading.Lock()


class _NoThreadSession:
    """OpenAlgo releases every module's ``db_session`` per thread after a request or a
    background job (utils/db_sessions.py).  The queue holds no session between calls:
    each operation borrows a connection and returns it.  So there is nothing to remove."""

    def remove(self) -> None:
        """Nothing is held per thread."""


db_session = _NoThreadSession()


def configure(
    url: str = DEFAULT_DATABASE_URL,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    disk_reserve_bytes: int = 0,
) -> QueueStore:
    """Point the module at ``url`` and return the store; replaces any previous store.
    The runtime (``services.order_queue.runtime``) calls it with the configured URL:
    the settings, not this module, read the environment.

    The store is handed out wrapped so that, under a green server (gunicorn + eventlet),
    its calls run off the event loop (``order_queue/green.py``); it is used the same way."""
    global _store
    with _store_lock:
        if _store is not None:
            _store.dispose()
        # The wrapper offers the store's own methods (run off the event loop), so it
        # stands in for a QueueStore; its __getattr__ is invisible to the type checker.
        _store = cast(
            QueueStore,
            OffloadedCalls(
                QueueStore(
                    url, busy_timeout_ms=busy_timeout_ms, disk_reserve_bytes=disk_reserve_bytes
                ),
                inline=frozenset({"start_listener", "transaction"}),
            ),
        )
    return _store


def get_store() -> QueueStore:
    """The configured store.  Raises ``QueueStorageError`` before the app's
    ``init_app`` (or ``configure``) has named the database."""
    store = _store
    if store is None:
        raise QueueStorageError("the order queue is not configured yet (init_app sets it up)")
    return store


def init_db() -> None:
    """Start-up DB init entry (beside OpenAlgo's others): create the queue schema."""
    get_store().create_schema()


def enqueue_order(
    endpoint: str,
    payload: dict[str, Any],
    *,
    now: datetime | None = None,
    max_age_seconds: float | None = None,
    deadline: datetime | None = None,
) -> int:
    """Commit an order as PENDING; see ``QueueStore.enqueue``."""
    return get_store().enqueue(
        endpoint, payload, now=now or utcnow(), max_age_seconds=max_age_seconds, deadline=deadline
    )


def mark_processing(
    owner: str, *, now: datetime, lease_seconds: float, limits: RateLimits
) -> ClaimResult:
    """The seed's name for claiming: lease the next sendable order as SENDING."""
    return get_store().claim_next(owner, now=now, lease_seconds=lease_seconds, limits=limits)


def mark_sent(order: ClaimedOrder, **kwargs) -> bool:
    return get_store().mark_sent(order, **kwargs)


def mark_failed(order: ClaimedOrder, **kwargs) -> bool:
    return get_store().mark_failed(order, **kwargs)


def recover_stale_processing_orders(
    *, now: datetime, heartbeat_timeout: float, check_at: datetime
) -> list[int]:
    """Unlike the seed, a stale in-flight order that was stamped (its request may have
    left) becomes IN_DOUBT; only one never stamped goes straight back to PENDING."""
    return get_store().recover_stale_sending(
        now=now, heartbeat_timeout=heartbeat_timeout, check_at=check_at
    )


def queue_depth() -> dict[str, dict[str, int]]:
    return get_store().depth()


def get_failed_orders(limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered orders awaiting a decision, newest first."""
    return get_store().list_orders(states=[OrderState.DEAD.value], limit=limit)
