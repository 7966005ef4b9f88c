"""The durable order queue: its tables and every statement that touches them.

Nothing else in the code base issues SQL against the queue tables; the dispatcher, the
admin page and the CLI call the operations below.  Each operation is one short
transaction through ``QueueStore.transaction`` and states its guarantee in its docstring.

Lifecycle (design §3)::

    enqueue ──commit──► PENDING ──claim (lease)──► SENDING ──2xx + orderid──► SENT
    SENDING ── transient error, budget left ──► PENDING (later)
    SENDING ── rejection / budget spent ──► DEAD
    SENDING ── outcome unknown / lease lost ──► IN_DOUBT ── reconciled ──► SENT | PENDING | DEAD

Dialect differences (connection set-up, how a claim and a send stamp lock) live in the two backend
classes at the bottom; callers never branch on the database.

Times are naive UTC ``datetime`` values passed in by the caller (``now``), so tests
control the clock without patching.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    create_engine,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column

from database import order_queue_secrets as secrets
from database.order_queue_green import OffloadedCalls, run_blocking
from utils.logging import get_logger

logger = get_logger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///db/order_queue.db"
DATABASE_URL_VARIABLE = "ORDER_QUEUE_DATABASE_URL"
ERROR_TEXT_LIMIT = 1000
MESSAGE_TEXT_LIMIT = 500


class OrderState(str, enum.Enum):
    """Where an order is in its life.  Each member says what moves orders in and out."""

    #: Committed by ``enqueue_order``; also re-entered after a transient failure (with a
    #: later ``available_at``) or after reconciliation found nothing at the broker.
    #: Leaves by claim (SENDING), expiry (DEAD) or operator cancel (CANCELLED).
    PENDING = "pending"
    #: Claimed under a lease; the HTTP request may be on the wire.  Leaves by a mark
    #: (SENT / PENDING / DEAD / IN_DOUBT) or, if its dispatcher dies, by recovery (IN_DOUBT).
    SENDING = "sending"
    #: The send outcome is unknown (timeout after the request left, crash, lost lease).
    #: Never resent blindly: the reconciler checks the broker's orderbook first.
    IN_DOUBT = "in_doubt"
    #: The broker acknowledged the order; ``broker_orderid`` holds its id.  Final.
    SENT = "sent"
    #: Dead-lettered with a ``dead_reason``; waits for an operator (replay or dismiss).
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
    """Smart orders (exits, position sizing) go before regular ones, as upstream."""

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

    REJECTED = "rejected"                  #: the broker API said no (4xx, error body)
    RETRIES_EXHAUSTED = "retries_exhausted"  #: transient failures used up the budget
    IN_DOUBT = "in_doubt"                  #: reconciliation could not decide
    EXPIRED = "expired"                    #: too old to send safely
    CREDENTIALS = "credentials"            #: API key undecryptable or refused


class AttemptKind(str, enum.Enum):
    SEND = "send"
    RECONCILE = "reconcile"
    RECOVERY = "recovery"
    EXPIRY = "expiry"
    OPERATOR = "operator"


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
    lane_key: Mapped[str] = mapped_column(String(40))  # lane:account, the rate-limit unit
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
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime)
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0)
    broker_orderid: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_reason: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # receipt: what the receiving host process saw of the current send (it records them
    # itself when it runs the plugin; see ``record_receipt``)
    fence_expected: Mapped[bool | None] = mapped_column(Boolean)
    host_instance: Mapped[str | None] = mapped_column(String(80))
    host_received_at: Mapped[datetime | None] = mapped_column(DateTime)
    host_done_at: Mapped[datetime | None] = mapped_column(DateTime)
    host_answer_status: Mapped[int | None] = mapped_column(Integer)
    host_answer_body: Mapped[str | None] = mapped_column(Text)
    #: When the current send's request was let out (``stamp_send``), on the shared clock;
    #: NULL while an order is claimed but not yet on its way, so recovery knows that a
    #: request that was never stamped never left.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # The claim path: pending rows in lane order.  Partial, so it stays small however
        # much history the table holds.
        _partial_index("ix_order_queue_claim", ("lane_priority", "id"), "state = 'pending'"),
        # "Is an earlier order for this instrument unfinished?"
        Index("ix_order_queue_instrument", "instrument", "state", "id"),
        # Recovery and reconciliation look only at leased / in-doubt rows.
        _partial_index("ix_order_queue_inflight", ("state", "lease_expires_at"),
                       "state IN ('sending', 'in_doubt')"),
        # Per-account rate limit: sends in the last window.  This and the next two are
        # partial (NULL until a send), so an enqueue's commit does not write their pages:
        # every index page an insert touches is one more page to fsync.
        _partial_index("ix_order_queue_dispatched", ("dispatched_at",),
                       "dispatched_at IS NOT NULL"),
        # The send stamp's gate: this lane's stamps in the last window.
        _partial_index("ix_order_queue_lane_sent", ("lane_key", "sent_at"),
                       "sent_at IS NOT NULL"),
        _partial_index("ix_order_queue_broker_orderid", ("broker_orderid",),
                       "broker_orderid IS NOT NULL"),
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


orders = QueuedOrder.__table__
meta = QueueMeta.__table__
samples = DepthSample.__table__
#: The states a depth sample counts.
SAMPLED_STATES = ("pending", "sending", "in_doubt", "dead")
#: How long depth samples are kept.
SAMPLE_RETENTION = timedelta(days=2)
PEPPER_CHECK = "pepper_check"
PEPPER_CHECK_TEXT = "order-queue pepper check"
attempts = OrderAttempt.__table__
dispatchers = DispatcherRecord.__table__

#: Built once: building ``insert().values(...)`` per order cost more than the commit.
_INSERT_ORDER = orders.insert()
_INSERT_ATTEMPT = attempts.insert()
#: The newest send stamps of one account lane since a moment, other than the order's own.
_LANE_STAMPS = (select(orders.c.sent_at)
                .where(orders.c.lane_key == bindparam("lane_key"),
                       orders.c.sent_at > bindparam("since"), orders.c.id != bindparam("id"))
                .order_by(orders.c.sent_at.desc()).limit(bindparam("limit")))
#: A claim starts a send afresh: no stamp yet, no receipt from the host.  Without this a
#: claim that dies before its stamp would carry the previous attempt's facts.
_NOT_YET_SENT = {"sent_at": None, "fence_expected": None, "host_instance": None,
                 "host_received_at": None, "host_done_at": None, "host_answer_status": None,
                 "host_answer_body": None}

# The claim path's statements, built once: building them per claim cost more than
# running them.  Parameters are bound at execution (see ``claim_next``).
_other = aliased(orders, name="other")
_IN_FLIGHT = (OrderState.SENDING.value, OrderState.IN_DOUBT.value)
#: The next PENDING order that may go now: due, not expired, its account lane not
#: blocked, no unfinished predecessor for its instrument (an earlier one still waiting,
#: or any on the wire or in doubt: a replayed older order must not pass a newer one in
#: flight; on PostgreSQL ids may also commit out of order), and for a smart order no
#: smart order of its instrument still settling (one the broker answered without
#: placing anything changed no position: nothing to settle).  Exits first, then oldest.
_CLAIM_CANDIDATE = select(orders).where(
    orders.c.state == OrderState.PENDING.value,
    orders.c.available_at <= bindparam("now"),
    or_(orders.c.expires_at.is_(None), orders.c.expires_at > bindparam("now")),
    ~exists().where(
        _other.c.instrument == orders.c.instrument,
        _other.c.id != orders.c.id,
        or_(and_(_other.c.id < orders.c.id, _other.c.state == OrderState.PENDING.value),
            _other.c.state.in_(_IN_FLIGHT))),
    orders.c.lane_key.not_in(bindparam("blocked", expanding=True)),
    or_(orders.c.lane != Lane.SMART.value, ~exists().where(
        _other.c.instrument == orders.c.instrument,
        _other.c.lane == Lane.SMART.value,
        _other.c.dispatched_at > bindparam("settling_since"),
        or_(_other.c.state != OrderState.SENT.value, _other.c.broker_orderid.is_not(None)))),
).order_by(orders.c.lane_priority, orders.c.id).limit(1)
#: The claimed row leased: SENDING, a fresh send (no stamp, no receipt yet).
_CLAIM_ROW = update(orders).where(orders.c.id == bindparam("claimed_id")).values(
    state=OrderState.SENDING.value, lease_owner=bindparam("owner"),
    lease_token=bindparam("token"), lease_expires_at=bindparam("lease_until"),
    dispatched_at=bindparam("claimed_at"), updated_at=bindparam("claimed_at"), **_NOT_YET_SENT)
#: The send stamp, only while the sender still holds the lease (``stamp_send``).
_STAMP_ROW = update(orders).where(
    orders.c.id == bindparam("stamped_id"), orders.c.lease_token == bindparam("token"),
    orders.c.state == OrderState.SENDING.value,
).values(**{**_NOT_YET_SENT, "fence_expected": bindparam("fence"),
            "sent_at": bindparam("stamp"), "dispatched_at": bindparam("stamped_at"),
            "updated_at": bindparam("stamped_at"), "lease_expires_at": bindparam("lease_until")})
#: Sends per account lane since a moment, and the oldest of them (all lanes, or one).
_LANE_SENDS = (select(orders.c.lane_key, func.count(), func.min(orders.c.dispatched_at))
               .where(orders.c.dispatched_at > bindparam("since"))
               .group_by(orders.c.lane_key))
_ONE_LANE_SENDS = (select(orders.c.lane_key, func.count(), func.min(orders.c.dispatched_at))
                   .where(orders.c.dispatched_at > bindparam("since"),
                          orders.c.lane == bindparam("lane"))
                   .group_by(orders.c.lane_key))
#: When the next thing becomes due: a smart order's settle gap, a retry, a lease.
_OLDEST_SMART_SEND = select(func.min(orders.c.dispatched_at)).where(
    orders.c.lane == Lane.SMART.value, orders.c.dispatched_at > bindparam("since"))
_NEXT_AVAILABLE = select(func.min(orders.c.available_at)).where(
    orders.c.state.in_([OrderState.PENDING.value, OrderState.IN_DOUBT.value]),
    orders.c.available_at > bindparam("now"))
_NEXT_LEASE_EXPIRY = select(func.min(orders.c.lease_expires_at)).where(
    orders.c.state.in_(_IN_FLIGHT), orders.c.lease_expires_at > bindparam("now"))
#: A moment no send is stamped after: "nothing settles" when the settle gap is off.
_NEVER = datetime(9999, 12, 31)


def utcnow() -> datetime:
    """Naive UTC now: the one clock format stored in the queue tables."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _truncate(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class ClaimedOrder:
    """An order leased to one dispatcher.  Every mark must present ``lease_token``."""

    id: int
    endpoint: str
    payload: dict[str, Any]  # without apikey
    apikey_token: str
    lane: str
    lane_key: str
    state: str  # SENDING for a send, IN_DOUBT for a reconciliation
    attempts: int
    reconcile_checks: int
    lease_token: str
    dispatched_at: datetime | None
    created_at: datetime
    receipt: "Receipt | None" = None


@dataclass(frozen=True)
class Receipt:
    """What the host process that received the current send recorded of it.

    ``fence_expected``: the host answered the dispatcher's earlier requests with its
    fence (it runs the plugin), so a request that left no receipt was refused at the
    door and never reached the order code.  ``instance``: the dispatcher id of the
    receiving process (whose liveness the dispatchers table tells), or its process id
    when it had no running dispatcher."""

    fence_expected: bool
    instance: str | None
    received_at: datetime | None
    done_at: datetime | None
    answer_status: int | None
    answer_body: str | None


@dataclass(frozen=True)
class ClaimResult:
    """What a claim found: an order, or none and the earliest time one may be due."""

    order: ClaimedOrder | None
    next_due_at: datetime | None


@dataclass(frozen=True)
class RateLimits:
    """Orders per ``window`` seconds allowed per account and lane, and the settle gap
    between two smart orders for the same instrument (a smart order sizes itself from
    the position the previous one left, so that one must have settled)."""

    smart: int
    regular: int
    window: float
    smart_settle: float = 0.0
    #: A lane whose host limit is per minute counts over its own window (else ``window``).
    smart_window: float | None = None
    regular_window: float | None = None
    #: The longest a request may take to leave after its send stamp (the sender stamps
    #: again when its stamp took longer); windows are counted this much wider.
    tolerance: float = 0.0

    def limit_for(self, lane_key: str) -> int:
        return self.smart if lane_key.startswith(Lane.SMART.value) else self.regular

    def window_for(self, lane_key: str) -> float:
        own = self.smart_window if lane_key.startswith(Lane.SMART.value) else self.regular_window
        return own or self.window

    def counted_window(self, lane_key: str) -> float:
        return self.window_for(lane_key) + self.tolerance


@dataclass(frozen=True)
class SendStamp:
    """The send stamp's decision: ``go`` (stamped: send now), wait ``wait_seconds`` for
    the lane's window to free a turn, or ``lease_lost`` (another owner: never send)."""

    go: bool = False
    lease_lost: bool = False
    wait_seconds: float = 0.0
    #: ``time.monotonic()`` when the stamp's time was read: the request must leave soon
    #: after it (waiting for the database before that does not count).
    taken_at: float = 0.0


#: Columns fixed at enqueue: what was asked for, for whom, and when.
IDENTITY_COLUMNS = ("id", "endpoint", "payload", "apikey_token", "account", "strategy", "symbol",
                    "exchange", "product", "instrument", "lane", "lane_key", "lane_priority",
                    "created_at")
_OWING_SQL = ", ".join(f"'{state.value}'" for state in OWING_STATES)
#: Every state change the lifecycle makes (design §3); the database refuses any other,
#: so an open order cannot be walked straight to "sent" and deleted by hand.
ALLOWED_TRANSITIONS = (
    ("pending", "sending"), ("pending", "cancelled"), ("pending", "dead"),
    ("sending", "sent"), ("sending", "pending"), ("sending", "dead"), ("sending", "in_doubt"),
    ("in_doubt", "sent"), ("in_doubt", "pending"), ("in_doubt", "dead"),
    ("dead", "pending"), ("dead", "dismissed"), ("dead", "sent"),
)
_TRANSITIONS_SQL = ", ".join(f"'{a}>{b}'" for a, b in ALLOWED_TRANSITIONS)
TRANSITION_ERROR = "order_queue: this state change is not part of the order lifecycle"
IDENTITY_ERROR = "order_queue: identity columns are write-once"
OWING_DELETE_ERROR = "order_queue: an order that still owes a delivery or a decision cannot be deleted"
ATTEMPTS_ERROR = "order_queue_attempts: the attempt trail is append-only"


# --------------------------------------------------------------------------- backends


class _DriverInsert:
    """An INSERT compiled once for a qmark driver (sqlite3) and run on its own cursor,
    values converted by the same type processors SQLAlchemy would apply, so what is
    stored reads back exactly as through SQLAlchemy."""

    def __init__(self, statement, keys: list[str], dialect):
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.keys = tuple(keys)
        self.sql = compiled.string
        self.names = compiled.positiontup
        columns = statement.table.c
        self.processors = [columns[name].type.bind_processor(dialect) for name in self.names]

    def run(self, cursor, row: dict[str, Any]) -> int:
        if tuple(sorted(row)) != self.keys:
            raise ValueError("an order row must have the same columns every time")
        cursor.execute(self.sql, [row[name] if process is None else process(row[name])
                                  for name, process in zip(self.names, self.processors)])
        return cursor.lastrowid


class SqliteBackend:
    """Embedded default: one file of its own, WAL, ``synchronous=FULL``.

    Every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write claim
    takes the write lock up front and waits on ``busy_timeout`` instead of failing with
    "database is locked" when another connection wrote in between (design §11).  That
    needs pysqlite's own transaction handling off (``isolation_level=None``).
    """

    name = "sqlite"

    def __init__(self, url: str, busy_timeout_ms: int = 5000):
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        self.path = os.path.abspath(path) if path and not path.startswith(":memory:") else None
        self.busy_timeout_ms = busy_timeout_ms
        self._file_identity = None
        self._insert_order: _DriverInsert | None = None

    def insert_order(self, engine: Engine, row: dict[str, Any]) -> int:
        """The enqueue's transaction: ``_INSERT_ORDER``, compiled once, between BEGIN
        IMMEDIATE and COMMIT on the driver's own connection from the pool.  SQLAlchemy's
        per-transaction work cost half as much again as the fsync'd commit, which is all
        an enqueue has to pay."""
        if self._insert_order is None:
            self._insert_order = _DriverInsert(_INSERT_ORDER, sorted(row), engine.dialect)
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                order_id = self._insert_order.run(cursor, row)
                cursor.execute("COMMIT")
            except BaseException:
                if connection.driver_connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            return order_id
        finally:
            connection.close()

    def create_engine(self, url: str) -> Engine:
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": self.busy_timeout_ms / 1000})
        busy = self.busy_timeout_ms

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection, _record):
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={busy}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # INSERT OR REPLACE deletes the row it replaces: with recursive triggers the
            # delete guard sees that delete too, so an open order cannot be overwritten.
            cursor.execute("PRAGMA recursive_triggers=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # On the driver itself: SQLAlchemy's execution path would cost as much as
            # the enqueue's insert.
            read_only = conn.get_execution_options().get("queue_read_only")
            conn.connection.dbapi_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    def prepare_storage(self, engine: Engine) -> None:
        """At schema creation only: make the file and its directory, as OpenAlgo does
        for db/ (afterwards a missing file is a fault, see ``check_writable``)."""
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            _create_private(self.path)
            engine.connect().close()

    def lock_schema(self, conn: Connection) -> None:
        """BEGIN IMMEDIATE already makes concurrent schema creation take turns."""

    def start_listener(self, engine: Engine, wake: Callable[[], None],
                       stop: threading.Event) -> None:
        """One process per SQLite file: enqueues wake the dispatcher in-process."""

    def check_writable(self, engine: Engine) -> None:
        """Refuse writes the disk would not keep.

        A pooled connection keeps writing into a file that was deleted or moved away, and
        those writes vanish; so a missing file is an error.  A file that came back (a
        volume remounted, a backup restored) is a new file: the pool is dropped so the
        next connection opens it.
        """
        if not self.path:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise QueueStorageError(f"queue database file is missing: {self.path}") from None
        except OSError as exc:
            raise QueueStorageError(f"queue database file unreachable: {exc}") from exc
        identity = (stat.st_dev, stat.st_ino)
        if self._file_identity is not None and identity != self._file_identity:
            engine.dispose()
        self._file_identity = identity

    def lock_lane(self, conn: Connection, lane_key: str) -> None:
        """BEGIN IMMEDIATE already serialises the send stamps too."""

    def shared_now(self, conn: Connection) -> datetime:
        """Every process on one SQLite file runs on one machine, under one clock."""
        return utcnow()

    def claim_lock_options(self) -> dict:
        return {}

    def notify(self, conn: Connection) -> None:
        """In-process wake-ups only; nothing to send through the database."""

    def create_triggers(self, conn: Connection) -> None:
        """Write-once protection in the database itself (design §4), so no code path,
        script or console session can rewrite what was ordered or erase an open order.
        Dropped and made again, so a database from an earlier version gets today's."""
        for statement in self.TRIGGERS:
            name = statement.split("TRIGGER", 1)[1].split()[0]
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(statement)

    TRIGGERS = (
        f"""CREATE TRIGGER order_queue_identity_write_once
            BEFORE UPDATE OF {", ".join(IDENTITY_COLUMNS)} ON order_queue
            BEGIN SELECT RAISE(ABORT, '{IDENTITY_ERROR}'); END""",
        f"""CREATE TRIGGER order_queue_state_machine
            BEFORE UPDATE OF state ON order_queue
            WHEN NEW.state != OLD.state AND (OLD.state || '>' || NEW.state) NOT IN ({_TRANSITIONS_SQL})
            BEGIN SELECT RAISE(ABORT, '{TRANSITION_ERROR}'); END""",
        f"""CREATE TRIGGER order_queue_keep_owing_rows
            BEFORE DELETE ON order_queue WHEN OLD.state IN ({_OWING_SQL})
            BEGIN SELECT RAISE(ABORT, '{OWING_DELETE_ERROR}'); END""",
        f"""CREATE TRIGGER order_queue_attempts_no_update
            BEFORE UPDATE ON order_queue_attempts
            BEGIN SELECT RAISE(ABORT, '{ATTEMPTS_ERROR}'); END""",
        # An attempt may go only together with its order (the retention purge).
        f"""CREATE TRIGGER order_queue_attempts_no_delete
            BEFORE DELETE ON order_queue_attempts
            WHEN EXISTS (SELECT 1 FROM order_queue WHERE id = OLD.order_id)
            BEGIN SELECT RAISE(ABORT, '{ATTEMPTS_ERROR}'); END""",
    )


class PostgresBackend:
    """Scale-out: several processes share one database.

    Claims skip rows another transaction holds (``FOR UPDATE SKIP LOCKED``), so
    dispatchers claim side by side; nothing in a claim needs a lock beyond its row: an
    order whose predecessor another claim is taking still sees that one pending and
    waits.  Rate limits are exact where the send is stamped, one stamp at a time per
    account lane (``lock_lane``).  psycopg is imported by SQLAlchemy only when this
    backend is used.
    """

    name = "postgresql"
    _LANE_LOCK_SPACE = 0x0DE0_0A1E  # arbitrary, constant: first key of the lane locks
    _SCHEMA_LOCK_KEY = 0x0DE0_0A1D  # "order queue schema"

    def create_engine(self, url: str) -> Engine:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        # An unreachable server must cost a webhook a quick 503, not the kernel's two
        # minutes of SYN retries; a connect_timeout in the URL wins.
        connect_args = {} if "connect_timeout" in url else {"connect_timeout": 5}
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             connect_args=connect_args)

    def prepare_storage(self, engine: Engine) -> None:
        """The server owns its storage."""

    def lock_schema(self, conn: Connection) -> None:
        """Processes starting together against an empty database create the schema one
        after the other, not all at once (CREATE TABLE races end in unique violations)."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._SCHEMA_LOCK_KEY})

    def start_listener(self, engine: Engine, wake: Callable[[], None],
                       stop: threading.Event) -> threading.Thread:
        """Wake ``wake`` on every NOTIFY order_queue, from any process, until ``stop``.

        Its own autocommit connection; reconnects after errors.  Polling remains the
        fallback, so a lost notification costs latency, never an order.
        """
        import psycopg  # only ever imported when PostgreSQL is configured

        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

        def next_notification(conn) -> bool:
            """Wait up to a second for one NOTIFY (psycopg waits in C: off the hub)."""
            return bool(list(conn.notifies(timeout=1.0, stop_after=1)))

        def listen():
            while not stop.is_set():
                conn = None
                try:
                    conn = run_blocking(psycopg.connect, dsn, autocommit=True)
                    run_blocking(conn.execute, "LISTEN order_queue")
                    wake()  # whatever was committed while nobody listened
                    while not stop.is_set():
                        if run_blocking(next_notification, conn):
                            wake()
                except Exception as exc:
                    logger.warning("order queue LISTEN connection failed (%s); retrying", exc)
                    stop.wait(2.0)
                finally:
                    if conn is not None:
                        run_blocking(conn.close)

        thread = threading.Thread(target=listen, name="order-queue-listen", daemon=True)
        thread.start()
        return thread

    def check_writable(self, engine: Engine) -> None:
        """The server reports its own storage faults."""

    def insert_order(self, engine: Engine, row: dict[str, Any]) -> int:
        """The enqueue's transaction, with a wake-up for every listening dispatcher."""
        with engine.begin() as conn:
            order_id = conn.execute(_INSERT_ORDER, row).inserted_primary_key[0]
            self.notify(conn)
        return order_id

    def lock_lane(self, conn: Connection, lane_key: str) -> None:
        """One send stamp at a time per account lane, across processes (the two-key
        advisory lock space does not overlap the schema lock's)."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:lane))"),
                     {"space": self._LANE_LOCK_SPACE, "lane": lane_key})

    def shared_now(self, conn: Connection) -> datetime:
        """The database server's clock: dispatchers on several machines stamp their sends
        on one clock, so their rate windows agree whatever their own clocks say."""
        return conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar()

    def claim_lock_options(self) -> dict:
        return {"skip_locked": True}

    def notify(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_notify('order_queue', '')"))

    def create_triggers(self, conn: Connection) -> None:
        """The same protection as on SQLite, as PL/pgSQL trigger functions.

        Only the tables' owner can make (or drop, or disable) triggers.  Run the app as a
        role that does not own the tables (README: "Scaling out on PostgreSQL") and it
        cannot switch the protection off either; it then leaves the triggers the owner
        made as they are."""
        owner = conn.execute(text(
            "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename = 'order_queue'")).scalar()
        if owner != conn.execute(text("SELECT current_user")).scalar():
            return
        for statement in self.TRIGGERS:
            conn.execute(text(statement))

    _IDENTITY_CHANGED = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in IDENTITY_COLUMNS)
    TRIGGERS = (
        f"""CREATE OR REPLACE FUNCTION order_queue_guard() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'UPDATE' THEN
                IF {_IDENTITY_CHANGED} THEN RAISE EXCEPTION '{IDENTITY_ERROR}'; END IF;
                IF NEW.state <> OLD.state AND OLD.state || '>' || NEW.state NOT IN ({_TRANSITIONS_SQL})
                THEN RAISE EXCEPTION '{TRANSITION_ERROR}'; END IF;
                RETURN NEW;
              END IF;
              IF OLD.state IN ({_OWING_SQL}) THEN RAISE EXCEPTION '{OWING_DELETE_ERROR}'; END IF;
              RETURN OLD;
            END $$ LANGUAGE plpgsql""",
        """CREATE OR REPLACE TRIGGER order_queue_guard BEFORE UPDATE OR DELETE ON order_queue
            FOR EACH ROW EXECUTE FUNCTION order_queue_guard()""",
        # TRUNCATE skips row triggers: refuse it while any order still owes something.
        f"""CREATE OR REPLACE FUNCTION order_queue_truncate_guard() RETURNS trigger AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM order_queue WHERE state IN ({_OWING_SQL})) THEN
                RAISE EXCEPTION '{OWING_DELETE_ERROR}';
              END IF;
              RETURN NULL;
            END $$ LANGUAGE plpgsql""",
        """CREATE OR REPLACE TRIGGER order_queue_truncate_guard BEFORE TRUNCATE ON order_queue
            FOR EACH STATEMENT EXECUTE FUNCTION order_queue_truncate_guard()""",
        """CREATE OR REPLACE TRIGGER order_queue_attempts_truncate_guard
            BEFORE TRUNCATE ON order_queue_attempts
            FOR EACH STATEMENT EXECUTE FUNCTION order_queue_truncate_guard()""",
        f"""CREATE OR REPLACE FUNCTION order_queue_attempts_guard() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' AND NOT EXISTS
                  (SELECT 1 FROM order_queue WHERE id = OLD.order_id) THEN
                RETURN OLD;
              END IF;
              RAISE EXCEPTION '{ATTEMPTS_ERROR}';
            END $$ LANGUAGE plpgsql""",
        """CREATE OR REPLACE TRIGGER order_queue_attempts_guard
            BEFORE UPDATE OR DELETE ON order_queue_attempts
            FOR EACH ROW EXECUTE FUNCTION order_queue_attempts_guard()""",
    )


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files take
    the same mode, and they hold order payloads).  Only when it does not exist yet:
    closing any descriptor of an open SQLite file drops the process's locks on it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def backend_for(url: str, busy_timeout_ms: int = 5000):
    if url.startswith("sqlite"):
        return SqliteBackend(url, busy_timeout_ms)
    if url.startswith(("postgresql", "postgres://")):
        return PostgresBackend()
    raise ValueError(f"{DATABASE_URL_VARIABLE}: unsupported database URL scheme in {url!r}")


# --------------------------------------------------------------------------- the store


class QueueStore:
    """All queue operations against one database."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000):
        self.url = url
        self.backend = backend_for(url, busy_timeout_ms)
        lock_options = self.backend.claim_lock_options()
        self._claim_candidate = (_CLAIM_CANDIDATE.with_for_update(of=orders, **lock_options)
                                 if lock_options else _CLAIM_CANDIDATE)
        try:
            self.engine = self.backend.create_engine(url)
        except Exception as exc:  # bad driver options, unreachable server at connect
            raise QueueStorageError(str(exc)) from exc

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Connection]:
        """The one transaction gate: begin, yield, commit, or roll back and re-raise."""
        with self._storage_errors(writing=not read_only):
            with self.engine.connect() as conn:
                if read_only:
                    conn = conn.execution_options(queue_read_only=True)
                with conn.begin():
                    yield conn

    @contextmanager
    def _storage_errors(self, *, writing: bool) -> Iterator[None]:
        """Database errors surface as ``QueueStorageError`` so callers can answer 503.
        After a failed write the pool is dropped: a connection opened while the disk was
        read-only or unreachable stays that way, and must not outlive the fault."""
        dbapi = self.engine.dialect.dbapi
        try:
            if writing:
                self.backend.check_writable(self.engine)
            yield
        except (SQLAlchemyError, dbapi.Error) as exc:
            if writing and isinstance(exc, (OperationalError, dbapi.OperationalError)):
                self.engine.dispose()
            raise QueueStorageError(str(getattr(exc, "orig", None) or exc)) from exc

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema

    def create_schema(self) -> None:
        """Create tables, indexes and triggers if absent, in one transaction.  Safe to
        call on every start, and from several processes starting at once."""
        try:
            self.backend.prepare_storage(self.engine)
        except Exception as exc:
            raise QueueStorageError(str(exc)) from exc
        with self.transaction() as conn:
            self.backend.lock_schema(conn)
            Base.metadata.create_all(conn)
            _add_missing_columns(conn)
            self.backend.create_triggers(conn)

    def start_listener(self, wake: Callable[[], None], stop: threading.Event):
        """Cross-process wake-ups where the backend has them (PostgreSQL LISTEN)."""
        return self.backend.start_listener(self.engine, wake, stop)

    # ------------------------------------------------------------------ enqueue

    def enqueue(self, endpoint: str, payload: dict[str, Any], *, now: datetime,
                max_age_seconds: float | None, deadline: datetime | None = None) -> int:
        """Commit one order as PENDING and return its id.

        The order expires (is never sent) ``max_age_seconds`` after ``now`` or at
        ``deadline`` (e.g. its strategy's squareoff), whichever is first; a deadline
        already past is ignored, so the squareoff's own orders still go out.

        Guarantee: when this returns, the row is durable (committed, fsync'd on SQLite);
        when it raises, nothing was stored.  ``ValueError`` for an endpoint the Strategy
        Manager does not use or a payload without the fields the queue needs.
        """
        lane = LANE_OF_ENDPOINT.get(endpoint)
        if lane is None:
            raise ValueError(f"endpoint must be one of {sorted(LANE_OF_ENDPOINT)}, not {endpoint!r}")
        if not isinstance(payload, dict):
            raise ValueError("payload must be a dict")
        api_key = payload.get("apikey")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("payload needs a non-empty 'apikey'")
        for field in ("symbol", "exchange", "action"):
            if not isinstance(payload.get(field), str) or not payload[field]:
                raise ValueError(f"payload needs a non-empty string {field!r}")
        stored_payload = {k: v for k, v in payload.items() if k != "apikey"}
        apikey_token, account = secrets.seal_with_account(api_key)
        product = str(payload.get("product") or "")
        row = {
            "endpoint": endpoint,
            "payload": json.dumps(stored_payload, sort_keys=True),
            "apikey_token": apikey_token,
            "account": account,
            "strategy": payload.get("strategy"),
            "symbol": payload["symbol"],
            "exchange": payload["exchange"],
            "product": product,
            "instrument": "|".join((account, payload["exchange"], payload["symbol"], product)),
            "lane": lane.value,
            "lane_key": f"{lane.value}:{account}",
            "lane_priority": EXIT_PRIORITY if _is_exit(lane, payload) else LANE_PRIORITY[lane],
            "created_at": now,
            "state": OrderState.PENDING.value,
            "attempts": 0,
            "reconcile_checks": 0,
            "available_at": now,
            "expires_at": _expiry(now, max_age_seconds, deadline),
            "updated_at": now,
        }
        with self._storage_errors(writing=True):
            return int(self.backend.insert_order(self.engine, row))

    # ------------------------------------------------------------------ claims

    def claim_next(self, owner: str, *, now: datetime, lease_seconds: float,
                   limits: RateLimits) -> ClaimResult:
        """Lease the next order that may be sent now, and mark it SENDING.

        Picks, in one write transaction: a PENDING row that is due, not expired, whose
        account+lane has sent fewer than its limit in the last window, and with no
        earlier unfinished order for the same instrument; smart lane first, then oldest.
        Returns ``ClaimResult(None, next_due_at)`` when nothing qualifies, where
        ``next_due_at`` is the earliest moment something may (a hint for sleeping).
        """
        settling_since = (now - timedelta(seconds=limits.smart_settle)
                          if limits.smart_settle > 0 else _NEVER)
        with self.transaction() as conn:
            blocked, window_opens_at = self._blocked_lanes(conn, now, limits)
            row = conn.execute(self._claim_candidate, {
                "now": now, "blocked": blocked, "settling_since": settling_since,
            }).mappings().first()
            if row is None:
                return ClaimResult(None, self._next_due(conn, now, window_opens_at, limits))
            token = uuid.uuid4().hex
            conn.execute(_CLAIM_ROW, {
                "claimed_id": row["id"], "owner": owner, "token": token, "claimed_at": now,
                "lease_until": now + timedelta(seconds=lease_seconds)})
            return ClaimResult(_claimed(row, token, OrderState.SENDING.value, now), None)

    def _blocked_lanes(self, conn: Connection, now: datetime,
                       limits: RateLimits) -> tuple[list[str], datetime | None]:
        """Account lanes that used their budget in the current window, and when the
        earliest of them frees a slot."""
        blocked, opens = [], None
        windows = {lane: limits.window_for(lane.value) for lane in Lane}
        # One query when both lanes count over the same window (the default); one per lane
        # when a host limit is per minute.
        groups = ([(None, windows[Lane.SMART])] if len(set(windows.values())) == 1
                  else list(windows.items()))
        for lane, seconds in groups:
            window = timedelta(seconds=seconds + limits.tolerance)
            counted = (conn.execute(_LANE_SENDS, {"since": now - window}) if lane is None else
                       conn.execute(_ONE_LANE_SENDS, {"since": now - window, "lane": lane.value}))
            for lane_key, count, oldest in counted:
                if count >= limits.limit_for(lane_key):
                    blocked.append(lane_key)
                    opens = oldest + window if opens is None else min(opens, oldest + window)
        return blocked, opens

    def _next_due(self, conn: Connection, now: datetime, window_opens_at: datetime | None,
                  limits: RateLimits) -> datetime | None:
        """Earliest future moment a pending or in-doubt row becomes actionable."""
        candidates = [window_opens_at] if window_opens_at else []
        if limits.smart_settle > 0:
            gap = timedelta(seconds=limits.smart_settle)
            settling_since = conn.execute(_OLDEST_SMART_SEND, {"since": now - gap}).scalar()
            if settling_since is not None:
                candidates.append(settling_since + gap)
        for statement in (_NEXT_AVAILABLE, _NEXT_LEASE_EXPIRY):
            moment = conn.execute(statement, {"now": now}).scalar()
            if moment is not None:
                candidates.append(moment)
        return min(candidates) if candidates else None

    def claim_in_doubt(self, owner: str, *, now: datetime,
                       lease_seconds: float) -> ClaimedOrder | None:
        """Lease the oldest due IN_DOUBT order for reconciliation (state unchanged).

        Another dispatcher cannot reconcile it at the same time: the lease must have
        expired or never been taken.  Returns None when none is due.
        """
        with self.transaction() as conn:
            candidate = (
                select(orders).where(
                    orders.c.state == OrderState.IN_DOUBT.value,
                    orders.c.available_at <= now,
                    or_(orders.c.lease_expires_at.is_(None), orders.c.lease_expires_at <= now),
                ).order_by(orders.c.id).limit(1))
            if lock_options := self.backend.claim_lock_options():
                candidate = candidate.with_for_update(of=orders, **lock_options)
            row = conn.execute(candidate).mappings().first()
            if row is None:
                return None
            token = uuid.uuid4().hex
            conn.execute(update(orders).where(orders.c.id == row["id"]).values(
                lease_owner=owner, lease_token=token,
                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now))
            return _claimed(row, token, OrderState.IN_DOUBT.value, row["dispatched_at"])

    # ------------------------------------------------------------------ marks

    def _mark(self, conn: Connection, order_id: int, lease_token: str, from_state: OrderState,
              values: dict[str, Any]) -> bool:
        """Apply ``values`` only if the caller still holds the lease in ``from_state``."""
        result = conn.execute(
            update(orders).where(
                orders.c.id == order_id,
                orders.c.lease_token == lease_token,
                orders.c.state == from_state.value,
            ).values(**values))
        return result.rowcount == 1

    def _record(self, conn: Connection, order_id: int, *, now: datetime, kind: AttemptKind,
                outcome: str, actor: str | None, http_status: int | None = None,
                message: str | None = None, latency_ms: float | None = None,
                broker_orderid: str | None = None) -> None:
        conn.execute(_INSERT_ATTEMPT, {
            "order_id": order_id, "at": now, "kind": kind.value, "outcome": outcome,
            "http_status": http_status, "message": _truncate(message, MESSAGE_TEXT_LIMIT),
            "latency_ms": latency_ms, "actor": actor, "broker_orderid": broker_orderid})

    def stamp_send(self, order: ClaimedOrder, *, now: datetime, lease_seconds: float,
                   fence_expected: bool = False, limits: RateLimits | None = None) -> SendStamp:
        """Just before the request leaves: confirm the lease is still held, take the
        account lane's turn, and record the moment of sending with a lease from it.

        The turn is decided here, one stamp at a time per lane, on the shared clock:
        with ``limits``, a stamp is refused (``wait_seconds``) while the lane already
        has its limit of stamps in the last window (widened by ``limits.tolerance``,
        the longest a request may take to leave after its stamp).  Since every request
        is stamped before it leaves and none leaves later than that, no window at the
        broker ever holds more than the limit, across processes too.  The reconciler
        also counts from this stamp, so a request held up after its claim is not judged
        missing before it could have arrived.
        """
        with self.transaction() as conn:
            self.backend.lock_lane(conn, order.lane_key)
            sent_at = self.backend.shared_now(conn)
            taken_at = time.monotonic()
            if limits is not None:
                limit = limits.limit_for(order.lane_key)
                window = timedelta(seconds=limits.counted_window(order.lane_key))
                recent = conn.execute(_LANE_STAMPS, {
                    "lane_key": order.lane_key, "since": sent_at - window, "id": order.id,
                    "limit": limit}).scalars().all()
                if len(recent) >= limit:
                    opens = recent[-1] + window
                    return SendStamp(wait_seconds=max((opens - sent_at).total_seconds(), 0.001))
            stamped = conn.execute(_STAMP_ROW, {
                "stamped_id": order.id, "token": order.lease_token, "stamp": sent_at,
                "fence": fence_expected, "stamped_at": now,
                "lease_until": now + timedelta(seconds=lease_seconds)}).rowcount == 1
            return SendStamp(go=stamped, lease_lost=not stamped, taken_at=taken_at)

    def check_pepper(self) -> bool:
        """True when this process's ``API_KEY_PEPPER`` is the one the stored API keys
        were sealed with.  The first call on a database seals a check value with the
        current pepper; later ones must be able to open it.  A changed pepper would
        make every queued key unreadable (each order dead as ``credentials``), so the
        caller holds the queue instead of sending."""
        with self.transaction() as conn:
            sealed = conn.execute(select(meta.c.value).where(meta.c.key == PEPPER_CHECK)).scalar()
            if sealed is None:
                conn.execute(meta.insert().values(key=PEPPER_CHECK,
                                                  value=secrets.seal(PEPPER_CHECK_TEXT)))
                return True
        try:
            return secrets.unseal(sealed) == PEPPER_CHECK_TEXT
        except secrets.CredentialsUnavailable:
            return False

    def record_receipt(self, order_id: int, lease_token: str, *, instance: str,
                       now: datetime) -> bool:
        """The host's door for a dispatched order: True (and the receipt written) only
        while the sender still holds the order's lease.

        A request that arrives after its order was taken over (its sender died, its
        answer timed out) is refused here, so an order that left no receipt was never
        placed, and reconciliation need not wait for a request that might still come.
        """
        with self.transaction() as conn:
            return conn.execute(update(orders).where(
                orders.c.id == order_id, orders.c.state == OrderState.SENDING.value,
                orders.c.lease_token == lease_token).values(
                host_instance=instance, host_received_at=now)).rowcount == 1

    def record_host_answer(self, order_id: int, *, instance: str, received_at: datetime,
                           now: datetime, status: int, body: str) -> None:
        """The host's answer to a receipted request, for the reconciler in case the
        sender is no longer there to read it.  Only for the same receipt."""
        with self.transaction() as conn:
            conn.execute(update(orders).where(
                orders.c.id == order_id, orders.c.host_instance == instance,
                orders.c.host_received_at == received_at).values(
                host_done_at=now, host_answer_status=status,
                host_answer_body=_truncate(body, ERROR_TEXT_LIMIT)))

    def dispatcher_gone_since(self, dispatcher_id: str, *, now: datetime,
                              heartbeat_timeout: float) -> datetime | None:
        """When the dispatcher (and so, for a receipt, its process) was last known alive,
        if it is gone now: stopped, or silent past the heartbeat timeout.  None while it
        beats, and for an id no dispatcher ever registered (nothing is known of it)."""
        with self.transaction(read_only=True) as conn:
            row = conn.execute(select(dispatchers.c.heartbeat_at, dispatchers.c.stopped_at)
                               .where(dispatchers.c.id == dispatcher_id)).first()
        if row is None:
            return None
        if row.stopped_at is not None:
            return row.stopped_at
        silent_since = row.heartbeat_at + timedelta(seconds=heartbeat_timeout)
        return silent_since if silent_since <= now else None

    def mark_sent(self, order: ClaimedOrder, *, now: datetime, actor: str,
                  broker_orderid: str | None, outcome: str = "accepted",
                  http_status: int | None = None, message: str | None = None,
                  latency_ms: float | None = None, kind: AttemptKind = AttemptKind.SEND) -> bool:
        """SENDING/IN_DOUBT → SENT with the broker's order id.

        Returns False (and changes nothing) if the lease was lost to another dispatcher.
        """
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState(order.state), {
                "state": OrderState.SENT.value, "broker_orderid": broker_orderid,
                "attempts": orders.c.attempts + (1 if kind is AttemptKind.SEND else 0),
                "lease_token": None, "lease_expires_at": None, "last_error": None,
                "updated_at": now, "finished_at": now})
            if changed:
                self._record(conn, order.id, now=now, kind=kind, outcome=outcome, actor=actor,
                             http_status=http_status, message=message,
                             latency_ms=latency_ms, broker_orderid=broker_orderid)
                self.backend.notify(conn)  # the instrument's next order may go now
            return changed

    def mark_failed(self, order: ClaimedOrder, *, now: datetime, actor: str, retry_at: datetime,
                    outcome: str, error: str, counts_as_attempt: bool,
                    http_status: int | None = None, latency_ms: float | None = None) -> bool:
        """SENDING → PENDING, due again at ``retry_at`` (transient failure, budget left).

        ``counts_as_attempt`` is False when the request never left (connection refused):
        such failures are retried until the order expires without using the budget.
        Returns False if the lease was lost.
        """
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState.SENDING, {
                "state": OrderState.PENDING.value, "available_at": retry_at,
                "attempts": orders.c.attempts + (1 if counts_as_attempt else 0),
                "lease_token": None, "lease_expires_at": None, "lease_owner": None,
                "last_error": _truncate(error, ERROR_TEXT_LIMIT), "updated_at": now})
            if changed:
                self._record(conn, order.id, now=now, kind=AttemptKind.SEND, outcome=outcome,
                             actor=actor, http_status=http_status, message=error,
                             latency_ms=latency_ms)
            return changed

    def mark_dead(self, order: ClaimedOrder, *, now: datetime, actor: str, reason: DeadReason,
                  outcome: str, error: str, counts_as_attempt: bool = True,
                  http_status: int | None = None, latency_ms: float | None = None,
                  kind: AttemptKind = AttemptKind.SEND) -> bool:
        """SENDING/IN_DOUBT → DEAD with ``reason``.  Returns False if the lease was lost."""
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState(order.state), {
                "state": OrderState.DEAD.value, "dead_reason": reason.value,
                "attempts": orders.c.attempts + (1 if counts_as_attempt else 0),
                "lease_token": None, "lease_expires_at": None,
                "last_error": _truncate(error, ERROR_TEXT_LIMIT), "updated_at": now,
                "finished_at": now})
            if changed:
                self._record(conn, order.id, now=now, kind=kind, outcome=outcome, actor=actor,
                             http_status=http_status, message=error, latency_ms=latency_ms)
                self.backend.notify(conn)
            return changed

    def mark_in_doubt(self, order: ClaimedOrder, *, now: datetime, actor: str, outcome: str,
                      error: str, check_at: datetime, latency_ms: float | None = None,
                      http_status: int | None = None) -> bool:
        """SENDING → IN_DOUBT: the request may have reached the broker.

        The order is reconciled from ``check_at`` on and never resent blindly.  An
        ``http_status`` (a 5xx) means the API did answer: its request is over, which
        the receipt records, so the reconciler waits only the broker's settle time.
        Returns False if the lease was lost.
        """
        answered = {} if http_status is None else {
            "host_done_at": now, "host_answer_status": http_status,
            "host_answer_body": _truncate(error, ERROR_TEXT_LIMIT)}
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState.SENDING, {
                "state": OrderState.IN_DOUBT.value, "attempts": orders.c.attempts + 1,
                "available_at": check_at, "reconcile_checks": 0,
                "lease_token": None, "lease_expires_at": None,
                "last_error": _truncate(error, ERROR_TEXT_LIMIT), "updated_at": now,
                **answered})
            if changed:
                self._record(conn, order.id, now=now, kind=AttemptKind.SEND, outcome=outcome,
                             actor=actor, message=error, latency_ms=latency_ms,
                             http_status=http_status)
            return changed

    def record_late_acceptance(self, order_id: int, *, now: datetime, actor: str,
                               broker_orderid: str | None, message: str) -> None:
        """The broker accepted a request whose lease had already passed to another
        dispatcher.  The newer owner decides the state; this only keeps the evidence (the
        orderid) in the trail, so a possible duplicate can be found and cancelled."""
        with self.transaction() as conn:
            self._record(conn, order_id, now=now, kind=AttemptKind.SEND,
                         outcome="accepted_after_lease_lost", actor=actor,
                         broker_orderid=broker_orderid, message=message)

    def note_reconcile_miss(self, order: ClaimedOrder, *, now: datetime, actor: str,
                            check_at: datetime, message: str) -> bool:
        """An in-doubt check found nothing (yet): count it and look again at ``check_at``."""
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState.IN_DOUBT, {
                "reconcile_checks": orders.c.reconcile_checks + 1, "available_at": check_at,
                "lease_token": None, "lease_expires_at": None, "updated_at": now})
            if changed:
                self._record(conn, order.id, now=now, kind=AttemptKind.RECONCILE,
                             outcome="not_found_yet", actor=actor, message=message)
            return changed

    def release_to_pending(self, order: ClaimedOrder, *, now: datetime, actor: str,
                           message: str) -> bool:
        """IN_DOUBT → PENDING: the broker has no such order after every check, so
        sending it again cannot duplicate it."""
        with self.transaction() as conn:
            changed = self._mark(conn, order.id, order.lease_token, OrderState.IN_DOUBT, {
                "state": OrderState.PENDING.value, "available_at": now,
                "lease_token": None, "lease_expires_at": None, "lease_owner": None,
                "updated_at": now})
            if changed:
                self._record(conn, order.id, now=now, kind=AttemptKind.RECONCILE,
                             outcome="not_at_broker", actor=actor, message=message)
            return changed

    def bound_broker_orderids(self, orderids: list[str], *, excluding: int) -> set[str]:
        """Which of ``orderids`` are already bound to another queued order."""
        if not orderids:
            return set()
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(select(orders.c.broker_orderid).where(
                orders.c.broker_orderid.in_(orderids), orders.c.id != excluding)).scalars()
            return set(rows)

    # ------------------------------------------------------------------ recovery & expiry

    def recover_stale_sending(self, *, now: datetime, heartbeat_timeout: float,
                              check_at: datetime) -> list[int]:
        """SENDING rows whose dispatcher is gone (lease expired, or its heartbeat stale or
        missing) → IN_DOUBT when their send was stamped (the request may have reached the
        broker), straight back to PENDING when it was not (it never left).

        Returns the ids moved to IN_DOUBT, which need reconciling; empty when none.
        """
        stale_before = now - timedelta(seconds=heartbeat_timeout)
        live_owner = exists().where(
            dispatchers.c.id == orders.c.lease_owner,
            dispatchers.c.stopped_at.is_(None),
            dispatchers.c.heartbeat_at > stale_before)
        moved = []
        with self.transaction() as conn:
            stale = conn.execute(select(orders.c.id, orders.c.lease_token, orders.c.sent_at).where(
                orders.c.state == OrderState.SENDING.value,
                or_(orders.c.lease_expires_at <= now, ~live_owner))).all()
            for order_id, token, sent_at in stale:
                # Only the lease that was judged stale; a row claimed again meanwhile
                # (another process) keeps its new, live lease.
                still_stale = (orders.c.id == order_id, orders.c.lease_token == token,
                               orders.c.state == OrderState.SENDING.value)
                if sent_at is None:
                    released = conn.execute(update(orders).where(*still_stale).values(
                        state=OrderState.PENDING.value, available_at=now, lease_token=None,
                        lease_owner=None, lease_expires_at=None, updated_at=now)).rowcount
                    if released:
                        self._record(conn, order_id, now=now, kind=AttemptKind.RECOVERY,
                                     outcome="released", actor=None,
                                     message="dispatcher stopped before sending: not sent, "
                                             "queued again")
                    continue
                changed = conn.execute(update(orders).where(*still_stale).values(
                    state=OrderState.IN_DOUBT.value, attempts=orders.c.attempts + 1,
                    available_at=check_at, reconcile_checks=0, lease_token=None,
                    lease_expires_at=None, updated_at=now,
                    last_error="dispatcher stopped while the order was being sent")).rowcount
                if changed:
                    self._record(conn, order_id, now=now, kind=AttemptKind.RECOVERY,
                                 outcome="in_doubt", actor=None,
                                 message="dispatcher died or lost its lease mid-send")
                    moved.append(order_id)
        return moved

    def expire_pending(self, *, now: datetime) -> list[dict[str, Any]]:
        """PENDING rows past ``expires_at`` → DEAD (reason expired); they are not sent.

        Returns the expired rows (id, strategy, symbol) for logging; empty if none.
        """
        with self.transaction() as conn:
            rows = [dict(r) for r in conn.execute(
                select(orders.c.id, orders.c.strategy, orders.c.symbol, orders.c.created_at)
                .where(orders.c.state == OrderState.PENDING.value,
                       orders.c.expires_at <= now)).mappings()]
            expired = []
            for row in rows:
                # A row claimed meanwhile by another process is on its way: not expired.
                if conn.execute(update(orders).where(
                        orders.c.id == row["id"], orders.c.state == OrderState.PENDING.value,
                        orders.c.lease_token.is_(None)).values(
                        state=OrderState.DEAD.value, dead_reason=DeadReason.EXPIRED.value,
                        last_error="not sent: past its expiry (age limit or squareoff)",
                        updated_at=now, finished_at=now)).rowcount:
                    self._record(conn, row["id"], now=now, kind=AttemptKind.EXPIRY,
                                 outcome=DeadReason.EXPIRED.value, actor=None,
                                 message="not sent: past its expiry (age limit or squareoff)")
                    expired.append(row)
        return expired

    # ------------------------------------------------------------------ dispatchers

    def register_dispatcher(self, dispatcher_id: str, *, host: str, pid: int,
                            now: datetime) -> None:
        with self.transaction() as conn:
            conn.execute(insert(dispatchers).values(
                id=dispatcher_id, host=host, pid=pid, started_at=now, heartbeat_at=now))

    def heartbeat(self, dispatcher_id: str, *, now: datetime) -> None:
        """Prove the dispatcher is alive; its leases stay valid while this runs."""
        with self.transaction() as conn:
            conn.execute(update(dispatchers).where(dispatchers.c.id == dispatcher_id)
                         .values(heartbeat_at=now))

    def stop_dispatcher(self, dispatcher_id: str, *, now: datetime) -> None:
        with self.transaction() as conn:
            conn.execute(update(dispatchers).where(dispatchers.c.id == dispatcher_id)
                         .values(stopped_at=now, heartbeat_at=now))

    def watch_facts(self) -> tuple[datetime | None, int]:
        """For the watchdog: when the oldest pending order was queued (None if none),
        and how many orders still owe a delivery (pending, sending, in doubt)."""
        with self.transaction(read_only=True) as conn:
            oldest = conn.execute(select(func.min(orders.c.created_at)).where(
                orders.c.state == OrderState.PENDING.value)).scalar()
            open_work = conn.execute(select(func.count()).select_from(orders).where(
                orders.c.state.in_([OrderState.PENDING.value, OrderState.SENDING.value,
                                    OrderState.IN_DOUBT.value]))).scalar_one()
        return oldest, open_work

    def live_dispatchers(self, *, now: datetime,
                         heartbeat_timeout: float) -> list[dict[str, Any]]:
        """Dispatchers of any process that have not stopped and beat recently."""
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(dispatchers.c.id, dispatchers.c.host, dispatchers.c.pid,
                       dispatchers.c.heartbeat_at).where(
                    dispatchers.c.stopped_at.is_(None),
                    dispatchers.c.heartbeat_at > now - timedelta(seconds=heartbeat_timeout))
                .order_by(dispatchers.c.id)).mappings().all()
        return [dict(row) for row in rows]

    # ------------------------------------------------------------------ reading

    def depth(self) -> dict[str, dict[str, int]]:
        """Counts per state and lane, e.g. ``{"pending": {"smart": 1, "regular": 4}}``.

        Every state appears, with zeros, so a dashboard need not guess.
        """
        result = {state.value: {lane.value: 0 for lane in Lane} for state in OrderState}
        with self.transaction(read_only=True) as conn:
            for state, lane, count in conn.execute(
                    select(orders.c.state, orders.c.lane, func.count())
                    .group_by(orders.c.state, orders.c.lane)):
                result[state][lane] = count
        return result

    def get_order(self, order_id: int, *, with_key_token: bool = False) -> dict[str, Any] | None:
        """One order as a dict, or None.  The encrypted key is left out unless asked
        for (only to show it masked)."""
        with self.transaction(read_only=True) as conn:
            row = conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
            if row is None:
                return None
            data = _public(row)
            if with_key_token:
                data["apikey_token"] = row["apikey_token"]
            return data

    def list_orders(self, *, states: list[str] | None = None, strategy: str | None = None,
                    symbol: str | None = None, reason: str | None = None,
                    since: datetime | None = None, until: datetime | None = None,
                    limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Orders, newest first, filtered by any of the arguments; empty list if none."""
        query = (select(orders).where(*_filters(states, strategy, symbol, reason, since, until))
                 .order_by(orders.c.id.desc()).limit(limit).offset(offset))
        with self.transaction(read_only=True) as conn:
            return [_public(r) for r in conn.execute(query).mappings()]

    def count_orders(self, *, states: list[str] | None = None, strategy: str | None = None,
                     symbol: str | None = None, reason: str | None = None,
                     since: datetime | None = None, until: datetime | None = None) -> int:
        """How many orders ``list_orders`` would page through with the same filters."""
        query = select(func.count()).select_from(orders).where(
            *_filters(states, strategy, symbol, reason, since, until))
        with self.transaction(read_only=True) as conn:
            return conn.execute(query).scalar_one()

    def stats(self, *, now: datetime, day_start: datetime) -> dict[str, Any]:
        """Depth per state and lane, oldest pending order's age, orders sent since
        ``day_start``, and dead orders awaiting a decision."""
        depth = self.depth()
        with self.transaction(read_only=True) as conn:
            oldest = conn.execute(select(func.min(orders.c.created_at)).where(
                orders.c.state == OrderState.PENDING.value)).scalar()
            sent_by_lane = dict(conn.execute(
                select(orders.c.lane, func.count()).where(
                    orders.c.state == OrderState.SENT.value,
                    orders.c.finished_at >= day_start).group_by(orders.c.lane)).all())
        by_lane = {lane.value: sent_by_lane.get(lane.value, 0) for lane in Lane}
        return {
            "depth": depth,
            "oldest_pending_age_seconds":
                round((now - oldest).total_seconds(), 3) if oldest else None,
            "sent_today": sum(by_lane.values()),
            "sent_today_by_lane": by_lane,
            "dead": sum(depth[OrderState.DEAD.value].values()),
        }

    def record_sample(self, *, now: datetime, every_seconds: float) -> bool:
        """Store the depth per state unless a sample younger than ``every_seconds``
        exists (several dispatchers share the work); drop samples past retention.
        True when a sample was written."""
        with self.transaction() as conn:
            newest = conn.execute(select(func.max(samples.c.at))).scalar()
            if newest is not None and newest > now - timedelta(seconds=every_seconds):
                return False
            counts = dict(conn.execute(select(orders.c.state, func.count()).where(
                orders.c.state.in_(SAMPLED_STATES)).group_by(orders.c.state)).all())
            conn.execute(insert(samples).values(
                at=now, **{state: counts.get(state, 0) for state in SAMPLED_STATES}))
            conn.execute(samples.delete().where(samples.c.at < now - SAMPLE_RETENTION))
            return True

    def chart_facts(self, *, since_samples: datetime, since_sends: datetime,
                    since_latency: datetime) -> dict[str, list]:
        """What the admin page's pictures are drawn from: depth samples, send moments
        per account lane, and (sent at, queued at) of orders the broker accepted."""
        with self.transaction(read_only=True) as conn:
            depth = [dict(row) for row in conn.execute(
                select(samples).where(samples.c.at >= since_samples)
                .order_by(samples.c.at)).mappings()]
            sends = conn.execute(
                select(attempts.c.at, orders.c.lane_key).join(
                    orders, orders.c.id == attempts.c.order_id).where(
                    attempts.c.kind == AttemptKind.SEND.value,
                    attempts.c.at >= since_sends)).all()
            accepted = conn.execute(
                select(attempts.c.at, orders.c.created_at).join(
                    orders, orders.c.id == attempts.c.order_id).where(
                    attempts.c.kind == AttemptKind.SEND.value,
                    attempts.c.outcome == "accepted",
                    attempts.c.at >= since_latency)).all()
        return {"depth": depth, "sends": [tuple(row) for row in sends],
                "accepted": [tuple(row) for row in accepted]}

    def held_orders(self, *, now: datetime, settle_seconds: float) -> list[dict[str, Any]]:
        """Orders that hold their instrument: on the wire, in doubt (also dead in doubt,
        waiting for the operator), or a smart order whose position is still settling."""
        holding = or_(
            orders.c.state.in_([OrderState.SENDING.value, OrderState.IN_DOUBT.value]),
            and_(orders.c.state == OrderState.DEAD.value,
                 orders.c.dead_reason == DeadReason.IN_DOUBT.value),
            and_(orders.c.state == OrderState.SENT.value, orders.c.lane == Lane.SMART.value,
                 orders.c.broker_orderid.is_not(None),
                 orders.c.dispatched_at > now - timedelta(seconds=settle_seconds)))
        with self.transaction(read_only=True) as conn:
            return [_public(row) for row in conn.execute(
                select(orders).where(holding).order_by(orders.c.id).limit(200)).mappings()]

    # ------------------------------------------------------------------ operator actions

    def replay(self, order_id: int, *, now: datetime, actor: str,
               max_age_seconds: float | None, deadline: datetime | None = None) -> bool:
        """DEAD → PENDING, due now, with a fresh expiry (age limit, and ``deadline`` such
        as today's squareoff) and a fresh retry budget: the same order goes through the
        dispatcher again (rate limits, per-instrument order, the same outcome rules).
        Returns False if the order is not dead."""
        return self._operator_move(
            order_id, OrderState.DEAD, OrderState.PENDING, now=now, actor=actor,
            outcome="replayed", message=None, values={
                "available_at": now, "dead_reason": None, "finished_at": None,
                "reconcile_checks": 0, "lease_owner": None, "attempts": 0,
                "expires_at": _expiry(now, max_age_seconds, deadline)})

    def settle_placed(self, order_id: int, *, now: datetime, actor: str,
                      broker_orderid: str, note: str | None) -> bool:
        """The operator saw it at the broker: IN_DOUBT (not being checked right now) or
        DEAD in doubt → SENT with the broker's orderid.  False if the order is in
        neither, or the orderid is already bound to another queued order."""
        with self.transaction() as conn:
            taken = conn.execute(select(orders.c.id).where(
                orders.c.broker_orderid == broker_orderid, orders.c.id != order_id)).first()
            if taken is not None:
                return False
            changed = conn.execute(update(orders).where(
                orders.c.id == order_id, orders.c.lease_token.is_(None), _SETTLEABLE,
            ).values(state=OrderState.SENT.value, broker_orderid=broker_orderid,
                     dead_reason=None, finished_at=now, updated_at=now)).rowcount == 1
            if changed:
                self._record(conn, order_id, now=now, kind=AttemptKind.OPERATOR,
                             outcome="settled_placed", actor=actor, message=note,
                             broker_orderid=broker_orderid)
                self.backend.notify(conn)  # the instrument's next order may go now
            return changed

    def settle_not_placed(self, order_id: int, *, now: datetime, actor: str,
                          note: str | None, max_age_seconds: float | None,
                          deadline: datetime | None = None) -> bool:
        """The operator saw it is not at the broker: IN_DOUBT (not being checked right
        now) or DEAD in doubt → PENDING, sent again like a replay (fresh expiry and
        retry budget).  False if the order is in neither."""
        with self.transaction() as conn:
            changed = conn.execute(update(orders).where(
                orders.c.id == order_id, orders.c.lease_token.is_(None), _SETTLEABLE,
            ).values(state=OrderState.PENDING.value, available_at=now, dead_reason=None,
                     finished_at=None, reconcile_checks=0, lease_owner=None, attempts=0,
                     expires_at=_expiry(now, max_age_seconds, deadline),
                     updated_at=now)).rowcount == 1
            if changed:
                self._record(conn, order_id, now=now, kind=AttemptKind.OPERATOR,
                             outcome="settled_not_placed", actor=actor, message=note)
                self.backend.notify(conn)
            return changed

    def dismiss(self, order_id: int, *, now: datetime, actor: str, note: str | None) -> bool:
        """DEAD → DISMISSED; the row and its trail stay for the record.  False if not dead."""
        return self._operator_move(order_id, OrderState.DEAD, OrderState.DISMISSED, now=now,
                                   actor=actor, outcome="dismissed", message=note,
                                   values={"finished_at": now})

    def cancel(self, order_id: int, *, now: datetime, actor: str, note: str | None) -> bool:
        """PENDING → CANCELLED before it is sent.  False if it is not pending (a claimed
        order is already on its way and can no longer be stopped here)."""
        return self._operator_move(order_id, OrderState.PENDING, OrderState.CANCELLED,
                                   now=now, actor=actor, outcome="cancelled", message=note,
                                   values={"finished_at": now})

    def _operator_move(self, order_id: int, from_state: OrderState, to_state: OrderState, *,
                       now: datetime, actor: str, outcome: str, message: str | None,
                       values: dict[str, Any]) -> bool:
        with self.transaction() as conn:
            changed = conn.execute(update(orders).where(
                orders.c.id == order_id, orders.c.state == from_state.value,
                orders.c.lease_token.is_(None),
            ).values(state=to_state.value, updated_at=now, **values)).rowcount == 1
            if changed:
                self._record(conn, order_id, now=now, kind=AttemptKind.OPERATOR,
                             outcome=outcome, actor=actor, message=message)
                self.backend.notify(conn)
            return changed

    def later_orders_gone_ahead(self, order_id: int) -> list[dict[str, Any]]:
        """Orders for the same instrument queued after ``order_id`` that are already sent,
        on the wire or in doubt: replaying ``order_id`` now would put it behind them at
        the broker."""
        earlier = aliased(orders)
        query = select(orders).where(
            orders.c.instrument == select(earlier.c.instrument)
            .where(earlier.c.id == order_id).scalar_subquery(),
            orders.c.id > order_id,
            orders.c.state.in_([OrderState.SENT.value, OrderState.SENDING.value,
                                OrderState.IN_DOUBT.value])).order_by(orders.c.id)
        with self.transaction(read_only=True) as conn:
            return [_public(r) for r in conn.execute(query).mappings()]

    def purge_finished(self, *, older_than: datetime) -> int:
        """Delete sent, dismissed and cancelled orders finished before ``older_than``,
        with their attempt trails.  Open and dead orders are never touched (the triggers
        would refuse).  Returns how many orders were removed."""
        finished = [OrderState.SENT.value, OrderState.DISMISSED.value,
                    OrderState.CANCELLED.value]
        with self.transaction() as conn:
            ids = list(conn.execute(select(orders.c.id).where(
                orders.c.state.in_(finished), orders.c.finished_at < older_than)).scalars())
            for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
                conn.execute(orders.delete().where(orders.c.id.in_(chunk)))
                conn.execute(attempts.delete().where(attempts.c.order_id.in_(chunk)))
            return len(ids)

    def list_attempts(self, order_id: int) -> list[dict[str, Any]]:
        """The attempt trail of one order, oldest first; empty list if none."""
        with self.transaction(read_only=True) as conn:
            return [dict(r) for r in conn.execute(
                select(attempts).where(attempts.c.order_id == order_id)
                .order_by(attempts.c.id)).mappings()]


def _is_exit(lane: Lane, payload: dict[str, Any]) -> bool:
    """A smart order whose target position is flat: it reduces or closes a position."""
    if lane is not Lane.SMART:
        return False
    try:
        return int(str(payload.get("position_size", "")).strip()) == 0
    except ValueError:
        return False


def _expiry(now: datetime, max_age_seconds: float | None,
            deadline: datetime | None) -> datetime | None:
    candidates = [now + timedelta(seconds=max_age_seconds)] if max_age_seconds else []
    if deadline is not None and deadline > now:
        candidates.append(deadline)
    return min(candidates) if candidates else None


def _filters(states, strategy, symbol, reason, since, until) -> list:
    conditions = []
    if states:
        conditions.append(orders.c.state.in_(states))
    if strategy:
        conditions.append(orders.c.strategy == strategy)
    if symbol:
        conditions.append(orders.c.symbol == symbol)
    if reason:
        conditions.append(orders.c.dead_reason == reason)
    if since:
        conditions.append(orders.c.created_at >= since)
    if until:
        conditions.append(orders.c.created_at < until)
    return conditions


#: Orders an operator may settle by hand: held in doubt, or dead-lettered in doubt.
_SETTLEABLE = or_(orders.c.state == OrderState.IN_DOUBT.value,
                  and_(orders.c.state == OrderState.DEAD.value,
                       orders.c.dead_reason == DeadReason.IN_DOUBT.value))


def _add_missing_columns(conn: Connection) -> None:
    """A queue database from an earlier version gains the columns and indexes added
    since (columns all nullable): ``create_all`` makes missing tables only."""
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
        if table is orders and "sent_at" not in present:
            # Earlier versions kept no send stamp: an order they left in flight may have
            # been sent, so it counts as stamped at its dispatch time.
            conn.execute(update(orders).where(
                orders.c.state.in_([OrderState.SENDING.value, OrderState.IN_DOUBT.value]),
            ).values(sent_at=orders.c.dispatched_at))
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _claimed(row, token: str, state: str, dispatched_at: datetime | None) -> ClaimedOrder:
    return ClaimedOrder(
        id=row["id"], endpoint=row["endpoint"], payload=json.loads(row["payload"]),
        apikey_token=row["apikey_token"], lane=row["lane"], lane_key=row["lane_key"],
        state=state, attempts=row["attempts"], reconcile_checks=row["reconcile_checks"],
        lease_token=token, dispatched_at=dispatched_at, created_at=row["created_at"],
        receipt=Receipt(bool(row["fence_expected"]), row["host_instance"],
                        row["host_received_at"], row["host_done_at"],
                        row["host_answer_status"], row["host_answer_body"]))


def _public(row) -> dict[str, Any]:
    data = {k: v for k, v in dict(row).items() if k not in ("apikey_token", "lease_token")}
    data["payload"] = json.loads(data["payload"])
    return data


# --------------------------------------------------------------------------- module face
#
# OpenAlgo's database modules expose plain functions over a module-level engine; these
# keep the seed proposal's names (enqueue_order, mark_sent, ...) over the configured store.

_store: OffloadedCalls | None = None
_store_lock = threading.Lock()


class _NoThreadSession:
    """OpenAlgo releases every module's ``db_session`` per thread after a request or a
    background job (utils/db_sessions.py).  The queue holds no session between calls:
    each operation borrows a connection and returns it.  So there is nothing to remove."""

    def remove(self) -> None:
        """Nothing is held per thread."""


db_session = _NoThreadSession()


def configure(url: str | None = None, *, busy_timeout_ms: int = 5000) -> QueueStore:
    """Point the module at ``url`` (default: ``ORDER_QUEUE_DATABASE_URL`` or
    db/order_queue.db) and return the store.  Replaces any previous store.

    The store is handed out wrapped so that, under a green server (gunicorn + eventlet),
    its calls run off the event loop (``order_queue_green``); it is used the same way."""
    global _store
    url = url or os.getenv(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    with _store_lock:
        if _store is not None:
            _store.dispose()
        _store = OffloadedCalls(QueueStore(url, busy_timeout_ms=busy_timeout_ms),
                                inline=frozenset({"start_listener", "transaction"}))
    return _store


def get_store() -> QueueStore:
    """The configured store, configuring from the environment on first use."""
    if _store is None:
        configure()
    return _store


def init_db() -> None:
    """Start-up DB init entry (beside OpenAlgo's others): create the queue schema."""
    get_store().create_schema()


def enqueue_order(endpoint: str, payload: dict[str, Any], *, now: datetime | None = None,
                  max_age_seconds: float | None = None,
                  deadline: datetime | None = None) -> int:
    """Commit an order as PENDING; see ``QueueStore.enqueue``."""
    return get_store().enqueue(endpoint, payload, now=now or utcnow(),
                               max_age_seconds=max_age_seconds, deadline=deadline)


def mark_processing(owner: str, *, now: datetime, lease_seconds: float,
                    limits: RateLimits) -> ClaimResult:
    """The seed's name for claiming: lease the next sendable order as SENDING."""
    return get_store().claim_next(owner, now=now, lease_seconds=lease_seconds, limits=limits)


def mark_sent(order: ClaimedOrder, **kwargs) -> bool:
    return get_store().mark_sent(order, **kwargs)


def mark_failed(order: ClaimedOrder, **kwargs) -> bool:
    return get_store().mark_failed(order, **kwargs)


def recover_stale_processing_orders(*, now: datetime, heartbeat_timeout: float,
                                    check_at: datetime) -> list[int]:
    """Unlike the seed, stale in-flight orders become IN_DOUBT, never PENDING."""
    return get_store().recover_stale_sending(now=now, heartbeat_timeout=heartbeat_timeout,
                                             check_at=check_at)


def queue_depth() -> dict[str, dict[str, int]]:
    return get_store().depth()


def get_failed_orders(limit: int = 100) -> list[dict[str, Any]]:
    """Dead-lettered orders awaiting a decision, newest first."""
    return get_store().list_orders(states=[OrderState.DEAD.value], limit=limit)
