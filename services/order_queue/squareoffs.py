"""Squareoffs that survive a restart.

The host's squareoff jobs live in an in-memory APScheduler, and OpenAlgo registers a
strategy's job only when the strategy is created, toggled or edited: after any restart
no intraday squareoff runs until someone touches the strategy, and the exit orders are
never even generated.  Each strategy manager (OpenAlgo's Strategy and Chartink
blueprints, this app's Strategy) hands its own functions over with ``register``; the
scheduler's code stays as it is.  Then:

- **At start** (``catch_up``, once the dispatcher runs) every active intraday strategy's
  squareoff is registered again through the host's own ``schedule_squareoff``.
- **A squareoff whose minute passed while the app was down** is run once through the
  host's own ``squareoff_positions`` (a smart order to position 0 per mapped symbol:
  it closes what is open and places nothing else), if the start is on the same IST
  trading day, within ``ORDER_QUEUE_SQUAREOFF_CATCHUP_MINUTES`` of the squareoff, and
  before the session of every mapped exchange closes: a market order sent after the
  close can become an after-market order that fills the next morning.  Past that it is
  reported as missed, for a human.
- **At most once a day.** Every run, on time or caught up, first records the day's
  squareoff in the queue database (``squareoff_log``); only the caller that recorded it
  runs it.  So restarts, several processes (each with its own scheduler) and a catch-up
  racing the scheduler's own job all end in one squareoff per strategy, day and time.
  Should the queue database be unreachable at that moment, the squareoff runs anyway:
  a second flatten finds the position closed and places nothing, a missing one leaves
  it open.
- **Loud.** A caught-up and a missed squareoff are logged (WARNING, ERROR), alerted
  through the configured channels, and listed by health and on the admin page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from database.order_queue.model import QueueStorageError, SquareoffOutcome
from services.order_queue.ist import ist_moment_utc, ist_weekday, trading_day
from utils.logging import get_logger

logger = get_logger(__name__)

#: When each exchange's regular session closes (IST).  An exchange not listed counts as
#: closing with the equity market, the earliest.
SESSION_CLOSE = {
    "NSE": "15:30",
    "BSE": "15:30",
    "NFO": "15:30",
    "BFO": "15:30",
    "CDS": "17:00",
    "BCD": "17:00",
    "NCDEX": "17:00",
    "MCX": "23:30",
}
EARLIEST_CLOSE = "15:30"


class Decision(str, Enum):
    """What a start at some moment means for a strategy's squareoff today."""

    AHEAD = "ahead"  # its minute is still to come: the scheduler runs it
    NO_SESSION = "no_session"  # Saturday or Sunday: nothing to close
    CATCH_UP = "catch_up"
    MISSED = "missed"


def decide(
    squareoff_time: str, exchanges: Iterable[str], now_utc: datetime, catch_up_window: timedelta
) -> Decision:
    """The catch-up rule (module docstring) for one strategy, at ``now_utc``."""
    if ist_weekday(now_utc) >= 5:
        return Decision.NO_SESSION
    due = ist_moment_utc(squareoff_time, now_utc)
    if now_utc < due:
        return Decision.AHEAD
    closes = [SESSION_CLOSE.get(exchange, EARLIEST_CLOSE) for exchange in exchanges]
    close = ist_moment_utc(min(closes, default=EARLIEST_CLOSE), now_utc)
    if now_utc - due <= catch_up_window and now_utc < close:
        return Decision.CATCH_UP
    return Decision.MISSED


@dataclass(frozen=True)
class SquareoffSource:
    """One strategy manager of the host, through its own functions.

    ``all_strategies()`` lists the manager's strategies (each with ``id``, ``name``,
    ``is_active``, ``is_intraday``, ``squareoff_time``); ``mappings(id)`` lists a strategy's symbols
    (each with ``exchange``); ``schedule(id)`` and ``fire(id)`` are the host's
    ``schedule_squareoff`` and (unwrapped) ``squareoff_positions``; ``release`` ends
    the host's database session of this thread."""

    name: str
    all_strategies: Callable[[], list]
    get_strategy: Callable[[int], Any]
    mappings: Callable[[int], list]
    schedule: Callable[[int], Any]
    fire: Callable[[int], Any]
    release: Callable[[], Any] | None = None

    def active_intraday(self) -> list:
        return [
            strategy
            for strategy in self.all_strategies()
            if strategy.is_active and strategy.is_intraday and strategy.squareoff_time
        ]


_sources: dict[str, SquareoffSource] = {}
_sources_lock = threading.Lock()
#: How a squareoff the host's scheduler fires reaches this process's runtime: bound by
#: the runtime module when it is imported (it imports this module, so this one cannot
#: import it back).
_current_runtime: Callable[[], Any] | None = None


def bind_runtime(current: Callable[[], Any]) -> None:
    global _current_runtime
    _current_runtime = current


def register(source: SquareoffSource) -> Callable[[int], Any]:
    """Take over a strategy manager's squareoffs; returns the ``squareoff_positions``
    the host binds in its place, which its scheduler then runs (it records the day's
    squareoff first and stands aside if it was already run)."""
    with _sources_lock:
        _sources[source.name] = source

    def squareoff_positions(strategy_id):
        return _run_on_time(source, strategy_id)

    squareoff_positions.__doc__ = (
        f"The host's squareoff_positions for {source.name}, run at "
        f"most once a day (services/order_queue/squareoffs.py)."
    )
    return squareoff_positions


def registered() -> list[SquareoffSource]:
    with _sources_lock:
        return list(_sources.values())


def _run_on_time(source: SquareoffSource, strategy_id: int):
    try:
        strategy = source.get_strategy(strategy_id)
        if strategy is None or not strategy.is_intraday or not strategy.squareoff_time:
            return source.fire(strategy_id)  # the host's own function decides
        if _current_runtime is None:
            raise QueueStorageError("the order queue's runtime is not loaded")
        queue = _current_runtime()
        now = queue.clock.now()
        first = queue.store.squareoff_log.record_squareoff_once(
            source=source.name,
            strategy_id=strategy.id,
            strategy_name=strategy.name,
            trading_day=trading_day(queue.clock.to_wall(now)),
            squareoff_time=strategy.squareoff_time,
            outcome=SquareoffOutcome.ON_TIME,
            now=now,
        )
    except QueueStorageError as exc:
        logger.error(
            "squareoff of %s strategy %s could not be recorded (%s): running it anyway",
            source.name,
            strategy_id,
            exc,
        )
        return source.fire(strategy_id)
    finally:
        _release(source)
    if not first:
        logger.info(
            "squareoff of %s strategy %s already ran today: not again", source.name, strategy_id
        )
        return None
    return source.fire(strategy_id)


def catch_up(queue, wall_now: datetime | None = None) -> list[dict]:
    """Register every active intraday squareoff again, run the ones missed while the
    app was down that may still run, report the rest (module docstring).  Squareoffs go
    by the outside world's clock (``wall_now``, naive UTC; the clock's by default).
    Returns what this call did, one dict per strategy it ran or reported.  Never raises."""
    window = timedelta(minutes=queue.settings.squareoff_catchup_minutes)
    done = []
    for source in registered():
        try:
            strategies = source.active_intraday()
        except Exception:
            logger.exception(
                "squareoffs of %s could not be listed at start: none is "
                "registered; toggle each intraday strategy to schedule it",
                source.name,
            )
            continue
        finally:
            _release(source)
        for strategy in strategies:
            try:
                done.extend(_catch_up_one(queue, source, strategy, window, wall_now))
            except Exception:
                logger.exception(
                    "squareoff of %s strategy %s: start-up check failed", source.name, strategy.id
                )
            finally:
                _release(source)
    return done


def _catch_up_one(
    queue, source: SquareoffSource, strategy, window: timedelta, wall_now: datetime | None
) -> list[dict]:
    source.schedule(strategy.id)
    now = queue.clock.now()
    wall = wall_now or queue.clock.to_wall(now)
    exchanges = {mapping.exchange for mapping in source.mappings(strategy.id)}
    decision = decide(strategy.squareoff_time, exchanges, wall, window)
    if decision in (Decision.AHEAD, Decision.NO_SESSION):
        return []
    outcome = (
        SquareoffOutcome.CAUGHT_UP if decision is Decision.CATCH_UP else SquareoffOutcome.MISSED
    )
    if not queue.store.squareoff_log.record_squareoff_once(
        source=source.name,
        strategy_id=strategy.id,
        strategy_name=strategy.name,
        trading_day=trading_day(wall),
        squareoff_time=strategy.squareoff_time,
        outcome=outcome,
        now=now,
    ):
        return []  # already ran (or was reported) today
    late = int((wall - ist_moment_utc(strategy.squareoff_time, wall)).total_seconds() // 60)
    what = f"{strategy.name!r} ({source.name}, squareoff {strategy.squareoff_time} IST)"
    if outcome is SquareoffOutcome.CAUGHT_UP:
        source.fire(strategy.id)
        text = f"squareoff of {what} was due while the app was down: run at start, {late} min late"
        logger.warning("%s", text)
    else:
        text = (
            f"squareoff of {what} was MISSED: the app started {late} min after it, "
            f"past the {window.total_seconds() / 60:.0f} min catch-up window or the "
            f"session's close; check the positions by hand"
        )
        logger.error("%s", text)
    queue.alerter.raise_alert(
        "squareoff",
        f"{source.name}:{strategy.id}:{outcome.value}",
        text,
        strategy=strategy.name,
        outcome=outcome.value,
    )
    return [{"source": source.name, "strategy": strategy.name, "outcome": outcome.value}]


def _release(source: SquareoffSource) -> None:
    if source.release is not None:
        try:
            source.release()
        except Exception:
            logger.exception("%s: releasing the host's database session failed", source.name)
