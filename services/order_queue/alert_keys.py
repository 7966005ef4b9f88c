"""An alert sent twice is queued once: the key a webhook carries, and the guard around
the host's webhook views (Strategy and Chartink) that honours it.

Senders resend: a script retries after a timeout although its first try was stored, a
proxy retries, one TradingView alert fires from two alert rules.  A webhook may carry a
key: the header ``Idempotency-Key``, or the body's ``idempotency_key`` (TradingView lets
a user set only the body: ``"idempotency_key": "{{ticker}}-{{timenow}}"``).  Keys are
scoped to the webhook (its path) and live ``ORDER_QUEUE_ALERT_KEY_HOURS`` (24 h), and
never less than the rest of the IST day.

- a key seen before, with the same body: 200 with the first answer, ``"duplicate":
  true`` and the order ids it queued; nothing queued;
- the same key with another body: 409 naming the conflict; nothing queued;
- a key whose first try stored nothing (503, 429, a 4xx) was never taken: the resend
  is new.

The key is read when the host's view queues its first order (``request_key``, from the
body the view has read by then) and taken in the transaction that stores that order
(``database/order_queue/alert_keys.py``): a resend, or a copy arriving at the same
moment, finds it there and stores nothing; ``queue_order`` returns as if it had queued
(it has, once), and ``_after_the_view`` gives the view's answer the resend's form.

**Chartink** alerts carry a natural key, decided here: a Chartink alert names its scan
(``scan_url`` or ``scan_name``), the minute it triggered (``triggered_at``) and the
stocks; the same three again is the same alert delivered twice, so without a key of its
own a Chartink alert is keyed by them.  (Two different alerts of one scan in one minute
with the same stocks would be one trade twice, which is what this refuses.)  An explicit
key wins.  Without a key, and for a Strategy alert without one, nothing changes: two
identical alerts are two orders.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from flask import jsonify, request

from database.order_queue.model import QueueStorageError
from database.order_queue.values import (
    AlertKey,
    DuplicateAlert,
)
from services.order_queue import runtime
from services.order_queue.ist import day_start_utc
from utils.logging import get_logger

logger = get_logger(__name__)

KEY_HEADER = "Idempotency-Key"
KEY_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 255
#: The host's webhooks that queue orders (OpenAlgo's Strategy and Chartink managers).
STRATEGY_WEBHOOK = "/strategy/webhook/"
CHARTINK_WEBHOOK = "/chartink/webhook/"


class BadAlertKey(ValueError):
    """The key is not a usable string; the message names the header or field."""


def key_expiry(now: datetime, hours: float) -> datetime:
    """How long a key lives: ``hours``, and at least to the end of the IST day."""
    return max(now + timedelta(hours=hours), day_start_utc(now) + timedelta(days=1))


def alert_key_of(path: str, headers, body, *, expires_at: datetime) -> AlertKey | None:
    """The key of one webhook request, or None; raises ``BadAlertKey``."""
    raw, source = headers.get(KEY_HEADER), f"the {KEY_HEADER} header"
    if raw is None and isinstance(body, dict) and KEY_FIELD in body:
        raw, source = body[KEY_FIELD], f"the '{KEY_FIELD}' field"
        if raw is None:  # present but null: a template that filled in nothing
            raise BadAlertKey(f"{source} must be a string of 1 to {MAX_KEY_LENGTH} characters")
    if raw is None:
        natural = chartink_key(body) if path.startswith(CHARTINK_WEBHOOK) else None
        if natural is None:
            return None
        return AlertKey(path, natural, natural, expires_at)
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > MAX_KEY_LENGTH:
        raise BadAlertKey(f"{source} must be a string of 1 to {MAX_KEY_LENGTH} characters")
    return AlertKey(path, raw.strip(), _body_hash(body), expires_at)


def chartink_key(body) -> str | None:
    """A Chartink alert's own identity: its scan, its minute and its stocks."""
    if not isinstance(body, dict):
        return None
    scan = body.get("scan_url") or body.get("scan_name")
    if not scan or not body.get("triggered_at") or not body.get("stocks"):
        return None
    identity = json.dumps([str(scan), str(body["triggered_at"]), str(body["stocks"])])
    return "chartink:" + hashlib.sha256(identity.encode()).hexdigest()


def _body_hash(body) -> str:
    content = {k: v for k, v in body.items() if k != KEY_FIELD} if isinstance(body, dict) else body
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def init_app(app) -> None:
    app.after_request(_after_the_view)


#: Where one request's key, and what became of it, is kept: on the request itself (the
#: app context, and with it ``g``, may outlive a request, as under a test client).
_KEY, _BAD_KEY, _DUPLICATE = "order_queue.alert_key", "order_queue.bad_key", "order_queue.dup"


def request_key(queue) -> AlertKey | None:
    """The key of the webhook request being served, read once per request (a Chartink
    alert queues an order per stock, all under one key).  Read when the view queues its
    first order, from the body the view has read by then: never before the view, which
    reads the body within its own time limit.  Raises ``BadAlertKey``, noted for
    ``_after_the_view``."""
    if not _is_webhook():
        return None
    env = request.environ
    if _KEY not in env:
        try:
            env[_KEY] = alert_key_of(
                request.path,
                request.headers,
                _alert_body(),
                expires_at=key_expiry(queue.clock.now(), queue.settings.alert_key_hours),
            )
        except BadAlertKey as exc:
            env[_BAD_KEY] = str(exc)
            raise
    return env[_KEY]


def note_duplicate(taken: DuplicateAlert) -> None:
    """A copy of this alert took its key first: the view's error answer becomes the
    resend's (``_after_the_view``)."""
    request.environ[_DUPLICATE] = taken


def _is_webhook() -> bool:
    return request.method == "POST" and request.path.startswith(
        (STRATEGY_WEBHOOK, CHARTINK_WEBHOOK)
    )


def _alert_body():
    """The alert as the view read it, as JSON whatever its Content-Type (TradingView
    sends text/plain), or None."""
    try:
        return json.loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _after_the_view(response):
    """A resent alert gets the resend's answer (whatever the view said), a bad key a 400
    naming it (the view answered the error ``queue_order`` raised).  The first answer to
    a key this request took is kept for its resends."""
    env = request.environ
    key = env.get(_KEY)
    if key is not None and key.key_id is not None:  # taken here, with an order
        if response.status_code == 200:
            try:
                runtime.current().store.alert_keys.keep_first_answer(
                    key.key_id, response.get_data(as_text=True)
                )
            except QueueStorageError as exc:  # resends still get their order ids
                logger.error("could not keep the first answer of an alert key: %s", exc)
        return response
    if _BAD_KEY in env:
        answer = jsonify(status="error", message=f"{env[_BAD_KEY]}; nothing queued")
        answer.status_code = 400
        return answer
    return _refusal(env[_DUPLICATE]) if _DUPLICATE in env else response


def _refusal(taken: DuplicateAlert):
    if taken.conflict:
        logger.warning("alert refused: its key was used with another body (key %s)", taken.key_id)
        answer = jsonify(
            status="error",
            message=(
                f"conflict: this {KEY_HEADER} / '{KEY_FIELD}' was already used for a "
                f"different alert on this webhook; nothing queued"
            ),
        )
        answer.status_code = 409
        return answer
    queue = runtime.current()
    try:
        first, order_ids = queue.store.alert_keys.answer_for(taken.key_id, queue.clock.now())
    except QueueStorageError:
        first, order_ids = None, []
    try:
        body = json.loads(first) if first else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    body.setdefault("status", "success")
    body.update(
        duplicate=True,
        order_ids=order_ids,
        message=f"{body.get('message') or 'Alert already queued'} (duplicate: nothing queued)",
    )
    logger.info("resent alert refused: already queued as order(s) %s", order_ids)
    return jsonify(body)
