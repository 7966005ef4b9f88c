"""Telling someone beyond the admin page: a dead order, a silent dispatcher, an old queue.

A trader learns of a dead-lettered order only if the page happens to be open; these
alerts reach them elsewhere:

* an outgoing webhook (``ORDER_QUEUE_ALERT_WEBHOOK_URL``): one JSON body that Slack
  (``text``), Discord (``content``) and Telegram's sendMessage (``text`` plus
  ``chat_id`` from ``ORDER_QUEUE_ALERT_TELEGRAM_CHAT_ID``) all accept, with the event's
  fields beside them for anything else;
* inside OpenAlgo, its own Telegram alerts (``services.telegram_alert_service``: a
  broadcast to the users who enabled notifications, only while its bot is active).

Each alert has a key (the order, "dispatcher", "queue age"); the same key is not
repeated within ``ORDER_QUEUE_ALERT_REPEAT_SECONDS``, and at most ``MAX_PER_MINUTE``
go out per minute (the next one says how many were held back).  Raising an alert only
puts it on a bounded in-memory queue: a slow or failing channel never slows or blocks
the dispatcher, and when the queue is full the alert is dropped and counted.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import httpx

from services.order_queue.settings import OrderQueueSettings
from utils.logging import get_logger

logger = get_logger(__name__)

MAX_PER_MINUTE = 20
QUEUE_LIMIT = 200


@dataclass
class Alert:
    kind: str
    key: str
    text: str
    details: dict = field(default_factory=dict)


class Alerter:
    """Deduplicates, rate-limits and delivers alerts from a thread of its own."""

    def __init__(self, settings: OrderQueueSettings | None = None):
        #: Where alerts go and how often they repeat (the runtime builds its alerter with
        #: its own settings; without any, no channel is configured and nothing is sent).
        self.settings = settings or OrderQueueSettings()
        self._pending: queue.Queue[Alert] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._last_by_key: dict[str, float] = {}
        self._sent_times: list[float] = []
        self._held_back = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def raise_alert(self, kind: str, key: str, text: str, **details) -> bool:
        """Queue an alert for delivery; never blocks.  False when the same key was
        alerted recently, no channel is configured, or the queue is full."""
        settings = self.settings
        if not settings.alert_webhook_url and not _openalgo_telegram():
            return False
        now = time.monotonic()
        dedupe = f"{kind}:{key}"
        with self._lock:
            last = self._last_by_key.get(dedupe)
            if last is not None and now - last < settings.alert_repeat_seconds:
                return False
            # Keys past their repeat window are forgotten: one per dead order otherwise.
            self._last_by_key = {
                key: at
                for key, at in self._last_by_key.items()
                if now - at < settings.alert_repeat_seconds
            }
            self._last_by_key[dedupe] = now
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._deliver_forever, name="order-queue-alerts", daemon=True
                )
                self._thread.start()
        try:
            self._pending.put_nowait(Alert(kind, key, text, details))
        except queue.Full:
            with self._lock:
                self._held_back += 1
            return False
        return True

    def _deliver_forever(self) -> None:
        while True:
            alert = self._pending.get()
            try:
                self._deliver(alert)
            except Exception:  # a broken channel must not end the thread
                logger.exception("order queue alert could not be delivered")
            finally:
                self._pending.task_done()

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every queued alert was handed to its channels (a process about
        to exit); False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._pending.all_tasks_done:
            while self._pending.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._pending.all_tasks_done.wait(remaining)
        return True

    def _deliver(self, alert: Alert) -> None:
        now = time.monotonic()
        with self._lock:
            self._sent_times = [t for t in self._sent_times if now - t < 60]
            if len(self._sent_times) >= MAX_PER_MINUTE:
                self._held_back += 1
                return
            self._sent_times.append(now)
            held, self._held_back = self._held_back, 0
        text = alert.text + (f" (+{held} more alerts held back)" if held else "")
        settings = self.settings
        if settings.alert_webhook_url:
            body = {"text": text, "content": text, "event": alert.kind, **alert.details}
            if settings.alert_telegram_chat_id:
                body["chat_id"] = settings.alert_telegram_chat_id
            try:
                response = httpx.post(settings.alert_webhook_url, json=body, timeout=5.0)
                if response.status_code >= 300:
                    logger.warning(
                        "order queue alert webhook answered HTTP %s", response.status_code
                    )
            except httpx.HTTPError as exc:
                logger.warning("order queue alert webhook failed: %s", exc)
        telegram = _openalgo_telegram()
        if telegram is not None and telegram.is_bot_active():
            telegram.send_broadcast_alert(f"Order queue: {text}")


def _openalgo_telegram():
    """OpenAlgo's Telegram alert service when the plugin runs inside OpenAlgo (it
    queues the sends on its own executor), else None."""
    try:
        from services.telegram_alert_service import telegram_alert_service
    except Exception:  # not inside OpenAlgo, or its alert service cannot load
        return None
    return telegram_alert_service
