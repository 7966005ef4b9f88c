"""``store.squareoff_log``: one record per strategy, trading day and squareoff time, so a
squareoff runs at most once a day however many processes try.  Run against SQLite and
PostgreSQL alike."""

import threading
from datetime import datetime

from database.order_queue.model import SquareoffOutcome


def claim(
    store, outcome=SquareoffOutcome.ON_TIME, squareoff_time="15:10", day="2026-11-30", strategy_id=1
):
    return store.squareoff_log.record_squareoff_once(
        source="strategy",
        strategy_id=strategy_id,
        strategy_name="Trend",
        trading_day=day,
        squareoff_time=squareoff_time,
        outcome=outcome,
        now=datetime(2026, 11, 30, 9, 40),
    )


def test_a_squareoff_is_recorded_once_a_day_per_strategy_and_time(store):
    assert claim(store) is True
    assert claim(store, SquareoffOutcome.CAUGHT_UP) is False  # a restart, another process
    assert claim(store, squareoff_time="15:15") is True  # the time was edited: a new one
    assert claim(store, day="2026-12-01") is True  # the next day
    assert claim(store, strategy_id=2) is True
    rows = store.squareoff_log.squareoffs_since("2026-11-30")
    assert [
        (r["trading_day"], r["strategy_id"], r["squareoff_time"], r["outcome"]) for r in rows
    ] == [
        ("2026-12-01", 1, "15:10", "on_time"),
        ("2026-11-30", 1, "15:10", "on_time"),
        ("2026-11-30", 1, "15:15", "on_time"),
        ("2026-11-30", 2, "15:10", "on_time"),
    ]


def test_of_many_racing_claims_exactly_one_wins(store):
    results, start = [], threading.Barrier(8)

    def racer():
        start.wait()
        results.append(claim(store))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
