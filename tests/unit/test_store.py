"""``QueueStore`` and its backends: the schema and its upgrades, the files it keeps, and the
guards the database itself enforces (write-once columns, the lifecycle's transitions,
append-only trail).  Run against SQLite and PostgreSQL alike.
"""

from datetime import timedelta

import pytest
from sqlalchemy import inspect, text

from database.order_queue_db import (
    IDENTITY_COLUMNS,
    DeadReason,
    QueueStorageError,
    QueueStore,
)
from tests.conftest import TEST_SEALING
from tests.support.store_steps import (
    KEY_A,
    T0,
    claim,
    claim_and_stamp,
    dead_order,
    enqueue,
    finish,
    order,
    raw,
)


def test_schema_creation_is_idempotent(store):
    enqueue(store)
    store.schema.create()
    assert len(store.reads.list_orders()) == 1


def test_sqlite_file_settings(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/q/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    store.dispose()


def test_sqlite_file_never_holds_the_api_key(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    for i in range(20):
        store.intake.enqueue("placeorder", order(symbol=f"S{i}"), now=T0, max_age_seconds=None)
    store.dispose()
    for path in tmp_path.iterdir():  # the database and its WAL
        assert KEY_A.encode() not in path.read_bytes(), path.name


def test_sqlite_write_to_a_deleted_file_fails_instead_of_vanishing(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    enqueue(store)
    for path in tmp_path.iterdir():
        path.unlink()
    with pytest.raises(QueueStorageError, match="missing"):
        enqueue(store)
    store.dispose()


IDENTITY_VALUES = {
    "id": 999_999,
    "endpoint": "placesmartorder",
    "payload": "{}",
    "apikey_token": "x",
    "account": "x",
    "strategy": "Other",
    "symbol": "TCS",
    "exchange": "BSE",
    "product": "CNC",
    "instrument": "x",
    "lane": "smart",
    "lane_key": "x",
    "lane_priority": 0,
    "created_at": T0 + timedelta(days=1),
}


@pytest.mark.parametrize("column", sorted(IDENTITY_VALUES))
def test_identity_columns_cannot_be_updated(store, column):
    assert set(IDENTITY_VALUES) == set(IDENTITY_COLUMNS)
    order_id = enqueue(store)
    select_column = f"SELECT {column} FROM order_queue WHERE id = :id"
    before = raw(store, select_column, id=order_id).scalar()
    with pytest.raises(QueueStorageError, match="write-once"):
        raw(
            store,
            f"UPDATE order_queue SET {column} = :value WHERE id = :id",
            value=IDENTITY_VALUES[column],
            id=order_id,
        )
    assert raw(store, select_column, id=order_id).scalar() == before
    raw(store, "UPDATE order_queue SET last_error = 'note' WHERE id = :id", id=order_id)


@pytest.mark.parametrize(
    "start, jump",
    [
        ("pending", "sent"),
        ("pending", "dismissed"),
        ("in_doubt", "dismissed"),
        ("sent", "pending"),
        ("cancelled", "pending"),
    ],
)
def test_state_changes_outside_the_lifecycle_are_refused(store, start, jump):
    order_id = finish(store, start)
    with pytest.raises(QueueStorageError, match="not part of the order lifecycle"):
        raw(store, "UPDATE order_queue SET state = :state WHERE id = :id", state=jump, id=order_id)
    assert store.reads.get_order(order_id)["state"] == start


def test_an_open_order_cannot_be_replaced_or_truncated(store):
    order_id = enqueue(store)
    columns = (
        "id, endpoint, payload, apikey_token, account, strategy, symbol, exchange, "
        "product, instrument, lane, lane_key, lane_priority, created_at, state, "
        "attempts, available_at, reconcile_checks, updated_at"
    )
    rewritten = columns.replace("payload", "'{}'")  # same id, another payload
    if store.backend.name == "sqlite":
        with pytest.raises(QueueStorageError, match="never replaced"):
            raw(
                store,
                f"INSERT OR REPLACE INTO order_queue ({columns}) "
                f"SELECT {rewritten} FROM order_queue WHERE id = :id",
                id=order_id,
            )
    else:
        with pytest.raises(QueueStorageError, match="cannot be deleted"):
            raw(store, "TRUNCATE order_queue, order_queue_attempts")
    assert store.reads.get_order(order_id)["payload"]["symbol"] == "SBIN"


@pytest.mark.parametrize("state", ["pending", "sending", "in_doubt", "dead"])
def test_rows_that_still_owe_something_cannot_be_deleted(store, state):
    order_id = finish(store, state)
    with pytest.raises(QueueStorageError, match="cannot be deleted"):
        raw(store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    assert store.reads.get_order(order_id) is not None


@pytest.mark.parametrize("state", ["sent", "dismissed", "cancelled"])
def test_finished_rows_may_be_deleted(store, state):
    order_id = finish(store, state)
    raw(store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    assert store.reads.get_order(order_id) is None


def test_attempts_are_append_only(store):
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_sent(claimed, now=T0, actor="d1", broker_orderid="1")
    with pytest.raises(QueueStorageError, match="append-only"):
        raw(store, "UPDATE order_queue_attempts SET outcome = 'x'")
    with pytest.raises(QueueStorageError, match="append-only"):
        raw(store, "DELETE FROM order_queue_attempts")
    assert len(store.reads.list_attempts(claimed.id)) == 1


def test_the_queue_file_is_created_private(tmp_path):
    store = QueueStore(f"sqlite:///{tmp_path}/private/order_queue.db", sealing=TEST_SEALING)
    store.schema.create()
    store.intake.enqueue("placeorder", order(), now=T0, max_age_seconds=None)
    for name in ("order_queue.db", "order_queue.db-wal"):
        assert (tmp_path / "private" / name).stat().st_mode & 0o777 == 0o600, name
    store.dispose()


def test_an_app_role_that_does_not_own_the_tables_cannot_switch_the_guards_off(postgres_schema_url):
    """The owner makes the schema; the app runs as a role with data rights only: it
    queues and claims, but cannot disable or drop a trigger, nor skip triggers with
    session_replication_role."""
    import uuid

    from sqlalchemy import create_engine

    owner = QueueStore(postgres_schema_url, sealing=TEST_SEALING)
    owner.schema.create()
    role = f"oq_app_{uuid.uuid4().hex[:8]}"
    schema = postgres_schema_url.split("search_path%3D")[1]
    admin = create_engine(postgres_schema_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(
            text(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'  # noqa: E501
            )
        )
        conn.execute(text(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"'))
    app_url = postgres_schema_url.replace("postgres@", f"{role}@")
    app_store = QueueStore(app_url, sealing=TEST_SEALING)
    try:
        app_store.schema.create()  # at every start: leaves the owner's triggers alone
        order_id = enqueue(app_store)
        assert claim(app_store).id == order_id
        for statement in (
            "ALTER TABLE order_queue DISABLE TRIGGER ALL",
            "DROP TRIGGER order_queue_guard ON order_queue",
            "SET session_replication_role = replica",
        ):
            with pytest.raises(QueueStorageError, match="owner|permission denied"):
                raw(app_store, statement)
        with pytest.raises(QueueStorageError, match="cannot be deleted"):
            raw(app_store, "DELETE FROM order_queue WHERE id = :id", id=order_id)
    finally:
        app_store.dispose()
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_an_earlier_version_in_flight_order_counts_as_sent_after_the_upgrade(tmp_path):
    """A database from before the send stamp: an order it left on the wire may have
    been sent, so the upgrade stamps it at its claim time and recovery puts it in
    doubt, never straight back to pending."""
    url = f"sqlite:///{tmp_path}/old.db"
    store = QueueStore(url, sealing=TEST_SEALING)
    store.schema.create()
    store.dispatcher_registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    order_id = enqueue(store)
    claim_and_stamp(store)
    with store.engine.begin() as conn:  # as the earlier version left it
        conn.exec_driver_sql("DROP INDEX ix_order_queue_lane_sent")
        conn.exec_driver_sql("DROP INDEX ix_order_queue_smart_sent")
        conn.exec_driver_sql("DROP INDEX ix_order_queue_claimed")
        conn.exec_driver_sql("ALTER TABLE order_queue DROP COLUMN sent_at")
        conn.exec_driver_sql("ALTER TABLE order_queue DROP COLUMN receipt_sent_at")
        conn.exec_driver_sql("ALTER TABLE order_queue RENAME COLUMN claimed_at TO dispatched_at")
        conn.exec_driver_sql(
            "CREATE INDEX ix_order_queue_dispatched ON order_queue (dispatched_at)"
        )
    store.dispose()
    upgraded = QueueStore(url, sealing=TEST_SEALING)
    upgraded.schema.create()
    row = upgraded.reads.get_order(order_id)
    assert row["sent_at"] == row["claimed_at"] == T0
    indexes = {index["name"] for index in inspect(upgraded.engine).get_indexes("order_queue")}
    assert "ix_order_queue_dispatched" not in indexes and "ix_order_queue_claimed" in indexes
    later = T0 + timedelta(seconds=10)
    assert upgraded.recovery.recover_stale_sending(
        now=later, heartbeat_timeout=5, check_at=later
    ) == [order_id]
    upgraded.dispose()


def test_the_door_flag_of_an_earlier_version_survives_the_rename(store):
    """Earlier versions called the door a fence: the upgrade renames the column and keeps
    its values, so an order sent behind the door is still known to be."""
    enqueue(store)
    claimed = claim(store)
    assert store.claims.stamp_send(
        claimed, clock=lambda: T0, lease_seconds=30, door_expected=True
    ).go
    with store.engine.begin() as conn:  # as the earlier version left it
        conn.exec_driver_sql(
            "ALTER TABLE order_queue RENAME COLUMN door_expected TO fence_expected"
        )
    store.schema.create()
    [row] = store.reads.list_orders(states=["sending"])
    assert row["door_expected"] is True
    with store.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("order_queue")}
    assert "fence_expected" not in columns


def test_a_plain_connection_cannot_replace_a_dead_order_or_an_attempt(tmp_path):
    """A sqlite3 console has no recursive_triggers: the schema refuses the insert itself."""
    import sqlite3

    store = QueueStore(f"sqlite:///{tmp_path}/queue.db", sealing=TEST_SEALING)
    store.schema.create()
    dead = dead_order(store)
    store.dispose()
    console = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    assert console.execute("PRAGMA recursive_triggers").fetchone() == (0,)
    with pytest.raises(sqlite3.DatabaseError, match="never replaced"):
        console.execute(
            "INSERT OR REPLACE INTO order_queue SELECT * FROM order_queue WHERE id = ?",
            (dead,),
        )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        console.execute(
            "INSERT OR REPLACE INTO order_queue_attempts SELECT * FROM order_queue_attempts"
        )
    assert console.execute("SELECT state, dead_reason FROM order_queue").fetchall() == [
        ("dead", "rejected")
    ]
    console.close()


@pytest.mark.parametrize(
    "reason, allowed",
    [(DeadReason.REJECTED, False), (DeadReason.EXPIRED, False), (DeadReason.IN_DOUBT, True)],
)
def test_only_an_order_dead_in_doubt_may_be_marked_sent(store, reason, allowed):
    enqueue(store)
    claimed = claim(store)
    store.lifecycle.mark_dead(claimed, now=T0, actor="d1", reason=reason, outcome="x", error="e")
    move = "UPDATE order_queue SET state = 'sent' WHERE id = :id"
    if allowed:  # the operator's settle "placed, broker order id X"
        raw(store, move, id=claimed.id)
        assert store.reads.get_order(claimed.id)["state"] == "sent"
    else:  # never placed: "sent" would let the retention purge erase it
        with pytest.raises(QueueStorageError, match="not part of the order lifecycle"):
            raw(store, move, id=claimed.id)
        assert store.reads.get_order(claimed.id)["state"] == "dead"
