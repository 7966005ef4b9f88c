"""``QueueStore``: one database's schema, and every operation in one object.

The operations live in five parts, one idea each, so callers see one object
(``store.claim_next``, ``store.depth``): the claim path (``claims``), the write path
(``writes``), the operator's moves (``operator_moves``), the read side (``reads``) and the
squareoff log (``squareoff_log``).  Each part keeps its statements named and together at
its top, and stands on ``StoreCore`` (``core``): it reaches the database only through
``transaction`` (or ``_storage_errors`` around a backend's own statement) and writes the
trail only through ``_record``, so transaction discipline is reviewed in one place.
Dialect differences stay in ``backends``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection

from database.order_queue import api_keys
from database.order_queue.claims import ClaimPath
from database.order_queue.model import (
    PEPPER_CHECK,
    PEPPER_CHECK_TEXT,
    Base,
    OrderState,
    QueueStorageError,
    meta,
    orders,
)
from database.order_queue.operator_moves import OperatorMoves
from database.order_queue.reads import OrderReads
from database.order_queue.squareoff_log import SquareoffLog
from database.order_queue.writes import OrderWrites


class QueueStore(ClaimPath, OrderWrites, OperatorMoves, OrderReads, SquareoffLog):
    """All queue operations against one database: its parts over ``StoreCore``."""

    def storage_warning(self) -> str | None:
        """Why new orders are refused now (a full disk), or None."""
        return self.backend.storage_warning()

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
                    meta.insert().values(key=PEPPER_CHECK, value=api_keys.seal(PEPPER_CHECK_TEXT))
                )
                return True
        try:
            return api_keys.unseal(sealed) == PEPPER_CHECK_TEXT
        except api_keys.CredentialsUnavailable:
            return False


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
            conn.execute(
                update(orders)
                .where(
                    orders.c.state.in_([OrderState.SENDING.value, OrderState.IN_DOUBT.value]),
                )
                .values(sent_at=orders.c.dispatched_at)
            )
        for index in table.indexes:
            index.create(conn, checkfirst=True)
