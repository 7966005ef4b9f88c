"""PostgreSQL, for scale-out: several processes share one database; the write-once
rules as triggers (``backend_rules.py``); wake-ups with LISTEN / NOTIFY."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from database.order_queue.backend_rules import (
    ATTEMPTS_ERROR,
    DEAD_TO_SENT_NEEDS,
    IDENTITY_ERROR,
    INSERT_ORDER,
    OWING_DELETE_ERROR,
    OWING_SQL,
    TRANSITION_ERROR,
    TRANSITIONS_SQL,
)
from database.order_queue.green import run_blocking
from database.order_queue.model import IDENTITY_COLUMNS
from utils.logging import get_logger

logger = get_logger(__name__)


class PostgresBackend:
    """Scale-out: several processes share one database.

    Claims skip rows another transaction holds (``FOR UPDATE SKIP LOCKED``), so
    dispatchers claim side by side; nothing in a claim needs a lock beyond its row: an
    order whose predecessor another claim is taking still sees that one pending and
    waits.  Rate limits are exact where the send is stamped, one stamp at a time per
    account lane (``lock_account_lane``).  psycopg is imported by SQLAlchemy only when this
    backend is used.
    """

    name = "postgresql"

    # The database server owns its disk: a full one fails writes, which answer 503.
    def check_room(self) -> None:
        pass

    def on_disk_full(self, now: datetime) -> None:
        pass

    def storage_warning(self) -> str | None:
        return None

    _LANE_LOCK_SPACE = 0x0DE0_0A1E  # arbitrary, constant: first key of the lane locks
    _SCHEMA_LOCK_KEY = 0x0DE0_0A1D  # "order queue schema"

    def create_engine(self, url: str) -> Engine:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        # An unreachable server must cost a webhook a quick 503, not the kernel's two
        # minutes of SYN retries; a connect_timeout in the URL wins.
        connect_args = {} if "connect_timeout" in url else {"connect_timeout": 5}
        return create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args
        )

    def prepare_storage(self, engine: Engine) -> None:
        """The server owns its storage."""

    def lock_schema(self, conn: Connection) -> None:
        """Processes starting together against an empty database create the schema one
        after the other, not all at once (CREATE TABLE races end in unique violations)."""
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._SCHEMA_LOCK_KEY})

    def start_listener(
        self, engine: Engine, wake: Callable[[], None], stop: threading.Event
    ) -> threading.Thread:
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
            inserted = conn.execute(INSERT_ORDER, row).inserted_primary_key
            assert inserted is not None  # a single-row insert reports its key
            order_id = inserted[0]
            self.notify(conn)
        return order_id

    def lock_account_lane(self, conn: Connection, lane_key: str) -> None:
        """One send stamp at a time per account lane, across processes (the two-key
        advisory lock space does not overlap the schema lock's)."""
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:lane))"),
            {"space": self._LANE_LOCK_SPACE, "lane": lane_key},
        )

    #: Processes on several machines may share the server: their clocks may differ.
    spans_machines = True

    def shared_now(self, conn: Connection) -> datetime:
        """The database server's clock: dispatchers on several machines stamp their sends
        on one clock, so their rate windows agree whatever their own clocks say."""
        now = conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar()
        assert now is not None  # clock_timestamp() is never NULL
        return now

    def claim_lock_options(self) -> dict:
        return {"skip_locked": True}

    def notify(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_notify('order_queue', '')"))

    def create_triggers(self, conn: Connection) -> None:
        """The same protection as on SQLite, as PL/pgSQL trigger functions.

        Only the tables' owner can make (or drop, or disable) triggers.  Run the app as a
        role that does not own the tables (docs/installing.md, "Scaling out on PostgreSQL") and it
        cannot switch the protection off either; it then leaves the triggers the owner
        made as they are."""
        owner = conn.execute(
            text(
                "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename = 'order_queue'"
            )
        ).scalar()
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
                IF NEW.state <> OLD.state
                    AND (OLD.state || '>' || NEW.state NOT IN ({TRANSITIONS_SQL})
                    OR (OLD.state = 'dead' AND NEW.state = 'sent'
                        AND COALESCE(OLD.dead_reason, '') <> '{DEAD_TO_SENT_NEEDS}'))
                THEN RAISE EXCEPTION '{TRANSITION_ERROR}'; END IF;
                RETURN NEW;
              END IF;
              IF OLD.state IN ({OWING_SQL}) THEN RAISE EXCEPTION '{OWING_DELETE_ERROR}'; END IF;
              RETURN OLD;
            END $$ LANGUAGE plpgsql""",
        """CREATE OR REPLACE TRIGGER order_queue_guard BEFORE UPDATE OR DELETE ON order_queue
            FOR EACH ROW EXECUTE FUNCTION order_queue_guard()""",
        # TRUNCATE skips row triggers: refuse it while any order still owes something.
        f"""CREATE OR REPLACE FUNCTION order_queue_truncate_guard() RETURNS trigger AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM order_queue WHERE state IN ({OWING_SQL})) THEN
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
