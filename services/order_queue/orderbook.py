"""The broker's orderbook as a witness for an order whose send outcome is unknown.

``fetch_orderbook`` reads it through the host's API; ``find_matches`` (pure) says which
entries could be the order.  An orderbook entry is a candidate for an
in-doubt order when every field the order fixed matches and the broker stamped it at or
after our send.  The caller binds an orderid to at most one queued order.

Smart orders (``placesmartorder``) are matched without action and quantity: the broker
derives both from the position at the time, so the payload cannot predict them.
"""

from dataclasses import dataclass
from datetime import datetime

import httpx

from services.order_queue.ist import ist_to_utc

_TIMESTAMP_FORMATS = (
    "%d-%b-%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%d-%m-%Y %H:%M:%S",
)


class OrderbookUnavailable(Exception):
    """The orderbook could not be fetched or read."""


@dataclass(frozen=True)
class MatchResult:
    #: orderids of entries that match on every field and were stamped after the send
    orderids: list[str]
    #: entries that match on every field but whose timestamp could not be read: the
    #: send time cannot rule them out, so the decision goes to a human
    unreadable: int = 0


def fetch_orderbook(client: httpx.Client, api_key: str) -> list[dict]:
    """The account's orders from ``/api/v1/orderbook`` (``client``: on the API's road,
    ``api_road.py``); raises ``OrderbookUnavailable``."""
    try:
        response = client.post("/api/v1/orderbook", json={"apikey": api_key})
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


def find_matches(
    endpoint: str, payload: dict, sent_at_utc: datetime, book: list[dict]
) -> MatchResult:
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
        return ist_to_utc(local)
    return None


def _fields_match(endpoint: str, payload: dict, entry: dict) -> bool:
    def same_text(field, default=""):
        return (
            str(payload.get(field) or default).upper() == str(entry.get(field) or default).upper()
        )

    pricetype = str(payload.get("pricetype") or "MARKET").upper()
    if not (
        same_text("symbol")
        and same_text("exchange")
        and same_text("product")
        and pricetype == str(entry.get("pricetype") or "MARKET").upper()
    ):
        return False
    if endpoint == "placeorder":
        if not same_text("action") or _number(payload.get("quantity")) != _number(
            entry.get("quantity")
        ):
            return False
    if pricetype in ("LIMIT", "SL") and _number(payload.get("price")) != _number(
        entry.get("price")
    ):
        return False
    if pricetype in ("SL", "SL-M") and _number(payload.get("trigger_price")) != _number(
        entry.get("trigger_price")
    ):
        return False
    return True


def _number(value) -> float | None:
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return None
