"""Settling an order whose send outcome is unknown, never by sending it blindly again
(docs/design.md, "The reconciler's decision").

In order of evidence: the answer its host kept at the door (``recorded_verdict``);
else the broker's orderbook (``orderbook.py``), where exactly one unbound match is
adopted, several go to a human, and none means "not placed" only once the original
request cannot place it any more (``request_over_at``).  While the orderbook cannot
answer, the order waits with backoff (``next_orderbook_try``), then goes to a human.
Each step is a pure decision (facts in, ``Decision`` out: ``from_kept_answer``,
``from_receipt``, ``from_orderbook``, with the rules of time they use); ``Reconciler``
gathers the facts and applies the decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from database.order_queue.api_keys import CredentialsUnavailable
from database.order_queue.model import (
    AttemptKind,
    DeadReason,
)
from database.order_queue.store import QueueStore
from database.order_queue.values import (
    ClaimedOrder,
    Receipt,
)
from services.order_queue.clock import Clock
from services.order_queue.door_probe import DOOR_HEADER
from services.order_queue.orderbook import OrderbookUnavailable, fetch_orderbook, find_matches
from services.order_queue.outcome import Outcome, Verdict, classify_response
from services.order_queue.recording import OutcomeRecorder, describe
from services.order_queue.settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)


class Reconciler:
    """Settles in-doubt orders for one dispatcher."""

    def __init__(
        self,
        *,
        store: QueueStore,
        settings: OrderQueueSettings,
        clock: Clock,
        client: httpx.Client,
        recorder: OutcomeRecorder,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.client = client
        self.recorder = recorder

    def reconcile(self, order: ClaimedOrder) -> None:
        """Gather the facts for an in-doubt order, in order of evidence, and apply the
        first decision they give (``from_kept_answer``, ``from_receipt``,
        ``from_orderbook``)."""
        decision = from_kept_answer(recorded_verdict(order.receipt))
        if decision is None:
            now = self.clock.now()
            gone_since = self._receiver_gone_since(order, now)
            over_at = self._request_over_at(order, gone_since)
            decision = from_receipt(
                order.receipt, receiver_gone_since=gone_since, now=now, over_at=over_at
            )
            if decision is None:
                decision = self._ask_the_orderbook(order, over_at)
        self._apply(order, decision)

    def _ask_the_orderbook(self, order: ClaimedOrder, over_at: datetime) -> Decision:
        checks_done = order.reconcile_checks + 1
        try:
            api_key = self.store.sealing.unseal(order.apikey_token)
        except CredentialsUnavailable as exc:
            return Decision(
                Do.DEAD,
                reason=DeadReason.CREDENTIALS,
                verdict=Verdict(Outcome.CREDENTIALS, message=str(exc)),
            )
        try:
            book = fetch_orderbook(self.client, api_key)
        except OrderbookUnavailable as exc:
            pause = next_orderbook_try(
                order.reconcile_checks,
                interval=self.settings.reconcile_interval_seconds,
                hold_seconds=self.settings.orderbook_wait_seconds,
            )
            message = f"orderbook unavailable: {exc}"
            if pause is None:
                return Decision(
                    Do.DEAD,
                    reason=DeadReason.IN_DOUBT,
                    verdict=Verdict(Outcome.UNKNOWN, message=message),
                )
            return Decision(Do.CHECK_AGAIN, message, at=self.clock.now() + timedelta(seconds=pause))
        assert order.sent_at is not None  # an in-doubt order's send was stamped
        result = find_matches(
            order.endpoint, order.payload, self.clock.to_wall(order.sent_at), book
        )
        unbound = sorted(
            set(result.orderids)
            - self.store.reads.bound_broker_orderids(result.orderids, excluding=order.id)
        )
        receipt = order.receipt
        return from_orderbook(
            unbound,
            result.unreadable,
            checks_done=checks_done,
            last_check=checks_done >= self.settings.reconcile_checks,
            # Behind the host's door (it said so, or it left a receipt): its timing is known.
            behind_door=receipt.door_expected or receipt.received_at is not None,
            now=self.clock.now(),  # the orderbook took its time
            over_at=over_at,
        )

    def _apply(self, order: ClaimedOrder, decision: Decision) -> None:
        record = self.recorder
        if decision.do is Do.ADOPT:
            record.adopt(order, decision.orderid, decision.message)
        elif decision.do is Do.RELEASE:
            record.release(order, decision.message)
        elif decision.do is Do.CHECK_AGAIN:
            if decision.at is not None:
                logger.info("order %s: %s (until %s)", order.id, decision.message, decision.at)
            record.check_again(
                order,
                decision.message,
                at=decision.at,
                counts_as_check=decision.counts_as_check,
            )
        else:
            assert decision.reason is not None and decision.verdict is not None
            record.dead(
                order,
                decision.reason,
                decision.verdict,
                counts_as_attempt=decision.counts_as_attempt,
                kind=AttemptKind.RECONCILE,
            )

    def _receiver_gone_since(self, order: ClaimedOrder, now: datetime) -> datetime | None:
        """Since when the process that received the request (per its receipt) is gone,
        while that request is unfinished; None when it lives, finished, or never got it."""
        receipt = order.receipt
        if receipt.received_at is None or receipt.done_at is not None or not receipt.instance:
            return None
        return self.store.dispatcher_registry.dispatcher_gone_since(
            receipt.instance, now=now, heartbeat_timeout=self.settings.heartbeat_timeout_seconds
        )

    def _request_over_at(self, order: ClaimedOrder, gone_since: datetime | None) -> datetime:
        assert order.sent_at is not None  # an in-doubt order's send was stamped
        return request_over_at(
            order.receipt,
            sent_at=order.sent_at,
            receiver_gone_since=gone_since,
            broker_settle_seconds=self.settings.broker_settle_seconds,
            in_progress_seconds=self.settings.in_progress_seconds,
        )


class Do(str, enum.Enum):
    """What the reconciler does with an in-doubt order."""

    ADOPT = "adopt"  # it was placed: sent, with the broker's order id
    RELEASE = "release"  # it was not placed: pending again (or dead once retries are spent)
    CHECK_AGAIN = "check_again"  # not decided yet
    DEAD = "dead"  # to a human


@dataclass(frozen=True)
class Decision:
    """A reconciliation's decision, with what the trail says of it."""

    do: Do
    message: str = ""
    orderid: str | None = None
    #: CHECK_AGAIN: when (None: after the usual interval).
    at: datetime | None = None
    #: CHECK_AGAIN: whether the look spends one of the order's checks.
    counts_as_check: bool = True
    #: DEAD: why, and the verdict the trail keeps.
    reason: DeadReason | None = None
    verdict: Verdict | None = None
    counts_as_attempt: bool = False


def from_kept_answer(kept: Verdict | None) -> Decision | None:
    """Decide from the host's answer kept at its door where it is decisive; None leaves
    the order to the receipt and the orderbook (no answer, or a 5xx, which says
    nothing of the placement)."""
    if kept is None:
        return None
    if kept.outcome is Outcome.ACCEPTED:
        return Decision(
            Do.ADOPT,
            "the host's answer, kept at its door, said it was placed",
            orderid=kept.orderid,
        )
    if kept.outcome in (Outcome.REJECTED, Outcome.CREDENTIALS):
        reason = (
            DeadReason.CREDENTIALS if kept.outcome is Outcome.CREDENTIALS else DeadReason.REJECTED
        )
        return Decision(Do.DEAD, reason=reason, verdict=kept, counts_as_attempt=True)
    if kept.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED) and (kept.http_status or 500) < 500:
        return Decision(Do.RELEASE, f"the host answered {describe(kept)}: not placed")
    return None


def from_receipt(
    receipt: Receipt, *, receiver_gone_since: datetime | None, now: datetime, over_at: datetime
) -> Decision | None:
    """Decide from the door's receipt alone where it is decisive: a request the door
    expected but never saw was not placed; one OpenAlgo is still working on waits for
    its kept answer (a gateway's answer to the sender ended nothing).  None: ask the
    orderbook."""
    if receipt.door_expected and receipt.received_at is None:
        return Decision(Do.RELEASE, "refused at the host's door or never arrived: not placed")
    if host_still_working(
        receipt, receiver_gone_since=receiver_gone_since, now=now, over_at=over_at
    ):
        return Decision(
            Do.CHECK_AGAIN, "OpenAlgo is still working on the request", counts_as_check=False
        )
    return None


def from_orderbook(
    unbound: list[str],
    unreadable: int,
    *,
    checks_done: int,
    last_check: bool,
    behind_door: bool,
    now: datetime,
    over_at: datetime,
) -> Decision:
    """Decide from the orderbook's matches not bound to another order (``unbound``) and
    those whose time could not be read: exactly one is adopted; several, or any
    unreadable, go to a human; none means "not placed" only on the last check or
    behind the door, and only once the request cannot place it any more (``over_at``)."""
    if unreadable or len(unbound) > 1:
        detail = f"{len(unbound)} matching orders at the broker ({', '.join(unbound)})" + (
            f", {unreadable} with unreadable timestamps" if unreadable else ""
        )
        return Decision(
            Do.DEAD,
            reason=DeadReason.IN_DOUBT,
            verdict=Verdict(Outcome.UNKNOWN, message=f"ambiguous: {detail}"),
        )
    if len(unbound) == 1:
        return Decision(Do.ADOPT, "adopted the broker's matching order", orderid=unbound[0])
    if (last_check or behind_door) and now < over_at:
        return Decision(
            Do.CHECK_AGAIN,
            "not in the orderbook yet; waiting until the original "
            "request cannot still be in progress",
            at=over_at,
        )
    if last_check or behind_door:
        return Decision(Do.RELEASE, f"not in the orderbook after {checks_done} checks")
    return Decision(Do.CHECK_AGAIN, "not in the orderbook yet")


def request_over_at(
    receipt: Receipt,
    *,
    sent_at: datetime,
    receiver_gone_since: datetime | None,
    broker_settle_seconds: float,
    in_progress_seconds: float,
) -> datetime:
    """The moment after which the original request can no longer place the order
    anywhere, so that an order the orderbook does not show by then was not placed.

    Without the host's door (``door.py``) only the long bound is known: the send plus
    however long the API may keep talking to the broker, whatever the sender was
    answered (a 5xx may be a gateway's, with OpenAlgo still on the request).  With a
    door: a request
    that left no receipt was refused at the door, or never arrived and never can (now);
    one the host finished, or whose receiving process is gone, leaves only the broker's
    own settle time; one a live host is still working on, the long bound.
    """
    settle = timedelta(seconds=broker_settle_seconds)
    if receipt.done_at is not None:  # OpenAlgo's door kept its answer (a 5xx)
        return receipt.done_at + settle
    if receipt.received_at is None and not receipt.door_expected:
        return sent_at + timedelta(seconds=in_progress_seconds)
    if receipt.received_at is None:  # behind a door that leaves a receipt: never got in
        return sent_at
    if receiver_gone_since is not None:
        return max(receiver_gone_since, receipt.received_at) + settle
    return receipt.received_at + timedelta(seconds=in_progress_seconds)


def host_still_working(
    receipt: Receipt, *, receiver_gone_since: datetime | None, now: datetime, over_at: datetime
) -> bool:
    """OpenAlgo's door took the request, OpenAlgo has not finished it, the process that
    took it lives, and it may still be placing the order: nothing but OpenAlgo's own
    record can end the wait (docs/design.md, "Which answers end a request")."""
    return (
        receipt.received_at is not None
        and receipt.done_at is None
        and receiver_gone_since is None
        and now < over_at
    )


def recorded_verdict(receipt: Receipt) -> Verdict | None:
    """The host's own answer to the original request, kept at its door, as the verdict
    its sender would have reached; None when the host recorded none."""
    if receipt.done_at is None or receipt.answer_status is None:
        return None
    answer = httpx.Response(  # OpenAlgo's own answer: it went through the door
        receipt.answer_status,
        content=(receipt.answer_body or "").encode("utf-8"),
        headers={DOOR_HEADER: receipt.instance or ""},
    )
    return classify_response(answer)


#: Longest pause between two tries of an orderbook that does not answer.
ORDERBOOK_RETRY_CAP_SECONDS = 10.0


def next_orderbook_try(failed_tries: int, *, interval: float, hold_seconds: float) -> float | None:
    """Seconds until the orderbook is asked again after ``failed_tries`` failures
    (doubling from ``interval``, capped), or None once about ``hold_seconds`` of tries
    have passed: then the order goes to the operator, who can settle it by hand."""
    waited = sum(min(interval * 2**i, ORDERBOOK_RETRY_CAP_SECONDS) for i in range(failed_tries))
    if waited >= hold_seconds:
        return None
    return min(interval * 2**failed_tries, ORDERBOOK_RETRY_CAP_SECONDS, hold_seconds - waited)
