"""The broker's verdict on sent orders: which to follow, and the verdict written once.

OpenAlgo answers ``placeorder`` with success once the broker acknowledged the order; the
broker's risk checks may still reject it a moment later, or an open order be cancelled.
``services/order_queue/verdicts.py`` reads the orderbook and writes what it says here.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update

from database.order_queue.core import StorePart
from database.order_queue.model import (
    ERROR_TEXT_LIMIT,
    EXIT_PRIORITY,
    IDENTITY_COLUMNS,
    AttemptKind,
    BrokerStatus,
    OrderState,
    expiry_for,
    orders,
    truncate,
)

_NOT_FINAL = (BrokerStatus.OPEN.value, BrokerStatus.UNKNOWN.value)
#: A sent order the broker rejected or cancelled afterwards, not yet dealt with.
_AWAITING_A_HUMAN = (
    orders.c.state == OrderState.SENT.value,
    orders.c.broker_status.in_((BrokerStatus.REJECTED.value, BrokerStatus.CANCELLED.value)),
    orders.c.verdict_handled_at.is_(None),
)
#: What a copy sent again keeps of the order it copies: what was asked, for whom (the
#: identity columns but its own id and moment).
_ASKED = tuple(name for name in IDENTITY_COLUMNS if name not in ("id", "created_at"))


class Verdicts(StorePart):
    """Sent orders' fate at the broker."""

    def to_follow(self, *, sent_since: datetime, limit: int = 500) -> list[dict]:
        """Sent orders with a broker order id whose verdict is not final, sent since
        ``sent_since`` (older ones keep the last verdict seen), oldest first."""
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(
                    orders.c.id,
                    orders.c.apikey_token,
                    orders.c.account,
                    orders.c.broker_orderid,
                    orders.c.broker_status,
                    orders.c.endpoint,
                    orders.c.payload,
                    orders.c.strategy,
                    orders.c.symbol,
                    orders.c.lane_priority,
                )
                .where(
                    orders.c.state == OrderState.SENT.value,
                    orders.c.broker_orderid.is_not(None),
                    orders.c.sent_at >= sent_since,
                    or_(orders.c.broker_status.is_(None), orders.c.broker_status.in_(_NOT_FINAL)),
                )
                .order_by(orders.c.id)
                .limit(limit)
            ).mappings()
            return [{**row, "exit": row["lane_priority"] == EXIT_PRIORITY} for row in rows]

    def record(
        self, order_id: int, status: BrokerStatus, message: str | None, *, now: datetime
    ) -> bool:
        """Write the verdict; True for the one caller that changed it (and so tells
        the trader), False when it was already so (another process saw it first)."""
        with self.transaction() as conn:
            changed = self._move(
                conn,
                order_id,
                (
                    orders.c.state == OrderState.SENT.value,
                    or_(
                        orders.c.broker_status.is_(None),
                        orders.c.broker_status != status.value,
                    ),
                ),
                {
                    "broker_status": status.value,
                    "broker_message": truncate(message, ERROR_TEXT_LIMIT),
                    "broker_checked_at": now,
                },
                now=now,
                kind=AttemptKind.VERDICT,
                outcome=status.value,
                actor=None,
                message=message,
            )
            return changed

    def counts_since(self, since: datetime) -> dict[str, int]:
        """Verdicts of orders sent since ``since``, per status (health, the page)."""
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(orders.c.broker_status, func.count())
                .where(orders.c.sent_at >= since, orders.c.broker_status.is_not(None))
                .group_by(orders.c.broker_status)
            ).all()
        counts = {status.value: 0 for status in BrokerStatus}
        counts.update({status: count for status, count in rows})
        return counts

    def rejected_after_sent(self, *, limit: int = 100) -> list[dict]:
        """Sent orders the broker rejected or cancelled afterwards, newest first: shown
        among the failed orders, for a human to send again or leave."""
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(orders).where(*_AWAITING_A_HUMAN).order_by(orders.c.id.desc()).limit(limit)
            ).mappings()
            return [
                {
                    **{k: v for k, v in row.items() if k not in ("apikey_token", "lease_token")},
                    "payload": json.loads(row["payload"]),
                }
                for row in rows
            ]

    def send_again(
        self,
        order_id: int,
        *,
        now: datetime,
        actor: str,
        max_age_seconds: float | None,
        deadline: datetime | None = None,
    ) -> int | None:
        """A human sends a rejected or cancelled order again: a new PENDING order asking
        the same (the record of the first stays as it was, sent and rejected), linked in
        both trails.  The new order's id, or None when the order is not awaiting a human."""
        with self.transaction() as conn:
            row = (
                conn.execute(
                    select(*(orders.c[name] for name in _ASKED)).where(
                        orders.c.id == order_id, *_AWAITING_A_HUMAN
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            inserted = conn.execute(
                insert(orders).values(
                    **row,
                    created_at=now,
                    state=OrderState.PENDING.value,
                    attempts=0,
                    reconcile_checks=0,
                    available_at=now,
                    expires_at=expiry_for(now, max_age_seconds, deadline),
                    updated_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None  # a single-row insert reports its key
            new_id = int(inserted[0])
            self._mark_handled(
                conn, order_id, now, actor, "sent_again", f"sent again as order {new_id}"
            )
            self._record(
                conn,
                new_id,
                now=now,
                kind=AttemptKind.OPERATOR,
                outcome="copy_of",
                actor=actor,
                message=f"sent again from order {order_id} (rejected or cancelled at the broker)",
            )
            self.backend.notify(conn)
            return new_id

    def set_aside(self, order_id: int, *, now: datetime, actor: str, note: str | None) -> bool:
        """A human has seen a rejected or cancelled order and will not send it again."""
        with self.transaction() as conn:
            if (
                conn.execute(
                    select(orders.c.id).where(orders.c.id == order_id, *_AWAITING_A_HUMAN)
                ).first()
                is None
            ):
                return False
            self._mark_handled(conn, order_id, now, actor, "set_aside", note)
            return True

    def _mark_handled(self, conn, order_id, now, actor, outcome, message) -> None:
        conn.execute(
            update(orders)
            .where(orders.c.id == order_id)
            .values(verdict_handled_at=now, updated_at=now)
        )
        self._record(
            conn,
            order_id,
            now=now,
            kind=AttemptKind.OPERATOR,
            outcome=outcome,
            actor=actor,
            message=message,
        )
