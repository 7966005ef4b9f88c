"""``store.squareoffs``: one record per strategy, trading day and squareoff time, so a
squareoff runs at most once a day.  Run against SQLite and PostgreSQL alike."""

from database.order_queue.model import SquareoffOutcome
from tests.support.store_steps import T0


def record(store, day="2026-11-23", outcome=SquareoffOutcome.ON_TIME, time="15:10", **kw):
    return store.squareoffs.claim_squareoff(
        source=kw.get("source", "strategy"),
        strategy_id=kw.get("strategy_id", 1),
        strategy_name="Trend",
        trading_day=day,
        squareoff_time=time,
        outcome=outcome,
        now=T0,
    )


def test_only_the_first_caller_of_the_day_records_the_squareoff(store):
    assert record(store)
    assert not record(store, outcome=SquareoffOutcome.CAUGHT_UP)  # a restart, later that day
    assert record(store, day="2026-11-24")  # the next trading day
    assert record(store, time="15:15")  # the strategy's squareoff moved: a new one
    assert record(store, source="chartink")  # another manager's strategy 1
    days = [
        (r["trading_day"], r["outcome"]) for r in store.squareoffs.squareoffs_since("2026-11-24")
    ]
    assert days == [("2026-11-24", "on_time")]
