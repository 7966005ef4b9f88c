"""Host stand-in: a paper broker answering OpenAlgo's ``/api/v1`` order endpoints.

Same paths, payloads and response shapes as OpenAlgo's REST API, so the order queue
talks to the host exactly as it would to OpenAlgo, with no real broker behind it.
"""

import math
import re
import time

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from database import paper_broker_db
from database.auth_db import verify_api_key
from utils.logging import get_logger

logger = get_logger(__name__)

paper_broker_bp = Blueprint("paper_broker", __name__, url_prefix="/api/v1")

EXCHANGES = ("NSE", "BSE", "NFO", "CDS", "BFO", "BCD", "MCX", "NCDEX")
ACTIONS = ("BUY", "SELL")
PRICETYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("MIS", "CNC", "NRML")
_INTEGER = re.compile(r"[+-]?\d+")
# Far above any real order, and well inside SQLite's 64-bit integers.
MAX_QUANTITY = 10**9


class ApiError(Exception):
    """A request the API refuses; the message names the bad field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _choice(data: dict, field: str, choices: tuple, default: str | None = None) -> str:
    value = data.get(field, default)
    if not isinstance(value, str) or value.strip().upper() not in choices:
        raise ApiError(f"Invalid or missing '{field}': must be one of {', '.join(choices)}")
    return value.strip().upper()


def _symbol(data: dict) -> str:
    value = data.get("symbol")
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 50:
        raise ApiError(
            "Invalid or missing 'symbol': must be a non-empty string of at most 50 characters"
        )
    return value.strip()


def _integer(data: dict, field: str, minimum: int) -> int:
    """A whole number given as int, integral float or digit string (OpenAlgo sends strings)."""
    value = data.get(field)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (minimum <= value <= MAX_QUANTITY)
    ):
        raise ApiError(
            f"Invalid or missing '{field}': must be a whole number from {minimum} to {MAX_QUANTITY}"
        )
    return value


def _number(data: dict, field: str) -> float:
    """A non-negative finite price, given as a number or numeric string; absent means 0."""
    value = data.get(field, 0)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ApiError(f"Invalid '{field}': must be a number >= 0")
    return number


def _order_fields(data: dict, min_quantity: int) -> dict:
    """Validate the fields common to placeorder and placesmartorder, filling defaults."""
    fields = {
        "strategy": data["strategy"] if isinstance(data.get("strategy"), str) else "",
        "symbol": _symbol(data),
        "exchange": _choice(data, "exchange", EXCHANGES),
        "action": _choice(data, "action", ACTIONS),
        "quantity": _integer(data, "quantity", min_quantity),
        "pricetype": _choice(data, "pricetype", PRICETYPES, "MARKET"),
        "product": _choice(data, "product", PRODUCTS, "MIS"),
        "price": _number(data, "price"),
        "trigger_price": _number(data, "trigger_price"),
    }
    if fields["pricetype"] in ("LIMIT", "SL") and fields["price"] <= 0:
        raise ApiError(f"'price' must be > 0 for {fields['pricetype']} orders")
    if fields["pricetype"] in ("SL", "SL-M") and fields["trigger_price"] <= 0:
        raise ApiError(f"'trigger_price' must be > 0 for {fields['pricetype']} orders")
    return fields


def _authenticated_request() -> tuple[dict, str]:
    """The JSON body and its owner's user id; raises for a bad body or API key."""
    try:
        # Parsed whatever the Content-Type, as the webhook does: curl's default
        # (form-urlencoded) must not turn a JSON object into "not a JSON object".
        data = request.get_json(force=True, silent=True)
    except RecursionError:
        raise ApiError("Request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError("Request body must be a JSON object")
    user_id = verify_api_key(data.get("apikey"))
    if user_id is None:
        raise ApiError("Invalid openalgo apikey", 403)
    return data, user_id


@paper_broker_bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return jsonify({"status": "error", "message": str(exc)}), exc.status


@paper_broker_bp.errorhandler(SQLAlchemyError)
def _database_error(exc: SQLAlchemyError):
    logger.exception("Paper broker database error")
    return jsonify({"status": "error", "message": "An unexpected error occurred"}), 500


def _broker_latency() -> None:
    """A real broker takes its time between receiving an order and booking it
    (``PAPER_BROKER_LATENCY_MS``, 0 by default): demos and crash tests meet the window
    where a process dies after sending and before the answer."""
    delay_ms = current_app.config.get("PAPER_BROKER_LATENCY_MS", 0)
    if delay_ms:
        time.sleep(delay_ms / 1000)


def _reject_symbols() -> frozenset:
    """``PAPER_BROKER_REJECT_SYMBOLS`` (comma-separated): orders for these symbols are
    accepted (200 with an order id) and then rejected in the orderbook, as a broker's
    risk checks reject an order after OpenAlgo answered success."""
    raw = current_app.config.get("PAPER_BROKER_REJECT_SYMBOLS") or ""
    return frozenset(symbol.strip() for symbol in raw.split(",") if symbol.strip())


@paper_broker_bp.post("/cancelorder")
def cancel_order():
    _, user_id = _authenticated_request()
    data = request.get_json(force=True, silent=True) or {}
    orderid = data.get("orderid")
    if not isinstance(orderid, str) or not orderid.strip():
        raise ApiError("Invalid or missing 'orderid'")
    refused = paper_broker_db.cancel_order(user_id, orderid.strip())
    if refused:
        raise ApiError(refused)
    return jsonify({"status": "success", "orderid": orderid.strip()}), 200


@paper_broker_bp.post("/placeorder")
def place_order():
    data, user_id = _authenticated_request()
    fields = _order_fields(data, min_quantity=1)
    _broker_latency()
    orderid = paper_broker_db.place_order(user_id, fields, reject_symbols=_reject_symbols())
    return jsonify({"status": "success", "orderid": orderid}), 200


@paper_broker_bp.post("/placesmartorder")
def place_smart_order():
    data, user_id = _authenticated_request()
    fields = _order_fields(data, min_quantity=0)
    fields["position_size"] = _integer(data, "position_size", -MAX_QUANTITY)
    _broker_latency()
    orderid, message = paper_broker_db.place_smart_order(
        user_id, fields, reject_symbols=_reject_symbols()
    )
    if orderid is None:
        return jsonify({"status": "success", "message": message}), 200
    return jsonify({"status": "success", "orderid": orderid}), 200


def _statistics(orders: list[dict]) -> dict:
    """Counts in the shape of OpenAlgo's orderbook ``statistics``."""

    def count(key: str, value: str) -> int:
        return sum(1 for order in orders if order[key] == value)

    return {
        "total_buy_orders": count("action", "BUY"),
        "total_sell_orders": count("action", "SELL"),
        "total_completed_orders": count("order_status", paper_broker_db.STATUS_COMPLETE),
        "total_open_orders": count("order_status", paper_broker_db.STATUS_OPEN),
        "total_rejected_orders": count("order_status", "rejected"),
    }


@paper_broker_bp.post("/orderbook")
def orderbook():
    _, user_id = _authenticated_request()
    orders = paper_broker_db.get_orderbook(user_id)
    return jsonify(
        {"status": "success", "data": {"orders": orders, "statistics": _statistics(orders)}}
    ), 200
