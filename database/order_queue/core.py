"""``StoreCore``: one database and its one transaction gate, shared by every part of the store.

Each part of ``QueueStore`` is a ``StorePart`` holding the one core: it reaches the
database only through ``transaction`` (or ``_storage_errors`` around a backend's own
statement), and writes the attempt trail only through ``_record``, so transaction
discipline and the record are kept in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from database.order_queue.backends import backend_for
from database.order_queue.disk_reserve import is_disk_full
from database.order_queue.model import (
    DEFAULT_BUSY_TIMEOUT_MS,
    MESSAGE_TEXT_LIMIT,
    AttemptKind,
    QueueStorageError,
    attempts,
    orders,
    truncate,
    utcnow,
)

#: Built once, like the order insert (``backends``).
_INSERT_ATTEMPT = attempts.insert()


class StoreCore:
    """The engine, the backend, the transaction gate and the attempt trail."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        disk_reserve_bytes: int = 0,
    ):
        self.backend = backend_for(url, busy_timeout_ms, disk_reserve_bytes)
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
        assert dbapi is not None  # a created engine has loaded its driver module
        try:
            if writing:
                self.backend.check_writable(self.engine)
            yield
        except (SQLAlchemyError, dbapi.Error) as exc:
            if writing and isinstance(exc, (OperationalError, dbapi.OperationalError)):
                self.engine.dispose()
            if is_disk_full(exc):
                self.backend.on_disk_full(utcnow())
            raise QueueStorageError(str(getattr(exc, "orig", None) or exc)) from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def _move(
        self,
        conn: Connection,
        order_id: int,
        where: Iterable[ColumnElement[bool]],
        values: dict[str, Any],
        **trail: Any,
    ) -> bool:
        """Change one order if ``where`` still holds of it and, if it did, append the
        trail row (``_record``'s arguments), in the caller's transaction.  False, and
        nothing written, when it no longer held (another process moved the order)."""
        changed = (
            conn.execute(
                update(orders).where(orders.c.id == order_id, *where).values(**values)
            ).rowcount
            == 1
        )
        if changed:
            self._record(conn, order_id, **trail)
        return changed

    def _record(
        self,
        conn: Connection,
        order_id: int,
        *,
        now: datetime,
        kind: AttemptKind,
        outcome: str,
        actor: str | None,
        http_status: int | None = None,
        message: str | None = None,
        latency_ms: float | None = None,
        broker_orderid: str | None = None,
    ) -> None:
        """One row of the append-only attempt trail, in the caller's transaction."""
        conn.execute(
            _INSERT_ATTEMPT,
            {
                "order_id": order_id,
                "at": now,
                "kind": kind.value,
                "outcome": outcome,
                "http_status": http_status,
                "message": truncate(message, MESSAGE_TEXT_LIMIT),
                "latency_ms": latency_ms,
                "actor": actor,
                "broker_orderid": broker_orderid,
            },
        )


class StorePart:
    """One concept's operations (claims, lifecycle marks, receipts, ...) over the store's
    shared core, which it holds rather than is: parts never call each other, and
    everything they may touch of the database is named here."""

    def __init__(self, core: StoreCore):
        self.backend = core.backend
        self.engine = core.engine
        self.transaction = core.transaction
        self._storage_errors = core._storage_errors
        self._record = core._record
        self._move = core._move
