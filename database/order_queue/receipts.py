"""Receipts and the kept answer: what the host's door (``services/order_queue/door.py``)
writes about a request it received.

A receipt says which process received an order's request and when, and which send it
belongs to (``receipt_sent_at``, that send's stamp); the host's answer is kept beside it,
so the reconciler can settle an order whose sender did not live to read the answer.  A
broker acceptance that arrives after the lease passed on is kept in the trail as
evidence.  The receipt is read back with the order (``claims``).  These are the only
writes of the receipt's columns: nothing else records what the host did.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from database.order_queue.core import StorePart
from database.order_queue.model import (
    ERROR_TEXT_LIMIT,
    AttemptKind,
    OrderState,
    orders,
    truncate,
)


class Receipts(StorePart):
    """The door's record of each request, and the answers kept for the reconciler."""

    def record_receipt(
        self, order_id: int, lease_token: str, *, instance: str, now: datetime
    ) -> bool:
        """The host's door for a dispatched order: True (and the receipt written) only
        while the sender still holds the order's lease.

        A request that arrives after its order was taken over (its sender died, its
        answer timed out) is refused here, so an order that left no receipt was never
        placed, and reconciliation need not wait for a request that might still come.
        """
        with self.transaction() as conn:
            return (
                conn.execute(
                    update(orders)
                    .where(
                        orders.c.id == order_id,
                        orders.c.state == OrderState.SENDING.value,
                        orders.c.lease_token == lease_token,
                    )
                    .values(
                        receipt_sent_at=orders.c.sent_at,
                        host_instance=instance,
                        host_received_at=now,
                        host_done_at=None,
                        host_answer_status=None,
                        host_answer_body=None,
                    )
                ).rowcount
                == 1
            )

    def record_host_answer(
        self,
        order_id: int,
        *,
        instance: str,
        received_at: datetime,
        now: datetime,
        status: int,
        body: str,
    ) -> None:
        """The host's answer to a receipted request, for the reconciler in case the
        sender is no longer there to read it.  Only for the same receipt."""
        with self.transaction() as conn:
            conn.execute(
                update(orders)
                .where(
                    orders.c.id == order_id,
                    orders.c.host_instance == instance,
                    orders.c.host_received_at == received_at,
                )
                .values(
                    host_done_at=now,
                    host_answer_status=status,
                    host_answer_body=truncate(body, ERROR_TEXT_LIMIT),
                )
            )

    def record_late_acceptance(
        self, order_id: int, *, now: datetime, actor: str, broker_orderid: str | None, message: str
    ) -> None:
        """The broker accepted a request whose lease had already passed to another
        dispatcher.  The newer owner decides the state; this only keeps the evidence (the
        orderid) in the trail, so a possible duplicate can be found and cancelled."""
        with self.transaction() as conn:
            self._record(
                conn,
                order_id,
                now=now,
                kind=AttemptKind.SEND,
                outcome="accepted_after_lease_lost",
                actor=actor,
                broker_orderid=broker_orderid,
                message=message,
            )
