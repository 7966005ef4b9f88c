"""``queue_order``: the one call the host makes to queue an order durably.

It keeps upstream's signature (``queue_order(endpoint, payload)``), so OpenAlgo's
webhook handlers and squareoff scheduler call it unchanged, and it returns only once
the order is committed: a caller that gets no exception may answer 200.  The host's
squareoff deadlines reach the queue through ``set_deadline_provider``, and its
squareoff jobs through ``register_squareoffs``.
"""

from __future__ import annotations

import time
from datetime import datetime

from flask import g, has_request_context

from database.order_queue.model import QueueStorageError
from database.order_queue.values import DuplicateAlert
from services.order_queue import alert_keys, deadlines, events, runtime, squareoffs
from services.order_queue.deadlines import DeadlineProvider
from services.order_queue.ist import ist_moment_utc
from utils.logging import get_logger

logger = get_logger(__name__)


def set_deadline_provider(provider: DeadlineProvider | None, source: str = "strategy") -> None:
    """Host hook: ``provider(payload, now)`` returns the naive-UTC moment after which the
    order must not be sent (its strategy's squareoff today), or None.  OpenAlgo's
    strategies live in the host's database, which the plugin does not import; each
    strategy manager (``source``) gives its own, and the earliest deadline wins."""
    deadlines.set_provider(provider, source)


def squareoff_utc(squareoff_time: str, now_utc: datetime) -> datetime:
    """A strategy's ``HH:MM`` squareoff (IST, as OpenAlgo stores it) on the trading day
    of ``now_utc``, as naive UTC: what deadline providers return."""
    return ist_moment_utc(squareoff_time, now_utc)


def register_squareoffs(
    source: str, *, all_strategies, get_strategy, mappings, schedule, fire, release=None
):
    """Host hook: the strategy manager ``source`` hands over its squareoff functions, so
    its squareoffs survive a restart and run at most once a day
    (``services/order_queue/squareoffs.py``).  Returns the ``squareoff_positions`` the
    host binds in place of ``fire``."""
    return squareoffs.register(
        squareoffs.SquareoffSource(
            name=source,
            all_strategies=all_strategies,
            get_strategy=get_strategy,
            mappings=mappings,
            schedule=schedule,
            fire=fire,
            release=release,
        )
    )


#: A caller outside a web request (a squareoff job) has nobody to answer 503 to, and
#: OpenAlgo's squareoff loop stops at its first exception, skipping the symbols after
#: it: such callers get these pauses and further tries (about 15 s) before it raises.
BACKGROUND_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)


def queue_order(endpoint, payload):
    """Durably queue an order for the broker API; same signature and return as upstream.

    Returns only after the order is committed to the queue database, then wakes the
    dispatcher.  Raises ``ValueError`` for an endpoint other than placeorder /
    placesmartorder or an unusable payload (nothing stored), and ``QueueStorageError``
    when the store cannot be written (nothing stored; callers answer 503).  A webhook
    whose alert key a copy of the alert took first stores nothing and returns as if
    queued: the alert is queued, once, and ``alert_keys.py`` gives the view's answer
    the resend's form.  Outside a web request a storage failure is retried for a while
    first.
    """
    in_request = has_request_context()
    try:
        queue = runtime.current()
        paused = queue.pause_reason()
    except QueueStorageError as exc:  # not set up: nothing can be stored
        queue, paused = None, str(exc)
    if paused is not None:
        # Orders sealed now would be unreadable once the operator restores the pepper.
        logger.error("order NOT queued: %s", paused)
        if in_request:
            g.order_queue_storage_error = paused
        raise QueueStorageError(paused)
    assert queue is not None  # without a runtime, paused says why and we raised above
    try:
        alert_key = alert_keys.request_key(queue) if in_request else None
    except alert_keys.BadAlertKey as exc:
        raise QueueStorageError(f"alert NOT queued: {exc}") from exc
    for pause in (*(() if in_request else BACKGROUND_RETRY_PAUSES), None):
        now = queue.clock.now()
        try:
            order_id = queue.store.intake.enqueue(
                endpoint,
                payload,
                now=now,
                max_age_seconds=queue.settings.max_age_seconds,
                deadline=queue.deadline_for(payload, now),
                alert_key=alert_key,
            )
            break
        except DuplicateAlert as exc:
            # A copy of this alert took its key first: nothing stored, nothing wrong.  The
            # host's view answers as for a queued order, and ``alert_keys`` replaces that
            # answer with the resend's (the first answer, marked duplicate; or 409).
            alert_keys.note_duplicate(exc)
            logger.info("resent alert: %s; nothing queued", exc)
            return
        except QueueStorageError as exc:
            logger.error(
                "order NOT queued (storage failure): %s %s %s: %s%s",
                endpoint,
                payload.get("strategy"),
                payload.get("symbol"),
                exc,
                "" if pause is None else f"; trying again in {pause} s",
            )
            if pause is None:
                if in_request:
                    # OpenAlgo's webhook view catches every exception and answers 500;
                    # this note lets ``blueprints.order_queue`` answer the 503 it is.
                    g.order_queue_storage_error = str(exc)
                raise
            time.sleep(pause)
    if in_request:
        g.order_queue_stored = g.get("order_queue_stored", 0) + 1
    logger.info(
        "order %s queued: %s %s %s %s qty=%s",
        order_id,
        endpoint,
        payload.get("strategy"),
        payload.get("symbol"),
        payload.get("action"),
        payload.get("quantity"),
    )
    events.publish(
        queue.alerter,
        order_id,
        "pending",
        symbol=payload.get("symbol"),
        strategy=payload.get("strategy"),
    )
    queue.wake()
