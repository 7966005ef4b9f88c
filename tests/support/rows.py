"""Rows written straight into the queue table, for tests and benchmarks that need many
finished orders at once (enqueuing each would take minutes)."""

from datetime import datetime
from typing import Any


def finished_order_row(at: datetime) -> dict[str, Any]:
    """A sent order, finished at ``at``, of an account whose key nobody needs again."""
    return {
        "endpoint": "placeorder",
        "payload": "{}",
        "apikey_token": "x",
        "account": "a",
        "strategy": "Old",
        "symbol": "OLD",
        "exchange": "NSE",
        "product": "MIS",
        "instrument": "a|NSE|OLD|MIS",
        "lane": "regular",
        "lane_key": "regular:a",
        "lane_priority": 1,
        "state": "sent",
        "attempts": 1,
        "reconcile_checks": 0,
        "created_at": at,
        "available_at": at,
        "updated_at": at,
        "finished_at": at,
        "claimed_at": at,
        "sent_at": at,
    }
