"""SQLite, the embedded default: one file of its own, WAL, ``synchronous=FULL``, the
write-once rules as triggers (``backend_rules.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from database.order_queue.backend_rules import (
    ATTEMPTS_ERROR,
    DEAD_TO_SENT_NEEDS,
    IDENTITY_ERROR,
    INSERT_ORDER,
    OWING_DELETE_ERROR,
    OWING_SQL,
    REPLACE_ERROR,
    TRANSITION_ERROR,
    TRANSITIONS_SQL,
)
from database.order_queue.disk_reserve import DiskReserve
from database.order_queue.model import (
    DEFAULT_BUSY_TIMEOUT_MS,
    IDENTITY_COLUMNS,
    QueueStorageError,
    utcnow,
)
from utils.logging import get_logger

logger = get_logger(__name__)

#: The WAL is cut back to this size after each checkpoint (``journal_size_limit``).
WAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024


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
        cursor.execute(
            self.sql,
            [
                row[name] if process is None else process(row[name])
                for name, process in zip(self.names, self.processors, strict=False)
            ],
        )
        return cursor.lastrowid


class SqliteBackend:
    """Embedded default: one file of its own, WAL, ``synchronous=FULL``.

    Every write transaction starts with ``BEGIN IMMEDIATE`` so a read-then-write claim
    takes the write lock up front and waits on ``busy_timeout`` instead of failing with
    "database is locked" when another connection wrote in between (docs/design.md,
    "Pitfalls").  That needs pysqlite's own transaction handling off
    (``isolation_level=None``).
    """

    name = "sqlite"

    def __init__(
        self, url: str, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, disk_reserve_bytes: int = 0
    ):
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        self.path = os.path.abspath(path) if path and not path.startswith(":memory:") else None
        self.busy_timeout_ms = busy_timeout_ms
        self.reserve = DiskReserve(self.path, disk_reserve_bytes) if self.path else None
        self._file_identity: tuple[int, int] | None = None  # (device, inode)
        self._insert_order: _DriverInsert | None = None

    def insert_order(self, engine: Engine, row: dict[str, Any]) -> int:
        """The enqueue's transaction: ``INSERT_ORDER``, compiled once, between BEGIN
        IMMEDIATE and COMMIT on the driver's own connection from the pool.  It still
        pays: 0.34 ms p50 against 0.48 ms for the same row through SQLAlchemy Core's
        transaction on the same file (0.70x; ``bench/run.py --only enqueue``, 3 Dec 2026),
        where the fsync'd commit is all an enqueue has to pay."""
        if self._insert_order is None:
            self._insert_order = _DriverInsert(INSERT_ORDER, sorted(row), engine.dialect)
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                order_id = self._insert_order.run(cursor, row)
                cursor.execute("COMMIT")
            except BaseException:
                driver_connection = connection.driver_connection
                assert driver_connection is not None  # a checked-out connection has one
                if driver_connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            return order_id
        finally:
            connection.close()

    def create_engine(self, url: str) -> Engine:
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": self.busy_timeout_ms / 1000}
        )
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
            # delete guard sees that delete too.  (The insert guards below hold for any
            # connection, with or without this.)
            cursor.execute("PRAGMA recursive_triggers=ON")
            # After each checkpoint the WAL is cut back to this size: under a steady load
            # it cannot keep the size of its busiest moment for ever.
            cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
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
            assert self.reserve is not None  # made whenever there is a path
            self.reserve.keep()

    def check_room(self) -> None:
        """Refuse a new order while the disk is full (``disk_reserve``): what room
        there is belongs to the orders already stored."""
        if self.reserve is not None and not self.reserve.admits_new_orders():
            assert self.path is not None  # a reserve is made only for a file
            raise QueueStorageError(
                f"the queue's disk is full (since {self.reserve.full_since:%H:%M:%S} UTC, "
                f"{os.path.dirname(self.path)}): order NOT queued; orders already stored "
                f"still go out; free some space and intake resumes by itself"
            )

    def on_disk_full(self, now: datetime) -> None:
        if self.reserve is not None:
            self.reserve.on_full(now)

    def storage_warning(self) -> str | None:
        """Why new orders are refused now, for health and the page; None if they are not."""
        if self.reserve is None or self.reserve.full_since is None:
            return None
        return (
            f"queue disk full since {self.reserve.full_since:%Y-%m-%dT%H:%M:%S}Z: "
            f"webhooks answer 503, orders already stored still go out"
        )

    def lock_schema(self, conn: Connection) -> None:
        """BEGIN IMMEDIATE already makes concurrent schema creation take turns."""

    def start_listener(
        self, engine: Engine, wake: Callable[[], None], stop: threading.Event
    ) -> None:
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

    def lock_account_lane(self, conn: Connection, lane_key: str) -> None:
        """BEGIN IMMEDIATE already serialises the send stamps too."""

    #: Every process on one SQLite file runs on one machine, under one clock.
    spans_machines = False

    def shared_now(self, conn: Connection) -> datetime:
        """This machine's clock: the one every process on the file shares."""
        return utcnow()

    def claim_lock_options(self) -> dict:
        return {}

    def notify(self, conn: Connection) -> None:
        """In-process wake-ups only; nothing to send through the database."""

    def create_triggers(self, conn: Connection) -> None:
        """Write-once protection in the database itself (docs/design.md, "Dead letters and
        the record"), so no code path, script or console session can rewrite what was
        ordered or erase an open order.
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
            WHEN NEW.state != OLD.state
              AND ((OLD.state || '>' || NEW.state) NOT IN ({TRANSITIONS_SQL})
              OR (OLD.state = 'dead' AND NEW.state = 'sent'
                  AND COALESCE(OLD.dead_reason, '') != '{DEAD_TO_SENT_NEEDS}'))
            BEGIN SELECT RAISE(ABORT, '{TRANSITION_ERROR}'); END""",
        # INSERT OR REPLACE runs no delete trigger on a connection without
        # recursive_triggers (a plain sqlite3 console): refuse the insert itself.
        f"""CREATE TRIGGER order_queue_no_replace
            BEFORE INSERT ON order_queue
            WHEN EXISTS (SELECT 1 FROM order_queue WHERE id = NEW.id)
            BEGIN SELECT RAISE(ABORT, '{REPLACE_ERROR}'); END""",
        f"""CREATE TRIGGER order_queue_attempts_no_replace
            BEFORE INSERT ON order_queue_attempts
            WHEN EXISTS (SELECT 1 FROM order_queue_attempts WHERE id = NEW.id)
            BEGIN SELECT RAISE(ABORT, '{ATTEMPTS_ERROR}'); END""",
        f"""CREATE TRIGGER order_queue_keep_owing_rows
            BEFORE DELETE ON order_queue WHEN OLD.state IN ({OWING_SQL})
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


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files take
    the same mode, and they hold order payloads).  Only when it does not exist yet:
    closing any descriptor of an open SQLite file drops the process's locks on it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
