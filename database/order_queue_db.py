"""The durable order queue's public face, where OpenAlgo's database modules sit.

What the rest of the code (and OpenAlgo's start-up) needs from storage is importable
from here: the model (states, lanes, tables, the values a claim hands out), the
``QueueStore`` and its errors, and ``init_db`` for the start-up DB init list (its one
upward edge, to the runtime).  The seed proposal's functions over the runtime's store are
in ``services/order_queue/seed_names.py``.  The store lives in the
``database/order_queue/`` package, one idea per module:

- ``model``: states, lanes, tables, lifecycle rules, value types.
- ``backends``: the ``Backend`` interface; SQLite and PostgreSQL, their locking, wake-ups
  and triggers.
- ``core``: ``StoreCore`` (the engine, the one transaction gate, the attempt trail) and
  ``StorePart``, what every part below holds it through.
- ``store``: ``QueueStore``, the schema and its upgrades, and one part per concept:
- ``claims``: the claim and the send stamp (where rate windows are kept).
- ``intake``: enqueue; ``lifecycle``: the outcome marks; ``recovery``: recovery, expiry.
- ``alert_keys``: the keys alerts carried; ``verdicts``: the broker's verdict after sent.
- ``receipts``: what the host's door records of a request, and the answer kept.
- ``operator_moves``: replay, settle, dismiss, cancel, purge (in batches).
- ``dispatcher_registry``: dispatchers and their heartbeats.
- ``samples``: depth over time, the charts' facts.
- ``reads``: depth, listings, stats, the trail.
- ``squareoff_log``: each squareoff's record per IST day.
- ``disk_reserve``: the room kept for stored orders when the disk fills.
- ``api_keys``: sealing the broker API key; ``green``: store calls off an event loop.

Nothing else in the code base issues SQL against the queue tables.  The lifecycle is
drawn once, in docs/design.md ("Lifecycle"); the words are in its glossary.
"""

from __future__ import annotations

from database.order_queue.model import (
    ALLOWED_TRANSITIONS,
    DATABASE_URL_VARIABLE,
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_DATABASE_URL,
    IDENTITY_COLUMNS,
    LANE_OF_ENDPOINT,
    OWING_STATES,
    UNFINISHED_STATES,
    AttemptKind,
    BrokerStatus,
    DeadReason,
    DepthSample,
    DispatcherRecord,
    Lane,
    OrderAttempt,
    OrderState,
    QueuedOrder,
    QueueMeta,
    QueueStorageError,
    attempts,
    dispatchers,
    orders,
    utcnow,
)
from database.order_queue.operator_moves import PURGE_BATCH
from database.order_queue.store import QueueStore
from database.order_queue.values import (
    AlertKey,
    ClaimedOrder,
    ClaimResult,
    DuplicateAlert,
    RateLimits,
    Receipt,
    SendStamp,
)

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
]


def _store() -> QueueStore:
    """The runtime's store: the face's one upward edge, for OpenAlgo's start-up
    (``init_db``).  Imported at call time: the runtime is built over the storage this
    module faces.  Raises ``QueueStorageError`` before the app's ``init_app`` built it."""
    from services.order_queue import runtime

    return runtime.current().store


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
