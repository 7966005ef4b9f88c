"""The lifecycle marks: what the outcome of a send, or of a look at the broker, does to
an order the caller holds.

Every mark is conditional on the lease the caller holds (``_under_lease``), so a dispatcher
that lost its order to another can change nothing; each change appends its attempt to
the trail in the same transaction (``_record``).  Orders enter in ``intake.py``; those
nobody holds any more are moved on by ``recovery.py``.  The states and the moves between
them are drawn in docs/design.md ("Lifecycle").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from database.order_queue.core import StorePart
from database.order_queue.model import (
    ERROR_TEXT_LIMIT,
    AttemptKind,
    DeadReason,
    OrderState,
    orders,
    truncate,
)
from database.order_queue.values import ClaimedOrder


class Lifecycle(StorePart):
    """Moves of an order through its lifecycle, each under the caller's lease."""

    def _under_lease(
        self,
        order: ClaimedOrder,
        from_state: OrderState,
        values: dict[str, Any],
        attempt: dict[str, Any],
        *,
        notify: bool = False,
    ) -> bool:
        """In one transaction: apply ``values`` only if the caller still holds the
        order's lease in ``from_state``; if it did, append ``attempt`` to the trail and,
        with ``notify``, wake the dispatchers (the instrument's next order may go now).
        False, and nothing changed, when the lease was lost."""
        with self.transaction() as conn:
            changed = self._move(
                conn,
                order.id,
                (orders.c.lease_token == order.lease_token, orders.c.state == from_state.value),
                {**values, "lease_token": None, "lease_expires_at": None},
                **attempt,
            )
            if changed and notify:
                self.backend.notify(conn)
            return changed

    def mark_sent(
        self,
        order: ClaimedOrder,
        *,
        now: datetime,
        actor: str,
        broker_orderid: str | None,
        outcome: str = "accepted",
        http_status: int | None = None,
        message: str | None = None,
        latency_ms: float | None = None,
        kind: AttemptKind = AttemptKind.SEND,
    ) -> bool:
        """SENDING/IN_DOUBT → SENT with the broker's order id."""
        return self._under_lease(
            order,
            OrderState(order.state),
            {
                "state": OrderState.SENT.value,
                "broker_orderid": broker_orderid,
                "attempts": orders.c.attempts + (1 if kind is AttemptKind.SEND else 0),
                "last_error": None,
                "updated_at": now,
                "finished_at": now,
            },
            {
                "now": now,
                "kind": kind,
                "outcome": outcome,
                "actor": actor,
                "http_status": http_status,
                "message": message,
                "latency_ms": latency_ms,
                "broker_orderid": broker_orderid,
            },
            notify=True,
        )

    def mark_for_retry(
        self,
        order: ClaimedOrder,
        *,
        now: datetime,
        actor: str,
        retry_at: datetime,
        outcome: str,
        error: str,
        counts_as_attempt: bool,
        http_status: int | None = None,
        latency_ms: float | None = None,
    ) -> bool:
        """SENDING → PENDING, due again at ``retry_at`` (transient failure, budget left).

        ``counts_as_attempt`` is False when the request never left (connection refused):
        such failures are retried until the order expires without using the budget.
        """
        return self._under_lease(
            order,
            OrderState.SENDING,
            {
                "state": OrderState.PENDING.value,
                "available_at": retry_at,
                "attempts": orders.c.attempts + (1 if counts_as_attempt else 0),
                "lease_owner": None,
                "last_error": truncate(error, ERROR_TEXT_LIMIT),
                "updated_at": now,
            },
            _send_attempt(now, actor, outcome, error, http_status, latency_ms),
        )

    def mark_dead(
        self,
        order: ClaimedOrder,
        *,
        now: datetime,
        actor: str,
        reason: DeadReason,
        outcome: str,
        error: str,
        counts_as_attempt: bool = True,
        http_status: int | None = None,
        latency_ms: float | None = None,
        kind: AttemptKind = AttemptKind.SEND,
    ) -> bool:
        """SENDING/IN_DOUBT → DEAD with ``reason``."""
        return self._under_lease(
            order,
            OrderState(order.state),
            {
                "state": OrderState.DEAD.value,
                "dead_reason": reason.value,
                "attempts": orders.c.attempts + (1 if counts_as_attempt else 0),
                "last_error": truncate(error, ERROR_TEXT_LIMIT),
                "updated_at": now,
                "finished_at": now,
            },
            {**_send_attempt(now, actor, outcome, error, http_status, latency_ms), "kind": kind},
            notify=True,
        )

    def mark_in_doubt(
        self,
        order: ClaimedOrder,
        *,
        now: datetime,
        actor: str,
        outcome: str,
        error: str,
        check_at: datetime,
        latency_ms: float | None = None,
        http_status: int | None = None,
    ) -> bool:
        """SENDING → IN_DOUBT: the request may have reached the broker.

        The order is reconciled from ``check_at`` on and never resent blindly.  The
        ``http_status`` the sender got (a 5xx, from OpenAlgo or from a gateway in front
        of it) is kept as the sender's, never as the host's: only the door's record
        (``receipts.py``) says that OpenAlgo finished the request.
        """
        return self._under_lease(
            order,
            OrderState.SENDING,
            {
                "state": OrderState.IN_DOUBT.value,
                "attempts": orders.c.attempts + 1,
                "available_at": check_at,
                "reconcile_checks": 0,
                "last_error": truncate(error, ERROR_TEXT_LIMIT),
                "updated_at": now,
                "sender_answer_status": http_status,
            },
            _send_attempt(now, actor, outcome, error, http_status, latency_ms),
        )

    def note_reconcile_miss(
        self,
        order: ClaimedOrder,
        *,
        now: datetime,
        actor: str,
        check_at: datetime,
        message: str,
        counts_as_check: bool = True,
    ) -> bool:
        """An in-doubt check found nothing (yet): count it (unless it asked nobody) and
        look again at ``check_at``."""
        return self._under_lease(
            order,
            OrderState.IN_DOUBT,
            {
                "reconcile_checks": orders.c.reconcile_checks + (1 if counts_as_check else 0),
                "available_at": check_at,
                "updated_at": now,
            },
            _reconcile_attempt(now, actor, "not_found_yet", message),
        )

    def release_to_pending(
        self, order: ClaimedOrder, *, now: datetime, actor: str, message: str
    ) -> bool:
        """IN_DOUBT → PENDING: the broker has no such order after every check, so
        sending it again cannot duplicate it."""
        return self._under_lease(
            order,
            OrderState.IN_DOUBT,
            {
                "state": OrderState.PENDING.value,
                "available_at": now,
                "lease_owner": None,
                "updated_at": now,
            },
            _reconcile_attempt(now, actor, "not_at_broker", message),
        )


def _send_attempt(
    now: datetime,
    actor: str,
    outcome: str,
    error: str,
    http_status: int | None,
    latency_ms: float | None,
) -> dict[str, Any]:
    """The trail's row for the outcome of a send."""
    return {
        "now": now,
        "kind": AttemptKind.SEND,
        "outcome": outcome,
        "actor": actor,
        "http_status": http_status,
        "message": error,
        "latency_ms": latency_ms,
    }


def _reconcile_attempt(now: datetime, actor: str, outcome: str, message: str) -> dict[str, Any]:
    """The trail's row for a look at the broker's orderbook."""
    return {
        "now": now,
        "kind": AttemptKind.RECONCILE,
        "outcome": outcome,
        "actor": actor,
        "message": message,
    }
