"""Following a sent order to the broker's verdict: "sent" is not "done".

OpenAlgo's ``placeorder`` success means the broker acknowledged the order, not that it
filled; the broker's risk checks can reject it a moment later (a circuit limit, margin),
and nobody would be told: a rejected exit leaves the position it was to close open.  So
each sent order with a broker order id is followed in OpenAlgo's orderbook (one call per
account covers all of its orders) until it is ``complete``, ``rejected`` or
``cancelled``, or ``ORDER_QUEUE_VERDICT_FOLLOW_SECONDS`` have passed (an open limit
order then stays shown as open).  This runs on a thread of its own, every
``ORDER_QUEUE_VERDICT_POLL_SECONDS``, never on the send path; the orderbook is not one
of the order endpoints OpenAlgo's order limits count.

A rejection or cancellation is told through the alert channels, naming the strategy,
symbol, action, quantity, the broker's order id and its reason; a rejected **exit** is
the loudest alert there is.  Nothing is sent again on its own: the page lists the order
among the failed ones, where a human may send it again.  Where the host has no
orderbook (OpenAlgo's semi_auto mode answers 403) the verdict is ``unknown``.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import timedelta

import httpx

from database.order_queue.api_keys import CredentialsUnavailable
from database.order_queue.model import BrokerStatus, QueueStorageError
from database.order_queue.store import QueueStore
from services.order_queue import events
from services.order_queue.alerts import Alerter
from services.order_queue.clock import Clock
from services.order_queue.orderbook import OrderbookUnavailable, fetch_orderbook
from services.order_queue.settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)

_STATUS_WORDS = {
    "complete": BrokerStatus.COMPLETE,
    "completed": BrokerStatus.COMPLETE,
    "filled": BrokerStatus.COMPLETE,
    "traded": BrokerStatus.COMPLETE,
    "rejected": BrokerStatus.REJECTED,
    "cancelled": BrokerStatus.CANCELLED,
    "canceled": BrokerStatus.CANCELLED,
}
_REASON_FIELDS = ("rejection_reason", "rejectreason", "reason", "status_message", "remarks")


def verdict_of(entry: dict | None) -> tuple[BrokerStatus, str | None]:
    """The orderbook entry of one order as its verdict and the broker's reason."""
    if entry is None:
        return BrokerStatus.UNKNOWN, "not in the broker's orderbook"
    status = _STATUS_WORDS.get(str(entry.get("order_status", "")).strip().lower())
    reason = next((str(entry[f]) for f in _REASON_FIELDS if entry.get(f)), None)
    return status or BrokerStatus.OPEN, reason


class VerdictFollower:
    """Reads the orderbook for one dispatcher's process and tells what it finds."""

    def __init__(
        self,
        *,
        store: QueueStore,
        settings: OrderQueueSettings,
        clock: Clock,
        client: httpx.Client,
        alerter: Alerter,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.client = client
        self.alerter = alerter

    def run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.settings.verdict_poll_seconds):
            try:
                self.follow_once()
            except QueueStorageError as exc:
                logger.warning("broker verdicts not followed this time: %s", exc)
            except Exception:  # the follower must outlive any one bad answer
                logger.exception("broker verdicts not followed this time")

    def follow_once(self) -> None:
        now = self.clock.now()
        since = now - timedelta(seconds=self.settings.verdict_follow_seconds)
        by_account: dict[str, list[dict]] = defaultdict(list)
        for row in self.store.verdicts.to_follow(sent_since=since):
            by_account[row["account"]].append(row)
        for rows in by_account.values():
            self._follow_account(rows)

    def _follow_account(self, rows: list[dict]) -> None:
        try:
            api_key = self.store.sealing.unseal(rows[0]["apikey_token"])
        except CredentialsUnavailable:
            return  # a changed pepper: the queue is paused, and says so
        try:
            book = fetch_orderbook(self.client, api_key)
        except OrderbookUnavailable as exc:
            for row in rows:
                if row["broker_status"] is None:
                    self._record(row, BrokerStatus.UNKNOWN, f"orderbook unavailable: {exc}")
            return
        entries = {str(entry.get("orderid")): entry for entry in book}
        for row in rows:
            self._record(row, *verdict_of(entries.get(str(row["broker_orderid"]))))

    def _record(self, row: dict, status: BrokerStatus, message: str | None) -> None:
        if not self.store.verdicts.record(row["id"], status, message, now=self.clock.now()):
            return
        details = {
            "symbol": row["symbol"],
            "strategy": row["strategy"],
            "broker_orderid": row["broker_orderid"],
            "broker_status": status.value,
            "broker_message": message,
        }
        if status in (BrokerStatus.REJECTED, BrokerStatus.CANCELLED):
            self._tell(row, status, message, details)
        events.publish(self.alerter, row["id"], "sent", **details)

    def _tell(self, row: dict, status: BrokerStatus, message: str | None, details: dict) -> None:
        payload = json.loads(row["payload"])
        what = (
            f"order #{row['id']} {payload.get('action')} {payload.get('quantity')} "
            f"{row['symbol']} ({row['strategy'] or '-'}), broker order {row['broker_orderid']}"
        )
        reason = message or "no reason given"
        if status is BrokerStatus.REJECTED and row["exit"]:
            kind = "exit_rejected"
            text = (
                f"URGENT: EXIT REJECTED by the broker after OpenAlgo accepted it: {what}: "
                f"{reason}. The position it was to close is STILL OPEN."
            )
            logger.critical(text)
        elif status is BrokerStatus.REJECTED:
            kind = "rejected"
            text = f"REJECTED by the broker after OpenAlgo accepted it: {what}: {reason}"
            logger.error(text)
        else:
            kind = "cancelled"
            text = f"CANCELLED at the broker after it was placed: {what}: {reason}"
            logger.warning(text)
        self.alerter.raise_alert(kind, str(row["id"]), text, order_id=row["id"], **details)
