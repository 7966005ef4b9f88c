"""Host stand-in: the paper broker's order book and positions.

The host has no real broker, so ``/api/v1`` orders land here.  MARKET orders fill at
once and move the position; LIMIT/SL/SL-M orders stay open (nothing matches them).
Every write is one short transaction that takes SQLite's write lock up front, so a
smart order's position read, order insert and position update cannot interleave with
another thread's.
"""

from contextlib import contextmanager
from datetime import UTC, datetime

import pytz
from sqlalchemy import DateTime, Float, Integer, String, UniqueConstraint, inspect, select, text
from sqlalchemy.orm import Mapped, mapped_column

from database.host_db import Base, create_tables, db_session
from utils.logging import get_logger

logger = get_logger(__name__)

IST = pytz.timezone("Asia/Kolkata")
TIMESTAMP_FORMAT = "%d-%b-%Y %H:%M:%S"

STATUS_COMPLETE = "complete"
STATUS_OPEN = "open"
STATUS_REJECTED = "rejected"
STATUS_CANCELLED = "cancelled"
#: Why an order the paper broker accepted was then rejected (``reject_symbols``).
RMS_REJECTION = (
    "RMS: rejected after acceptance by the paper broker's rule PAPER_BROKER_REJECT_SYMBOLS "
    "(as a broker's risk checks may, e.g. for a circuit limit)"
)

MSG_NO_POSITION = "No OpenPosition Found. Not placing Exit order."
MSG_MATCHES = "No action needed. Position size matches current position"
MSG_PLACED = "Order placed successfully"


def _utcnow() -> datetime:
    """Naive UTC, the convention of the host tables."""
    return datetime.now(UTC).replace(tzinfo=None)


class PaperOrder(Base):
    __tablename__ = "paper_orders"
    # AUTOINCREMENT: ids (and so order ids) are never reused, even after deletes.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Filled from the row id right after the insert, in the same transaction.
    orderid: Mapped[str | None] = mapped_column(String(20), unique=True)
    user_id: Mapped[str] = mapped_column(String(80), index=True)
    strategy: Mapped[str] = mapped_column(String(255), default="")
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[float] = mapped_column(Float, default=0.0)
    trigger_price: Mapped[float] = mapped_column(Float, default=0.0)
    pricetype: Mapped[str] = mapped_column(String(10))
    product: Mapped[str] = mapped_column(String(10))
    order_status: Mapped[str] = mapped_column(String(20))
    #: The broker's reason for a rejection, shown in the orderbook.
    rejection_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_utcnow)


class PaperPosition(Base):
    __tablename__ = "paper_positions"
    __table_args__ = (UniqueConstraint("user_id", "symbol", "exchange", "product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(80))
    symbol: Mapped[str] = mapped_column(String(50))
    exchange: Mapped[str] = mapped_column(String(10))
    product: Mapped[str] = mapped_column(String(10))
    quantity: Mapped[int] = mapped_column(Integer, default=0)


def init_db() -> None:
    """Create the tables for the paper broker's book (the start-up DB init list); a book
    from an earlier version gains the rejection reason."""
    create_tables(PaperOrder, PaperPosition)
    bind = db_session.get_bind()
    if "rejection_reason" not in {c["name"] for c in inspect(bind).get_columns("paper_orders")}:
        with bind.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE paper_orders ADD COLUMN rejection_reason VARCHAR(255)"
            )


@contextmanager
def _write_transaction():
    """One short transaction holding the write lock from its first statement.

    pysqlite only opens a transaction at the first INSERT/UPDATE, so a read before it
    would run outside the transaction and two threads could both act on the same
    position; BEGIN IMMEDIATE closes that gap (other dialects lock the row instead).
    """
    try:
        if db_session.get_bind().dialect.name == "sqlite":
            db_session.execute(text("BEGIN IMMEDIATE"))
        yield
        db_session.commit()
    except BaseException:
        db_session.rollback()
        raise


def _position_row(user_id: str, symbol: str, exchange: str, product: str) -> PaperPosition | None:
    return db_session.scalar(
        select(PaperPosition)
        .where(
            PaperPosition.user_id == user_id,
            PaperPosition.symbol == symbol,
            PaperPosition.exchange == exchange,
            PaperPosition.product == product,
        )
        .with_for_update()
    )


def _apply_fill(order: PaperOrder) -> None:
    """Move the position by a filled order's signed quantity."""
    signed = order.quantity if order.action == "BUY" else -order.quantity
    row = _position_row(order.user_id, order.symbol, order.exchange, order.product)
    if row is None:
        db_session.add(
            PaperPosition(
                user_id=order.user_id,
                symbol=order.symbol,
                exchange=order.exchange,
                product=order.product,
                quantity=signed,
            )
        )
    else:
        row.quantity += signed


def _insert_order(
    user_id: str, fields: dict, action: str, quantity: int, *, rejected: bool = False
) -> PaperOrder:
    """Insert an order (filling it if MARKET) and give it an id derived from its row id.
    ``rejected``: accepted with an id, then rejected (no fill), as a broker's RMS does."""
    pricetype = fields.get("pricetype", "MARKET")
    is_market = pricetype == "MARKET" and not rejected
    order = PaperOrder(
        user_id=user_id,
        strategy=fields.get("strategy", ""),
        symbol=fields["symbol"],
        exchange=fields["exchange"],
        action=action,
        quantity=quantity,
        # Brokers report a filled MARKET order's price as 0.
        price=0.0 if is_market else float(fields.get("price", 0.0)),
        trigger_price=float(fields.get("trigger_price", 0.0)),
        pricetype=pricetype,
        product=fields.get("product", "MIS"),
        order_status=STATUS_REJECTED if rejected else STATUS_COMPLETE if is_market else STATUS_OPEN,
        rejection_reason=RMS_REJECTION if rejected else None,
        created_at=_utcnow(),
    )
    db_session.add(order)
    db_session.flush()
    # yymmdd + zero-padded row id: 15 digits like OpenAlgo's, unique because the id is.
    order.orderid = f"{order.created_at:%y%m%d}{order.id:09d}"
    if is_market:
        _apply_fill(order)
    db_session.flush()
    return order


def _log_placed(order: PaperOrder) -> None:
    logger.info(
        "Paper order placed: orderid=%s symbol=%s action=%s quantity=%s",
        order.orderid,
        order.symbol,
        order.action,
        order.quantity,
    )


def place_order(user_id: str, fields: dict, *, reject_symbols: frozenset = frozenset()) -> str:
    """Place an order from validated ``fields``; return its order id.  A symbol in
    ``reject_symbols`` is accepted, then rejected (the host's rule for demos and tests)."""
    with _write_transaction():
        order = _insert_order(
            user_id,
            fields,
            fields["action"],
            int(fields["quantity"]),
            rejected=fields["symbol"] in reject_symbols,
        )
    _log_placed(order)
    return order.orderid


def _smart_order_plan(fields: dict, current: int) -> tuple[str, int] | str:
    """(action, quantity) that takes ``current`` to the target, or why nothing is placed."""
    target = int(fields["position_size"])
    quantity = int(fields["quantity"])
    delta = target - current
    if delta != 0:
        return ("BUY" if delta > 0 else "SELL", abs(delta))
    if target == 0 and quantity > 0:
        # Flat and asked to stay flat with a quantity: OpenAlgo opens in ``action``.
        return (fields["action"], quantity)
    return MSG_NO_POSITION if target == 0 else MSG_MATCHES


def place_smart_order(
    user_id: str, fields: dict, *, reject_symbols: frozenset = frozenset()
) -> tuple[str | None, str]:
    """Trade towards ``position_size`` (the absolute target); return (orderid or None,
    message).  A symbol in ``reject_symbols`` is accepted, then rejected."""
    with _write_transaction():
        row = _position_row(
            user_id, fields["symbol"], fields["exchange"], fields.get("product", "MIS")
        )
        plan = _smart_order_plan(fields, row.quantity if row else 0)
        if isinstance(plan, str):
            return None, plan
        order = _insert_order(user_id, fields, *plan, rejected=fields["symbol"] in reject_symbols)
    _log_placed(order)
    return order.orderid, MSG_PLACED


def get_position(user_id: str, symbol: str, exchange: str, product: str = "MIS") -> int:
    """Net quantity held (positive long, negative short, 0 flat)."""
    row = db_session.scalar(
        select(PaperPosition.quantity).where(
            PaperPosition.user_id == user_id,
            PaperPosition.symbol == symbol,
            PaperPosition.exchange == exchange,
            PaperPosition.product == product,
        )
    )
    return row or 0


def _format_timestamp(created_at: datetime) -> str:
    return pytz.utc.localize(created_at).astimezone(IST).strftime(TIMESTAMP_FORMAT)


def _order_dict(order: PaperOrder) -> dict:
    """One order in OpenAlgo's orderbook shape (quantity as a string, like brokers send)."""
    return {
        "action": order.action,
        "symbol": order.symbol,
        "exchange": order.exchange,
        "orderid": order.orderid,
        "product": order.product,
        "quantity": str(order.quantity),
        "price": order.price,
        "pricetype": order.pricetype,
        "order_status": order.order_status,
        "trigger_price": order.trigger_price,
        "timestamp": _format_timestamp(order.created_at),
        **({"rejection_reason": order.rejection_reason} if order.rejection_reason else {}),
    }


def cancel_order(user_id: str, orderid: str) -> str | None:
    """Cancel the user's open order ``orderid``; None when done, else why not."""
    with _write_transaction():
        order = db_session.scalar(
            select(PaperOrder)
            .where(PaperOrder.user_id == user_id, PaperOrder.orderid == orderid)
            .with_for_update()
        )
        if order is None:
            return f"Order {orderid} not found"
        if order.order_status != STATUS_OPEN:
            return f"Order {orderid} is {order.order_status}, not open"
        order.order_status = STATUS_CANCELLED
    logger.info("Paper order cancelled: orderid=%s", orderid)
    return None


def get_orderbook(user_id: str) -> list[dict]:
    """The user's orders, oldest first, in OpenAlgo's orderbook shape."""
    orders = db_session.scalars(
        select(PaperOrder).where(PaperOrder.user_id == user_id).order_by(PaperOrder.id)
    ).all()
    return [_order_dict(order) for order in orders]
