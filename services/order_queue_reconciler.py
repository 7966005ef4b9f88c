"""Deciding what happened to an order whose send outcome is unknown (design §3).

The broker's orderbook is the only witness.  An orderbook entry is a candidate for an
in-doubt order when every field the order fixed matches and the broker stamped it at or
after our send.  The caller binds an orderid to at most one queued order.

Smart orders (``placesmartorder``) are matched without action and quantity: the broker
derives both from the position at the time, so the payload cannot predict them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytz

from database.order_queue_db import Receipt
from services.order_queue_outcome import Verdict, classify_response

BROKER_TIMEZONE = pytz.timezone("Asia/Kolkata")
_TIMESTAMP_FORMATS = ("%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                      "%d-%m-%Y %H:%M:%S")


class OrderbookUnavailable(Exception):
    """The orderbook could not be fetched or read."""


@dataclass(frozen=True)
class MatchResult:
    #: orderids of entries that match on every field and were stamped after the send
    orderids: list[str]
    #: entries that match on every field but whose timestamp could not be read: the
    #: send time cannot rule them out, so the decision goes to a human
    unreadable: int = 0


def fetch_orderbook(client: httpx.Client, host_server: str, api_key: str) -> list[dict]:
    """The account's orders from ``/api/v1/orderbook``; raises ``OrderbookUnavailable``."""
    try:
        response = client.post(f"{host_server}/api/v1/orderbook", json={"apikey": api_key})
    except httpx.HTTPError as exc:
        raise OrderbookUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise OrderbookUnavailable(f"orderbook answered HTTP {response.status_code}")
    try:
        body = response.json()
        book = body["data"]["orders"] if isinstance(body.get("data"), dict) else body["data"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OrderbookUnavailable(f"orderbook answer unreadable: {exc}") from exc
    if str(body.get("status", "")).lower() != "success" or not isinstance(book, list):
        raise OrderbookUnavailable(f"orderbook answer not usable: {str(body)[:200]}")
    return [entry for entry in book if isinstance(entry, dict)]


def find_matches(endpoint: str, payload: dict, sent_at_utc: datetime,
                 book: list[dict]) -> MatchResult:
    """Orderbook entries that could be this order (see module docstring)."""
    not_before = sent_at_utc.replace(microsecond=0)
    orderids, unreadable = [], 0
    for entry in book:
        if not _fields_match(endpoint, payload, entry):
            continue
        stamped = parse_broker_timestamp(entry.get("timestamp"))
        if stamped is None:
            unreadable += 1
        elif stamped >= not_before and entry.get("orderid"):
            orderids.append(str(entry["orderid"]))
    return MatchResult(orderids, unreadable)


def parse_broker_timestamp(value) -> datetime | None:
    """A broker timestamp (local exchange time) as naive UTC, or None if unreadable."""
    if not isinstance(value, str):
        return None
    for fmt in _TIMESTAMP_FORMATS:
        try:
            local = datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
        return BROKER_TIMEZONE.localize(local).astimezone(pytz.utc).replace(tzinfo=None)
    return None


def _fields_match(endpoint: str, payload: dict, entry: dict) -> bool:
    def same_text(field, default=""):
        return str(payload.get(field) or default).upper() == str(entry.get(field) or default).upper()

    pricetype = str(payload.get("pricetype") or "MARKET").upper()
    if not (same_text("symbol") and same_text("exchange") and same_text("product")
            and pricetype == str(entry.get("pricetype") or "MARKET").upper()):
        return False
    if endpoint == "placeorder":
        if not same_text("action") or _number(payload.get("quantity")) != _number(entry.get("quantity")):
            return False
    if pricetype in ("LIMIT", "SL") and _number(payload.get("price")) != _number(entry.get("price")):
        return False
    if pricetype in ("SL", "SL-M") and \
            _number(payload.get("trigger_price")) != _number(entry.get("trigger_price")):
        return False
    return True


def _number(value) -> float | None:
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return None



def request_over_at(receipt: Receipt | None, *, dispatched_at: datetime,
                    receiver_gone_since: datetime | None, settle_seconds: float,
                    in_progress_seconds: float) -> datetime:
    """The moment after which the original request can no longer place the order
    anywhere, so that an order the orderbook does not show by then was not placed.

    Without a host that fences (``order_queue_fence``) only the long bound is known:
    the send plus however long the API may keep talking to the broker, unless it
    answered (a 5xx: its request is over, only the broker's settle time is left).  With
    a door: a
    request that left no receipt was refused at the door, or never arrived and never
    can (now); one the host finished, or whose receiving process is gone, leaves only
    the broker's own settle time; one a live host is still working on, the long bound.
    """
    settle = timedelta(seconds=settle_seconds)
    if receipt is not None and receipt.done_at is not None:  # the API answered (a 5xx)
        return receipt.done_at + settle
    if receipt is None or (receipt.received_at is None and not receipt.fence_expected):
        return dispatched_at + timedelta(seconds=in_progress_seconds)
    if receipt.received_at is None:  # behind a door that leaves a receipt: never got in
        return dispatched_at
    if receiver_gone_since is not None:
        return max(receiver_gone_since, receipt.received_at) + settle
    return receipt.received_at + timedelta(seconds=in_progress_seconds)


def recorded_verdict(receipt: Receipt | None) -> Verdict | None:
    """The host's own answer to the original request, kept at its door, as the verdict
    its sender would have reached; None when the host recorded none."""
    if receipt is None or receipt.done_at is None or receipt.answer_status is None:
        return None
    answer = httpx.Response(receipt.answer_status,
                            content=(receipt.answer_body or "").encode("utf-8"))
    return classify_response(answer)


#: Longest pause between two tries of an orderbook that does not answer.
ORDERBOOK_RETRY_CAP_SECONDS = 10.0


def next_orderbook_try(failed_tries: int, *, interval: float, hold_seconds: float) -> float | None:
    """Seconds until the orderbook is asked again after ``failed_tries`` failures
    (doubling from ``interval``, capped), or None once about ``hold_seconds`` of tries
    have passed: then the order goes to the operator, who can settle it by hand."""
    waited = sum(min(interval * 2 ** i, ORDERBOOK_RETRY_CAP_SECONDS) for i in range(failed_tries))
    if waited >= hold_seconds:
        return None
    return min(interval * 2 ** failed_tries, ORDERBOOK_RETRY_CAP_SECONDS, hold_seconds - waited)
