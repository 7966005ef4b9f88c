"""The queue's model: states, lanes, tables and lifecycle rules (the values handed out are
in ``values.py``).

States are an ``Enum`` whose members say how orders enter and leave them; the tables
are declared once here; ``ALLOWED_TRANSITIONS`` is the lifecycle the database enforces
(``backends`` turns it into triggers).  Times are naive UTC ``datetime`` values.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DEFAULT_DATABASE_URL = "sqlite:///db/order_queue.db"
DATABASE_URL_VARIABLE = "ORDER_QUEUE_DATABASE_URL"
ERROR_TEXT_LIMIT = 1000
#: The largest order id the databases can hold (their 64-bit integer range).
MAX_ORDER_ID = 2**63 - 1
MESSAGE_TEXT_LIMIT = 500
#: How long an SQLite write waits for another writer before it fails (503 to a webhook).
DEFAULT_BUSY_TIMEOUT_MS = 5000


def truncate(value: str | None, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters (the last one an ellipsis)."""
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


class OrderState(str, enum.Enum):
    """Where an order is in its life; every move in and out is drawn once, in
    docs/design.md, "Lifecycle" (and enforced by ``ALLOWED_TRANSITIONS``)."""

    #: Waiting to be claimed.
    PENDING = "pending"
    #: Claimed under a lease; the request may be on the wire.
    SENDING = "sending"
    #: The request may have placed the order; never resent before the reconciler decides.
    IN_DOUBT = "in_doubt"
    #: The broker acknowledged the order; ``broker_orderid`` holds its id.  Final.
    SENT = "sent"
    #: Handed to a human with a ``dead_reason``.
    DEAD = "dead"
    #: An operator looked at a dead order and closed it.  Final.
    DISMISSED = "dismissed"
    #: An operator stopped a pending order before it was sent.  Final.
    CANCELLED = "cancelled"


#: States in which an order still blocks later orders for the same instrument.
UNFINISHED_STATES = (OrderState.PENDING, OrderState.SENDING, OrderState.IN_DOUBT)
#: States that still owe a delivery or a decision (rows that may not be deleted).
OWING_STATES = UNFINISHED_STATES + (OrderState.DEAD,)


class Lane(str, enum.Enum):
    """The kind of order, each with its own rate budget per account (the account lane,
    ``lane_key``).  Smart orders (exits, position sizing) go before regular ones, as
    upstream."""

    SMART = "smart"
    REGULAR = "regular"


LANE_OF_ENDPOINT = {"placesmartorder": Lane.SMART, "placeorder": Lane.REGULAR}
#: Claim order within what may go now: exits (a smart order to a flat position: an
#: exit signal, the squareoff's flatten) before smart entries before regular orders.
#: Per-instrument order still rules over it: an exit never overtakes an earlier order
#: for its own instrument.
EXIT_PRIORITY = 0
LANE_PRIORITY = {Lane.SMART: 1, Lane.REGULAR: 2}


class DeadReason(str, enum.Enum):
    """Why an order was dead-lettered."""

    REJECTED = "rejected"  #: the broker API said no (4xx, error body)
    RETRIES_EXHAUSTED = "retries_exhausted"  #: transient failures used up the budget
    IN_DOUBT = "in_doubt"  #: reconciliation could not decide
    EXPIRED = "expired"  #: too old to send safely
    CREDENTIALS = "credentials"  #: API key undecryptable or refused


class BrokerStatus(str, enum.Enum):
    """A sent order's fate at the broker, read from OpenAlgo's orderbook."""

    OPEN = "open"  # working (a limit order away from the price), or not final yet
    COMPLETE = "complete"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # the host has no orderbook (semi_auto mode), or no such order

    @property
    def final(self) -> bool:
        return self in (BrokerStatus.COMPLETE, BrokerStatus.REJECTED, BrokerStatus.CANCELLED)


class AttemptKind(str, enum.Enum):
    SEND = "send"
    RECONCILE = "reconcile"
    RECOVERY = "recovery"
    EXPIRY = "expiry"
    OPERATOR = "operator"
    VERDICT = "verdict"  # the broker's verdict on a sent order, read from its orderbook


class QueueStorageError(Exception):
    """The queue database could not be read or written; nothing was acknowledged."""


class Base(DeclarativeBase):
    pass


def _partial_index(name: str, columns: tuple[str, ...], where: str) -> Index:
    """An index over the rows matching ``where`` only, on both backends."""
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


class QueuedOrder(Base):
    """One order handed to ``queue_order``.  Identity columns never change after insert."""

    __tablename__ = "order_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # identity: what was asked for
    endpoint: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # JSON, apikey removed
    apikey_token: Mapped[str] = mapped_column(Text)  # Fernet token of the apikey
    account: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str | None] = mapped_column(String(255))
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    product: Mapped[str | None] = mapped_column(String(16))
    instrument: Mapped[str] = mapped_column(String(128))  # account|exchange|symbol|product
    lane: Mapped[str] = mapped_column(String(16))
    lane_key: Mapped[str] = mapped_column(String(40))  # the account lane: lane:account
    lane_priority: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # lifecycle
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: When the order was last claimed for a send (its lease taken): the claim's count of
    #: an account lane's budget.  The send itself is ``sent_at``.
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0)
    broker_orderid: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_reason: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The sender expected the host's door (``Receipt.door_expected``), for the current send.
    door_expected: Mapped[bool | None] = mapped_column(Boolean)
    # receipt: what the receiving host process saw of a send; only its door writes these
    # (``receipts.py``).  They belong to the send whose stamp ``receipt_sent_at`` holds:
    # a receipt of an earlier send of the same order is not the current send's.
    receipt_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    host_instance: Mapped[str | None] = mapped_column(String(80))
    host_received_at: Mapped[datetime | None] = mapped_column(DateTime)
    host_done_at: Mapped[datetime | None] = mapped_column(DateTime)
    host_answer_status: Mapped[int | None] = mapped_column(Integer)
    host_answer_body: Mapped[str | None] = mapped_column(Text)
    #: The HTTP status the sender itself got for the current send: OpenAlgo's or a
    #: gateway's in front of it (nginx, a CDN), which nothing can tell apart, so it ends
    #: nothing; only the door's receipt (``host_*``) says what OpenAlgo did.
    sender_answer_status: Mapped[int | None] = mapped_column(Integer)
    #: The alert key (``order_queue_alert_keys``) its webhook carried, if any: stored in
    #: the same transaction as the key, so a resend finds the orders the key queued.
    alert_key_id: Mapped[int | None] = mapped_column(Integer)
    # The broker's verdict on a sent order (``verdicts.py``): OpenAlgo's success means
    # the broker took it, not that it filled; its risk checks may still reject it.
    #: ``BrokerStatus``; NULL until first looked up.
    broker_status: Mapped[str | None] = mapped_column(String(16))
    #: The broker's reason, where OpenAlgo's orderbook passes one.
    broker_message: Mapped[str | None] = mapped_column(Text)
    broker_checked_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: A human dealt with a rejected or cancelled verdict: sent it again, or set it aside.
    verdict_handled_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: The send stamp: when the current send's request was let out (``stamp_send``), on
    #: the shared clock.  The rate windows, the settle gap and the reconciler count from
    #: it.  NULL while an order is claimed but not yet stamped, so recovery knows that a
    #: request that was never stamped never left (a stamped one may still not have: the
    #: sender may have died between the stamp and the request).
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # The claim path: pending rows in lane order.  Partial, so it stays small however
        # much history the table holds.
        _partial_index("ix_order_queue_claim", ("lane_priority", "id"), "state = 'pending'"),
        # "Is an earlier order for this instrument unfinished?"
        Index("ix_order_queue_instrument", "instrument", "state", "id"),
        # Recovery and reconciliation look only at leased / in-doubt rows.
        _partial_index(
            "ix_order_queue_inflight",  # on the wire (the name predates the word)
            ("state", "lease_expires_at"),
            "state IN ('sending', 'in_doubt')",
        ),
        # The claim's count of an account lane's budget: claims in the last window.  This
        # and the next three are partial (NULL until a claim or a send), so an enqueue's
        # commit does not write their pages: every index page an insert touches is one
        # more page to fsync.
        _partial_index("ix_order_queue_claimed", ("claimed_at",), "claimed_at IS NOT NULL"),
        # The send stamp's gate: this account lane's stamps in the last window.
        _partial_index("ix_order_queue_lane_sent", ("lane_key", "sent_at"), "sent_at IS NOT NULL"),
        # The settle gap: the oldest smart order sent within it (``claims._next_due``, whose
        # query names the lane as a literal, so both planners can prove this index applies).
        _partial_index(
            "ix_order_queue_smart_sent", ("sent_at",), "lane = 'smart' AND sent_at IS NOT NULL"
        ),
        _partial_index(
            "ix_order_queue_broker_orderid", ("broker_orderid",), "broker_orderid IS NOT NULL"
        ),
        Index("ix_order_queue_state_updated", "state", "updated_at"),
    )


class OrderAttempt(Base):
    """Append-only trail: every send, reconciliation decision and operator action."""

    __tablename__ = "order_queue_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str | None] = mapped_column(String(64))
    broker_orderid: Mapped[str | None] = mapped_column(String(64))


class DispatcherRecord(Base):
    """A running (or stopped) dispatcher and its heartbeat; leases are tied to it."""

    __tablename__ = "order_queue_dispatchers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)


class QueueMeta(Base):
    """Facts about the database itself: the pepper check (``check_pepper``)."""

    __tablename__ = "order_queue_meta"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DepthSample(Base):
    """The queue's depth per state, sampled about once a minute by a dispatcher, for the
    admin page's picture of the last hours (the orders table keeps only today's state)."""

    __tablename__ = "order_queue_samples"

    at: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    pending: Mapped[int] = mapped_column(Integer)
    sending: Mapped[int] = mapped_column(Integer)
    in_doubt: Mapped[int] = mapped_column(Integer)
    dead: Mapped[int] = mapped_column(Integer)


class SquareoffRecord(Base):
    """A strategy's squareoff on one IST trading day: run on time, caught up at start,
    or missed.  The unique key makes it happen at most once per day and squareoff time,
    whichever process (or scheduler, or catch-up) gets there first."""

    __tablename__ = "order_queue_squareoffs"
    __table_args__ = (
        UniqueConstraint(
            "source",
            "strategy_id",
            "trading_day",
            "squareoff_time",
            name="uq_order_queue_squareoff_once_a_day",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Which of the host's strategy managers: "strategy" or "chartink".
    source: Mapped[str] = mapped_column(String(16))
    strategy_id: Mapped[int] = mapped_column(Integer)
    strategy_name: Mapped[str] = mapped_column(String(255))
    #: The IST date, YYYY-MM-DD.
    trading_day: Mapped[str] = mapped_column(String(10))
    #: The strategy's HH:MM (IST) when it ran; a later edit of the time is a new squareoff.
    squareoff_time: Mapped[str] = mapped_column(String(5))
    #: ``SquareoffOutcome``.
    outcome: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(DateTime)


class AlertKeyRecord(Base):
    """An alert key a webhook carried (``Idempotency-Key``, ``idempotency_key``, or a
    Chartink alert's own scan, time and stocks), unique per webhook while it lives:
    taken in the same transaction as the first order it queued, so a resend, or eight
    copies at once, find it and queue nothing."""

    __tablename__ = "order_queue_alert_keys"
    __table_args__ = (UniqueConstraint("scope", "alert_key", name="uq_order_queue_alert_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The webhook the key belongs to (its path): keys are scoped to a strategy's webhook.
    scope: Mapped[str] = mapped_column(String(255))
    alert_key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the alert's body (without the key): the same key with another body is
    #: a conflict, not a resend.
    body_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    #: The first answer's JSON, given again (marked duplicate) to every resend.
    first_answer: Mapped[str | None] = mapped_column(Text)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    last_duplicate_at: Mapped[datetime | None] = mapped_column(DateTime)


class SquareoffOutcome(str, enum.Enum):
    """What became of a day's squareoff."""

    ON_TIME = "on_time"  # the host's scheduler ran it at its minute
    CAUGHT_UP = "caught_up"  # its minute passed while the app was down; run at start
    MISSED = "missed"  # its minute passed and the start came too late to run it


orders = cast(Table, QueuedOrder.__table__)
alert_keys = cast(Table, AlertKeyRecord.__table__)
squareoffs = cast(Table, SquareoffRecord.__table__)
meta = cast(Table, QueueMeta.__table__)
samples = cast(Table, DepthSample.__table__)
#: The states a depth sample counts.
SAMPLED_STATES = ("pending", "sending", "in_doubt", "dead")
#: How long depth samples are kept.
SAMPLE_RETENTION = timedelta(days=2)
PEPPER_CHECK = "pepper_check"
PEPPER_CHECK_TEXT = "order-queue pepper check"
attempts = cast(Table, OrderAttempt.__table__)
dispatchers = cast(Table, DispatcherRecord.__table__)


def expiry_for(
    now: datetime, max_age_seconds: float | None, deadline: datetime | None
) -> datetime | None:
    """When an order queued (or replayed) at ``now`` stops being worth sending: after
    ``max_age_seconds`` or at ``deadline`` (its squareoff), whichever is first; a
    deadline already past is ignored, so the squareoff's own orders still go out."""
    candidates = [now + timedelta(seconds=max_age_seconds)] if max_age_seconds else []
    if deadline is not None and deadline > now:
        candidates.append(deadline)
    return min(candidates) if candidates else None


def utcnow() -> datetime:
    """Naive UTC now: the one clock format stored in the queue tables."""
    return datetime.now(UTC).replace(tzinfo=None)


#: Columns fixed at enqueue: what was asked for, for whom, and when.
IDENTITY_COLUMNS = (
    "id",
    "endpoint",
    "payload",
    "apikey_token",
    "account",
    "strategy",
    "symbol",
    "exchange",
    "product",
    "instrument",
    "lane",
    "lane_key",
    "lane_priority",
    "created_at",
)
#: Every state change the lifecycle makes (docs/design.md, "Lifecycle"); the database
#: refuses any other, so an open order cannot be walked straight to "sent" and deleted by
#: hand.
ALLOWED_TRANSITIONS = (
    ("pending", "sending"),
    ("pending", "cancelled"),
    ("pending", "dead"),
    ("sending", "sent"),
    ("sending", "pending"),
    ("sending", "dead"),
    ("sending", "in_doubt"),
    ("in_doubt", "sent"),
    ("in_doubt", "pending"),
    ("in_doubt", "dead"),
    ("dead", "pending"),
    ("dead", "dismissed"),
    ("dead", "sent"),
)
