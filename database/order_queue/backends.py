"""The two storage backends behind one interface: SQLite (embedded default,
``backend_sqlite.py``) and PostgreSQL (``backend_postgres.py``).

Each backend class owns its dialect: connection set-up, how a write transaction and a
send stamp lock, the shared clock, wake-ups across processes, and the triggers that
keep the lifecycle's rules in the database itself (allowed state changes, write-once
identity columns, no deletion of an order that still owes a delivery, an append-only
attempt trail).  Callers never branch on the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from database.order_queue.backend_postgres import PostgresBackend
from database.order_queue.backend_sqlite import SqliteBackend
from database.order_queue.model import DATABASE_URL_VARIABLE, DEFAULT_BUSY_TIMEOUT_MS


class Backend(Protocol):
    """What the store asks of a database kind; one small class per kind, each in its module."""

    #: Processes on several machines may share it (their own clocks may then differ).
    spans_machines: bool

    def create_engine(self, url: str) -> Engine:
        """The engine, with the kind's connection settings."""

    def prepare_storage(self, engine: Engine) -> None:
        """Make room for the database before the schema (a folder, a disk reserve)."""

    def lock_schema(self, conn: Connection) -> None:
        """Serialise schema creation across processes starting at once."""

    def create_triggers(self, conn: Connection) -> None:
        """The write-once rules, in the database itself."""

    def check_writable(self, engine: Engine) -> None:
        """Raise before a write that cannot be stored where it is meant to be."""

    def check_room(self) -> None:
        """Raise ``QueueStorageError`` while new orders must be refused (a full disk)."""

    def on_disk_full(self, now: datetime) -> None:
        """A write was refused for a full disk."""

    def storage_warning(self) -> str | None:
        """Why new orders are refused now, or None."""

    def insert_order(self, engine: Engine, row: dict[str, Any]) -> int:
        """Commit one new order row; its id."""

    def lock_account_lane(self, conn: Connection, lane_key: str) -> None:
        """Serialise send stamps of one account lane until the transaction ends."""

    def shared_now(self, conn: Connection) -> datetime:
        """The clock every process sharing the database agrees on."""

    def claim_lock_options(self) -> dict:
        """``with_for_update`` options for claims, or {} where writes are serialised."""

    def notify(self, conn: Connection) -> None:
        """Wake dispatchers in other processes once the transaction commits."""

    def start_listener(
        self, engine: Engine, wake: Callable[[], None], stop: threading.Event
    ) -> threading.Thread | None:
        """Call ``wake`` on other processes' notifications, until ``stop``."""


def backend_for(
    url: str, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, disk_reserve_bytes: int = 0
) -> Backend:
    """The backend for ``url``: SQLite (a file of this machine) or PostgreSQL."""
    if url.startswith("sqlite"):
        return SqliteBackend(url, busy_timeout_ms, disk_reserve_bytes)
    if url.startswith(("postgresql", "postgres://")):
        return PostgresBackend()
    raise ValueError(f"{DATABASE_URL_VARIABLE}: unsupported database URL scheme in {url!r}")
