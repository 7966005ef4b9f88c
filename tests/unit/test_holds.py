"""What the page says holds an instrument back is exactly what the claim refuses: both
read ``holds.py``.  Run against SQLite and PostgreSQL alike."""

from datetime import timedelta

import pytest

from database.order_queue.holds import Holds
from database.order_queue.model import orders
from database.order_queue.values import RateLimits
from tests.support.rows import finished_order_row
from tests.support.store_steps import T0

GAP = 2.0
LIMITS = RateLimits(smart=1000, regular=1000, window=1.0, settle_gap=GAP)
NOW = T0 + timedelta(minutes=5)

#: Orders that may or may not hold a later one of their instrument:
#: (state, lane, its send stamp so many seconds ago or None, broker order id, dead reason).
HOLDERS = [
    ("sending", "regular", 0.5, None, None),
    ("sending", "smart", None, None, None),  # claimed, not stamped yet
    ("in_doubt", "regular", 30, None, None),
    ("in_doubt", "smart", 0.5, None, None),
    ("sent", "smart", 0.5, "B1", None),  # placed: its position is settling
    ("sent", "smart", 0.5, None, None),  # the broker placed nothing
    ("sent", "smart", 5, "B2", None),  # settled
    ("sent", "regular", 0.5, "B3", None),  # a regular order leaves no settle gap
    ("dead", "smart", 0.5, None, "in_doubt"),
    ("dead", "smart", 30, None, "in_doubt"),
    ("dead", "smart", 0.5, None, "rejected"),
    ("dead", "regular", 0.5, None, "rejected"),
    ("cancelled", "smart", 0.5, None, None),  # sent once, then cancelled while waiting
    ("dismissed", "smart", 1.5, None, None),
]


def _row(instrument: int, state: str, lane: str, sent_ago, orderid, reason) -> dict:
    row = finished_order_row(NOW - timedelta(minutes=1))
    finished = state in ("sent", "dead", "cancelled", "dismissed")
    row.update(
        endpoint="placesmartorder" if lane == "smart" else "placeorder",
        symbol=f"S{instrument}",
        instrument=f"a|NSE|S{instrument}|MIS",
        lane=lane,
        lane_key=f"{lane}:a",
        lane_priority=1 if lane == "smart" else 2,
        state=state,
        sent_at=None if sent_ago is None else NOW - timedelta(seconds=sent_ago),
        claimed_at=NOW - timedelta(seconds=30),
        broker_orderid=orderid,
        dead_reason=reason,
        finished_at=NOW - timedelta(seconds=0.2) if finished else None,
        lease_expires_at=NOW + timedelta(seconds=30) if state in ("sending", "in_doubt") else None,
    )
    return row


def _candidate(instrument: int, lane: str) -> dict:
    return _row(instrument, "pending", lane, None, None, None) | {
        "claimed_at": None,
        "attempts": 0,
    }


@pytest.fixture
def scene(store):
    """Every holder twice: before a pending smart order, and before a pending regular
    one; each pair on an instrument of its own."""
    candidates = {}
    with store.engine.begin() as conn:
        for number, holder in enumerate(HOLDERS):
            for lane in ("smart", "regular"):
                instrument = 2 * number + (lane == "regular")
                conn.execute(orders.insert(), [_row(instrument, *holder)])
                candidates[f"a|NSE|S{instrument}|MIS"] = lane
                conn.execute(orders.insert(), [_candidate(instrument, lane)])
    return candidates


def test_the_page_shows_held_exactly_what_the_claim_refuses(store, scene):
    held = store.reads.held_orders(now=NOW, settle_gap_seconds=GAP)
    refused_by_page = {
        row["instrument"]
        for row in held
        if row["holds"] == Holds.EVERY_ORDER
        or (row["holds"] == Holds.SMART_ORDERS and scene[row["instrument"]] == "smart")
    }

    claimed = set()
    while (result := store.claims.claim_next("d1", now=NOW, lease_seconds=30, limits=LIMITS)).order:
        claimed.add(store.reads.get_order(result.order.id)["instrument"])
    refused_by_claim = set(scene) - claimed

    assert refused_by_page == refused_by_claim
    # The scene is not trivial: some of each, and the rule as the glossary states it.
    assert 0 < len(refused_by_claim) < len(scene)
    holders = {row["instrument"]: row for row in held}
    assert holders["a|NSE|S8|MIS"]["holds"] == Holds.SMART_ORDERS  # sent, placed, settling
    assert "a|NSE|S10|MIS" not in holders  # sent, placed nothing
    assert "a|NSE|S12|MIS" not in holders  # settled
    assert holders["a|NSE|S18|MIS"]["holds"] is None  # dead in doubt long ago: shown only


def test_without_a_settle_gap_only_the_wire_holds(store, scene):
    held = store.reads.held_orders(now=NOW, settle_gap_seconds=0)
    assert {row["holds"] for row in held} == {Holds.EVERY_ORDER, None}
