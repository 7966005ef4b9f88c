"""Host stand-in: strategies and their symbol mappings (OpenAlgo's Strategy Manager model).

Names follow OpenAlgo's ``database.strategy_db`` so the webhook handler reads the same.
"""

import secrets
from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from database.host_db import Base, create_tables, db_session

TRADING_MODES = ("LONG", "SHORT", "BOTH")


class Strategy(Base):
    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    webhook_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(80))
    platform: Mapped[str] = mapped_column(String(32), default="tradingview")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_intraday: Mapped[bool] = mapped_column(Boolean, default=False)
    trading_mode: Mapped[str] = mapped_column(String(8), default="LONG")
    start_time: Mapped[str | None] = mapped_column(String(5))
    end_time: Mapped[str | None] = mapped_column(String(5))
    squareoff_time: Mapped[str | None] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(
        DateTime, default=lambda: datetime.now(UTC).replace(tzinfo=None)
    )


class StrategySymbolMapping(Base):
    __tablename__ = "strategy_symbol_mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    product_type: Mapped[str] = mapped_column(String(8))


def init_db() -> None:
    """Create the tables for strategies and their symbols (the start-up DB init list)."""
    create_tables(Strategy, StrategySymbolMapping)


def create_strategy(
    name: str,
    user_id: str,
    *,
    trading_mode: str = "LONG",
    is_intraday: bool = False,
    start_time: str | None = None,
    end_time: str | None = None,
    squareoff_time: str | None = None,
) -> Strategy:
    strategy = Strategy(
        name=name,
        user_id=user_id,
        webhook_id=secrets.token_urlsafe(24),
        trading_mode=trading_mode,
        is_intraday=is_intraday,
        start_time=start_time,
        end_time=end_time,
        squareoff_time=squareoff_time,
    )
    db_session.add(strategy)
    db_session.commit()
    return strategy


def add_symbol_mapping(
    strategy_id: int, symbol: str, exchange: str, quantity: int, product_type: str
) -> StrategySymbolMapping:
    mapping = StrategySymbolMapping(
        strategy_id=strategy_id,
        symbol=symbol,
        exchange=exchange,
        quantity=quantity,
        product_type=product_type,
    )
    db_session.add(mapping)
    db_session.commit()
    return mapping


def get_strategy(strategy_id: int) -> Strategy | None:
    return db_session.get(Strategy, strategy_id)


def get_strategy_by_webhook_id(webhook_id: str) -> Strategy | None:
    return db_session.scalar(select(Strategy).where(Strategy.webhook_id == webhook_id))


def get_strategy_by_name(name: str) -> Strategy | None:
    return db_session.scalar(select(Strategy).where(Strategy.name == name))


def get_all_strategies() -> list[Strategy]:
    return list(db_session.scalars(select(Strategy).order_by(Strategy.id)))


def get_symbol_mappings(strategy_id: int) -> list[StrategySymbolMapping]:
    return list(
        db_session.scalars(
            select(StrategySymbolMapping)
            .where(StrategySymbolMapping.strategy_id == strategy_id)
            .order_by(StrategySymbolMapping.id)
        )
    )


def toggle_strategy(strategy_id: int, active: bool) -> Strategy | None:
    strategy = get_strategy(strategy_id)
    if strategy is not None:
        strategy.is_active = active
        db_session.commit()
    return strategy
