"""Steps the storage tests share: an order, enqueued, claimed, stamped, finished or dead."""

from datetime import datetime

from sqlalchemy import text

from database.order_queue_db import (
    DeadReason,
    RateLimits,
)

T0 = datetime(2026, 11, 23, 4, 0, 0)  # 09:30 IST


LIMITS = RateLimits(smart=1, regular=10, window=1.1)


KEY_A = "a" * 64


KEY_B = "b" * 64


def order(symbol="SBIN", action="BUY", apikey=KEY_A, **extra):
    return {
        "apikey": apikey,
        "strategy": "S1",
        "symbol": symbol,
        "exchange": "NSE",
        "product": "MIS",
        "action": action,
        "pricetype": "MARKET",
        "quantity": "10",
        **extra,
    }


def enqueue(store, endpoint="placeorder", at=T0, max_age=None, deadline=None, **fields):
    return store.intake.enqueue(
        endpoint, order(**fields), now=at, max_age_seconds=max_age, deadline=deadline
    )


def claim(store, at=T0, owner="d1", limits=LIMITS):
    return store.claims.claim_next(owner, now=at, lease_seconds=30, limits=limits).order


def claim_in_doubt(store, at=T0, owner="d2"):
    """Lease a due in-doubt order for a reconcile check, as a dispatcher would."""
    return store.claims.claim_in_doubt(owner, now=at, lease_seconds=30, heartbeat_timeout=5)


def claim_and_stamp(store, at=T0, owner="d1", limits=LIMITS):
    """Claim, then stamp the send: the request is on its way."""
    claimed = claim(store, at=at, owner=owner, limits=limits)
    assert store.claims.stamp_send(claimed, clock=lambda: at, lease_seconds=30).go
    return claimed


def raw(store, sql, **params):
    with store.transaction() as conn:
        return conn.execute(text(sql), params)


#: How an order reaches each state through the lifecycle's own transitions.
PATHS = {
    "pending": [],
    "sending": ["sending"],
    "in_doubt": ["sending", "in_doubt"],
    "dead": ["dead"],
    "sent": ["sending", "sent"],
    "dismissed": ["dead", "dismissed"],
    "cancelled": ["cancelled"],
}


def finish(store, state, at=T0):
    order_id = enqueue(store, symbol=f"S{state}")
    for step in PATHS[state]:
        raw(
            store,
            "UPDATE order_queue SET state = :state, finished_at = :at, updated_at = :at "
            "WHERE id = :id",
            state=step,
            at=at,
            id=order_id,
        )
    return order_id


#: How ``mark_dead`` dead-letters an order unless told otherwise: the broker rejected it.
REJECTED = {
    "reason": DeadReason.REJECTED,
    "outcome": "rejected",
    "error": "Invalid symbol",
    "http_status": 400,
}
#: The reconciler could not tell whether it was placed.
IN_DOUBT = {
    "reason": DeadReason.IN_DOUBT,
    "outcome": "unknown",
    "error": "orderbook unavailable",
    "http_status": None,
}


def mark_dead(store, claimed, *, now=T0, actor="d1", **how):
    """Dead-letter a claimed order (``REJECTED``, with ``how`` overriding)."""
    assert store.lifecycle.mark_dead(claimed, now=now, actor=actor, **{**REJECTED, **how})


def mark_for_retry(store, claimed, *, retry_at=T0, error="HTTP 500", http_status=None):
    """A transient failure that spends an attempt: back to pending from ``retry_at``."""
    return store.lifecycle.mark_for_retry(
        claimed,
        now=T0,
        actor="d1",
        retry_at=retry_at,
        outcome="transient",
        error=error,
        counts_as_attempt=True,
        http_status=http_status,
    )


def dead_order(store, **fields):
    enqueue(store, **fields)
    claimed = claim(store)
    mark_dead(store, claimed)
    return claimed.id
