"""Squareoffs that survive a restart, on the host as OpenAlgo runs them: its scheduler
registers a strategy's squareoff only when the strategy is created or changed, so
after a restart only the order queue's start-up check brings it back, runs one missed
while the app was down, and never runs one twice on a day."""

import threading
from datetime import datetime, timedelta

import pytest

from blueprints import strategy as strategy_blueprint
from blueprints.strategy import start_scheduler, stop_scheduler
from services.order_queue import runtime, squareoffs
from services.order_queue.alerts import Alerter
from services.order_queue.ist import ist_moment_utc
from services.order_queue.settings import OrderQueueSettings
from tests.support.alert_receiver import Receiver
from tests.support.helpers import add_strategy

MONDAY_NOON_UTC = ist_moment_utc("12:00", datetime(2026, 11, 30, 6, 0))


def at_ist(hhmm, seconds=0):
    return ist_moment_utc(hhmm, MONDAY_NOON_UTC) + timedelta(seconds=seconds)


def flattens():
    return sorted(
        (row["symbol"], row["payload"]["position_size"])
        for row in runtime.current().store.reads.list_orders()
        if row["endpoint"] == "placesmartorder"
    )


@pytest.fixture
def intraday(app, runner):
    """An active intraday strategy on two symbols, squareoff 15:10 IST."""
    strategy = add_strategy(
        runner, "--intraday", "--start", "09:30", "--end", "14:00", "--squareoff", "15:10"
    )
    runner.invoke(
        args=["strategy", "map", "--name", "Trend", "--symbol", "INFY", "--quantity", "5"]
    )
    return strategy


@pytest.fixture
def alerts(app, monkeypatch):
    hook = Receiver()
    monkeypatch.setattr(
        runtime.current(),
        "alerter",  # the runtime's, sending to the receiver
        Alerter(OrderQueueSettings(alert_webhook_url=hook.url)),
    )
    yield hook
    hook.server.shutdown()


def test_after_a_restart_only_the_queue_registers_the_squareoff_again(app, intraday):
    job_id = f"squareoff_{intraday['strategy_id']}"
    scheduler = start_scheduler()
    try:
        # As OpenAlgo: a strategy that existed before the start gets no job of its own.
        assert scheduler.get_job(job_id) is None
        with app.app_context():
            assert squareoffs.catch_up(runtime.current(), wall_now=at_ist("15:00")) == []
        job = scheduler.get_job(job_id)
        assert job is not None
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("15", "10")
        assert flattens() == []  # still ahead: the job runs it, nothing ran now
    finally:
        stop_scheduler()


def test_a_squareoff_missed_while_down_runs_once_at_start_and_never_again(
    app, intraday, alerts, monkeypatch
):
    queue = runtime.current()
    monkeypatch.setattr(queue.clock, "now", lambda: at_ist("15:12"))
    with app.app_context():
        done = squareoffs.catch_up(queue)
    assert done == [{"source": "strategy", "strategy": "Trend", "outcome": "caught_up"}]
    assert flattens() == [("INFY", "0"), ("SBIN", "0")]
    with app.app_context():
        # Restarted again, and the scheduler's own job for the day: nothing more.
        monkeypatch.setattr(queue.clock, "now", lambda: at_ist("15:14"))
        assert squareoffs.catch_up(queue) == []
        assert strategy_blueprint.squareoff_positions(intraday["strategy_id"]) is None
    assert flattens() == [("INFY", "0"), ("SBIN", "0")]
    assert alerts.wait_for(1)
    assert "run at start, 2 min late" in alerts.bodies[0]["text"]


def test_a_squareoff_found_too_late_is_reported_missed_on_health_not_run(
    app, client, intraday, alerts, monkeypatch
):
    monkeypatch.setattr(runtime.current().clock, "now", lambda: at_ist("15:40"))
    with app.app_context():
        done = squareoffs.catch_up(runtime.current())
    assert done == [{"source": "strategy", "strategy": "Trend", "outcome": "missed"}]
    assert flattens() == []
    assert alerts.wait_for(1) and "MISSED" in alerts.bodies[0]["text"]
    with client.session_transaction() as session:
        session.update(logged_in=True, user="admin")
    health = client.get("/order-queue/api/health").get_json()
    assert [(s["strategy"], s["outcome"]) for s in health["squareoffs_today"]] == [
        ("Trend", "missed")
    ]
    assert health["warnings"] == [
        "squareoff of 'Trend' (strategy, 15:10 IST) MISSED: check positions by hand"
    ]


def test_on_time_the_scheduler_runs_it_once_across_processes(app, intraday):
    """Each process has its own scheduler: every one's job fires, one squareoff goes out."""
    results, start = [], threading.Barrier(4)

    def scheduler_job():
        start.wait()
        with app.app_context():
            results.append(strategy_blueprint.squareoff_positions(intraday["strategy_id"]))

    jobs = [threading.Thread(target=scheduler_job) for _ in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert sorted(results, key=str) == [2, None, None, None]
    assert flattens() == [("INFY", "0"), ("SBIN", "0")]
