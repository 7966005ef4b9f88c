"""The read side: depth, listings, stats, held orders, the attempt trail.

Every read runs in a read-only transaction and hands out plain dicts without the sealed
API key or the lease token (``_public``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import aliased

from database.order_queue import holds
from database.order_queue.core import StorePart
from database.order_queue.model import (
    DeadReason,
    Lane,
    OrderState,
    attempts,
    orders,
)


class Reads(StorePart):
    """Reads of orders and their trail; none writes."""

    def bound_broker_orderids(self, orderids: list[str], *, excluding: int) -> set[str]:
        """Which of ``orderids`` are already bound to another queued order."""
        if not orderids:
            return set()
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(orders.c.broker_orderid).where(
                    orders.c.broker_orderid.in_(orderids), orders.c.id != excluding
                )
            ).scalars()
            return set(rows)

    def watch_facts(self) -> tuple[datetime | None, int]:
        """For the watchdog: when the oldest pending order was queued (None if none),
        and how many orders are unfinished (pending, sending, in doubt)."""
        with self.transaction(read_only=True) as conn:
            oldest = conn.execute(
                select(func.min(orders.c.created_at)).where(
                    orders.c.state == OrderState.PENDING.value
                )
            ).scalar()
            open_work = conn.execute(
                select(func.count())
                .select_from(orders)
                .where(
                    orders.c.state.in_(
                        [
                            OrderState.PENDING.value,
                            OrderState.SENDING.value,
                            OrderState.IN_DOUBT.value,
                        ]
                    )
                )
            ).scalar_one()
        return oldest, open_work

    def shared_now(self) -> datetime:
        """The clock every process sharing this database agrees on (``clock.py``)."""
        with self.transaction(read_only=True) as conn:
            return self.backend.shared_now(conn)

    def depth(self) -> dict[str, dict[str, int]]:
        """Counts per state and lane, e.g. ``{"pending": {"smart": 1, "regular": 4}}``.

        Every state appears, with zeros, so a dashboard need not guess.
        """
        result = {state.value: {lane.value: 0 for lane in Lane} for state in OrderState}
        with self.transaction(read_only=True) as conn:
            for state, lane, count in conn.execute(
                select(orders.c.state, orders.c.lane, func.count()).group_by(
                    orders.c.state, orders.c.lane
                )
            ):
                result[state][lane] = count
        return result

    def get_order(self, order_id: int, *, with_key_token: bool = False) -> dict[str, Any] | None:
        """One order as a dict, or None.  The encrypted key is left out unless asked
        for (only to show it masked)."""
        with self.transaction(read_only=True) as conn:
            row = conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
            if row is None:
                return None
            data = _public(row)
            if with_key_token:
                data["apikey_token"] = row["apikey_token"]
            return data

    def list_orders(
        self,
        *,
        states: list[str] | None = None,
        strategy: str | None = None,
        symbol: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Orders, newest first, filtered by any of the arguments; empty list if none."""
        query = (
            select(orders)
            .where(*_filters(states, strategy, symbol, reason, since, until))
            .order_by(orders.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.transaction(read_only=True) as conn:
            return [_public(r) for r in conn.execute(query).mappings()]

    def count_orders(
        self,
        *,
        states: list[str] | None = None,
        strategy: str | None = None,
        symbol: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many orders ``list_orders`` would page through with the same filters."""
        query = (
            select(func.count())
            .select_from(orders)
            .where(*_filters(states, strategy, symbol, reason, since, until))
        )
        with self.transaction(read_only=True) as conn:
            return conn.execute(query).scalar_one()

    def stats(self, *, now: datetime, day_start: datetime) -> dict[str, Any]:
        """Depth per state and lane, oldest pending order's age, orders sent since
        ``day_start``, and dead orders awaiting a decision."""
        depth = self.depth()
        with self.transaction(read_only=True) as conn:
            oldest = conn.execute(
                select(func.min(orders.c.created_at)).where(
                    orders.c.state == OrderState.PENDING.value
                )
            ).scalar()
            sent_by_lane: dict[str, int] = dict(
                conn.execute(
                    select(orders.c.lane, func.count())
                    .where(
                        orders.c.state == OrderState.SENT.value, orders.c.finished_at >= day_start
                    )
                    .group_by(orders.c.lane)
                )
                .tuples()  # rows as (lane, count) tuples (for the type checker; no-op)
                .all()
            )
        by_lane = {lane.value: sent_by_lane.get(lane.value, 0) for lane in Lane}
        return {
            "depth": depth,
            "oldest_pending_age_seconds": round((now - oldest).total_seconds(), 3)
            if oldest
            else None,
            "sent_today": sum(by_lane.values()),
            "sent_today_by_lane": by_lane,
            "dead": sum(depth[OrderState.DEAD.value].values()),
        }

    def held_orders(self, *, now: datetime, settle_gap_seconds: float) -> list[dict[str, Any]]:
        """Orders that hold their instrument back, each with what it holds (``holds``:
        a ``holds.Holds`` value, the claim's own rule); and, for the operator's eyes
        beside them, orders dead in doubt that hold nothing (a dead letter holds no
        later order; ``holds`` None)."""
        since = holds.settling_since(now, settle_gap_seconds)
        shown = or_(
            holds.on_the_wire(orders),
            holds.settling(orders, since),
            and_(
                orders.c.state == OrderState.DEAD.value,
                orders.c.dead_reason == DeadReason.IN_DOUBT.value,
            ),
        )
        query = (
            select(orders, holds.holds_what(orders, since).label("holds"))
            .where(shown)
            .order_by(orders.c.id)
            .limit(200)
        )
        with self.transaction(read_only=True) as conn:
            return [_public(row) for row in conn.execute(query).mappings()]

    def later_orders_gone_ahead(self, order_id: int) -> list[dict[str, Any]]:
        """Orders for the same instrument queued after ``order_id`` that are already sent,
        on the wire or in doubt: replaying ``order_id`` now would put it behind them at
        the broker."""
        earlier = aliased(orders)
        query = (
            select(orders)
            .where(
                orders.c.instrument
                == select(earlier.c.instrument).where(earlier.c.id == order_id).scalar_subquery(),
                orders.c.id > order_id,
                orders.c.state.in_(
                    [OrderState.SENT.value, OrderState.SENDING.value, OrderState.IN_DOUBT.value]
                ),
            )
            .order_by(orders.c.id)
        )
        with self.transaction(read_only=True) as conn:
            return [_public(r) for r in conn.execute(query).mappings()]

    def list_attempts(self, order_id: int) -> list[dict[str, Any]]:
        """The attempt trail of one order, oldest first; empty list if none."""
        with self.transaction(read_only=True) as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(attempts).where(attempts.c.order_id == order_id).order_by(attempts.c.id)
                ).mappings()
            ]


def _filters(states, strategy, symbol, reason, since, until) -> list:
    conditions = []
    if states:
        conditions.append(orders.c.state.in_(states))
    if strategy:
        conditions.append(orders.c.strategy == strategy)
    if symbol:
        conditions.append(orders.c.symbol == symbol)
    if reason:
        conditions.append(orders.c.dead_reason == reason)
    if since:
        conditions.append(orders.c.created_at >= since)
    if until:
        conditions.append(orders.c.created_at < until)
    return conditions


def _public(row) -> dict[str, Any]:
    data = {k: v for k, v in dict(row).items() if k not in ("apikey_token", "lease_token")}
    data["payload"] = json.loads(data["payload"])
    return data
