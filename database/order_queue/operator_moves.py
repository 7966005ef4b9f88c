"""The operator's moves: replay, settle, dismiss, cancel, and purging finished orders.

Only orders nobody holds a lease on move, so a human never races a dispatcher; every
move leaves an operator attempt naming who made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, or_, select

from database.order_queue.core import StorePart
from database.order_queue.model import (
    AttemptKind,
    DeadReason,
    OrderState,
    attempts,
    expiry_for,
    orders,
)

#: Orders an operator may settle by hand: held in doubt, or dead-lettered in doubt.
_SETTLEABLE = or_(
    orders.c.state == OrderState.IN_DOUBT.value,
    and_(
        orders.c.state == OrderState.DEAD.value, orders.c.dead_reason == DeadReason.IN_DOUBT.value
    ),
)

#: Orders deleted per purge transaction.
PURGE_BATCH = 500
#: A batch of finished orders past retention.  ``updated_at`` (a finished order's last
#: change, never before its finish) rides the (state, updated_at) index, so a batch costs
#: the same with a million finished rows as with none.
_PURGEABLE = (
    select(orders.c.id)
    .where(
        orders.c.state.in_(
            [OrderState.SENT.value, OrderState.DISMISSED.value, OrderState.CANCELLED.value]
        ),
        orders.c.updated_at < bindparam("older_than"),
    )
    .limit(bindparam("limit"))
)


class OperatorMoves(StorePart):
    """Moves a human decides, each leaving an operator attempt in the trail."""

    def replay(
        self,
        order_id: int,
        *,
        now: datetime,
        actor: str,
        max_age_seconds: float | None,
        deadline: datetime | None = None,
    ) -> bool:
        """DEAD → PENDING, due now, with a fresh expiry (age limit, and ``deadline`` such
        as today's squareoff) and a fresh retry budget: the same order goes through the
        dispatcher again (rate limits, per-instrument order, the same outcome rules).
        Returns False if the order is not dead."""
        return self._operator_move(
            order_id,
            OrderState.DEAD,
            OrderState.PENDING,
            now=now,
            actor=actor,
            outcome="replayed",
            message=None,
            values=_sent_afresh(now, max_age_seconds, deadline),
        )

    def settle_placed(
        self, order_id: int, *, now: datetime, actor: str, broker_orderid: str, note: str | None
    ) -> bool:
        """The operator saw it at the broker: IN_DOUBT (not being checked right now) or
        DEAD in doubt → SENT with the broker's orderid.  False if the order is in
        neither, or the orderid is already bound to another queued order."""
        with self.transaction() as conn:
            taken = conn.execute(
                select(orders.c.id).where(
                    orders.c.broker_orderid == broker_orderid, orders.c.id != order_id
                )
            ).first()
            if taken is not None:
                return False
            changed = self._move(
                conn,
                order_id,
                (orders.c.lease_token.is_(None), _SETTLEABLE),
                {
                    "state": OrderState.SENT.value,
                    "broker_orderid": broker_orderid,
                    "dead_reason": None,
                    "finished_at": now,
                    "updated_at": now,
                },
                now=now,
                kind=AttemptKind.OPERATOR,
                outcome="settled_placed",
                actor=actor,
                message=note,
                broker_orderid=broker_orderid,
            )
            if changed:
                self.backend.notify(conn)  # the instrument's next order may go now
            return changed

    def settle_not_placed(
        self,
        order_id: int,
        *,
        now: datetime,
        actor: str,
        note: str | None,
        max_age_seconds: float | None,
        deadline: datetime | None = None,
    ) -> bool:
        """The operator saw it is not at the broker: IN_DOUBT (not being checked right
        now) or DEAD in doubt → PENDING, sent again like a replay (fresh expiry and
        retry budget).  False if the order is in neither."""
        with self.transaction() as conn:
            changed = self._move(
                conn,
                order_id,
                (orders.c.lease_token.is_(None), _SETTLEABLE),
                {
                    "state": OrderState.PENDING.value,
                    "updated_at": now,
                    **_sent_afresh(now, max_age_seconds, deadline),
                },
                now=now,
                kind=AttemptKind.OPERATOR,
                outcome="settled_not_placed",
                actor=actor,
                message=note,
            )
            if changed:
                self.backend.notify(conn)
            return changed

    def dismiss(self, order_id: int, *, now: datetime, actor: str, note: str | None) -> bool:
        """DEAD → DISMISSED; the row and its trail stay for the record.  False if not dead."""
        return self._operator_move(
            order_id,
            OrderState.DEAD,
            OrderState.DISMISSED,
            now=now,
            actor=actor,
            outcome="dismissed",
            message=note,
            values={"finished_at": now},
        )

    def cancel(self, order_id: int, *, now: datetime, actor: str, note: str | None) -> bool:
        """PENDING → CANCELLED before it is sent.  False if it is not pending (a claimed
        order is already on its way and can no longer be stopped here)."""
        return self._operator_move(
            order_id,
            OrderState.PENDING,
            OrderState.CANCELLED,
            now=now,
            actor=actor,
            outcome="cancelled",
            message=note,
            values={"finished_at": now},
        )

    def _operator_move(
        self,
        order_id: int,
        from_state: OrderState,
        to_state: OrderState,
        *,
        now: datetime,
        actor: str,
        outcome: str,
        message: str | None,
        values: dict[str, Any],
    ) -> bool:
        with self.transaction() as conn:
            changed = self._move(
                conn,
                order_id,
                (orders.c.state == from_state.value, orders.c.lease_token.is_(None)),
                {"state": to_state.value, "updated_at": now, **values},
                now=now,
                kind=AttemptKind.OPERATOR,
                outcome=outcome,
                actor=actor,
                message=message,
            )
            if changed:
                self.backend.notify(conn)
            return changed

    def purge_finished(self, *, older_than: datetime, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` sent, dismissed and cancelled orders last changed before
        ``older_than``, with their attempt trails, in one short transaction: a writer
        waiting behind it (a webhook) waits for one batch, not for the whole backlog.
        Open and dead orders are never touched (the triggers would refuse).  Returns how
        many orders were removed; ``limit`` of them means more may be waiting."""
        with self.transaction() as conn:
            ids = list(
                conn.execute(_PURGEABLE, {"older_than": older_than, "limit": limit}).scalars()
            )
            if ids:
                conn.execute(orders.delete().where(orders.c.id.in_(ids)))
                conn.execute(attempts.delete().where(attempts.c.order_id.in_(ids)))
            return len(ids)


def _sent_afresh(
    now: datetime, max_age_seconds: float | None, deadline: datetime | None
) -> dict[str, Any]:
    """Back to pending as a new order would be: due now, a fresh expiry (age limit, and
    ``deadline`` such as today's squareoff) and a fresh retry budget."""
    return {
        "available_at": now,
        "dead_reason": None,
        "finished_at": None,
        "reconcile_checks": 0,
        "lease_owner": None,
        "attempts": 0,
        "expires_at": expiry_for(now, max_age_seconds, deadline),
    }
