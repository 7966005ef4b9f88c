"""Sending one claimed order: open its API key, take its send stamp, post it to the
host's API with its lease, and record what the answer means.

The send stamp (``store.claims.stamp_send``) decides, for every process at once, whether
the account lane's rate window has room, and records the moment of sending.
A request leaves only while its stamp is fresh (``pacing.stamp_is_timely``), so no
window at the broker holds more than its limit.  A broker error may echo the request:
the key never reaches the store or the logs.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import httpx

from database.order_queue.api_keys import CredentialsUnavailable, mask
from database.order_queue.model import DeadReason
from database.order_queue.store import QueueStore
from database.order_queue.values import (
    ClaimedOrder,
    RateLimits,
)
from services.order_queue.clock import Clock
from services.order_queue.door_probe import LEASE_HEADER, DoorProbe
from services.order_queue.outcome import Outcome, Verdict, classify_exception, classify_response
from services.order_queue.pacing import stamp_is_timely
from services.order_queue.recording import OutcomeRecorder
from services.order_queue.settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)

#: Slow send stamps an order may take before it goes back to the queue unsent.
SLOW_STAMPS_ALLOWED = 5


class Sender:
    """Sends claimed orders for one dispatcher."""

    def __init__(
        self,
        *,
        store: QueueStore,
        settings: OrderQueueSettings,
        clock: Clock,
        client: httpx.Client,
        door: DoorProbe,
        recorder: OutcomeRecorder,
        limits: RateLimits,
        stopping: threading.Event,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.client = client
        self.door = door
        self.recorder = recorder
        self.limits = limits
        self.stopping = stopping

    def send(self, order: ClaimedOrder) -> None:
        try:
            api_key = self.store.sealing.unseal(order.apikey_token)
        except CredentialsUnavailable as exc:
            self.recorder.dead(
                order,
                DeadReason.CREDENTIALS,
                Verdict(Outcome.CREDENTIALS, message=str(exc)),
                counts_as_attempt=False,
            )
            return
        if not self.door.known:  # a host that just came up: ask before the first send
            self.door.probe()
            if not self.door.known:  # not answering yet: this send would not get in
                self.recorder.apply(
                    order,
                    Verdict(Outcome.NOT_SENT, message="the API is not answering yet"),
                    latency_ms=0.0,
                )
                return
        if not self.take_turn(order):
            return
        started = self.clock.monotonic()
        try:
            response = self.client.post(
                f"/api/v1/{order.endpoint}",
                json={**order.payload, "apikey": api_key},
                headers={LEASE_HEADER: f"{order.id}:{order.lease_token}"},
            )
            self.door.learn(response)
            verdict = classify_response(response)
        except httpx.HTTPError as exc:
            verdict = classify_exception(exc)
        latency_ms = (self.clock.monotonic() - started) * 1000
        verdict = replace(verdict, message=verdict.message.replace(api_key, mask(api_key)))
        self.recorder.apply(order, verdict, latency_ms)

    def take_turn(self, order: ClaimedOrder) -> bool:
        """Stamp the send once the account lane's rate window has room; True when the
        request may leave now.

        A stamp whose write took too long (a busy database) is taken again; waiting for
        the database before the stamp's time was read does not count.  An order that
        cannot get a timely stamp, or whose dispatcher is stopping, goes back to the
        queue unsent."""
        slow_stamps = 0
        give_up_at = self.clock.monotonic() + self.settings.lease_seconds / 2
        while slow_stamps < SLOW_STAMPS_ALLOWED and self.clock.monotonic() < give_up_at:
            if self.stopping.is_set():
                break
            self.clock.now()  # any due sync of the shared clock happens here, not in the call
            stamp = self.store.claims.stamp_send(
                order,
                clock=self.clock.read,
                lease_seconds=self.settings.lease_seconds,
                door_expected=self.door.host_has_door,
                limits=self.limits,
            )
            if stamp.lease_lost:
                logger.error(
                    "order %s: lease lost before sending (this dispatcher was too "
                    "slow); NOT sent here, its new owner decides",
                    order.id,
                )
                return False
            if not stamp.go:
                self.stopping.wait(stamp.wait_seconds)
            elif stamp_is_timely(stamp.taken_at, self.clock.monotonic(), self.limits.tolerance):
                return True
            else:
                slow_stamps += 1
        reason = (
            "the dispatcher is stopping"
            if self.stopping.is_set()
            else "no timely send stamp (a slow database)"
        )
        self.recorder.apply(order, Verdict(Outcome.NOT_SENT, message=reason), latency_ms=0.0)
        return False
