"""The dispatcher: the loop that takes committed orders from the queue and hands them
to a small pool of sender threads, so one slow request does not hold up other accounts.

The loop claims (the claim itself keeps per-account budgets and per-instrument order,
exits first), hands each order to ``sending.Sender`` or, when in doubt, to
``reconciling.Reconciler``, and sleeps on a ``threading.Event``: ``queue_order`` and
every finished send wake it at once; a timed wait (``pacing.loop_wait_seconds``) is
only the fallback for retries, rate windows and heartbeats.  Housekeeping (heartbeat,
recovery of dead dispatchers' orders, expiry, depth samples, purging) runs at most once
per heartbeat period.

Under gunicorn + eventlet these threads are green: the HTTP requests cooperate with the
server's event loop, and every store call runs off it (``order_queue.green``), so the
server keeps answering while thousands of orders drain.  Starting and stopping the
dispatcher of a process is ``runtime.py``'s job.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from database.order_queue.model import QueueStorageError
from database.order_queue.operator_moves import PURGE_BATCH
from database.order_queue.store import QueueStore
from database.order_queue.values import (
    ClaimedOrder,
    RateLimits,
)
from services.order_queue import events
from services.order_queue.alerts import Alerter
from services.order_queue.api_road import ApiRoad
from services.order_queue.clock import Clock
from services.order_queue.door_probe import DoorProbe
from services.order_queue.pacing import loop_wait_seconds
from services.order_queue.reconciling import Reconciler
from services.order_queue.recording import OutcomeRecorder
from services.order_queue.sending import Sender
from services.order_queue.settings import OrderQueueSettings
from services.order_queue.verdicts import VerdictFollower
from utils.logging import get_logger

logger = get_logger(__name__)

PURGE_INTERVAL_SECONDS = 3600
#: How often the queue's depth is sampled for the admin page's picture of the last hours.
SAMPLE_SECONDS = 60
#: After finding no in-doubt order due, how long before looking again (orders are put
#: in doubt to be checked seconds later, so half a second late costs nothing).
IN_DOUBT_LOOK_SECONDS = 0.5


class Dispatcher:
    """Delivers queued orders; one per process is enough, several may share a database."""

    def __init__(
        self,
        store: QueueStore,
        settings: OrderQueueSettings,
        *,
        clock: Clock | None = None,
        alerter: Alerter | None = None,
        app=None,
    ):
        """``clock`` and ``alerter`` are the runtime's; a dispatcher built alone (a test,
        a tool) gets its own of each, the alerter sending where ``settings`` say.
        ``app``: the host app that started it, whose API it may call in-process
        (``api_road.py``); None for a worker or the drain."""
        self.store = store
        self.settings = settings
        self.clock = clock or Clock()
        self.alerter = alerter or Alerter(settings)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limits = RateLimits(
            smart=settings.smart_rate,
            regular=settings.regular_rate,
            window=settings.rate_window_seconds,
            settle_gap=settings.smart_settle_seconds,
            smart_window=settings.smart_rate_window_seconds,
            regular_window=settings.regular_rate_window_seconds,
            tolerance=settings.send_tolerance_seconds,
            jitter=settings.host_jitter_seconds,
        )
        self.road = ApiRoad(settings, app=app, own_name=lambda: self.id)
        self.client = httpx.Client(
            base_url=self.road.base_url,
            transport=self.road,
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._requests_in_flight = 0
        self._thread: threading.Thread | None = None
        self._registered = False
        self._last_housekeeping: float | None = None
        self._last_purge: float | None = None
        self._purge_more = False  # the last purge batch was full: more are past retention
        self._next_in_doubt_look = 0.0
        # Learnt from the host's answers (door.py); until it has answered once, each
        # pass asks it (a host starting up may not listen yet).
        self.door = DoorProbe(self.client)
        recorder = OutcomeRecorder(store, settings, self.clock, self.id, self.alerter)
        self.sender = Sender(
            store=store,
            settings=settings,
            clock=self.clock,
            client=self.client,
            door=self.door,
            recorder=recorder,
            limits=self.limits,
            stopping=self._stopping,
        )
        self.reconciler = Reconciler(
            store=store, settings=settings, clock=self.clock, client=self.client, recorder=recorder
        )
        self.verdicts = VerdictFollower(
            store=store,
            settings=settings,
            clock=self.clock,
            client=self.client,
            alerter=self.alerter,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Register, then run the loop in a background thread (it resumes pending work
        at once; no webhook is needed to get it going)."""
        if self._thread is not None:
            return
        self._register()
        self._thread = threading.Thread(target=self.run, name="order-queue-dispatcher", daemon=True)
        self._thread.start()
        threading.Thread(
            target=self.verdicts.run,
            args=(self._stopping,),
            name="order-queue-verdicts",
            daemon=True,
        ).start()
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
        deadline = self.clock.monotonic() + timeout
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - self.clock.monotonic()))
        with self._idle:
            while self._requests_in_flight and self.clock.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - self.clock.monotonic()))
            drained = self._requests_in_flight == 0
        # Marked stopped only when nothing is on the wire: otherwise another dispatcher
        # would reconcile those orders while their requests may still be answered.
        if drained:
            try:
                if self._registered:
                    self.store.dispatcher_registry.stop_dispatcher(self.id, now=self.clock.now())
            except QueueStorageError as exc:
                logger.error("could not record dispatcher %s stop: %s", self.id, exc)
            self.client.close()
        logger.info(
            "order queue dispatcher %s stopped (%s)",
            self.id,
            "drained" if drained else "requests still in flight",
        )
        return drained

    def _register(self) -> None:
        if not self._registered:
            self.store.dispatcher_registry.register_dispatcher(
                self.id, host=socket.gethostname(), pid=os.getpid(), now=self.clock.now()
            )
            self._registered = True

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Loop until stopped; an error in one pass is logged and the loop carries on."""
        while not self._stopping.is_set():
            wait = self.settings.poll_seconds
            try:
                wait = loop_wait_seconds(wait, self.run_once(), self.clock.now())
            except QueueStorageError as exc:
                logger.error("order queue storage error in dispatcher: %s", exc)
            except Exception:
                logger.exception("order queue dispatcher pass failed; carrying on")
            self._wake.wait(wait)
            self._wake.clear()

    def run_once(self) -> datetime | None:
        """One pass: housekeeping when due, then claim work while sender slots are free.
        Returns when the next order becomes due, if known (the loop sleeps until then)."""
        self._register()
        self._housekeeping()
        if not self.door.known:
            self.door.probe()
        while (
            self._free_slot()
            and not self._stopping.is_set()
            and self.clock.monotonic() >= self._next_in_doubt_look
        ):
            order = self.store.claims.claim_in_doubt(
                self.id,
                now=self.clock.now(),
                lease_seconds=self.settings.lease_seconds,
                heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
            )
            if order is None:
                # Most passes follow a finished send; looking again at once would cost
                # every order one more transaction for nothing.
                self._next_in_doubt_look = self.clock.monotonic() + IN_DOUBT_LOOK_SECONDS
                break
            self._submit(self.reconciler.reconcile, order)
        while self._free_slot() and not self._stopping.is_set():
            claim = self.store.claims.claim_next(
                self.id,
                now=self.clock.now(),
                lease_seconds=self.settings.lease_seconds,
                limits=self.limits,
            )
            if claim.order is None:
                return claim.next_due_at
            self._submit(self.sender.send, claim.order)
        return None

    def _housekeeping(self) -> None:
        """Heartbeat, in-doubt recovery of dead dispatchers' orders, expiry, retention; at
        most once per heartbeat period."""
        tick = self.clock.monotonic()
        if (
            self._last_housekeeping is not None
            and tick - self._last_housekeeping < self.settings.heartbeat_seconds
        ):
            return
        self._last_housekeeping = tick
        now = self.clock.now()
        self.store.dispatcher_registry.heartbeat(self.id, now=now)
        self.store.samples.record_sample(now=now, every_seconds=SAMPLE_SECONDS)
        recovered = self.store.recovery.recover_stale_sending(
            now=now, heartbeat_timeout=self.settings.heartbeat_timeout_seconds, check_at=now
        )
        for order_id in recovered:
            logger.warning(
                "order %s: its dispatcher stopped mid-send; now in doubt, "
                "will be reconciled with the broker's orderbook",
                order_id,
            )
            events.publish(self.alerter, order_id, "in_doubt")
        for row in self.store.recovery.expire_pending(now=now):
            logger.error(
                "order %s dead-lettered: reason=expired strategy=%s symbol=%s queued_at=%s",
                row["id"],
                row["strategy"],
                row["symbol"],
                row["created_at"],
            )
            events.publish(
                self.alerter,
                row["id"],
                "dead",
                reason="expired",
                symbol=row["symbol"],
                strategy=row["strategy"],
            )
        if (
            self._purge_more
            or self._last_purge is None
            or tick - self._last_purge >= PURGE_INTERVAL_SECONDS
        ):
            # One small batch per pass while a backlog lasts: claims go on between them.
            self._last_purge = tick
            purged = self.store.operator_moves.purge_finished(
                older_than=now - timedelta(days=self.settings.retention_days)
            )
            self._purge_more = purged == PURGE_BATCH
            self.store.alert_keys.purge_expired(now)
            if purged:
                logger.info(
                    "purged %s finished orders older than %s days",
                    purged,
                    self.settings.retention_days,
                )

    # ------------------------------------------------------------------ sender pool

    def _free_slot(self) -> bool:
        with self._idle:
            return self._requests_in_flight < self.settings.workers

    def _submit(self, task: Callable[[ClaimedOrder], None], order: ClaimedOrder) -> None:
        with self._idle:
            self._requests_in_flight += 1
        try:
            threading.Thread(
                target=self._run_task,
                args=(task, order),
                name=f"order-queue-{task.__name__.strip('_')}-{order.id}",
                daemon=True,
            ).start()
        except RuntimeError:
            # No thread could start.  The order was claimed but never stamped: recovery
            # puts it straight back to pending (at the next start, or once its lease
            # lapses).  At interpreter shutdown (a server exiting without a signal we
            # see) this dispatcher stops claiming; otherwise the pass fails, is logged,
            # and the loop tries again.
            with self._idle:
                self._requests_in_flight -= 1
                self._idle.notify_all()
            if not sys.is_finalizing():
                raise
            self.request_stop()
            logger.info(
                "order queue dispatcher %s: the interpreter is shutting down; "
                "order %s was not sent and goes back to the queue",
                self.id,
                order.id,
            )

    def _run_task(self, task: Callable[[ClaimedOrder], None], order: ClaimedOrder) -> None:
        try:
            task(order)
        except QueueStorageError as exc:
            # The send stamp or the outcome could not be written; once the lease is free
            # recovery takes the order over (in doubt if its send was stamped, else back
            # to pending), so nothing is lost or doubled.
            logger.error("order %s: queue storage error, left to recovery: %s", order.id, exc)
        except Exception:
            logger.exception("order %s: unexpected error while processing", order.id)
        finally:
            with self._idle:
                self._requests_in_flight -= 1
                self._idle.notify_all()
            self._wake.set()
