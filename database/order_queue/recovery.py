"""Recovery and expiry: orders nobody holds any more are moved on.

A dispatcher that died mid-send leaves its orders SENDING under a lease nobody will
present: they go in doubt when their send was stamped (the request may have left), back
to pending when it was not.  A pending order past its expiry is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from database.order_queue.core import StorePart
from database.order_queue.dispatcher_registry import lease_is_free
from database.order_queue.model import AttemptKind, DeadReason, OrderState, orders


@dataclass(frozen=True)
class StaleMove:
    """Where an order goes when its sender is gone mid-send, and what the trail says."""

    state: OrderState
    available_at: datetime
    spends_attempt: bool
    error: str | None
    outcome: str
    message: str


def after_stale_lease(*, stamped: bool, now: datetime, check_at: datetime) -> StaleMove:
    """An order left SENDING by a sender that is gone: in doubt (checked from
    ``check_at``, an attempt spent) when its send was stamped, since the request may
    have reached the broker; pending again at once when it was not, since it never left.
    """
    if stamped:
        return StaleMove(
            OrderState.IN_DOUBT,
            available_at=check_at,
            spends_attempt=True,
            error="dispatcher stopped while the order was being sent",
            outcome="in_doubt",
            message="dispatcher died or lost its lease mid-send",
        )
    return StaleMove(
        OrderState.PENDING,
        available_at=now,
        spends_attempt=False,
        error=None,
        outcome="released",
        message="dispatcher stopped before sending: not sent, queued again",
    )


class Recovery(StorePart):
    """What happens to orders whose holder is gone, or whose time is up."""

    def recover_stale_sending(
        self, *, now: datetime, heartbeat_timeout: float, check_at: datetime
    ) -> list[int]:
        """SENDING rows whose dispatcher is gone (lease expired, or its heartbeat stale or
        missing) are moved as ``after_stale_lease`` decides.

        Returns the ids moved to IN_DOUBT, which need reconciling; empty when none.
        """
        moved = []
        with self.transaction() as conn:
            stale = conn.execute(
                select(orders.c.id, orders.c.lease_token, orders.c.sent_at).where(
                    orders.c.state == OrderState.SENDING.value,
                    lease_is_free(now=now, heartbeat_timeout=heartbeat_timeout),
                )
            ).all()
            for order_id, token, sent_at in stale:
                move = after_stale_lease(stamped=sent_at is not None, now=now, check_at=check_at)
                # Only the lease that was judged stale; a row claimed again meanwhile
                # (another process) keeps its new, live lease.
                changed = self._move(
                    conn,
                    order_id,
                    (orders.c.lease_token == token, orders.c.state == OrderState.SENDING.value),
                    {
                        "state": move.state.value,
                        "available_at": move.available_at,
                        "attempts": orders.c.attempts + int(move.spends_attempt),
                        "reconcile_checks": 0,
                        "lease_token": None,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "updated_at": now,
                        "last_error": move.error if move.error else orders.c.last_error,
                    },
                    now=now,
                    kind=AttemptKind.RECOVERY,
                    outcome=move.outcome,
                    actor=None,
                    message=move.message,
                )
                if changed and move.state is OrderState.IN_DOUBT:
                    moved.append(order_id)
        return moved

    def expire_pending(self, *, now: datetime) -> list[dict[str, Any]]:
        """PENDING rows past ``expires_at`` → DEAD (reason expired); they are not sent.

        Returns the expired rows (id, strategy, symbol) for logging; empty if none.
        """
        with self.transaction() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(
                        orders.c.id, orders.c.strategy, orders.c.symbol, orders.c.created_at
                    ).where(orders.c.state == OrderState.PENDING.value, orders.c.expires_at <= now)
                ).mappings()
            ]
            expired = []
            for row in rows:
                # A row claimed meanwhile by another process is on its way: not expired.
                if conn.execute(
                    update(orders)
                    .where(
                        orders.c.id == row["id"],
                        orders.c.state == OrderState.PENDING.value,
                        orders.c.lease_token.is_(None),
                    )
                    .values(
                        state=OrderState.DEAD.value,
                        dead_reason=DeadReason.EXPIRED.value,
                        last_error="not sent: past its expiry (age limit or squareoff)",
                        updated_at=now,
                        finished_at=now,
                    )
                ).rowcount:
                    self._record(
                        conn,
                        row["id"],
                        now=now,
                        kind=AttemptKind.EXPIRY,
                        outcome=DeadReason.EXPIRED.value,
                        actor=None,
                        message="not sent: past its expiry (age limit or squareoff)",
                    )
                    expired.append(row)
        return expired
