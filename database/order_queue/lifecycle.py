"""The lifecycle marks: enqueue, the outcome of a send, recovery and expiry.

Every mark is conditional on the lease the caller holds (``_move``), so a dispatcher
that lost its order to another can change nothing; each change appends its attempt to
the trail in the same transaction (``_record``).  Enqueue commits on the driver's own
cursor (``backends``): it is the webhook's whole cost.  The states and the moves between
them are drawn in docs/design.md ("Lifecycle").
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from database.order_queue.alert_keys import take_key
from database.order_queue.api_keys import KeySealing
from database.order_queue.core import StoreCore, StorePart
from database.order_queue.dispatcher_registry import lease_is_free
from database.order_queue.model import (
    ERROR_TEXT_LIMIT,
    EXIT_PRIORITY,
    LANE_OF_ENDPOINT,
    LANE_PRIORITY,
    AlertKey,
    AttemptKind,
    ClaimedOrder,
    DeadReason,
    DuplicateAlert,
    Lane,
    OrderState,
    QueueStorageError,
    alert_keys,
    expiry_for,
    orders,
    truncate,
)


class LifecycleMarks(StorePart):
    """Moves of an order through its lifecycle, each under the caller's lease."""

    def __init__(self, core: StoreCore, sealing: KeySealing):
        super().__init__(core)
        #: Seals each order's API key at enqueue (the runtime's, from the pepper).
        self.sealing = sealing

    def enqueue(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        now: datetime,
        max_age_seconds: float | None,
        deadline: datetime | None = None,
        alert_key: AlertKey | None = None,
    ) -> int:
        """Commit one order as PENDING and return its id.

        With ``alert_key`` (its webhook carried one) the key is taken in the same
        transaction (``alert_keys.take_key``) unless this request took it already
        (``alert_key.key_id``), and the order is linked to it; ``DuplicateAlert`` when a
        copy of the alert took it first (nothing stored).

        The order expires (is never sent) ``max_age_seconds`` after ``now`` or at
        ``deadline`` (e.g. its strategy's squareoff), whichever is first; a deadline
        already past is ignored, so the squareoff's own orders still go out.

        Guarantee: when this returns, the row is durable (committed, fsync'd on SQLite);
        when it raises, nothing was stored.  ``ValueError`` for an endpoint the Strategy
        Manager does not use or a payload without the fields the queue needs.
        """
        lane = LANE_OF_ENDPOINT.get(endpoint)
        if lane is None:
            raise ValueError(
                f"endpoint must be one of {sorted(LANE_OF_ENDPOINT)}, not {endpoint!r}"
            )
        if not isinstance(payload, dict):
            raise ValueError("payload must be a dict")
        api_key = payload.get("apikey")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("payload needs a non-empty 'apikey'")
        for field in ("symbol", "exchange", "action"):
            if not isinstance(payload.get(field), str) or not payload[field]:
                raise ValueError(f"payload needs a non-empty string {field!r}")
        stored_payload = {k: v for k, v in payload.items() if k != "apikey"}
        apikey_token, account = self.sealing.seal_with_account(api_key)
        product = str(payload.get("product") or "")
        row = {
            "endpoint": endpoint,
            "payload": json.dumps(stored_payload, sort_keys=True),
            "apikey_token": apikey_token,
            "account": account,
            "strategy": payload.get("strategy"),
            "symbol": payload["symbol"],
            "exchange": payload["exchange"],
            "product": product,
            "instrument": "|".join((account, payload["exchange"], payload["symbol"], product)),
            "lane": lane.value,
            "lane_key": f"{lane.value}:{account}",
            "lane_priority": EXIT_PRIORITY if _is_exit(lane, payload) else LANE_PRIORITY[lane],
            "created_at": now,
            "state": OrderState.PENDING.value,
            "attempts": 0,
            "reconcile_checks": 0,
            "available_at": now,
            "expires_at": expiry_for(now, max_age_seconds, deadline),
            "updated_at": now,
        }
        self.backend.check_room()
        if alert_key is None:
            with self._storage_errors(writing=True):
                return int(self.backend.insert_order(self.engine, row))
        return self._enqueue_keyed(row, alert_key, now)

    def _enqueue_keyed(self, row: dict[str, Any], alert_key: AlertKey, now: datetime) -> int:
        try:
            with self.transaction() as conn:
                key_id = alert_key.key_id or take_key(conn, alert_key, now)
                inserted = conn.execute(
                    insert(orders).values(**row, alert_key_id=key_id)
                ).inserted_primary_key
                assert inserted is not None  # a single-row insert reports its key
                self.backend.notify(conn)
            alert_key.key_id = key_id
            return int(inserted[0])
        except QueueStorageError as exc:
            if alert_key.key_id is None and isinstance(exc.__cause__, IntegrityError):
                # PostgreSQL: a copy took the key while this transaction ran.
                with self.transaction(read_only=True) as conn:
                    taken = conn.execute(
                        select(alert_keys.c.id, alert_keys.c.body_hash).where(
                            alert_keys.c.scope == alert_key.scope,
                            alert_keys.c.alert_key == alert_key.key,
                        )
                    ).first()
                if taken is not None:
                    raise DuplicateAlert(
                        taken.id, conflict=taken.body_hash != alert_key.body_hash
                    ) from None
            raise

    def _move(
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
            changed = (
                conn.execute(
                    update(orders)
                    .where(
                        orders.c.id == order.id,
                        orders.c.lease_token == order.lease_token,
                        orders.c.state == from_state.value,
                    )
                    .values(**values, lease_token=None, lease_expires_at=None)
                ).rowcount
                == 1
            )
            if changed:
                self._record(conn, order.id, **attempt)
                if notify:
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
        return self._move(
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
        return self._move(
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
        return self._move(
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
        return self._move(
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
        return self._move(
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
        return self._move(
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

    def recover_stale_sending(
        self, *, now: datetime, heartbeat_timeout: float, check_at: datetime
    ) -> list[int]:
        """SENDING rows whose dispatcher is gone (lease expired, or its heartbeat stale or
        missing) → IN_DOUBT when their send was stamped (the request may have reached the
        broker), straight back to PENDING when it was not (it never left).

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
                # Only the lease that was judged stale; a row claimed again meanwhile
                # (another process) keeps its new, live lease.
                still_stale = (
                    orders.c.id == order_id,
                    orders.c.lease_token == token,
                    orders.c.state == OrderState.SENDING.value,
                )
                if sent_at is None:
                    released = conn.execute(
                        update(orders)
                        .where(*still_stale)
                        .values(
                            state=OrderState.PENDING.value,
                            available_at=now,
                            lease_token=None,
                            lease_owner=None,
                            lease_expires_at=None,
                            updated_at=now,
                        )
                    ).rowcount
                    if released:
                        self._record(
                            conn,
                            order_id,
                            now=now,
                            kind=AttemptKind.RECOVERY,
                            outcome="released",
                            actor=None,
                            message="dispatcher stopped before sending: not sent, queued again",
                        )
                    continue
                changed = conn.execute(
                    update(orders)
                    .where(*still_stale)
                    .values(
                        state=OrderState.IN_DOUBT.value,
                        attempts=orders.c.attempts + 1,
                        available_at=check_at,
                        reconcile_checks=0,
                        lease_token=None,
                        lease_expires_at=None,
                        updated_at=now,
                        last_error="dispatcher stopped while the order was being sent",
                    )
                ).rowcount
                if changed:
                    self._record(
                        conn,
                        order_id,
                        now=now,
                        kind=AttemptKind.RECOVERY,
                        outcome="in_doubt",
                        actor=None,
                        message="dispatcher died or lost its lease mid-send",
                    )
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


def _is_exit(lane: Lane, payload: dict[str, Any]) -> bool:
    """A smart order whose target position is flat: it reduces or closes a position."""
    if lane is not Lane.SMART:
        return False
    try:
        return int(str(payload.get("position_size", "")).strip()) == 0
    except ValueError:
        return False


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
