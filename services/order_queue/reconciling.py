"""Settling an order whose send outcome is unknown, never by sending it blindly again
(docs/design.md, "The reconciler's decision").

In order of evidence: the answer its host kept at the door (``recorded_verdict``);
else the broker's orderbook (``orderbook.py``), where exactly one unbound match is
adopted, several go to a human, and none means "not placed" only once the original
request cannot place it any more (``request_over_at``).  While the orderbook cannot
answer, the order waits with backoff (``next_orderbook_try``), then goes to a human.
The three rules are pure functions; ``Reconciler`` applies them.
"""

from __future__ import annotations

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
        recorded = recorded_verdict(order.receipt)
        if recorded is not None and self._settle_from_recorded_answer(order, recorded):
            return
        receipt, record = order.receipt, self.recorder
        if receipt.door_expected and receipt.received_at is None:
            record.release(order, "refused at the host's door or never arrived: not placed")
            return
        now = self.clock.now()
        gone_since = self._receiver_gone_since(order, now)
        over_at = self._request_over_at(order, gone_since)
        if host_still_working(receipt, receiver_gone_since=gone_since, now=now, over_at=over_at):
            # OpenAlgo took the request and is still on it: its door will keep the
            # answer, which settles the order; a gateway's answer to the sender did not.
            record.check_again(
                order, "OpenAlgo is still working on the request", counts_as_check=False
            )
            return
        checks_done = order.reconcile_checks + 1
        last_check = checks_done >= self.settings.reconcile_checks
        try:
            api_key = self.store.sealing.unseal(order.apikey_token)
        except CredentialsUnavailable as exc:
            record.dead(
                order,
                DeadReason.CREDENTIALS,
                Verdict(Outcome.CREDENTIALS, message=str(exc)),
                counts_as_attempt=False,
                kind=AttemptKind.RECONCILE,
            )
            return
        try:
            book = fetch_orderbook(self.client, api_key)
        except OrderbookUnavailable as exc:
            pause = next_orderbook_try(
                order.reconcile_checks,
                interval=self.settings.reconcile_interval_seconds,
                hold_seconds=self.settings.orderbook_wait_seconds,
            )
            if pause is None:
                record.dead(
                    order,
                    DeadReason.IN_DOUBT,
                    Verdict(Outcome.UNKNOWN, message=f"orderbook unavailable: {exc}"),
                    counts_as_attempt=False,
                    kind=AttemptKind.RECONCILE,
                )
            else:
                record.check_again(order, f"orderbook unavailable: {exc}", pause)
            return
        assert order.sent_at is not None  # an in-doubt order's send was stamped
        result = find_matches(
            order.endpoint, order.payload, self.clock.to_wall(order.sent_at), book
        )
        unbound = sorted(
            set(result.orderids)
            - self.store.reads.bound_broker_orderids(result.orderids, excluding=order.id)
        )
        now = self.clock.now()  # the orderbook took its time
        # Behind the host's door (it said so, or it left a receipt): its timing is known.
        behind_door = receipt.door_expected or receipt.received_at is not None
        if result.unreadable or len(unbound) > 1:
            detail = f"{len(unbound)} matching orders at the broker ({', '.join(unbound)})" + (
                f", {result.unreadable} with unreadable timestamps" if result.unreadable else ""
            )
            record.dead(
                order,
                DeadReason.IN_DOUBT,
                Verdict(Outcome.UNKNOWN, message=f"ambiguous: {detail}"),
                counts_as_attempt=False,
                kind=AttemptKind.RECONCILE,
            )
        elif len(unbound) == 1:
            record.adopt(order, unbound[0], "adopted the broker's matching order")
        elif (last_check or behind_door) and now < over_at:
            # The request may still be in progress (the host, or the broker behind it,
            # may still place it): look again once it cannot be.
            logger.info(
                "order %s not in the orderbook yet; its request may be in progress "
                "until %s (receipt %s)",
                order.id,
                over_at,
                receipt,
            )
            record.check_again(
                order,
                "not in the orderbook yet; waiting until the original "
                "request cannot still be in progress",
                at=over_at,
            )
        elif last_check or behind_door:
            record.release(order, f"not in the orderbook after {checks_done} checks")
        else:
            record.check_again(order, "not in the orderbook yet")

    def _settle_from_recorded_answer(self, order: ClaimedOrder, verdict: Verdict) -> bool:
        """Decide from the host's kept answer where it is decisive; False leaves the
        order to the orderbook (an answer that says nothing of the placement: 5xx)."""
        outcome = verdict.outcome
        if outcome is Outcome.ACCEPTED:
            self.recorder.adopt(
                order, verdict.orderid, "the host's answer, kept at its door, said it was placed"
            )
        elif outcome in (Outcome.REJECTED, Outcome.CREDENTIALS):
            reason = (
                DeadReason.CREDENTIALS if outcome is Outcome.CREDENTIALS else DeadReason.REJECTED
            )
            self.recorder.dead(order, reason, verdict, kind=AttemptKind.RECONCILE)
        elif (
            outcome in (Outcome.TRANSIENT, Outcome.THROTTLED) and (verdict.http_status or 500) < 500
        ):
            self.recorder.release(order, f"the host answered {describe(verdict)}: not placed")
        else:
            return False
        return True

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
            settle_seconds=self.settings.broker_settle_seconds,
            in_progress_seconds=self.settings.in_progress_seconds,
        )


def request_over_at(
    receipt: Receipt,
    *,
    sent_at: datetime,
    receiver_gone_since: datetime | None,
    settle_seconds: float,
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
    settle = timedelta(seconds=settle_seconds)
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
