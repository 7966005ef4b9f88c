"""The squareoff log: which strategy squared off on which IST trading day, and how.

One row per (source, strategy, day, squareoff time), kept unique by the database, is
what makes a squareoff happen at most once a day however many processes, schedulers
and restarts try: whoever inserts the row runs it, everyone else stands aside.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from database.order_queue.core import StorePart
from database.order_queue.model import QueueStorageError, SquareoffOutcome, squareoffs

#: How long the log is kept: long enough to look back over a month of trading days.
SQUAREOFF_LOG_RETENTION = timedelta(days=60)


class SquareoffLog(StorePart):
    """Squareoff records, one per strategy, day and squareoff time."""

    def record_squareoff_once(
        self,
        *,
        source: str,
        strategy_id: int,
        strategy_name: str,
        trading_day: str,
        squareoff_time: str,
        outcome: SquareoffOutcome,
        now: datetime,
    ) -> bool:
        """Record the day's squareoff of this strategy as ``outcome``; True for the one
        caller that recorded it (and so must run it, or report it missed), False when it
        was already recorded.  Raises ``QueueStorageError`` when the database cannot be
        written."""
        try:
            with self.transaction() as conn:
                conn.execute(
                    insert(squareoffs).values(
                        source=source,
                        strategy_id=strategy_id,
                        strategy_name=strategy_name[:255],
                        trading_day=trading_day,
                        squareoff_time=squareoff_time,
                        outcome=outcome.value,
                        recorded_at=now,
                    )
                )
                conn.execute(
                    squareoffs.delete().where(
                        squareoffs.c.recorded_at < now - SQUAREOFF_LOG_RETENTION
                    )
                )
        except QueueStorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    def squareoffs_since(self, trading_day: str) -> list[dict]:
        """The log from ``trading_day`` (YYYY-MM-DD) on, newest day first."""
        with self.transaction(read_only=True) as conn:
            rows = conn.execute(
                select(squareoffs)
                .where(squareoffs.c.trading_day >= trading_day)
                .order_by(squareoffs.c.trading_day.desc(), squareoffs.c.recorded_at)
            ).mappings()
            return [dict(row) for row in rows]
