"""Host stand-in for OpenAlgo's Strategy Manager: webhook, squareoff scheduler, CLI.

The choice of endpoint and payload per trading mode and the intraday entry / exit
windows follow OpenAlgo's Strategy Manager; the input checks are stricter (every bad
field gets a 4xx naming it, never a 500).  Orders leave through ``queue_order``, which is
the durable queue's: it returns only once the order is committed.

Kept in one file (webhook, squareoff scheduler, CLI), as OpenAlgo keeps its blueprint.
"""

import json
import re
from datetime import datetime

import click
import pytz
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Blueprint, current_app, jsonify, request
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from database.auth_db import (
    DEFAULT_USER,
    PepperChanged,
    ensure_api_key,
    ensure_user,
    get_api_key_for_tradingview,
)
from database.order_queue_db import QueueStorageError
from database.strategy_db import (
    TRADING_MODES,
    add_symbol_mapping,
    create_strategy,
    get_all_strategies,
    get_strategy,
    get_strategy_by_name,
    get_strategy_by_webhook_id,
    get_symbol_mappings,
    toggle_strategy,
)
from services.order_queue_service import queue_order, register_squareoffs, squareoff_utc
from utils.logging import get_logger
from utils.rate_limit import webhook_limit
from utils.request_body import BodyTimeout, read_body

logger = get_logger(__name__)

IST = pytz.timezone("Asia/Kolkata")
VALID_EXCHANGES = ("NSE", "BSE", "NFO", "CDS", "BFO", "BCD", "MCX", "NCDEX")
EXCHANGE_PRODUCTS = {
    "NSE": ("MIS", "CNC"),
    "BSE": ("MIS", "CNC"),
    "NFO": ("MIS", "NRML"),
    "CDS": ("MIS", "NRML"),
    "BFO": ("MIS", "NRML"),
    "BCD": ("MIS", "NRML"),
    "MCX": ("MIS", "NRML"),
    "NCDEX": ("MIS", "NRML"),
}
MAX_WEBHOOK_BYTES = 16 * 1024
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9&\-_.]{0,39}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9 \-_]{3,50}$")
TIME_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
INTEGER_PATTERN = re.compile(r"^[+-]?\d{1,9}$")

strategy_bp = Blueprint("strategy_bp", __name__, url_prefix="/strategy")


class WebhookError(Exception):
    """A webhook that cannot become an order; carries the HTTP status and message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _now_ist() -> datetime:
    clock = current_app.config.get("HOST_CLOCK")
    return clock() if clock else datetime.now(IST)


# --------------------------------------------------------------------------- webhook


@strategy_bp.route("/webhook/<webhook_id>", methods=["POST"])
@webhook_limit
def webhook(webhook_id):
    """Turn a TradingView-style alert into a queued order; 200 only once it is stored.

    The body is read (size-capped) before any database work, so a client that sends it
    slowly holds a request thread, never a database connection."""
    try:
        data = _read_alert()
        strategy = get_strategy_by_webhook_id(webhook_id)
        if strategy is None:
            raise WebhookError("Invalid webhook ID", 404)
        if not strategy.is_active:
            raise WebhookError("Strategy is inactive", 400)
        action, position_size = _validated_signal(strategy, data)
        if strategy.is_intraday:
            _check_trading_window(strategy, action, position_size)
        mapping = next(
            (m for m in get_symbol_mappings(strategy.id) if m.symbol == data["symbol"]), None
        )
        if mapping is None:
            raise WebhookError(f"No mapping found for symbol {data['symbol']}")
        api_key = get_api_key_for_tradingview(strategy.user_id)
        if not api_key:
            logger.error("no API key for user %s (strategy %s)", strategy.user_id, strategy.id)
            raise WebhookError("No API key found", 401)
        endpoint, payload = build_order(strategy, mapping, action, position_size, api_key)
    except WebhookError as exc:
        return jsonify({"status": "error", "error": str(exc)}), exc.status
    except PepperChanged as exc:
        logger.error("webhook %s: %s", webhook_id, exc)
        return _unavailable(str(exc))
    except SQLAlchemyError:
        logger.exception("webhook %s: strategy database unavailable; order NOT queued", webhook_id)
        return _unavailable("Strategy database unavailable: order NOT queued, retry later")
    try:
        queue_order(endpoint, payload)
    except QueueStorageError:
        # queue_order has logged the failure at ERROR; the sender must retry.
        return _unavailable("Order queue unavailable: order NOT queued, retry later")
    return jsonify(
        {"status": "success", "message": f"Order queued successfully for {data['symbol']}"}
    ), 200


def _unavailable(error: str):
    """503 with Retry-After: nothing was stored, and the sender should send again."""
    response = jsonify({"status": "error", "error": error})
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    return response


def _read_alert() -> dict:
    """The alert body as a JSON object, whatever Content-Type the sender set
    (TradingView sends JSON as text/plain)."""
    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        raise WebhookError(f"Body too large: limit is {MAX_WEBHOOK_BYTES} bytes", 413)
    seconds = current_app.config["REQUEST_BODY_TIMEOUT_SECONDS"]
    try:
        raw = read_body(request, seconds)
    except BodyTimeout:
        raise WebhookError(f"Body not received within {seconds:g} s", 408) from None
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise WebhookError(f"Body too large: limit is {MAX_WEBHOOK_BYTES} bytes", 413)
    if not raw.strip():
        raise WebhookError("No data received: body must be a JSON object")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError("Body is not valid JSON") from None
    except RecursionError:
        raise WebhookError("Body is nested too deeply") from None
    if not isinstance(data, dict):
        raise WebhookError("Body must be a JSON object")
    return data


def _validated_signal(strategy, data: dict) -> tuple[str, int]:
    """Check symbol, action, position_size and quantity; return (action, position_size)."""
    required = ["symbol", "action"] + (["position_size"] if strategy.trading_mode == "BOTH" else [])
    missing = [name for name in required if name not in data]
    if missing:
        raise WebhookError(f"Missing required fields: {', '.join(missing)}")
    symbol = data["symbol"]
    if isinstance(symbol, str):
        # Symbols are upper case at every exchange: "sbin" means SBIN, as "buy" means BUY.
        symbol = data["symbol"] = symbol.strip().upper()
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise WebhookError(
            "Field 'symbol' must be a trading symbol such as SBIN "
            "(letters, digits, & - _ . ; at most 40)"
        )
    if not isinstance(data["action"], str):
        raise WebhookError("Field 'action' must be the string BUY or SELL")
    action = data["action"].strip().upper()
    if action not in ("BUY", "SELL"):
        raise WebhookError(
            {
                "LONG": "Invalid action for LONG mode. Use BUY to enter, SELL to exit",
                "SHORT": "Invalid action for SHORT mode. Use SELL to enter, BUY to exit",
            }.get(strategy.trading_mode, "Invalid action. Use BUY or SELL")
        )
    position_size = _integer_field(data, "position_size", default=0)
    if "quantity" in data and _integer_field(data, "quantity", default=0) <= 0:
        raise WebhookError("Field 'quantity' must be a positive whole number")
    if strategy.trading_mode == "BOTH":
        if action == "BUY" and position_size < 0:
            raise WebhookError("For BUY orders in BOTH mode, position_size must be >= 0")
        if action == "SELL" and position_size > 0:
            raise WebhookError("For SELL orders in BOTH mode, position_size must be <= 0")
    return action, position_size


#: Far above any real position, far inside what the broker API and SQLite can hold.
MAX_POSITION = 10**9


def _integer_field(data: dict, name: str, default: int) -> int:
    """A whole number from -1e9 to 1e9, given as a JSON number or an ASCII digit string
    ("10", "-5"); 400 otherwise."""
    value = data.get(name, default)
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif (
        isinstance(value, str) and value.strip().isascii() and INTEGER_PATTERN.match(value.strip())
    ):
        number = int(value.strip())
    if number is None or abs(number) > MAX_POSITION:
        raise WebhookError(
            f"Field '{name}' must be a whole number from {-MAX_POSITION} to {MAX_POSITION}"
        )
    return number


def _is_exit(strategy, action: str, position_size: int) -> bool:
    if strategy.trading_mode == "LONG":
        return action == "SELL"
    if strategy.trading_mode == "SHORT":
        return action == "BUY"
    return position_size == 0


def _check_trading_window(strategy, action: str, position_size: int) -> None:
    """Entries between start and end time; exits between start and squareoff time (IST)."""
    now = _now_ist().strftime("%H:%M")
    kind = "Exit" if _is_exit(strategy, action, position_size) else "Entry"
    if strategy.start_time and now < strategy.start_time:
        raise WebhookError(f"{kind} orders not allowed before start time")
    closes_at, label = (
        (strategy.squareoff_time, "square off time")
        if kind == "Exit"
        else (strategy.end_time, "end time")
    )
    if closes_at and now > closes_at:
        raise WebhookError(f"{kind} orders not allowed after {label}")


def build_order(
    strategy, mapping, action: str, position_size: int, api_key: str
) -> tuple[str, dict]:
    """Endpoint and payload for a signal, per trading mode (as OpenAlgo decides them)."""
    payload = {
        "apikey": api_key,
        "symbol": mapping.symbol,
        "exchange": mapping.exchange,
        "product": mapping.product_type,
        "strategy": strategy.name,
        "action": action,
        "pricetype": "MARKET",
    }
    smart_fields = {"price": "0", "trigger_price": "0", "disclosed_quantity": "0"}
    if strategy.trading_mode == "BOTH":
        quantity = "0" if position_size == 0 else str(mapping.quantity)
        payload.update(quantity=quantity, position_size=str(position_size), **smart_fields)
        return "placesmartorder", payload
    if _is_exit(strategy, action, position_size):
        payload.update(quantity="0", position_size="0", **smart_fields)
        return "placesmartorder", payload
    quantity = abs(position_size) if position_size else mapping.quantity
    payload.update(quantity=str(quantity))
    return "placeorder", payload


# --------------------------------------------------------------------------- squareoff


def squareoff_deadline(payload: dict, now_utc: datetime) -> datetime | None:
    """When an order of this payload's strategy stops making sense: its squareoff
    today (IST), as naive UTC; None for strategies without one.  Given to the order
    queue as its deadline provider, so an entry still queued at squareoff is not sent."""
    strategy = get_strategy_by_name(payload.get("strategy") or "")
    if strategy is None or not strategy.is_intraday or not strategy.squareoff_time:
        return None
    return squareoff_utc(strategy.squareoff_time, now_utc)


_scheduler: BackgroundScheduler | None = None


def squareoff_positions(strategy_id: int) -> int:
    """Queue a flatten (smart order, position_size 0) for every mapped symbol.

    Returns how many orders were queued.  Runs in the scheduler's thread.
    """
    from database.host_db import db_session

    try:
        strategy = get_strategy(strategy_id)
        if strategy is None or not strategy.is_intraday:
            return 0
        api_key = get_api_key_for_tradingview(strategy.user_id)
        if not api_key:
            logger.error("squareoff of strategy %s skipped: no API key", strategy_id)
            return 0
        queued = 0
        for mapping in get_symbol_mappings(strategy_id):
            queued += _queue_flatten(strategy.name, mapping, api_key)
        logger.info("squareoff of strategy %s: %s orders queued", strategy_id, queued)
        return queued
    except Exception:
        logger.exception("squareoff of strategy %s failed", strategy_id)
        return 0
    finally:
        db_session.remove()


def _queue_flatten(strategy_name: str, mapping, api_key: str) -> int:
    """Queue one symbol's flatten (``queue_order`` retries a storage failure for a while
    outside a request); one symbol's failure must not cost the others their squareoff.
    Returns 1 if queued."""
    payload = {
        "apikey": api_key,
        "symbol": mapping.symbol,
        "exchange": mapping.exchange,
        "product": mapping.product_type,
        "strategy": strategy_name,
        "action": "SELL",
        "pricetype": "MARKET",
        "quantity": "0",
        "position_size": "0",
        "price": "0",
        "trigger_price": "0",
        "disclosed_quantity": "0",
    }
    try:
        queue_order("placesmartorder", payload)
        return 1
    except QueueStorageError:
        logger.error(
            "squareoff of %s %s NOT queued: flatten it by hand", strategy_name, mapping.symbol
        )
        return 0


def schedule_squareoff(strategy_id: int) -> None:
    """One cron job (IST) for an intraday strategy's squareoff, replacing any earlier
    one; as OpenAlgo's, it runs this module's ``squareoff_positions`` as bound when
    called.  Nothing is scheduled before the scheduler is started."""
    strategy = get_strategy(strategy_id)
    if (
        _scheduler is None
        or strategy is None
        or not strategy.is_intraday
        or not strategy.squareoff_time
    ):
        return
    hour, minute = (int(part) for part in strategy.squareoff_time.split(":"))
    _scheduler.add_job(
        squareoff_positions,
        "cron",
        hour=hour,
        minute=minute,
        args=[strategy_id],
        id=f"squareoff_{strategy_id}",
        replace_existing=True,
        timezone=IST,
    )


#: Each strategy's (active, intraday, squareoff time) at the last look; None before the first.
_seen_strategies: dict[int, tuple] | None = None


def follow_strategy_changes() -> None:
    """Stands in for OpenAlgo's strategy pages, which call ``schedule_squareoff`` when a
    strategy is created, toggled or its times edited (here strategies change from the
    CLI, in another process, so this looks every minute).  Like OpenAlgo it schedules
    nothing for strategies as they were at start: squareoffs that survive a restart are
    the order queue's job (``services/order_queue/squareoffs.py``)."""
    from database.host_db import db_session

    global _seen_strategies
    try:
        first_look, seen = _seen_strategies is None, _seen_strategies or {}
        for strategy in get_all_strategies():
            state = (strategy.is_active, strategy.is_intraday, strategy.squareoff_time)
            changed = not first_look and seen.get(strategy.id) != state
            seen[strategy.id] = state
            if not changed:
                continue
            if strategy.is_active:
                schedule_squareoff(strategy.id)
            elif _scheduler is not None and _scheduler.get_job(f"squareoff_{strategy.id}"):
                _scheduler.remove_job(f"squareoff_{strategy.id}")
        _seen_strategies = seen
    finally:
        db_session.remove()


def start_scheduler() -> BackgroundScheduler:
    """Start the squareoff scheduler once, from the app's start-up path (not at import,
    which would run it twice under the reloader)."""
    global _scheduler, _seen_strategies
    if _scheduler is None:
        _seen_strategies = None
        _scheduler = BackgroundScheduler(
            timezone=IST,
            job_defaults={"coalesce": True, "misfire_grace_time": 300, "max_instances": 1},
        )
        follow_strategy_changes()
        _scheduler.add_job(
            follow_strategy_changes,
            "interval",
            minutes=1,
            id="follow_strategy_changes",
            replace_existing=True,
        )
        _scheduler.start()
    return _scheduler


def stop_scheduler() -> None:
    global _scheduler
    if _scheduler is not None:
        _scheduler.shutdown(wait=False)
        _scheduler = None


def _release_session() -> None:
    from database.host_db import db_session

    db_session.remove()


# As the installer does in OpenAlgo: the queue re-registers squareoffs at start, runs one
# missed while the app was down, and runs each at most once a day.
squareoff_positions = register_squareoffs(
    "strategy",
    all_strategies=get_all_strategies,
    get_strategy=get_strategy,
    mappings=get_symbol_mappings,
    schedule=schedule_squareoff,
    fire=squareoff_positions,
    release=_release_session,
)


# --------------------------------------------------------------------------- CLI

strategy_cli = AppGroup("strategy", help="Create and inspect Strategy Manager strategies.")


def _check_mapping(symbol: str, exchange: str, quantity: int, product: str) -> None:
    if not SYMBOL_PATTERN.match(symbol):
        raise click.BadParameter(f"{symbol!r} is not a trading symbol", param_hint="--symbol")
    if exchange not in VALID_EXCHANGES:
        raise click.BadParameter(
            f"must be one of {', '.join(VALID_EXCHANGES)}", param_hint="--exchange"
        )
    if product not in EXCHANGE_PRODUCTS[exchange]:
        raise click.BadParameter(
            f"{exchange} takes {' or '.join(EXCHANGE_PRODUCTS[exchange])}", param_hint="--product"
        )
    if quantity <= 0:
        raise click.BadParameter("must be at least 1", param_hint="--quantity")


def _check_times(start: str, end: str, squareoff: str) -> None:
    for name, value in (("--start", start), ("--end", end), ("--squareoff", squareoff)):
        if not value or not TIME_PATTERN.match(value):
            raise click.BadParameter("intraday strategies need HH:MM", param_hint=name)
    if start < "09:15":
        raise click.BadParameter("cannot be before market open (09:15)", param_hint="--start")
    if end > "15:30" or squareoff > "15:30":
        raise click.BadParameter("cannot be after market close (15:30)")
    if not start < end <= squareoff:
        raise click.BadParameter("need start < end <= squareoff")


def _describe(strategy) -> dict:
    host = current_app.config.get("HOST_SERVER", "http://127.0.0.1:5000")
    return {
        "strategy_id": strategy.id,
        "name": strategy.name,
        "user_id": strategy.user_id,
        "mode": strategy.trading_mode,
        "active": strategy.is_active,
        "intraday": strategy.is_intraday,
        "start_time": strategy.start_time,
        "end_time": strategy.end_time,
        "squareoff_time": strategy.squareoff_time,
        "webhook_id": strategy.webhook_id,
        "webhook_url": f"{host}/strategy/webhook/{strategy.webhook_id}",
        "symbols": [
            {
                "symbol": m.symbol,
                "exchange": m.exchange,
                "quantity": m.quantity,
                "product": m.product_type,
            }
            for m in get_symbol_mappings(strategy.id)
        ],
    }


@strategy_cli.command("add")
@click.option("--name", required=True)
@click.option("--symbol", required=True)
@click.option("--exchange", default="NSE", show_default=True)
@click.option("--quantity", type=int, required=True)
@click.option("--product", default="MIS", show_default=True)
@click.option("--mode", type=click.Choice(TRADING_MODES), default="LONG", show_default=True)
@click.option("--intraday", is_flag=True)
@click.option("--start", help="HH:MM IST, first entry (intraday)")
@click.option("--end", help="HH:MM IST, last entry (intraday)")
@click.option("--squareoff", help="HH:MM IST, flatten everything (intraday)")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="Owning user.")
def add_command(
    name, symbol, exchange, quantity, product, mode, intraday, start, end, squareoff, user
):
    """Create a strategy with its first symbol; prints its webhook URL as JSON."""
    if not NAME_PATTERN.match(name):
        raise click.BadParameter("3-50 letters, digits, spaces, - or _", param_hint="--name")
    if get_strategy_by_name(name):
        raise click.BadParameter(f"a strategy named {name!r} exists", param_hint="--name")
    symbol, exchange, product = symbol.upper(), exchange.upper(), product.upper()
    _check_mapping(symbol, exchange, quantity, product)
    if intraday:
        _check_times(start, end, squareoff)
    ensure_user(user)
    ensure_api_key(user)
    strategy = create_strategy(
        name,
        user,
        trading_mode=mode,
        is_intraday=intraday,
        start_time=start if intraday else None,
        end_time=end if intraday else None,
        squareoff_time=squareoff if intraday else None,
    )
    add_symbol_mapping(strategy.id, symbol, exchange, quantity, product)
    click.echo(json.dumps(_describe(strategy), indent=2))


@strategy_cli.command("map")
@click.option("--name", required=True, help="Strategy name.")
@click.option(
    "--symbol",
    "symbols",
    required=True,
    multiple=True,
    help="Repeat to map several symbols with the same settings.",
)
@click.option("--exchange", default="NSE", show_default=True)
@click.option("--quantity", type=int, required=True)
@click.option("--product", default="MIS", show_default=True)
def map_command(name, symbols, exchange, quantity, product):
    """Add symbols to a strategy."""
    strategy = get_strategy_by_name(name)
    if strategy is None:
        raise click.BadParameter(f"no strategy named {name!r}", param_hint="--name")
    exchange, product = exchange.upper(), product.upper()
    symbols = [symbol.upper() for symbol in symbols]
    for symbol in symbols:
        _check_mapping(symbol, exchange, quantity, product)
    for symbol in symbols:
        add_symbol_mapping(strategy.id, symbol, exchange, quantity, product)
    click.echo(json.dumps(_describe(strategy), indent=2))


@strategy_cli.command("list")
def list_command():
    """All strategies with their webhook URLs, as JSON."""
    click.echo(json.dumps([_describe(s) for s in get_all_strategies()], indent=2))


@strategy_cli.command("toggle")
@click.option("--name", required=True)
@click.option("--active/--inactive", default=True)
def toggle_command(name, active):
    """Activate or deactivate a strategy."""
    strategy = get_strategy_by_name(name)
    if strategy is None:
        raise click.BadParameter(f"no strategy named {name!r}", param_hint="--name")
    click.echo(json.dumps(_describe(toggle_strategy(strategy.id, active)), indent=2))
