"""What the admin page, its JSON API and the CLI report, built in one place from the
store's reads: stats, health, one order's detail, the held instruments and the pictures.

Plain functions of the runtime (``runtime.py``) and their arguments: no request, no
template, so the page, the API and ``flask order-queue`` show the same figures.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from database.order_queue.api_keys import CredentialsUnavailable, mask
from database.order_queue.holds import Holds
from database.order_queue.model import (
    DeadReason,
    OrderState,
    QueueStorageError,
    SquareoffOutcome,
)
from services.order_queue import VERSION, charts
from services.order_queue.ist import day_start_utc, trading_day
from services.order_queue.runtime import OrderQueueRuntime
from services.order_queue.settings import OrderQueueSettings


def iso(value):
    """A stored (naive UTC) time as ISO 8601 with a ``Z``; anything else unchanged."""
    return value.isoformat(timespec="milliseconds") + "Z" if isinstance(value, datetime) else value


def order_json(row: dict, now: datetime) -> dict:
    data = {key: iso(value) for key, value in row.items()}
    data["age_seconds"] = round((now - row["created_at"]).total_seconds(), 1)
    return data


def stats_report(queue: OrderQueueRuntime) -> dict:
    """Counts, oldest pending age, sent today, dead awaiting a decision, dispatchers.

    Dispatchers are read from their heartbeats in the queue database, not from this
    process: with ``flask order-queue worker`` processes doing the sending, a web
    process without a dispatcher of its own is still served."""
    now, settings, store = queue.clock.now(), queue.settings, queue.store
    day_start = queue.clock.from_wall(day_start_utc(queue.clock.to_wall(now)))
    report = store.reads.stats(now=now, day_start=day_start)
    # Alerts sent again with a key already used (alert_keys.py): refused, nothing queued.
    report["resent_alerts_refused_today"] = store.alert_keys.duplicates_since(day_start)
    # The broker's verdicts on today's sent orders (verdicts.py).
    report["broker_verdicts_today"] = store.verdicts.counts_since(day_start)
    live = store.dispatcher_registry.live_dispatchers(
        now=now, heartbeat_timeout=settings.heartbeat_timeout_seconds
    )
    report["dispatcher"] = {
        "alive": bool(live),
        "ids": [d["id"] for d in live],
        "last_heartbeat": iso(max(d["heartbeat_at"] for d in live)) if live else None,
        "regular_rate": settings.regular_rate,
        "smart_rate": settings.smart_rate,
        "rate_window_seconds": settings.rate_window_seconds,
    }
    report["squareoffs_today"] = [
        {
            "source": row["source"],
            "strategy": row["strategy_name"],
            "squareoff_time": row["squareoff_time"],
            "outcome": row["outcome"],
            "recorded_at": iso(row["recorded_at"]),
        }
        for row in store.squareoff_log.squareoffs_since(trading_day(queue.clock.to_wall(now)))
    ]
    report["storage_warning"] = store.storage_warning()
    report["clock_warnings"] = queue.clock.warnings()
    count, last = queue.refused_webhooks  # this process's: the limit is kept per process
    report["webhooks_refused"] = {"count": count, "last_at": iso(last)}
    report["now"] = iso(now)
    return report


def health_report(queue: OrderQueueRuntime) -> tuple[dict, bool]:
    """Healthy when the dispatcher runs, storage answers, nothing waits too long, and
    (if so configured) no dead order awaits a decision."""
    settings, here = queue.settings, queue.status()
    process = {
        "server_model": here["server_model"],
        "dispatcher_running": here["dispatcher_running"],
        "stopping": here["stopping"],
        "api_road": here["api_road"],
    }
    problems = []
    if here["start_problem"]:
        # The detail is logged for the operator; the public answer stays generic.
        problems.append(
            queue.pause_reason()
            or f"dispatcher waiting for the queue database since "
            f"{iso(here['start_problem_since'])}; webhooks answer 503 meanwhile"
        )
    try:
        report = stats_report(queue)
    except QueueStorageError:
        problems.append("queue database unavailable")
        unhealthy = {"status": "unhealthy", "problems": problems, "process": process}
        return {**unhealthy, "version": VERSION}, False
    report["process"] = process
    if not report["dispatcher"]["alive"]:
        problems.append("dispatcher not running (no heartbeat from any process)")
    age = report["oldest_pending_age_seconds"]
    if age is not None and age > settings.health_max_pending_age_seconds:
        problems.append(
            f"oldest pending order is {age:.0f}s old "
            f"(limit {settings.health_max_pending_age_seconds:.0f}s)"
        )
    if report["storage_warning"]:
        problems.append(report["storage_warning"])
    if settings.health_fail_on_dead and report["dead"]:
        problems.append(f"{report['dead']} dead orders await a decision")
    # Said, not failed on: a squareoff of today that ran late or not at all is for the
    # trader to look at, as is a clock that stepped; the queue itself is well.
    warnings = [
        f"squareoff of {s['strategy']!r} ({s['source']}, {s['squareoff_time']} IST) "
        + (
            "caught up at start"
            if s["outcome"] == SquareoffOutcome.CAUGHT_UP.value
            else "MISSED: check positions by hand"
        )
        for s in report["squareoffs_today"]
        if s["outcome"] != SquareoffOutcome.ON_TIME.value
    ]
    warnings += report["clock_warnings"]
    report.update(
        status="ok" if not problems else "unhealthy",
        problems=problems,
        warnings=warnings,
        version=VERSION,
    )
    return report, not problems


def order_detail(queue: OrderQueueRuntime, order_id: int) -> dict | None:
    """One order with its payload (API key masked), attempt trail and the later orders
    of its instrument already gone out; None when there is no such order."""
    store = queue.store
    row = store.reads.get_order(order_id, with_key_token=True)
    if row is None:
        return None
    try:
        masked = mask(store.sealing.unseal(row.pop("apikey_token")))
    except CredentialsUnavailable:
        masked = "(cannot be decrypted)"
    detail = order_json(row, queue.clock.now())
    detail["payload"] = {**row["payload"], "apikey": masked}
    detail["trail"] = [
        {k: iso(v) for k, v in a.items()} for a in store.reads.list_attempts(order_id)
    ]
    detail["later_sent"] = [r["id"] for r in store.reads.later_orders_gone_ahead(order_id)]
    return detail


def held_report(queue: OrderQueueRuntime) -> list[dict]:
    """Instruments held back, each with what its order waits for and until when."""
    now, settings = queue.clock.now(), queue.settings
    rows = queue.store.reads.held_orders(now=now, settle_gap_seconds=settings.smart_settle_seconds)
    return [dict(order_json(row, now), **waits_for(row, settings)) for row in rows]


def waits_for(row: dict, settings: OrderQueueSettings) -> dict:
    """What an order shown among the held waits for, in words, and until when; what it
    holds back (``holds``) is the claim's own rule, read with the row."""
    state, holding = row["state"], row["holds"]
    if state == OrderState.SENDING.value:
        return {
            "waits_for": "the broker's answer",
            "until": iso(row["lease_expires_at"]),
            "settle": False,
        }
    if state == OrderState.IN_DOUBT.value:
        return {
            "waits_for": "the broker's orderbook: was it placed?",
            "until": iso(row["available_at"]),
            "settle": True,
        }
    if holding == Holds.SMART_ORDERS:
        until = row["sent_at"] + timedelta(seconds=settings.smart_settle_seconds)
        return {
            "waits_for": "the position to settle before the next smart order",
            "until": iso(until),
            "settle": row["dead_reason"] == DeadReason.IN_DOUBT.value,
        }
    return {
        "waits_for": "you: placed or not? Check the broker's orderbook "
        "(later orders for this instrument are not held by it)",
        "until": None,
        "settle": True,
    }


def charts_report(queue: OrderQueueRuntime) -> dict:
    """The page's pictures as SVG markup (``charts.py``), from one read of the facts."""
    now, settings = queue.clock.now(), queue.settings
    facts = queue.store.samples.chart_facts(
        since_samples=now - timedelta(hours=charts.DEPTH_HOURS),
        since_sends=now - timedelta(minutes=charts.RATE_MINUTES),
        since_latency=now - timedelta(minutes=charts.LATENCY_MINUTES),
    )
    return {
        "depth": charts.depth_chart(facts["depth"], now, facts["current"]),
        "rate": charts.rate_chart(
            facts["sends"],
            now,
            {"smart": settings.smart_rate, "regular": settings.regular_rate},
            {
                "smart": settings.smart_rate_window_seconds,
                "regular": settings.regular_rate_window_seconds,
            },
        ),
        "latency": charts.latency_chart(facts["accepted"], now),
    }
