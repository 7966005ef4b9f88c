"""The host's door for dispatched orders: the lease checked, a receipt, the answer kept.

The dispatcher posts each order to the host's API (inside OpenAlgo: its own process)
with the order's lease in a header.  When the host runs the plugin, a request hook
checks that lease before OpenAlgo's order code sees the request, and writes a receipt
(which process received it, when) in the same statement:

* a request whose order was taken over meanwhile (its sender died or gave up on the
  answer) is refused with 409 and never placed, so a request that left no receipt
  cannot be in progress anywhere, and cannot arrive later either;
* a receipt names the receiving process, so after a crash the reconciler knows whether
  that process is gone (then only the broker's settle time is left to wait) or may
  still be working on it (then the long bound applies);
* the host's answer is recorded next to the receipt, so an answer that its sender did
  not live to read still settles the order.

Every answer to a request that carried the lease header carries ``DOOR_HEADER``: the
dispatcher sends with ``door_expected`` only to a host that showed it.  The door fails
closed: if the receipt cannot be written, the request is refused with 503.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime

from flask import g, jsonify, request

from database.order_queue.model import QueueStorageError
from services.order_queue import runtime
from services.order_queue.door_probe import DOOR_HEADER, LEASE_HEADER, PROBE
from utils.logging import get_logger

logger = get_logger(__name__)

_process_id: tuple[int, str] | None = None


def process_instance() -> str:
    """This process, for receipts when it has no running dispatcher of its own: unique
    per process start (a forked worker gets its own)."""
    global _process_id
    if _process_id is None or _process_id[0] != os.getpid():
        _process_id = (
            os.getpid(),
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:web",
        )
    return _process_id[1]


def receiving_instance() -> str:
    """Who a receipt names: this process's dispatcher while it runs (its heartbeats
    tell the reconciler whether the process lives), else the bare process id, of which
    nothing is known, so the reconciler waits the long bound."""
    try:
        dispatcher = runtime.current().dispatcher
    except QueueStorageError:  # no runtime (yet): this bare process is all there is
        return process_instance()
    if dispatcher is not None and not dispatcher.stopping:
        return dispatcher.id
    return process_instance()


def init_app(app) -> None:
    app.before_request(_check_lease)
    app.after_request(_keep_answer)
    app.teardown_request(_keep_unanswered_end)


def _check_lease():
    lease = request.headers.get(LEASE_HEADER)
    if lease is None:
        return None
    if lease == PROBE:
        return "", 204  # the door is here; nothing else happens
    order_id, _, token = lease.partition(":")
    if not order_id.isdigit() or not token:
        return jsonify(status="error", message=f"malformed {LEASE_HEADER} header"), 400
    try:
        queue = runtime.current()
        instance, now = receiving_instance(), queue.clock.now()
        admitted = queue.store.receipts.record_receipt(
            int(order_id), token, instance=instance, now=now
        )
    except QueueStorageError as exc:
        logger.error("order %s refused at the door: queue database unavailable: %s", order_id, exc)
        return jsonify(status="error", message="order queue unavailable: not placed"), 503
    if not admitted:
        logger.warning("order %s refused at the door: its lease was taken over", order_id)
        return jsonify(status="error", message="stale order-queue lease: order NOT placed"), 409
    g.order_queue_receipt = (int(order_id), instance, now)
    return None


def _keep_answer(response):
    if LEASE_HEADER not in request.headers:
        return response
    response.headers[DOOR_HEADER] = receiving_instance()
    receipt = g.pop("order_queue_receipt", None)
    if receipt is not None:
        _record_end(receipt, response.status_code, _without_api_key(response))
    return response


def _keep_unanswered_end(exc) -> None:
    """A request whose handler raised past Flask's error handling (propagated, as in
    debug or testing) skips the after-request hooks, but it is over all the same: keep
    that end, so the reconciler waits only the broker's settle time for it."""
    receipt = g.pop("order_queue_receipt", None)
    if receipt is not None:
        _record_end(receipt, 500, f"unhandled {type(exc).__name__ if exc else 'error'}")


def _record_end(receipt: tuple[int, str, datetime], status: int, body: str) -> None:
    order_id, instance, received_at = receipt
    try:
        queue = runtime.current()
        queue.store.receipts.record_host_answer(
            order_id,
            instance=instance,
            received_at=received_at,
            now=queue.clock.now(),
            status=status,
            body=body,
        )
    except QueueStorageError as exc:  # the sender, if alive, still reads the answer
        logger.error("order %s: could not keep the host's answer: %s", order_id, exc)


def _without_api_key(response) -> str:
    """The answer as kept: a broker error may echo the request, API key included."""
    body = response.get_data(as_text=True)
    payload = request.get_json(silent=True)
    apikey = payload.get("apikey") if isinstance(payload, dict) else None
    if isinstance(apikey, str) and len(apikey) >= 8:
        body = body.replace(apikey, "***")
    return body
