"""The dispatcher: takes committed orders from the queue and delivers them to the broker API.

One loop thread claims orders (smart lane first, per-account rate limits and
per-instrument order enforced by the claim itself) and hands each to a small pool of
sender threads, so one slow request does not hold up other accounts.  The loop sleeps on
a ``threading.Event``: ``queue_order`` and every finished send wake it at once; a timed
wait is only the fallback for retries, rate windows and heartbeats.

Under gunicorn + eventlet these threads are green: the HTTP requests cooperate with the
server's event loop, and every store call runs off it (``order_queue_green``), so the
server keeps answering while thousands of orders drain.

Every outcome is decided by ``order_queue_outcome`` and written through
``order_queue_db``; an order whose send outcome is unknown goes IN_DOUBT and is settled
by ``order_queue_reconciler`` against the broker's orderbook, never resent blindly.
How the dispatcher of a process is started and stopped is ``order_queue_lifecycle``.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable

import httpx

from database import order_queue_db
from database.order_queue_db import (
    AttemptKind,
    ClaimedOrder,
    DeadReason,
    QueueStorageError,
    QueueStore,
    RateLimits,
)
from database.order_queue_secrets import CredentialsUnavailable, mask, unseal
from services import order_queue_events
from services.order_queue_outcome import Outcome, Verdict, classify_exception, classify_response
from services.order_queue_reconciler import (
    OrderbookUnavailable,
    fetch_orderbook,
    find_matches,
    next_orderbook_try,
    recorded_verdict,
    request_over_at,
)
from services.order_queue_settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)

#: On each request to the host: ``<order id>:<lease token>`` (or ``probe``), which a
#: host running the plugin checks at its door (``order_queue_fence``).
LEASE_HEADER = "X-Order-Queue-Lease"
PROBE = "probe"
#: On the host's answer: it checked the lease; the value names the receiving process.
FENCE_HEADER = "X-Order-Queue-Fence"

Clock = Callable[[], datetime]
PURGE_INTERVAL_SECONDS = 3600
#: How often the queue's depth is sampled for the admin page's picture of the last hours.
SAMPLE_SECONDS = 60
#: After finding no in-doubt order due, how long before looking again (orders are put
#: in doubt to be checked seconds later, so half a second late costs nothing).
IN_DOUBT_LOOK_SECONDS = 0.5
#: Slow send stamps (see ``_take_turn``) an order may take before it goes back to the
#: queue unsent.
SLOW_STAMPS_ALLOWED = 5


@dataclass
class RunReport:
    """What one pass of the loop did (for tests and for choosing how long to sleep)."""

    sent: list[int] = field(default_factory=list)
    reconciling: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    next_due_at: datetime | None = None


class Dispatcher:
    """Delivers queued orders; one per process is enough, several may share a database."""

    def __init__(self, store: QueueStore, settings: OrderQueueSettings, *,
                 clock: Clock = order_queue_db.utcnow, client: httpx.Client | None = None):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limits = RateLimits(smart=settings.smart_rate, regular=settings.regular_rate,
                                 window=settings.rate_window_seconds,
                                 smart_settle=settings.smart_settle_seconds,
                                 smart_window=settings.smart_rate_window_seconds,
                                 regular_window=settings.regular_rate_window_seconds,
                                 tolerance=settings.send_tolerance_seconds)
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=settings.workers + 2))
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._registered = False
        self._last_housekeeping: float | None = None
        self._last_purge: float | None = None
        self._next_in_doubt_look = 0.0
        # Learnt from the host's answers (order_queue_fence); until it has answered
        # once, each pass asks it (a host starting up may not listen yet).
        self._host_fences = False
        self._fence_known = False
        self.last_heartbeat: datetime | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Register, then run the loop in a background thread (it resumes pending work
        at once; no webhook is needed to get it going)."""
        if self._thread is not None:
            return
        self._register()
        self._thread = threading.Thread(target=self.run, name="order-queue-dispatcher",
                                        daemon=True)
        self._thread.start()
        self.store.start_listener(self.wake, self._stopping)
        logger.info("order queue dispatcher %s started", self.id)

    def wake(self) -> None:
        """Ask the loop to look for work now."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_stop(self) -> None:
        """Stop claiming now, without waiting: safe inside a signal handler, which must
        hand the thread back to the server so it can answer the requests in flight."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, let in-flight requests finish (bounded), leave the rest pending.

        Returns True if nothing was left in flight.  Orders still in flight after the
        timeout stay SENDING and are reconciled by the next dispatcher.
        """
        timeout = self.settings.shutdown_timeout_seconds if timeout is None else timeout
        self.request_stop()
        deadline = time.monotonic() + timeout
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            drained = self._in_flight == 0
        # Marked stopped only when nothing is on the wire: otherwise another dispatcher
        # would reconcile those orders while their requests may still be answered.
        if drained:
            try:
                if self._registered:
                    self.store.stop_dispatcher(self.id, now=self.clock())
            except QueueStorageError as exc:
                logger.error("could not record dispatcher %s stop: %s", self.id, exc)
            self.client.close()
        logger.info("order queue dispatcher %s stopped (%s)", self.id,
                    "drained" if drained else "requests still in flight")
        return drained

    def _register(self) -> None:
        if not self._registered:
            self.store.register_dispatcher(self.id, host=socket.gethostname(), pid=os.getpid(),
                                           now=self.clock())
            self._registered = True

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Loop until stopped; an error in one pass is logged and the loop carries on."""
        while not self._stopping.is_set():
            wait = self.settings.poll_seconds
            try:
                report = self.run_once()
                if report.next_due_at is not None:
                    until_due = (report.next_due_at - self.clock()).total_seconds()
                    wait = min(wait, max(until_due, 0.001))
            except QueueStorageError as exc:
                logger.error("order queue storage error in dispatcher: %s", exc)
            except Exception:
                logger.exception("order queue dispatcher pass failed; carrying on")
            self._wake.wait(wait)
            self._wake.clear()

    def _probe_fence(self) -> None:
        """Ask the host once whether it checks leases at its door, so that even the
        first orders after a start are sent with ``fence_expected`` where it does.  A
        POST like every order (a host's middleware may treat other methods apart); a
        door answers it before the order code, and an API without one refuses the empty
        order."""
        try:
            response = self.client.post(f"{self.settings.host_server}/api/v1/placeorder",
                                        json={}, headers={LEASE_HEADER: PROBE})
        except httpx.HTTPError as exc:
            logger.info("order queue: the API is not answering yet (%s)", type(exc).__name__)
            return  # asked again next pass
        self._learn_fence(response)
        logger.info("order queue: the API %s the door (HTTP %s)",
                    "has" if self._host_fences else "does not have", response.status_code)

    def _learn_fence(self, response: httpx.Response) -> None:
        has_door = FENCE_HEADER in response.headers
        if self._host_fences and not has_door:
            logger.warning("order queue: an answer from the API came without the door's "
                           "header (HTTP %s); orders go without it until it shows again",
                           response.status_code)
        self._host_fences = has_door
        self._fence_known = True

    def run_once(self, now: datetime | None = None) -> RunReport:
        """One pass: housekeeping when due, then claim work while sender slots are free."""
        report = RunReport()
        self._register()
        self._housekeeping(now, report)
        if not self._fence_known:
            self._probe_fence()
        while self._free_slot() and not self._stopping.is_set() and \
                (now is not None or time.monotonic() >= self._next_in_doubt_look):
            order = self.store.claim_in_doubt(self.id, now=now or self.clock(),
                                              lease_seconds=self.settings.lease_seconds)
            if order is None:
                # Most passes follow a finished send; looking again at once would cost
                # every order one more transaction for nothing.
                self._next_in_doubt_look = time.monotonic() + IN_DOUBT_LOOK_SECONDS
                break
            report.reconciling.append(order.id)
            self._submit(self._reconcile, order)
        while self._free_slot() and not self._stopping.is_set():
            claim = self.store.claim_next(self.id, now=now or self.clock(),
                                          lease_seconds=self.settings.lease_seconds,
                                          limits=self.limits)
            if claim.order is None:
                report.next_due_at = claim.next_due_at
                break
            report.sent.append(claim.order.id)
            self._submit(self._send, claim.order)
        return report

    def _housekeeping(self, now: datetime | None, report: RunReport) -> None:
        """Heartbeat, in-doubt recovery of dead dispatchers' orders, expiry; at most once
        per heartbeat period."""
        tick = time.monotonic()
        if self._last_housekeeping is not None and now is None and \
                tick - self._last_housekeeping < self.settings.heartbeat_seconds:
            return
        self._last_housekeeping = tick
        now = now or self.clock()
        self.store.heartbeat(self.id, now=now)
        self.last_heartbeat = now
        self.store.record_sample(now=now, every_seconds=SAMPLE_SECONDS)
        report.recovered = self.store.recover_stale_sending(
            now=now, heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
            check_at=now)
        for order_id in report.recovered:
            logger.warning("order %s: its dispatcher stopped mid-send; now in doubt, "
                           "will be reconciled with the broker's orderbook", order_id)
            order_queue_events.publish(order_id, "in_doubt")
        for row in self.store.expire_pending(now=now):
            report.expired.append(row["id"])
            logger.error("order %s dead-lettered: reason=expired strategy=%s symbol=%s "
                         "queued_at=%s", row["id"], row["strategy"], row["symbol"],
                         row["created_at"])
            order_queue_events.publish(row["id"], "dead", reason="expired",
                                       symbol=row["symbol"], strategy=row["strategy"])
        if self._last_purge is None or tick - self._last_purge >= PURGE_INTERVAL_SECONDS:
            self._last_purge = tick
            purged = self.store.purge_finished(
                older_than=now - timedelta(days=self.settings.retention_days))
            if purged:
                logger.info("purged %s finished orders older than %s days", purged,
                            self.settings.retention_days)

    # ------------------------------------------------------------------ sender pool

    def _free_slot(self) -> bool:
        with self._idle:
            return self._in_flight < self.settings.workers

    def _submit(self, task: Callable[[ClaimedOrder], None], order: ClaimedOrder) -> None:
        with self._idle:
            self._in_flight += 1
        threading.Thread(target=self._run_task, args=(task, order),
                         name=f"order-queue-{task.__name__.strip('_')}-{order.id}",
                         daemon=True).start()

    def _run_task(self, task: Callable[[ClaimedOrder], None], order: ClaimedOrder) -> None:
        try:
            task(order)
        except QueueStorageError as exc:
            # The send stamp or the outcome could not be written; the lease will expire
            # and the order will be reconciled, so nothing is lost or doubled.
            logger.error("order %s: queue storage error, left to recovery: %s", order.id, exc)
        except Exception:
            logger.exception("order %s: unexpected error while processing", order.id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            self._wake.set()

    # ------------------------------------------------------------------ sending

    def _send(self, order: ClaimedOrder) -> None:
        try:
            api_key = unseal(order.apikey_token)
        except CredentialsUnavailable as exc:
            self._dead(order, DeadReason.CREDENTIALS, Verdict(Outcome.CREDENTIALS, message=str(exc)),
                       counts_as_attempt=False)
            return
        url = f"{self.settings.host_server}/api/v1/{order.endpoint}"
        if not self._fence_known:  # a host that just came up: ask before the first send
            self._probe_fence()
            if not self._fence_known:  # not answering yet: this send would not get in
                self._apply(order, Verdict(Outcome.NOT_SENT, message="the API is not "
                                           "answering yet"), latency_ms=0.0)
                return
        if not self._take_turn(order):
            return
        started = time.monotonic()
        try:
            response = self.client.post(url, json={**order.payload, "apikey": api_key},
                                        headers={LEASE_HEADER: f"{order.id}:{order.lease_token}"})
            self._learn_fence(response)
            verdict = classify_response(response)
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
        latency_ms = (time.monotonic() - started) * 1000
        # A broker error may echo the request: the key never reaches the store or logs.
        verdict = replace(verdict, message=verdict.message.replace(api_key, mask(api_key)))
        self._apply(order, verdict, latency_ms)

    def _take_turn(self, order: ClaimedOrder) -> bool:
        """Stamp the send once the account lane's rate window has room (``stamp_send``
        decides, for every process at once); True when the request may leave now.

        A stamp whose write took longer than half the tolerance (a busy database) is
        taken again, so a request never leaves later than that after its stamp; the
        other half covers the trip to the API.  Waiting for the database before the
        stamp's time was read does not count.  An order that cannot get a timely stamp,
        or whose dispatcher is stopping, goes back to the queue unsent."""
        slow_stamps, give_up_at = 0, time.monotonic() + self.settings.lease_seconds / 2
        while slow_stamps < SLOW_STAMPS_ALLOWED and time.monotonic() < give_up_at:
            if self._stopping.is_set():
                break
            stamp = self.store.stamp_send(order, now=self.clock(),
                                          lease_seconds=self.settings.lease_seconds,
                                          fence_expected=self._host_fences, limits=self.limits)
            if stamp.lease_lost:
                logger.error("order %s: lease lost before sending (this dispatcher was too "
                             "slow); NOT sent here, its new owner decides", order.id)
                return False
            if not stamp.go:
                self._stopping.wait(stamp.wait_seconds)
            elif time.monotonic() - stamp.taken_at <= self.limits.tolerance / 2:
                return True
            else:
                slow_stamps += 1
        reason = ("the dispatcher is stopping" if self._stopping.is_set()
                  else "no timely send stamp (a slow database)")
        self._apply(order, Verdict(Outcome.NOT_SENT, message=reason), latency_ms=0.0)
        return False

    def _apply(self, order: ClaimedOrder, verdict: Verdict, latency_ms: float) -> None:
        now = self.clock()
        common = {"now": now, "actor": self.id, "latency_ms": latency_ms}
        outcome = verdict.outcome
        if outcome is Outcome.ACCEPTED:
            done = self.store.mark_sent(order, broker_orderid=verdict.orderid,
                                        http_status=verdict.http_status,
                                        message=verdict.message, **common)
            if done:
                logger.info("order %s sent: %s %s orderid=%s (%s ms)", order.id,
                            order.endpoint, order.payload.get("symbol"), verdict.orderid,
                            round(latency_ms))
                self._publish(order, "sent", orderid=verdict.orderid)
        elif outcome is Outcome.NOT_SENT:
            done = self.store.mark_failed(order, retry_at=now + self._backoff(1),
                                          outcome=outcome.value, error=verdict.message,
                                          counts_as_attempt=False, **common)
            if done:
                logger.warning("order %s not sent (%s); retrying", order.id, verdict.message)
                self._publish(order, "pending", error=verdict.message)
        elif outcome is Outcome.TRANSIENT:
            used = order.attempts + 1
            if used >= self.settings.max_retries:
                done = self._dead(order, DeadReason.RETRIES_EXHAUSTED, verdict,
                                  latency_ms=latency_ms)
            else:
                done = self.store.mark_failed(order, retry_at=now + self._backoff(used),
                                              outcome=outcome.value,
                                              error=_describe(verdict),
                                              counts_as_attempt=True,
                                              http_status=verdict.http_status, **common)
                if done:
                    logger.warning("order %s: transient failure (%s), attempt %s of %s",
                                   order.id, _describe(verdict), used, self.settings.max_retries)
                    self._publish(order, "pending", error=_describe(verdict))
        elif outcome is Outcome.UNKNOWN:
            done = self.store.mark_in_doubt(
                order, outcome=outcome.value, error=_describe(verdict),
                check_at=now + timedelta(seconds=self.settings.reconcile_interval_seconds),
                http_status=verdict.http_status, **common)
            if done:
                logger.warning("order %s in doubt (%s); will check the broker's orderbook",
                               order.id, _describe(verdict))
                self._publish(order, "in_doubt", error=_describe(verdict))
        else:
            reason = (DeadReason.CREDENTIALS if outcome is Outcome.CREDENTIALS
                      else DeadReason.REJECTED)
            done = self._dead(order, reason, verdict, latency_ms=latency_ms)
        if not done and outcome is Outcome.ACCEPTED:
            logger.error("order %s: the broker accepted it as orderid=%s after this "
                         "dispatcher lost its lease; check the broker for a duplicate",
                         order.id, verdict.orderid)
            self.store.record_late_acceptance(
                order.id, now=now, actor=self.id, broker_orderid=verdict.orderid,
                message="accepted after the lease passed to another dispatcher")
        elif not done:
            logger.warning("order %s: lease lost before the outcome (%s) was recorded; "
                           "a newer owner decides", order.id, outcome.value)

    def _dead(self, order: ClaimedOrder, reason: DeadReason, verdict: Verdict, *,
              counts_as_attempt: bool = True, latency_ms: float | None = None,
              kind: AttemptKind = AttemptKind.SEND) -> bool:
        error = _describe(verdict)
        done = self.store.mark_dead(order, now=self.clock(), actor=self.id, reason=reason,
                                    outcome=verdict.outcome.value, error=error,
                                    counts_as_attempt=counts_as_attempt,
                                    http_status=verdict.http_status, latency_ms=latency_ms,
                                    kind=kind)
        if done:
            logger.error("order %s dead-lettered: reason=%s strategy=%s symbol=%s error=%s",
                         order.id, reason.value, order.payload.get("strategy"),
                         order.payload.get("symbol"), error)
            self._publish(order, "dead", reason=reason.value, error=error)
        return done

    def _publish(self, order: ClaimedOrder, state: str, **details) -> None:
        order_queue_events.publish(order.id, state, symbol=order.payload.get("symbol"),
                                   strategy=order.payload.get("strategy"), **details)

    def _backoff(self, attempt: int) -> timedelta:
        """Exponential with full jitter in the upper half; never shorter than the rate
        window, so an order's earlier send has always left the window it is counted in."""
        ceiling = min(self.settings.retry_cap_seconds,
                      self.settings.retry_base_seconds * 2 ** (attempt - 1))
        delay = max(ceiling * random.uniform(0.5, 1.0), self.settings.rate_window_seconds)
        return timedelta(seconds=delay)

    # ------------------------------------------------------------------ reconciling

    def _reconcile(self, order: ClaimedOrder) -> None:
        """Settle an in-doubt order (design §3): from the answer its host kept at the
        door if there is one, else against the broker's orderbook, resending only once
        the original request cannot place it any more (``request_over_at``)."""
        recorded = recorded_verdict(order.receipt)
        if recorded is not None and self._settle_from_recorded_answer(order, recorded):
            return
        now = self.clock()
        receipt = order.receipt
        if receipt is not None and receipt.fence_expected and receipt.received_at is None:
            self._release(order, "refused at the host's door or never arrived: not placed")
            return
        over_at = self._request_over_at(order, now)
        checks_done = order.reconcile_checks + 1
        last_check = checks_done >= self.settings.reconcile_checks
        try:
            api_key = unseal(order.apikey_token)
        except CredentialsUnavailable as exc:
            self._dead(order, DeadReason.CREDENTIALS, Verdict(Outcome.CREDENTIALS, message=str(exc)),
                       counts_as_attempt=False, kind=AttemptKind.RECONCILE)
            return
        try:
            book = fetch_orderbook(self.client, self.settings.host_server, api_key)
        except OrderbookUnavailable as exc:
            pause = next_orderbook_try(order.reconcile_checks,
                                       interval=self.settings.reconcile_interval_seconds,
                                       hold_seconds=self.settings.orderbook_wait_seconds)
            if pause is None:
                self._dead(order, DeadReason.IN_DOUBT,
                           Verdict(Outcome.UNKNOWN, message=f"orderbook unavailable: {exc}"),
                           counts_as_attempt=False, kind=AttemptKind.RECONCILE)
            else:
                self._check_again(order, f"orderbook unavailable: {exc}", pause)
            return
        result = find_matches(order.endpoint, order.payload, order.dispatched_at, book)
        unbound = sorted(set(result.orderids) - self.store.bound_broker_orderids(
            result.orderids, excluding=order.id))
        now = self.clock()
        # Behind the host's door (it said so, or it left a receipt): its timing is known.
        fenced = receipt is not None and (receipt.fence_expected or
                                          receipt.received_at is not None)
        if result.unreadable or len(unbound) > 1:
            detail = (f"{len(unbound)} matching orders at the broker ({', '.join(unbound)})"
                      + (f", {result.unreadable} with unreadable timestamps"
                         if result.unreadable else ""))
            self._dead(order, DeadReason.IN_DOUBT,
                       Verdict(Outcome.UNKNOWN, message=f"ambiguous: {detail}"),
                       counts_as_attempt=False, kind=AttemptKind.RECONCILE)
        elif len(unbound) == 1:
            self._adopt(order, unbound[0], "adopted the broker's matching order")
        elif (last_check or fenced) and now < over_at:
            # The request may still be in progress (the host, or the broker behind it,
            # may still place it): look again once it cannot be.
            logger.info("order %s not in the orderbook yet; its request may be in progress "
                        "until %s (receipt %s)", order.id, over_at, receipt)
            self.store.note_reconcile_miss(
                order, now=now, actor=self.id, check_at=over_at,
                message="not in the orderbook yet; waiting until the original request "
                        "cannot still be in progress")
        elif last_check or fenced:
            self._release(order, f"not in the orderbook after {checks_done} checks")
        else:
            self._check_again(order, "not in the orderbook yet")

    def _settle_from_recorded_answer(self, order: ClaimedOrder, verdict: Verdict) -> bool:
        """Decide from the host's kept answer where it is decisive; False leaves the
        order to the orderbook (an answer that says nothing of the placement: 5xx)."""
        outcome = verdict.outcome
        if outcome is Outcome.ACCEPTED:
            self._adopt(order, verdict.orderid, "the host's answer, kept at its door, "
                                                "said it was placed")
        elif outcome in (Outcome.REJECTED, Outcome.CREDENTIALS):
            reason = (DeadReason.CREDENTIALS if outcome is Outcome.CREDENTIALS
                      else DeadReason.REJECTED)
            self._dead(order, reason, verdict, kind=AttemptKind.RECONCILE)
        elif outcome is Outcome.TRANSIENT and (verdict.http_status or 500) < 500:
            self._release(order, f"the host answered {_describe(verdict)}: not placed")
        else:
            return False
        return True

    def _request_over_at(self, order: ClaimedOrder, now: datetime) -> datetime:
        receipt, gone_since = order.receipt, None
        if receipt is not None and receipt.received_at is not None and \
                receipt.done_at is None and receipt.instance:
            gone_since = self.store.dispatcher_gone_since(
                receipt.instance, now=now,
                heartbeat_timeout=self.settings.heartbeat_timeout_seconds)
        return request_over_at(receipt, dispatched_at=order.dispatched_at,
                               receiver_gone_since=gone_since,
                               settle_seconds=self.settings.broker_settle_seconds,
                               in_progress_seconds=self.settings.in_progress_seconds)

    def _adopt(self, order: ClaimedOrder, orderid: str | None, message: str) -> None:
        if self.store.mark_sent(order, now=self.clock(), actor=self.id, broker_orderid=orderid,
                                outcome="found_at_broker", kind=AttemptKind.RECONCILE,
                                message=message):
            logger.info("order %s reconciled: %s (orderid=%s)", order.id, message, orderid)
            self._publish(order, "sent", orderid=orderid)

    def _release(self, order: ClaimedOrder, message: str) -> None:
        answered = order.receipt.answer_status if order.receipt else None
        if answered and answered >= 500 and order.attempts >= self.settings.max_retries:
            # Not placed, but the API keeps failing: the budget for retries is spent.
            self._dead(order, DeadReason.RETRIES_EXHAUSTED,
                       Verdict(Outcome.UNKNOWN, answered, message=f"{message}; the API "
                               f"answered {answered} {order.attempts} times"),
                       counts_as_attempt=False, kind=AttemptKind.RECONCILE)
            return
        if self.store.release_to_pending(order, now=self.clock(), actor=self.id,
                                         message=message):
            logger.warning("order %s was not placed (%s); sending it again", order.id, message)
            self._publish(order, "pending")

    def _check_again(self, order: ClaimedOrder, message: str,
                     pause: float | None = None) -> None:
        now = self.clock()
        pause = self.settings.reconcile_interval_seconds if pause is None else pause
        self.store.note_reconcile_miss(order, now=now, actor=self.id, message=message,
                                       check_at=now + timedelta(seconds=pause))


def _describe(verdict: Verdict) -> str:
    status = f"HTTP {verdict.http_status}: " if verdict.http_status else ""
    return f"{status}{verdict.message}".strip() or verdict.outcome.value
