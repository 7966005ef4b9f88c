"""The dispatcher registry: which dispatchers run, and whether they still beat.

Each dispatcher registers at start and beats while it runs; a lease is only as good as
its holder's heartbeat.  Recovery and the reconciler ask here whether the process behind
a lease or a receipt is gone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, insert, or_, select, update

from database.order_queue.core import StorePart
from database.order_queue.model import dispatchers, orders


def lease_is_free(*, now: datetime, heartbeat_timeout: float) -> ColumnElement[bool]:
    """An order's lease no longer counts: never taken, expired, or its holder stopped or
    silent past the heartbeat timeout.  A dead holder frees the lease at once, not when
    it expires (a lease outlives the longest request by design)."""
    holder_alive = exists().where(
        dispatchers.c.id == orders.c.lease_owner,
        dispatchers.c.stopped_at.is_(None),
        dispatchers.c.heartbeat_at > now - timedelta(seconds=heartbeat_timeout),
    )
    return or_(orders.c.lease_expires_at.is_(None), orders.c.lease_expires_at <= now, ~holder_alive)


class DispatcherRegistry(StorePart):
    """Dispatchers' registrations and heartbeats, and who is alive."""

    def register_dispatcher(
        self, dispatcher_id: str, *, host: str, pid: int, now: datetime
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                insert(dispatchers).values(
                    id=dispatcher_id, host=host, pid=pid, started_at=now, heartbeat_at=now
                )
            )

    def heartbeat(self, dispatcher_id: str, *, now: datetime) -> None:
        """Prove the dispatcher is alive; its leases stay valid while this runs."""
        with self.transaction() as conn:
            conn.execute(
                update(dispatchers)
                .where(dispatchers.c.id == dispatcher_id)
                .values(heartbeat_at=now)
            )

    def stop_dispatcher(self, dispatcher_id: str, *, now: datetime) -> None:
        with self.transaction() as conn:
            conn.execute(
                update(dispatchers)
                .where(dispatchers.c.id == dispatcher_id)
                .values(stopped_at=now, heartbeat_at=now)
            )

    def dispatcher_gone_since(
        self, dispatcher_id: str, *, now: datetime, heartbeat_timeout: float
    ) -> datetime | None:
        """When the dispatcher (and so, for a receipt, its process) was last known alive,
        if it is gone now: stopped, or silent past the heartbeat timeout.  None while it
        beats, and for an id no dispatcher ever registered (nothing is known of it)."""
        with self.transaction(read_only=True) as conn:
            row = conn.execute(
                select(dispatchers.c.heartbeat_at, dispatchers.c.stopped_at).where(
                    dispatchers.c.id == dispatcher_id
                )
            ).first()
        if row is None:
            return None
        if row.stopped_at is not None:
            return row.stopped_at
        silent_since = row.heartbeat_at + timedelta(seconds=heartbeat_timeout)
        return silent_since if silent_since <= now else None

    def live_dispatchers(self, *, now: datetime, heartbeat_timeout: float) -> list[dict[str, Any]]:
        """Dispatchers of any process that have not stopped and beat recently."""
        with self.transaction(read_only=True) as conn:
            rows = (
                conn.execute(
                    select(
                        dispatchers.c.id,
                        dispatchers.c.host,
                        dispatchers.c.pid,
                        dispatchers.c.heartbeat_at,
                    )
                    .where(
                        dispatchers.c.stopped_at.is_(None),
                        dispatchers.c.heartbeat_at > now - timedelta(seconds=heartbeat_timeout),
                    )
                    .order_by(dispatchers.c.id)
                )
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]
