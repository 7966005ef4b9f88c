"""The catch-up rule for a squareoff missed while the app was down, and the trading day
(pure; the log that lets a squareoff run at most once a day is ``test_squareoff_log``)."""

from datetime import datetime, timedelta

from services.order_queue.ist import ist_moment_utc, trading_day
from services.order_queue.squareoffs import Decision, decide

WINDOW = timedelta(minutes=15)
MONDAY = datetime(2026, 11, 30)  # a Monday


def at_ist(day: datetime, hhmm: str, seconds: int = 0) -> datetime:
    return ist_moment_utc(hhmm, day + timedelta(hours=6)) + timedelta(seconds=seconds)


def test_a_squareoff_still_ahead_is_left_to_the_scheduler():
    assert decide("15:10", {"NSE"}, at_ist(MONDAY, "15:09", 59), WINDOW) is Decision.AHEAD


def test_a_squareoff_passed_within_the_window_and_the_session_is_caught_up():
    assert decide("15:10", {"NSE"}, at_ist(MONDAY, "15:10"), WINDOW) is Decision.CATCH_UP
    assert decide("15:10", {"NSE"}, at_ist(MONDAY, "15:25"), WINDOW) is Decision.CATCH_UP


def test_past_the_window_or_the_close_it_is_missed_not_run():
    assert decide("15:10", {"NSE"}, at_ist(MONDAY, "15:25", 1), WINDOW) is Decision.MISSED
    # Inside the window but after the equity close: a market order could become an
    # after-market order that fills tomorrow.
    assert decide("15:25", {"NSE"}, at_ist(MONDAY, "15:30"), WINDOW) is Decision.MISSED
    # A strategy mixing exchanges is caught up only while all of them trade.
    assert decide("15:25", {"NSE", "MCX"}, at_ist(MONDAY, "15:31"), WINDOW) is Decision.MISSED
    assert decide("23:00", {"MCX"}, at_ist(MONDAY, "23:05"), WINDOW) is Decision.CATCH_UP


def test_no_squareoff_on_a_weekend():
    saturday = MONDAY - timedelta(days=2)
    assert decide("15:10", {"NSE"}, at_ist(saturday, "15:12"), WINDOW) is Decision.NO_SESSION


def test_the_trading_day_is_the_ist_date():
    assert trading_day(datetime(2026, 11, 30, 18, 29)) == "2026-11-30"  # 23:59 IST
    assert trading_day(datetime(2026, 11, 30, 18, 31)) == "2026-12-01"  # 00:01 IST
