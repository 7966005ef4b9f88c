"""Which orderbook entries could be an in-doubt order: pure, no network."""

from datetime import datetime

import pytest

from services.order_queue.orderbook import find_matches, parse_broker_timestamp

SENT_AT = datetime(2026, 11, 28, 4, 0, 0)  # 09:30:00 IST
ORDER = {
    "symbol": "SBIN",
    "exchange": "NSE",
    "product": "MIS",
    "pricetype": "MARKET",
    "action": "BUY",
    "quantity": "10",
}


def entry(orderid="B1", timestamp="28-Nov-2026 09:30:01", **fields):
    return {**ORDER, "orderid": orderid, "timestamp": timestamp, **fields}


def test_an_entry_matching_every_field_after_the_send_is_a_match():
    assert find_matches("placeorder", ORDER, SENT_AT, [entry()]).orderids == ["B1"]


def test_the_same_second_as_the_send_counts_but_earlier_does_not():
    book = [entry("SAME", "28-Nov-2026 09:30:00"), entry("EARLIER", "28-Nov-2026 09:29:59")]
    assert find_matches(
        "placeorder", ORDER, SENT_AT.replace(microsecond=700_000), book
    ).orderids == ["SAME"]


@pytest.mark.parametrize(
    "different",
    [
        {"symbol": "TCS"},
        {"exchange": "BSE"},
        {"product": "CNC"},
        {"action": "SELL"},
        {"quantity": "11"},
        {"pricetype": "LIMIT"},
    ],
)
def test_any_differing_field_rules_an_entry_out(different):
    assert find_matches("placeorder", ORDER, SENT_AT, [entry(**different)]).orderids == []


def test_a_smart_order_matches_whatever_action_and_quantity_the_broker_derived():
    smart = {**ORDER, "position_size": "0"}
    book = [entry(action="SELL", quantity="25")]
    assert find_matches("placesmartorder", smart, SENT_AT, book).orderids == ["B1"]


def test_a_limit_order_must_match_its_price():
    limit = {**ORDER, "pricetype": "LIMIT", "price": "601.5"}
    book = [
        entry("RIGHT", pricetype="LIMIT", price=601.50),
        entry("WRONG", pricetype="LIMIT", price=602),
    ]
    assert find_matches("placeorder", limit, SENT_AT, book).orderids == ["RIGHT"]


def test_an_unreadable_timestamp_is_counted_not_guessed():
    result = find_matches("placeorder", ORDER, SENT_AT, [entry(timestamp="yesterday-ish")])
    assert (result.orderids, result.unreadable) == ([], 1)


def test_broker_timestamps_are_read_as_exchange_time():
    assert parse_broker_timestamp("28-Nov-2026 09:30:00") == SENT_AT
    assert parse_broker_timestamp("2026-11-28 09:30:00") == SENT_AT
    assert parse_broker_timestamp(None) is None
