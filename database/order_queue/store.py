"""``QueueStore``: one database's schema, and its operations grouped by concept.

A store holds one ``StoreCore`` (the engine, the transaction gate, the attempt trail)
and, over it, one part per concept, each in its own module with its statements:

- ``claims``: which order may go now, its lease, and its send stamp;
- ``intake``: enqueue, committed before the webhook is answered;
- ``lifecycle``: the marks that move a held order on (sent, retry, dead, in doubt);
- ``recovery``: orders whose dispatcher is gone, and expiry;
- ``receipts``: what the host's door records of a request, and the answer kept;
- ``operator``: replay, settle, dismiss, cancel, purge;
- ``dispatchers``: the dispatcher registry and heartbeats;
- ``samples``: depth over time and the charts' facts;
- ``reads``: depth, listings, stats, the trail;
- ``squareoffs``: the squareoff log;
- ``alert_keys``: the keys alerts carried, so a resent alert is queued once;
- ``verdicts``: the broker's verdict on sent orders (rejected after "sent").

Callers name the part: ``store.claims.claim_next(...)``, ``store.reads.depth()``.  Built
with ``offload=True`` (the runtime does), each part's calls run off a green server's
event loop, taking turns on one green lock (``green.py``).  Dialect differences stay in
``backends``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection

from database.order_queue.alert_keys import AlertKeys
from database.order_queue.api_keys import CredentialsUnavailable, KeySealing
from database.order_queue.claims import Claims
from database.order_queue.core import StoreCore, StorePart
from database.order_queue.dispatcher_registry import DispatcherRegistry
from database.order_queue.green import GreenTurns, offloaded
from database.order_queue.intake import Intake
from database.order_queue.lifecycle import Lifecycle
from database.order_queue.model import (
    DEFAULT_BUSY_TIMEOUT_MS,
    PEPPER_CHECK,
    PEPPER_CHECK_TEXT,
    Base,
    OrderState,
    QueueStorageError,
    meta,
    orders,
)
from database.order_queue.operator_moves import OperatorMoves
from database.order_queue.reads import Reads
from database.order_queue.receipts import Receipts
from database.order_queue.recovery import Recovery
from database.order_queue.samples import Samples
from database.order_queue.squareoff_log import SquareoffLog
from database.order_queue.verdicts import Verdicts

T = TypeVar("T")


class QueueStore:
    """All queue operations against one database, one part per concept."""

    def __init__(
        self,
        url: str,
        *,
        sealing: KeySealing,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        disk_reserve_bytes: int = 0,
        offload: bool = False,
    ):
        core = StoreCore(
            url, busy_timeout_ms=busy_timeout_ms, disk_reserve_bytes=disk_reserve_bytes
        )
        turns = GreenTurns() if offload else None

        def part(target: T) -> T:
            return offloaded(target, turns) if turns is not None else target

        self.core = core
        self.url = url
        self.engine = core.engine
        self.backend = core.backend
        self.sealing = sealing
        self.schema = part(Schema(core, sealing))
        self.claims = part(Claims(core))
        self.intake = part(Intake(core, sealing))
        self.lifecycle = part(Lifecycle(core))
        self.recovery = part(Recovery(core))
        self.receipts = part(Receipts(core))
        self.operator_moves = part(OperatorMoves(core))
        self.dispatcher_registry = part(DispatcherRegistry(core))
        self.samples = part(Samples(core))
        self.reads = part(Reads(core))
        self.squareoff_log = part(SquareoffLog(core))
        self.alert_keys = part(AlertKeys(core))
        self.verdicts = part(Verdicts(core))

    def transaction(self, *, read_only: bool = False):
        """The core's transaction gate, for a test or tool that must reach a row directly."""
        return self.core.transaction(read_only=read_only)

    def storage_warning(self) -> str | None:
        """Why new orders are refused now (a full disk), or None."""
        return self.backend.storage_warning()

    def start_listener(self, wake: Callable[[], None], stop: threading.Event):
        """Cross-process wake-ups where the backend has them (PostgreSQL LISTEN)."""
        return self.backend.start_listener(self.core.engine, wake, stop)

    def dispose(self) -> None:
        self.core.dispose()


class Schema(StorePart):
    """The schema and its upgrades, and the pepper check sealed into the database."""

    def __init__(self, core: StoreCore, sealing: KeySealing):
        super().__init__(core)
        self.sealing = sealing

    def create(self) -> None:
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

    def check_pepper(self) -> bool:
        """True when this process's ``API_KEY_PEPPER`` is the one the stored API keys
        were sealed with.  The first call on a database seals a check value with the
        current pepper; later ones must be able to open it.  A changed pepper would
        make every queued key unreadable (each order dead as ``credentials``), so the
        caller holds the queue instead of sending."""
        with self.transaction() as conn:
            sealed = conn.execute(select(meta.c.value).where(meta.c.key == PEPPER_CHECK)).scalar()
            if sealed is None:
                conn.execute(
                    meta.insert().values(
                        key=PEPPER_CHECK, value=self.sealing.seal(PEPPER_CHECK_TEXT)
                    )
                )
                return True
        try:
            return self.sealing.unseal(sealed) == PEPPER_CHECK_TEXT
        except CredentialsUnavailable:
            return False


def _add_missing_columns(conn: Connection) -> None:
    """A queue database from an earlier version gains the columns and indexes added
    since (columns all nullable): ``create_all`` makes missing tables only."""
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        if table is orders and "fence_expected" in present and "door_expected" not in present:
            # Earlier versions named the door "fence"; the flag keeps its values.
            conn.exec_driver_sql(
                f"ALTER TABLE {orders.name} RENAME COLUMN fence_expected TO door_expected"
            )
            present = (present - {"fence_expected"}) | {"door_expected"}
        if table is orders and "dispatched_at" in present and "claimed_at" not in present:
            # Earlier versions kept the claim and the send in one column, last set by the
            # send stamp; it now counts claims only, and ``sent_at`` is the send.
            conn.exec_driver_sql(
                f"ALTER TABLE {orders.name} RENAME COLUMN dispatched_at TO claimed_at"
            )
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_order_queue_dispatched")
            present = (present - {"dispatched_at"}) | {"claimed_at"}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
        if table is orders and "sent_at" not in present:
            # Earlier versions kept no send stamp: an order they left on the wire may have
            # been sent, so it counts as stamped at its claim time.
            conn.execute(
                update(orders)
                .where(
                    orders.c.state.in_([OrderState.SENDING.value, OrderState.IN_DOUBT.value]),
                )
                .values(sent_at=orders.c.claimed_at)
            )
        if table is orders and "receipt_sent_at" not in present:
            # Earlier versions cleared the receipt at every claim: one present is the
            # current send's.
            conn.execute(
                update(orders)
                .where(orders.c.host_received_at.is_not(None))
                .values(receipt_sent_at=orders.c.sent_at)
            )
        for index in table.indexes:
            index.create(conn, checkfirst=True)
