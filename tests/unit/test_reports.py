"""What the page, the API and the CLI report: the pure parts, no database."""

from datetime import datetime, timedelta

from database.order_queue.holds import Holds
from services.order_queue.ist import day_start_utc
from services.order_queue.reports import iso, order_json, waits_for
from services.order_queue.settings import OrderQueueSettings

NOW = datetime(2026, 11, 28, 4, 0, 0)  # 09:30 IST
SETTINGS = OrderQueueSettings(smart_settle_seconds=1.0)


def test_the_trading_day_starts_at_midnight_ist():
    assert day_start_utc(NOW) == datetime(2026, 11, 27, 18, 30)
    assert day_start_utc(datetime(2026, 11, 27, 18, 29)) == datetime(2026, 11, 26, 18, 30)


def test_times_are_iso_with_a_z_and_other_values_pass_through():
    assert iso(NOW) == "2026-11-28T04:00:00.000Z"
    assert iso(7) == 7 and iso(None) is None


def test_an_order_row_gains_its_age():
    row = {"id": 1, "created_at": NOW - timedelta(seconds=90), "state": "pending"}
    assert order_json(row, NOW) == {
        "id": 1,
        "created_at": "2026-11-28T03:58:30.000Z",
        "state": "pending",
        "age_seconds": 90.0,
    }


def test_what_a_held_order_waits_for():
    sending = {"state": "sending", "lease_expires_at": NOW, "holds": Holds.EVERY_ORDER}
    in_doubt = {"state": "in_doubt", "available_at": NOW, "holds": Holds.EVERY_ORDER}
    dead = {"state": "dead", "dead_reason": "in_doubt", "holds": None}
    settling = {"state": "sent", "sent_at": NOW, "dead_reason": None, "holds": Holds.SMART_ORDERS}
    assert waits_for(sending, SETTINGS)["waits_for"] == "the broker's answer"
    assert waits_for(in_doubt, SETTINGS) == {
        "waits_for": "the broker's orderbook: was it placed?",
        "until": "2026-11-28T04:00:00.000Z",
        "settle": True,
    }
    assert (
        waits_for(dead, SETTINGS)["settle"] is True and waits_for(dead, SETTINGS)["until"] is None
    )
    assert waits_for(settling, SETTINGS)["until"] == "2026-11-28T04:00:01.000Z"
