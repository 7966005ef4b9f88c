"""Alert keys: a resent alert is queued once.

A webhook that carries a key (``services/order_queue/alert_keys.py`` reads it) takes the
key in the same transaction as the first order it queues (``take_key``, called by the
lifecycle's enqueue), under a unique index per webhook: of eight copies sent at once one
queues, the others find the key and queue nothing, and a process killed between taking
the key and storing the order took neither.  A key lives until ``expires_at``; a key
past it is free again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from database.order_queue.core import StorePart
from database.order_queue.model import (
    alert_keys,
    orders,
)
from database.order_queue.values import (
    AlertKey,
    DuplicateAlert,
)

_KEY_FIELDS = (alert_keys.c.id, alert_keys.c.body_hash, alert_keys.c.first_answer)


def _same_key(key: AlertKey):
    return (alert_keys.c.scope == key.scope, alert_keys.c.alert_key == key.key)


def take_key(conn: Connection, key: AlertKey, now: datetime) -> int:
    """Take ``key`` for the order being stored in ``conn``'s transaction: its id, or
    ``DuplicateAlert`` when a live key is there (a copy of this alert got in first).
    Writers are serialised (SQLite) or the unique index makes the slower of two
    concurrent takers fail at commit (PostgreSQL: an ``IntegrityError``)."""
    conn.execute(delete(alert_keys).where(*_same_key(key), alert_keys.c.expires_at <= now))
    existing = conn.execute(select(*_KEY_FIELDS).where(*_same_key(key))).first()
    if existing is not None:
        raise DuplicateAlert(existing.id, conflict=existing.body_hash != key.body_hash)
    inserted = conn.execute(
        insert(alert_keys).values(
            scope=key.scope,
            alert_key=key.key,
            body_hash=key.body_hash,
            created_at=now,
            expires_at=key.expires_at,
            duplicates=0,
        )
    ).inserted_primary_key
    assert inserted is not None  # a single-row insert reports its key
    return int(inserted[0])


class AlertKeys(StorePart):
    """The keys alerts carried: looked up before a webhook runs, counted when resent."""

    def find_live(self, key: AlertKey, now: datetime) -> DuplicateAlert | None:
        """The live key ``key`` names, as the refusal its resend gets; None when free."""
        with self.transaction(read_only=True) as conn:
            row = conn.execute(
                select(*_KEY_FIELDS).where(*_same_key(key), alert_keys.c.expires_at > now)
            ).first()
        if row is None:
            return None
        return DuplicateAlert(row.id, conflict=row.body_hash != key.body_hash)

    def answer_for(self, key_id: int, now: datetime) -> tuple[str | None, list[int]]:
        """A refused resend, counted: the first answer's JSON and the orders it queued."""
        with self.transaction() as conn:
            conn.execute(
                update(alert_keys)
                .where(alert_keys.c.id == key_id)
                .values(duplicates=alert_keys.c.duplicates + 1, last_duplicate_at=now)
            )
            first = conn.execute(
                select(alert_keys.c.first_answer).where(alert_keys.c.id == key_id)
            ).scalar()
            ids = conn.execute(
                select(orders.c.id).where(orders.c.alert_key_id == key_id).order_by(orders.c.id)
            ).scalars()
            return first, list(ids)

    def keep_first_answer(self, key_id: int, answer: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                update(alert_keys)
                .where(alert_keys.c.id == key_id, alert_keys.c.first_answer.is_(None))
                .values(first_answer=answer)
            )

    def duplicates_since(self, since: datetime) -> int:
        """Resent alerts refused since ``since`` (counted on their keys' last refusal)."""
        with self.transaction(read_only=True) as conn:
            refused = conn.execute(
                select(func.coalesce(func.sum(alert_keys.c.duplicates), 0)).where(
                    alert_keys.c.last_duplicate_at >= since
                )
            ).scalar()
            return int(refused or 0)

    def purge_expired(self, now: datetime) -> int:
        with self.transaction() as conn:
            return conn.execute(delete(alert_keys).where(alert_keys.c.expires_at <= now)).rowcount
