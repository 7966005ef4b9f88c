"""Depth samples and the facts the admin page's pictures are drawn from.

A dispatcher samples the depth per state once a minute (one sample for all of
them); the charts read the samples with the sends and acceptances of the same span.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import func, insert, select

from database.order_queue.core import StorePart
from database.order_queue.model import (
    SAMPLE_RETENTION,
    SAMPLED_STATES,
    AttemptKind,
    OrderState,
    attempts,
    orders,
    samples,
)

#: When the queue's depth was last sampled (``record_sample``).
_NEWEST_SAMPLE = select(func.max(samples.c.at))
#: Send attempts that never reached the broker's limits: the request never left, or the
#: API's limiter refused it before any order code ran (``outcome.py``).
_NOT_AT_THE_BROKER = ("not_sent", "throttled")


class ChartFacts(TypedDict):
    """What ``chart_facts`` returns: the admin page's pictures are drawn from it."""

    depth: list[dict[str, Any]]  # samples rows, oldest first
    sends: list[tuple[datetime, str]]  # (sent at, lane key)
    accepted: list[tuple[datetime, datetime]]  # (sent at, queued at)
    current: dict[str, int]  # orders per state now


class Samples(StorePart):
    """The depth over time, written by dispatchers and read by the charts."""

    def record_sample(self, *, now: datetime, every_seconds: float) -> bool:
        """Store the depth per state unless a sample younger than ``every_seconds``
        exists (several dispatchers share the work); drop samples past retention.
        True when a sample was written.  Looks first without the write lock: on most
        heartbeats the newest sample is fresh and nothing need be written."""
        fresh_after = now - timedelta(seconds=every_seconds)
        with self.transaction(read_only=True) as conn:
            newest = conn.execute(_NEWEST_SAMPLE).scalar()
        if newest is not None and newest > fresh_after:
            return False
        with self.transaction() as conn:
            newest = conn.execute(_NEWEST_SAMPLE).scalar()  # another process may have
            if newest is not None and newest > fresh_after:
                return False
            counts: dict[str, int] = dict(
                conn.execute(
                    select(orders.c.state, func.count())
                    .where(orders.c.state.in_(SAMPLED_STATES))
                    .group_by(orders.c.state)
                )
                .tuples()  # rows as (state, count) tuples (for the type checker; no-op)
                .all()
            )
            conn.execute(
                insert(samples).values(
                    at=now, **{state: counts.get(state, 0) for state in SAMPLED_STATES}
                )
            )
            conn.execute(samples.delete().where(samples.c.at < now - SAMPLE_RETENTION))
            return True

    def chart_facts(
        self, *, since_samples: datetime, since_sends: datetime, since_latency: datetime
    ) -> ChartFacts:
        """What the admin page's pictures are drawn from, in one transaction: depth
        samples, send moments per account lane, (sent at, queued at) of orders the
        broker accepted, and the depth per state now."""
        with self.transaction(read_only=True) as conn:
            depth = [
                dict(row)
                for row in conn.execute(
                    select(samples).where(samples.c.at >= since_samples).order_by(samples.c.at)
                ).mappings()
            ]
            # Requests that reached the broker's limits, at the moment each left (the
            # answer's moment less its latency): not the ones refused before the order
            # code (never left, or the limiter's 429).
            sends = conn.execute(
                select(attempts.c.at, attempts.c.latency_ms, orders.c.lane_key)
                .join(orders, orders.c.id == attempts.c.order_id)
                .where(
                    attempts.c.kind == AttemptKind.SEND.value,
                    attempts.c.at >= since_sends,
                    attempts.c.outcome.not_in(_NOT_AT_THE_BROKER),
                )
            ).all()
            accepted = conn.execute(
                select(attempts.c.at, orders.c.created_at)
                .join(orders, orders.c.id == attempts.c.order_id)
                .where(
                    attempts.c.kind == AttemptKind.SEND.value,
                    attempts.c.outcome == "accepted",
                    attempts.c.at >= since_latency,
                )
            ).all()
            by_state: dict[str, int] = dict(
                conn.execute(select(orders.c.state, func.count()).group_by(orders.c.state))
                .tuples()  # rows as (state, count) tuples (for the type checker; no-op)
                .all()
            )
        return {
            "depth": depth,
            "sends": [
                (at - timedelta(milliseconds=latency or 0.0), lane_key)
                for at, latency, lane_key in sends
            ],
            "accepted": [tuple(row) for row in accepted],
            "current": {state.value: by_state.get(state.value, 0) for state in OrderState},
        }
