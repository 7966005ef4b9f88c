"""What one HTTP attempt at the broker API means for the order (docs/design.md,
"Lifecycle"; docs/guarantees.md has the table of answers).

Pure functions, so the rules a trader's money depends on read in one place and are
tested without a network:

* the request never left (connect refused, DNS, connect timeout): NOT_SENT, retry freely;
* 429: THROTTLED: the API's own limiter refused the request before any order code ran
  (inside OpenAlgo: flask-limiter, "10 per 1 second" per client address), so nothing
  was placed; retried after ``Retry-After`` (or a rate window) without spending the
  retry budget, until the order's own expiry;
* 408 / 425: TRANSIENT, retry with backoff while the budget lasts;
* 5xx: UNKNOWN: OpenAlgo answers 500 when a broker module raises, which can happen after
  the broker booked the order, so it is reconciled before any resend;
* 400 / 404 / 422 / other 4xx, or a 2xx whose body says ``status: error``: REJECTED;
* 401 / 403: CREDENTIALS (an expired or wrong API key will not fix itself);
* the request left but no usable answer came back (read timeout, connection dropped,
  unreadable 2xx body): UNKNOWN, the order goes IN_DOUBT and is reconciled;
* 2xx with ``status: success``: ACCEPTED (``orderid`` may be absent when a smart order
  needed no action, e.g. the position already matched).

An answer OpenAlgo's handler did not give (``door_probe.from_gateway``: a gateway's 502 / 503 / 504,
a CDN's 52x, an HTML error page) is classified by its status like any other, and a 5xx
goes in doubt as well; but it says nothing of whether OpenAlgo is still placing the
order, so it never ends the request (``reconciling.py``) and never tells the sender that
the host lost its door (``door_probe.py``).
"""

import enum
import json
from dataclasses import dataclass

import httpx

from services.order_queue.door_probe import from_gateway


class Outcome(str, enum.Enum):
    ACCEPTED = "accepted"
    NOT_SENT = "not_sent"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    REJECTED = "rejected"
    CREDENTIALS = "credentials"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    http_status: int | None = None
    orderid: str | None = None
    message: str = ""
    #: THROTTLED: the seconds the API asked us to wait (its ``Retry-After``), if it said.
    retry_after: float | None = None


_TRANSIENT_STATUSES = {408, 425}
#: The longest ``Retry-After`` taken at its word; a larger one is capped (the order's
#: own expiry bounds how long it keeps trying).
MAX_RETRY_AFTER_SECONDS = 30.0


def classify_response(response: httpx.Response) -> Verdict:
    """Turn a broker API answer into a verdict."""
    status = response.status_code
    body = _json_object(response)
    message = _message(body, response)
    if status in (401, 403):
        return Verdict(Outcome.CREDENTIALS, status, message=message)
    if status >= 500:
        if from_gateway(response):
            page = " ".join(message.split())[:120]
            message = (
                f"a gateway in front of the API answered, not the API ({page}); "
                "the API may still place the order"
            )
        return Verdict(
            Outcome.UNKNOWN,
            status,
            message=message or "the API failed; the order may have been placed before it did",
        )
    if status == 429:
        return Verdict(
            Outcome.THROTTLED, status, message=message, retry_after=_retry_after(response)
        )
    if status in _TRANSIENT_STATUSES:
        return Verdict(Outcome.TRANSIENT, status, message=message)
    if 200 <= status < 300:
        if body is None:
            return Verdict(Outcome.UNKNOWN, status, message=f"unreadable answer: {message}")
        if str(body.get("status", "")).lower() != "success":
            return Verdict(Outcome.REJECTED, status, message=message)
        orderid = body.get("orderid")
        return Verdict(Outcome.ACCEPTED, status, str(orderid) if orderid else None, message)
    return Verdict(Outcome.REJECTED, status, message=message)


def classify_exception(exc: Exception) -> Verdict:
    """Tell "never left" apart from "left, answer lost"."""
    if isinstance(
        exc,
        (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol),
    ):
        return Verdict(Outcome.NOT_SENT, message=f"{type(exc).__name__}: {exc}")
    return Verdict(Outcome.UNKNOWN, message=f"{type(exc).__name__}: {exc}")


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the number form; an HTTP date is not worth trusting a
    clock for), capped at ``MAX_RETRY_AFTER_SECONDS``."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _json_object(response: httpx.Response) -> dict | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _message(body: dict | None, response: httpx.Response) -> str:
    if body is not None:
        return str(body.get("message") or body.get("error") or "")
    return response.text[:200]
