"""Writing a verdict down: the store's mark for each outcome, the log line a trader
reads, and the live event for the admin page.

``outcome.py`` decides what an answer means; this module records that decision for a
sent order (``apply``) and the reconciler's decisions for an in-doubt one (``adopt``,
``release``, ``check_again``, ``dead``).  Every mark presents the order's lease, so a
dispatcher that lost the order to another records nothing but the evidence.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from database.order_queue.model import (
    AttemptKind,
    DeadReason,
)
from database.order_queue.store import QueueStore
from database.order_queue.values import ClaimedOrder
from services.order_queue import events
from services.order_queue.alerts import Alerter
from services.order_queue.clock import Clock
from services.order_queue.outcome import Outcome, Verdict
from services.order_queue.pacing import backoff_seconds
from services.order_queue.settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)


def describe(verdict: Verdict) -> str:
    """``HTTP 503: broker down``: what an attempt's trail and the logs say of it."""
    status = f"HTTP {verdict.http_status}: " if verdict.http_status else ""
    return f"{status}{verdict.message}".strip() or verdict.outcome.value


class Next(str, enum.Enum):
    """Where a send's outcome takes the order."""

    SENT = "sent"
    PENDING = "pending"
    IN_DOUBT = "in_doubt"
    DEAD = "dead"


@dataclass(frozen=True)
class AfterSend:
    """``after_send``'s decision: the next state, when to look at the order again (a
    retry, or the reconciler's first check), whether it spent an attempt, and why it is
    dead."""

    state: Next
    at: datetime | None = None
    counts_as_attempt: bool = True
    reason: DeadReason | None = None


def after_send(
    verdict: Verdict,
    *,
    attempts: int,
    now: datetime,
    max_retries: int,
    backoff: Callable[[int], timedelta],
    check_after: timedelta,
) -> AfterSend:
    """What a send's verdict does to its order, ``attempts`` having been spent before.

    Accepted: sent.  Refused before it left (not sent) or throttled by the API's
    limiter: pending again, no attempt spent (a throttle waits at least its
    Retry-After).  Transient: pending with backoff, an attempt spent, dead once the
    budget is.  Unknown: in doubt, for the reconciler.  Rejected or credentials: dead.
    """
    outcome = verdict.outcome
    if outcome is Outcome.ACCEPTED:
        return AfterSend(Next.SENT)
    if outcome is Outcome.NOT_SENT:
        return AfterSend(Next.PENDING, at=now + backoff(1), counts_as_attempt=False)
    if outcome is Outcome.THROTTLED:
        wait = max(timedelta(seconds=verdict.retry_after or 0.0), backoff(1))
        return AfterSend(Next.PENDING, at=now + wait, counts_as_attempt=False)
    if outcome is Outcome.TRANSIENT:
        used = attempts + 1
        if used >= max_retries:
            return AfterSend(Next.DEAD, reason=DeadReason.RETRIES_EXHAUSTED)
        return AfterSend(Next.PENDING, at=now + backoff(used))
    if outcome is Outcome.UNKNOWN:
        return AfterSend(Next.IN_DOUBT, at=now + check_after)
    if outcome is Outcome.CREDENTIALS:
        return AfterSend(Next.DEAD, reason=DeadReason.CREDENTIALS)
    return AfterSend(Next.DEAD, reason=DeadReason.REJECTED)


class _Common(TypedDict):
    """What every mark of a send's outcome is given."""

    now: datetime
    actor: str
    latency_ms: float


class OutcomeRecorder:
    """Records verdicts for one dispatcher (``actor`` in the attempt trail)."""

    def __init__(
        self,
        store: QueueStore,
        settings: OrderQueueSettings,
        clock: Clock,
        actor: str,
        alerter: Alerter,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.actor = actor
        self.alerter = alerter

    def apply(self, order: ClaimedOrder, verdict: Verdict, latency_ms: float) -> None:
        """Record the outcome of a send: ``after_send`` decides, this writes it down."""
        now = self.clock.now()
        step = after_send(
            verdict,
            attempts=order.attempts,
            now=now,
            max_retries=self.settings.max_retries,
            backoff=self._backoff,
            check_after=timedelta(seconds=self.settings.reconcile_interval_seconds),
        )
        common: _Common = {"now": now, "actor": self.actor, "latency_ms": latency_ms}
        error = describe(verdict)
        if step.state is Next.SENT:
            done = self.store.lifecycle.mark_sent(
                order,
                broker_orderid=verdict.orderid,
                http_status=verdict.http_status,
                message=verdict.message,
                **common,
            )
            if done:
                logger.info(
                    "order %s sent: %s %s orderid=%s (%s ms)",
                    order.id,
                    order.endpoint,
                    order.payload.get("symbol"),
                    verdict.orderid,
                    round(latency_ms),
                )
                self.publish(order, "sent", orderid=verdict.orderid)
        elif step.state is Next.PENDING:
            assert step.at is not None
            done = self.store.lifecycle.mark_for_retry(
                order,
                retry_at=step.at,
                outcome=verdict.outcome.value,
                error=error,
                counts_as_attempt=step.counts_as_attempt,
                http_status=verdict.http_status,
                **common,
            )
            if done:
                logger.warning(
                    "order %s: %s (%s); retrying, %s of %s attempts spent",
                    order.id,
                    verdict.outcome.value,
                    error,
                    order.attempts + step.counts_as_attempt,
                    self.settings.max_retries,
                )
                self.publish(order, "pending", error=error)
        elif step.state is Next.IN_DOUBT:
            assert step.at is not None
            done = self.store.lifecycle.mark_in_doubt(
                order,
                outcome=verdict.outcome.value,
                error=error,
                check_at=step.at,
                http_status=verdict.http_status,
                **common,
            )
            if done:
                logger.warning(
                    "order %s in doubt (%s); will check the broker's orderbook", order.id, error
                )
                self.publish(order, "in_doubt", error=error)
        else:
            assert step.reason is not None
            done = self.dead(order, step.reason, verdict, latency_ms=latency_ms)
        if not done:
            self._lease_lost(order, verdict, now)

    def _lease_lost(self, order: ClaimedOrder, verdict: Verdict, now: datetime) -> None:
        """Another dispatcher owns the order now: it decides; an acceptance is kept as
        evidence of a possible duplicate."""
        if verdict.outcome is Outcome.ACCEPTED:
            logger.error(
                "order %s: the broker accepted it as orderid=%s after this "
                "dispatcher lost its lease; check the broker for a duplicate",
                order.id,
                verdict.orderid,
            )
            self.store.receipts.record_late_acceptance(
                order.id,
                now=now,
                actor=self.actor,
                broker_orderid=verdict.orderid,
                message="accepted after the lease passed to another dispatcher",
            )
        else:
            logger.warning(
                "order %s: lease lost before the outcome (%s) was recorded; a newer owner decides",
                order.id,
                verdict.outcome.value,
            )

    def dead(
        self,
        order: ClaimedOrder,
        reason: DeadReason,
        verdict: Verdict,
        *,
        counts_as_attempt: bool = True,
        latency_ms: float | None = None,
        kind: AttemptKind = AttemptKind.SEND,
    ) -> bool:
        """Dead-letter the order, loudly: ERROR log line and a live event."""
        error = describe(verdict)
        done = self.store.lifecycle.mark_dead(
            order,
            now=self.clock.now(),
            actor=self.actor,
            reason=reason,
            outcome=verdict.outcome.value,
            error=error,
            counts_as_attempt=counts_as_attempt,
            http_status=verdict.http_status,
            latency_ms=latency_ms,
            kind=kind,
        )
        if done:
            logger.error(
                "order %s dead-lettered: reason=%s strategy=%s symbol=%s error=%s",
                order.id,
                reason.value,
                order.payload.get("strategy"),
                order.payload.get("symbol"),
                error,
            )
            self.publish(order, "dead", reason=reason.value, error=error)
        return done

    def adopt(self, order: ClaimedOrder, orderid: str | None, message: str) -> None:
        """An in-doubt order was placed after all, as ``orderid``."""
        if self.store.lifecycle.mark_sent(
            order,
            now=self.clock.now(),
            actor=self.actor,
            broker_orderid=orderid,
            outcome="found_at_broker",
            kind=AttemptKind.RECONCILE,
            message=message,
        ):
            logger.info("order %s reconciled: %s (orderid=%s)", order.id, message, orderid)
            self.publish(order, "sent", orderid=orderid)

    def release(self, order: ClaimedOrder, message: str) -> None:
        """An in-doubt order was not placed: send it again (or, when the API keeps
        failing and the retry budget is spent, dead-letter it)."""
        # Whose 5xx counts against the retry budget: OpenAlgo's, as its door kept it.
        # Behind a door, a 5xx without a receipt was a gateway's (OpenAlgo restarting
        # behind nginx): the order waits for OpenAlgo, spending nothing.
        receipt = order.receipt
        answered = receipt.answer_status or (
            None if receipt.door_expected else order.sender_answer_status
        )
        if answered and answered >= 500 and order.attempts >= self.settings.max_retries:
            self.dead(
                order,
                DeadReason.RETRIES_EXHAUSTED,
                Verdict(
                    Outcome.UNKNOWN,
                    answered,
                    message=f"{message}; the API answered {answered} {order.attempts} times",
                ),
                counts_as_attempt=False,
                kind=AttemptKind.RECONCILE,
            )
            return
        if self.store.lifecycle.release_to_pending(
            order, now=self.clock.now(), actor=self.actor, message=message
        ):
            logger.warning("order %s was not placed (%s); sending it again", order.id, message)
            self.publish(order, "pending")

    def check_again(
        self,
        order: ClaimedOrder,
        message: str,
        pause: float | None = None,
        *,
        at=None,
        counts_as_check: bool = True,
    ) -> None:
        """Nothing decided yet: look again after ``pause`` seconds (or ``at``).  A look
        that asked nobody (``counts_as_check=False``) spends none of the order's checks."""
        now = self.clock.now()
        if at is None:
            pause = self.settings.reconcile_interval_seconds if pause is None else pause
            at = now + timedelta(seconds=pause)
        self.store.lifecycle.note_reconcile_miss(
            order,
            now=now,
            actor=self.actor,
            message=message,
            check_at=at,
            counts_as_check=counts_as_check,
        )

    def publish(self, order: ClaimedOrder, state: str, **details) -> None:
        events.publish(
            self.alerter,
            order.id,
            state,
            symbol=order.payload.get("symbol"),
            strategy=order.payload.get("strategy"),
            **details,
        )

    def _backoff(self, attempt: int) -> timedelta:
        return timedelta(
            seconds=backoff_seconds(
                attempt,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_cap_seconds,
                floor=self.settings.rate_window_seconds,
            )
        )
