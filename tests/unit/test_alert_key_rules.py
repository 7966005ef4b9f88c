"""Reading an alert's key (``services/order_queue/alert_keys.py``): pure rules."""

from datetime import datetime, timedelta

import pytest

from services.order_queue.alert_keys import (
    BadAlertKey,
    alert_key_of,
    chartink_key,
    key_expiry,
)

LATER = datetime(2026, 12, 8, 9, 0)
CHARTINK = {
    "stocks": "SBIN,TCS",
    "trigger_prices": "801.5,3920",
    "triggered_at": "2:34 pm",
    "scan_name": "Breakout",
    "scan_url": "breakout-5",
    "alert_name": "Breakout alert",
}


def test_the_header_wins_over_the_body_field():
    key = alert_key_of(
        "/strategy/webhook/w", {"Idempotency-Key": "h"}, {"idempotency_key": "b"}, expires_at=LATER
    )
    assert key is not None and key.key == "h" and key.scope == "/strategy/webhook/w"


def test_the_body_hash_leaves_the_key_out_and_ignores_key_order():
    one = alert_key_of("/s/", {}, {"idempotency_key": "a", "x": 1, "y": 2}, expires_at=LATER)
    two = alert_key_of("/s/", {}, {"y": 2, "x": 1, "idempotency_key": "a"}, expires_at=LATER)
    assert one is not None and two is not None and one.body_hash == two.body_hash


def test_no_key_is_no_key_on_a_strategy_webhook():
    assert alert_key_of("/strategy/webhook/w", {}, {"symbol": "SBIN"}, expires_at=LATER) is None


@pytest.mark.parametrize("raw", [5, "", "   ", "k" * 256, None])
def test_an_unusable_key_names_where_it_came_from(raw):
    with pytest.raises(BadAlertKey, match="idempotency_key"):
        alert_key_of("/strategy/webhook/w", {}, {"idempotency_key": raw}, expires_at=LATER)


def test_a_chartink_alert_is_keyed_by_its_scan_minute_and_stocks():
    key = alert_key_of("/chartink/webhook/c", {}, CHARTINK, expires_at=LATER)
    assert key is not None and key.key == chartink_key(CHARTINK)
    assert chartink_key({**CHARTINK, "trigger_prices": "802,3921"}) == key.key  # same alert
    assert chartink_key({**CHARTINK, "triggered_at": "2:35 pm"}) != key.key
    assert chartink_key({**CHARTINK, "stocks": "SBIN"}) != key.key
    assert chartink_key({"stocks": "SBIN"}) is None  # not a Chartink alert's shape


def test_a_key_lives_its_hours_and_at_least_to_the_end_of_the_ist_day():
    noon_ist = datetime(2026, 12, 7, 6, 30)  # 12:00 IST
    assert key_expiry(noon_ist, 24) == noon_ist + timedelta(hours=24)
    end_of_ist_day = datetime(2026, 12, 7, 18, 30)  # midnight IST
    assert key_expiry(noon_ist, 1) == end_of_ist_day
