"""The claim path: which order may go now, its lease, and its send stamp.

A claim picks, in one write transaction, the next pending order that may go now (its
account lane has budget, no earlier order of its instrument is unfinished, a smart
order's instrument has settled; exits first) and leases it as SENDING.  The send stamp,
just before the request leaves, is taken inside the account lane's budget on the shared
clock, one stamp at a time per account lane: that is where the broker's rate windows are kept,
for every process at once.  The statements are built once, here: building them per claim cost
more than running them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import and_, bindparam, exists, func, literal_column, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from database.order_queue import holds
from database.order_queue.core import StorePart
from database.order_queue.dispatcher_registry import lease_is_free
from database.order_queue.model import (
    Lane,
    OrderState,
    orders,
)
from database.order_queue.values import (
    ClaimedOrder,
    ClaimResult,
    RateLimits,
    Receipt,
    SendStamp,
)

#: The newest send stamps of one account lane since a moment, other than the order's own.
_LANE_STAMPS = (
    select(orders.c.sent_at)
    .where(
        orders.c.lane_key == bindparam("lane_key"),
        orders.c.sent_at > bindparam("since"),
        orders.c.id != bindparam("id"),
    )
    .order_by(orders.c.sent_at.desc())
    .limit(bindparam("limit"))
)
#: What the sender knew of its previous send: a claim starts a send afresh (no stamp yet,
#: no answer), so a claim that dies before its stamp carries none of it.  The host's
#: receipt is the door's to write (``receipts``); it belongs to the send it names.
_SENDER_FACTS_CLEARED = {
    "sent_at": None,
    "door_expected": None,
    "sender_answer_status": None,
}

# The claim path's statements, built once: building them per claim cost more than
# running them.  Parameters are bound at execution (see ``claim_next``).
_other = aliased(orders, name="other")
#: The next PENDING order that may go now: due, not expired, its account lane not
#: blocked, no earlier order of its instrument still pending (on PostgreSQL ids may also
#: commit out of order), none on the wire or in doubt (a replayed older order must not
#: pass a newer one on the wire), and for a smart order none of its instrument settling
#: (``holds.py``, the rule the page shows).  Exits first, then oldest.
_CLAIM_CANDIDATE = (
    select(orders)
    .where(
        orders.c.state == OrderState.PENDING.value,
        orders.c.available_at <= bindparam("now"),
        or_(orders.c.expires_at.is_(None), orders.c.expires_at > bindparam("now")),
        ~exists().where(
            _other.c.instrument == orders.c.instrument,
            _other.c.id != orders.c.id,
            or_(
                and_(_other.c.id < orders.c.id, _other.c.state == OrderState.PENDING.value),
                holds.on_the_wire(_other),
            ),
        ),
        orders.c.lane_key.not_in(bindparam("blocked", expanding=True)),
        or_(
            orders.c.lane != Lane.SMART.value,
            ~exists().where(
                _other.c.instrument == orders.c.instrument,
                holds.settling(_other, bindparam("settling_since")),
            ),
        ),
    )
    .order_by(orders.c.lane_priority, orders.c.id)
    .limit(1)
)
#: The claimed row leased: SENDING, a fresh send (not stamped yet).
_CLAIM_ROW = (
    update(orders)
    .where(orders.c.id == bindparam("claimed_id"))
    .values(
        state=OrderState.SENDING.value,
        lease_owner=bindparam("owner"),
        lease_token=bindparam("token"),
        lease_expires_at=bindparam("lease_until"),
        claimed_at=bindparam("claimed_at"),
        updated_at=bindparam("claimed_at"),
        **_SENDER_FACTS_CLEARED,
    )
)
#: The send stamp, only while the sender still holds the lease (``stamp_send``).
_STAMP_ROW = (
    update(orders)
    .where(
        orders.c.id == bindparam("stamped_id"),
        orders.c.lease_token == bindparam("token"),
        orders.c.state == OrderState.SENDING.value,
    )
    .values(
        sent_at=bindparam("stamp"),
        door_expected=bindparam("door"),
        sender_answer_status=None,
        updated_at=bindparam("stamped_at"),
        lease_expires_at=bindparam("lease_until"),
    )
)
#: Claims per account lane since a moment, and the oldest of them (all lanes, or one).
_LANE_CLAIMS = (
    select(orders.c.lane_key, func.count(), func.min(orders.c.claimed_at))
    .where(orders.c.claimed_at > bindparam("since"))
    .group_by(orders.c.lane_key)
)
_ONE_LANE_CLAIMS = (
    select(orders.c.lane_key, func.count(), func.min(orders.c.claimed_at))
    .where(orders.c.claimed_at > bindparam("since"), orders.c.lane == bindparam("lane"))
    .group_by(orders.c.lane_key)
)
#: When the next thing becomes due: a smart order's settle gap, a retry, a lease.
_OLDEST_SMART_SEND = select(func.min(orders.c.sent_at)).where(
    orders.c.lane == literal_column(f"'{Lane.SMART.value}'"), orders.c.sent_at > bindparam("since")
)
_NEXT_AVAILABLE = select(func.min(orders.c.available_at)).where(
    orders.c.state.in_([OrderState.PENDING.value, OrderState.IN_DOUBT.value]),
    orders.c.available_at > bindparam("now"),
)
_NEXT_LEASE_EXPIRY = select(func.min(orders.c.lease_expires_at)).where(
    holds.on_the_wire(orders), orders.c.lease_expires_at > bindparam("now")
)


class Claims(StorePart):
    """Claims and send stamps."""

    @cached_property
    def _claim_candidate(self):
        """``_CLAIM_CANDIDATE`` with the backend's row lock (PostgreSQL: FOR UPDATE
        SKIP LOCKED, so concurrent claims take different rows)."""
        lock_options = self.backend.claim_lock_options()
        return (
            _CLAIM_CANDIDATE.with_for_update(of=orders, **lock_options)
            if lock_options
            else _CLAIM_CANDIDATE
        )

    def claim_next(
        self, owner: str, *, now: datetime, lease_seconds: float, limits: RateLimits
    ) -> ClaimResult:
        """Lease the next order that may be sent now, and mark it SENDING.

        Picks, in one write transaction: a PENDING row that is due, not expired, whose
        account+lane has sent fewer than its limit in the last window, and with no
        earlier unfinished order for the same instrument; exits first, then smart entries,
        then regular orders, oldest first within each (``model.EXIT_PRIORITY``).
        Returns ``ClaimResult(None, next_due_at)`` when nothing qualifies, where
        ``next_due_at`` is the earliest moment something may (a hint for sleeping).
        """
        settling_since = holds.settling_since(now, limits.settle_gap)
        with self.transaction() as conn:
            blocked, window_opens_at = self._blocked_lanes(conn, now, limits)
            row = (
                conn.execute(
                    self._claim_candidate,
                    {
                        "now": now,
                        "blocked": blocked,
                        "settling_since": settling_since,
                    },
                )
                .mappings()
                .first()
            )
            if row is None:
                return ClaimResult(None, self._next_due(conn, now, window_opens_at, limits))
            token = uuid.uuid4().hex
            conn.execute(
                _CLAIM_ROW,
                {
                    "claimed_id": row["id"],
                    "owner": owner,
                    "token": token,
                    "claimed_at": now,
                    "lease_until": now + timedelta(seconds=lease_seconds),
                },
            )
            return ClaimResult(_claimed(row, token, OrderState.SENDING.value, sent_at=None), None)

    def _blocked_lanes(
        self, conn: Connection, now: datetime, limits: RateLimits
    ) -> tuple[list[str], datetime | None]:
        """Account lanes whose claims used their budget in the current window, and when
        the earliest of them frees a slot (the send stamp then keeps the exact count)."""
        blocked, opens = [], None
        windows = {lane: limits.counted_window(lane.value) for lane in Lane}
        # One query when both lanes count over the same window (the default); one per lane
        # when a host limit is per minute.
        groups = (
            [(None, windows[Lane.SMART])]
            if len(set(windows.values())) == 1
            else list(windows.items())
        )
        for lane, seconds in groups:
            window = timedelta(seconds=seconds)
            counted = (
                conn.execute(_LANE_CLAIMS, {"since": now - window})
                if lane is None
                else conn.execute(_ONE_LANE_CLAIMS, {"since": now - window, "lane": lane.value})
            )
            for lane_key, count, oldest in counted:
                if count >= limits.limit_for(lane_key):
                    blocked.append(lane_key)
                    opens = oldest + window if opens is None else min(opens, oldest + window)
        return blocked, opens

    def _next_due(
        self, conn: Connection, now: datetime, window_opens_at: datetime | None, limits: RateLimits
    ) -> datetime | None:
        """Earliest future moment a pending or in-doubt row becomes actionable."""
        candidates = [window_opens_at] if window_opens_at else []
        if limits.settle_gap > 0:
            gap = timedelta(seconds=limits.settle_gap)
            oldest_settling = conn.execute(_OLDEST_SMART_SEND, {"since": now - gap}).scalar()
            if oldest_settling is not None:
                candidates.append(oldest_settling + gap)
        for statement in (_NEXT_AVAILABLE, _NEXT_LEASE_EXPIRY):
            moment = conn.execute(statement, {"now": now}).scalar()
            if moment is not None:
                candidates.append(moment)
        return min(candidates) if candidates else None

    def claim_in_doubt(
        self, owner: str, *, now: datetime, lease_seconds: float, heartbeat_timeout: float
    ) -> ClaimedOrder | None:
        """Lease the oldest due IN_DOUBT order for reconciliation (state unchanged).

        Another dispatcher cannot reconcile it at the same time: the lease must be free
        (never taken, expired, or its holder gone: a process killed mid-check does not
        hold the order, and its instrument, for a whole lease).  Returns None when
        none is due.
        """
        with self.transaction() as conn:
            candidate = (
                select(orders)
                .where(
                    orders.c.state == OrderState.IN_DOUBT.value,
                    orders.c.available_at <= now,
                    lease_is_free(now=now, heartbeat_timeout=heartbeat_timeout),
                )
                .order_by(orders.c.id)
                .limit(1)
            )
            if lock_options := self.backend.claim_lock_options():
                candidate = candidate.with_for_update(of=orders, **lock_options)
            row = conn.execute(candidate).mappings().first()
            if row is None:
                return None
            token = uuid.uuid4().hex
            conn.execute(
                update(orders)
                .where(orders.c.id == row["id"])
                .values(
                    lease_owner=owner,
                    lease_token=token,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
            return _claimed(row, token, OrderState.IN_DOUBT.value, sent_at=row["sent_at"])

    def stamp_send(
        self,
        order: ClaimedOrder,
        *,
        clock: Callable[[], datetime],
        lease_seconds: float,
        door_expected: bool = False,
        limits: RateLimits | None = None,
    ) -> SendStamp:
        """Just before the request leaves: confirm the lease is still held, take a stamp
        inside the account lane's budget, and record the moment of sending with a lease
        from it.

        Stamps are taken one at a time per account lane, on the shared clock:
        with ``limits``, a stamp is refused (``wait_seconds``) while the lane already
        has its limit of stamps in the last window (widened by ``limits.tolerance``,
        the longest a request may take to leave after its stamp).  Since every request
        is stamped before it leaves and none leaves later than that, no window at the
        broker ever holds more than the limit, across processes too.  The reconciler
        also counts from this stamp, so a request held up after its claim is not judged
        missing before it could have arrived.  ``clock`` (the queue's ``Clock.read``, which
        makes no store call: ``Clock.now`` may, and a store call inside a store call waits
        for itself under a green server) is read under the lock; on a backend shared
        across machines the stamp itself is the database server's time.
        """
        with self.transaction() as conn:
            self.backend.lock_account_lane(conn, order.lane_key)
            now = clock()
            sent_at = self.backend.shared_now(conn) if self.backend.spans_machines else now
            taken_at = time.monotonic()
            if limits is not None:
                limit = limits.limit_for(order.lane_key)
                window = timedelta(seconds=limits.counted_window(order.lane_key))
                recent = (
                    conn.execute(
                        _LANE_STAMPS,
                        {
                            "lane_key": order.lane_key,
                            "since": sent_at - window,
                            "id": order.id,
                            "limit": limit,
                        },
                    )
                    .scalars()
                    .all()
                )
                if len(recent) >= limit:
                    opens = recent[-1] + window
                    return SendStamp(wait_seconds=max((opens - sent_at).total_seconds(), 0.001))
            stamped = (
                conn.execute(
                    _STAMP_ROW,
                    {
                        "stamped_id": order.id,
                        "token": order.lease_token,
                        "stamp": sent_at,
                        "door": door_expected,
                        "stamped_at": now,
                        "lease_until": now + timedelta(seconds=lease_seconds),
                    },
                ).rowcount
                == 1
            )
            return SendStamp(go=stamped, lease_lost=not stamped, taken_at=taken_at)


def _claimed(row, token: str, state: str, *, sent_at: datetime | None) -> ClaimedOrder:
    return ClaimedOrder(
        id=row["id"],
        endpoint=row["endpoint"],
        payload=json.loads(row["payload"]),
        apikey_token=row["apikey_token"],
        lane=row["lane"],
        lane_key=row["lane_key"],
        state=state,
        attempts=row["attempts"],
        reconcile_checks=row["reconcile_checks"],
        lease_token=token,
        sent_at=sent_at,
        created_at=row["created_at"],
        receipt=_receipt_of_send(row, sent_at),
        sender_answer_status=row["sender_answer_status"],
    )


def _receipt_of_send(row, sent_at: datetime | None) -> Receipt:
    """The door's receipt of the send stamped ``sent_at``; empty when the door recorded
    none for that send (a receipt of an earlier send of the order is not this one's)."""
    door_expected = bool(row["door_expected"])
    if sent_at is None or row["receipt_sent_at"] != sent_at:
        return Receipt(door_expected, None, None, None, None, None)
    return Receipt(
        door_expected,
        row["host_instance"],
        row["host_received_at"],
        row["host_done_at"],
        row["host_answer_status"],
        row["host_answer_body"],
    )
