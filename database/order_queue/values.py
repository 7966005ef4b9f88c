"""The values the store hands out and takes in: a claimed order and its receipt, a claim's
result, the rate limits a claim obeys, the send stamp's decision, an alert's key.

Plain frozen dataclasses, so the services can pass them around without a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from database.order_queue.model import Lane


@dataclass(frozen=True)
class ClaimedOrder:
    """An order leased to one dispatcher.  Every mark must present ``lease_token``."""

    id: int
    endpoint: str
    payload: dict[str, Any]  # without apikey
    apikey_token: str
    lane: str
    lane_key: str
    state: str  # SENDING for a send, IN_DOUBT for a reconciliation
    attempts: int
    reconcile_checks: int
    lease_token: str
    #: The current send's stamp: None for a fresh claim, the stamp for a reconciliation.
    sent_at: datetime | None
    created_at: datetime
    receipt: Receipt
    #: What the sender got back for the current send, from whoever answered
    #: (``orders.sender_answer_status``); None before an answer or for none.
    sender_answer_status: int | None = None


@dataclass(frozen=True)
class Receipt:
    """What the host process that received the current send recorded of it (every
    claimed order has one; all empty when the host recorded nothing).

    ``door_expected``: the host's answers to the dispatcher's earlier requests showed
    its door (it runs the plugin), so a request that left no receipt was refused at the
    door and never reached the order code.  ``instance``: the dispatcher id of the
    receiving process (whose liveness the dispatchers table tells), or its process id
    when it had no running dispatcher."""

    door_expected: bool
    instance: str | None
    received_at: datetime | None
    done_at: datetime | None
    answer_status: int | None
    answer_body: str | None


@dataclass
class AlertKey:
    """The key an alert carried, as the webhook's guard read it (``alert_keys.py``).
    ``key_id``: the stored key, set by the enqueue that took it, so the request's
    further orders (a Chartink alert's other stocks) join it."""

    scope: str
    key: str
    body_hash: str
    expires_at: datetime
    key_id: int | None = None


class DuplicateAlert(Exception):
    """The alert's key was taken (by its first copy) before this one could queue
    anything: nothing was stored.  ``conflict``: it was taken with another body."""

    def __init__(self, key_id: int, *, conflict: bool):
        super().__init__(f"alert key already used (key {key_id})")
        self.key_id = key_id
        self.conflict = conflict


@dataclass(frozen=True)
class ClaimResult:
    """What a claim found: an order, or none and the earliest time one may be due."""

    order: ClaimedOrder | None
    next_due_at: datetime | None


@dataclass(frozen=True)
class RateLimits:
    """Orders per ``window`` seconds allowed per account and lane, and the settle gap
    between two smart orders for the same instrument (a smart order sizes itself from
    the position the previous one left, so that one must have settled)."""

    smart: int
    regular: int
    window: float
    settle_gap: float = 0.0
    #: A lane whose host limit is per minute counts over its own window (else ``window``).
    smart_window: float | None = None
    regular_window: float | None = None
    #: The longest a request may take to leave after its send stamp (the sender stamps
    #: again when its stamp took longer); windows are counted this much wider.
    tolerance: float = 0.0
    #: How much later than its neighbours the host's limiter may count a request;
    #: windows are counted this much wider again.
    jitter: float = 0.0

    def limit_for(self, lane_key: str) -> int:
        return self.smart if lane_key.startswith(Lane.SMART.value) else self.regular

    def window_for(self, lane_key: str) -> float:
        own = self.smart_window if lane_key.startswith(Lane.SMART.value) else self.regular_window
        return own or self.window

    def counted_window(self, lane_key: str) -> float:
        return self.window_for(lane_key) + self.tolerance + self.jitter


@dataclass(frozen=True)
class SendStamp:
    """The send stamp's decision: ``go`` (stamped: send now), wait ``wait_seconds`` for
    the account lane's window to free a turn, or ``lease_lost`` (another owner: never send)."""

    go: bool = False
    lease_lost: bool = False
    wait_seconds: float = 0.0
    #: ``time.monotonic()`` when the stamp's time was read: the request must leave soon
    #: after it (waiting for the database before that does not count).
    taken_at: float = 0.0
