"""Order-queue settings: read once, validated, every default in one place
(docs/design.md, "Settings").

This module is the plugin's only reader of the environment: ``load_settings`` builds an
``OrderQueueSettings`` at start, and the runtime (``runtime.py``) hands it to whatever
needs a value.  A bad value fails start-up with a message naming the variable, instead
of surfacing as a strange dispatcher behaviour at the first order.
"""

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from database.order_queue.api_keys import PEPPER_VARIABLE
from database.order_queue.model import (
    DATABASE_URL_VARIABLE,
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_DATABASE_URL,
)


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _variable(name: str, default: Any, *, minimum: float | None = None, repr: bool = True) -> Any:
    """A setting read from the environment variable ``name`` (``load_settings``), at
    least ``minimum`` where it is a number: each setting is declared once, here."""
    return field(default=default, repr=repr, metadata={"variable": name, "minimum": minimum})


@dataclass(frozen=True)
class OrderQueueSettings:
    #: Where the queue lives; SQLite file of its own by default, or a PostgreSQL URL.
    database_url: str = _variable(DATABASE_URL_VARIABLE, DEFAULT_DATABASE_URL)
    #: OpenAlgo's ``API_KEY_PEPPER``: the queued API keys are sealed with a key derived
    #: from it.  Never shown (``repr=False``), so settings can be logged safely.
    api_key_pepper: str = _variable(PEPPER_VARIABLE, "", repr=False)
    #: How long a SQLite write waits for another writer before the webhook answers 503.
    #: Shorter than OpenAlgo's 15 s: webhook senders give up after a few seconds, and a
    #: 503 they can see beats a 200 that never arrives.
    sqlite_busy_timeout_ms: int = _variable(
        "ORDER_QUEUE_SQLITE_BUSY_TIMEOUT_MS", DEFAULT_BUSY_TIMEOUT_MS, minimum=1
    )
    #: Room kept on the SQLite queue's disk for the orders already stored: when the disk
    #: fills, this reserve is given up so they still go out while new ones are refused
    #: (``database/order_queue/disk_reserve.py``).  0 turns it off.
    disk_reserve_mb: float = _variable("ORDER_QUEUE_DISK_RESERVE_MB", 16.0, minimum=0)
    #: Most delivery attempts for an order that keeps failing transiently (first try
    #: included) before it is dead-lettered as retries_exhausted.
    max_retries: int = _variable("ORDER_QUEUE_MAX_RETRIES", 3, minimum=1)
    #: A pending order older than this is not sent (dead-lettered as expired): a market
    #: order from a signal five minutes ago is a different trade at a different price.
    max_age_seconds: float = _variable("ORDER_QUEUE_MAX_AGE_SECONDS", 300.0, minimum=1)
    #: Orders per window per broker account in each lane.  By default the host's own
    #: limits: OpenAlgo's ``ORDER_RATE_LIMIT`` / ``SMART_ORDER_RATE_LIMIT`` ("10 per
    #: second" each), else 10 and 10.
    regular_rate: int = _variable("ORDER_QUEUE_REGULAR_RATE", 10, minimum=1)
    smart_rate: int = _variable("ORDER_QUEUE_SMART_RATE", 10, minimum=1)
    #: Set when a host limit is "N per minute": that lane counts over 60 s.
    regular_rate_window_seconds: float | None = None
    smart_rate_window_seconds: float | None = None
    #: Two smart orders for the same instrument go out at least this far apart, and
    #: never before the earlier one's outcome is known: a smart order sizes itself from
    #: the position the previous one left.  (Upstream slept 1 s after every smart order
    #: of the whole account; different instruments need not wait for each other.)
    smart_settle_seconds: float = _variable("ORDER_QUEUE_SMART_SETTLE_SECONDS", 1.0, minimum=0)
    #: The window those rates are counted over: the broker's (and OpenAlgo's) second.
    rate_window_seconds: float = _variable("ORDER_QUEUE_RATE_WINDOW_SECONDS", 1.0, minimum=1.0)
    #: Send stamps are counted over windows this much wider, and a request leaves at
    #: most half of it after its stamp (``Sender.take_turn``); the other half is
    #: for the trip to the API, well under a millisecond on the same host.  So no
    #: window at the broker holds more than its limit, at a cost of 5% of the rate
    #: instead of a blanket safety margin.
    send_tolerance_seconds: float = _variable(
        "ORDER_QUEUE_SEND_TOLERANCE_SECONDS", 0.05, minimum=0.01
    )
    #: How much later than the requests around it the host's limiter may count one:
    #: OpenAlgo's server takes requests in turn, so requests stamped inside the budget
    #: can reach its limiter bunched closer than they left.  Windows are counted this
    #: much wider again (measured inside OpenAlgo: docs/operating.md, "Pacing against
    #: OpenAlgo's limiter").
    host_jitter_seconds: float = _variable("ORDER_QUEUE_HOST_JITTER_SECONDS", 0.3, minimum=0)
    #: OpenAlgo's own address (its public URL behind nginx in production).  Orders go
    #: to it only over loopback (``api_road.py``).
    host_server: str = _variable("HOST_SERVER", "http://127.0.0.1:5000")
    #: The road a dispatcher's requests take to OpenAlgo's API (``api_road.py``): empty
    #: for the default (inside OpenAlgo's process: in-process; a worker or the drain:
    #: HTTP to HOST_SERVER where that is a loopback address, else to 127.0.0.1 at
    #: FLASK_PORT), ``inprocess``, an ``http(s)://`` URL, or ``unix:/path/to/socket``
    #: (gunicorn bound to a unix socket, as OpenAlgo's install.sh runs it).
    api_url: str = _variable("ORDER_QUEUE_API_URL", "")
    #: How long an alert key (``alert_keys.py``) refuses a resend: at least this many
    #: hours, and never less than the rest of the IST day.
    alert_key_hours: float = _variable("ORDER_QUEUE_ALERT_KEY_HOURS", 24.0, minimum=0.01)
    #: Following a sent order to the broker's verdict (``verdicts.py``): how often the
    #: orderbook is read (once per account, off the send path), and for how long after
    #: the send an order not yet final is followed (then its last verdict stands).
    verdict_poll_seconds: float = _variable("ORDER_QUEUE_VERDICT_POLL_SECONDS", 5.0, minimum=0.05)
    verdict_follow_seconds: float = _variable(
        "ORDER_QUEUE_VERDICT_FOLLOW_SECONDS", 1800.0, minimum=1
    )
    #: OpenAlgo's own port on loopback: the default road of a worker or the drain.
    flask_port: int = _variable("FLASK_PORT", 5000, minimum=1)
    #: Requests in flight at once across all accounts.
    workers: int = _variable("ORDER_QUEUE_WORKERS", 4, minimum=1)
    #: HTTP timeouts: connecting (order not sent if exceeded) and waiting for the answer
    #: (outcome unknown if exceeded).
    connect_timeout: float = _variable("ORDER_QUEUE_CONNECT_TIMEOUT", 3.0, minimum=0.1)
    read_timeout: float = _variable("ORDER_QUEUE_READ_TIMEOUT", 10.0, minimum=0.1)
    #: How long the API we post to may keep working on a request after our client gave
    #: up: OpenAlgo's own broker client waits up to 120 s, so an order we timed out on
    #: can still be placed that late.  An in-doubt order is not sent again before then.
    upstream_timeout_seconds: float = _variable(
        "ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS", 120.0, minimum=0
    )
    #: First retry delay; doubles per attempt with jitter, capped.
    retry_base_seconds: float = _variable("ORDER_QUEUE_RETRY_BASE_SECONDS", 1.0, minimum=0.01)
    retry_cap_seconds: float = _variable("ORDER_QUEUE_RETRY_CAP_SECONDS", 30.0, minimum=0.01)
    #: Orderbook checks for an in-doubt order before it is considered not sent, and the
    #: spacing between them (brokers can take a moment to list a new order).
    reconcile_checks: int = _variable("ORDER_QUEUE_RECONCILE_CHECKS", 3, minimum=1)
    reconcile_interval_seconds: float = _variable(
        "ORDER_QUEUE_RECONCILE_INTERVAL_SECONDS", 1.5, minimum=0.01
    )
    #: After the host process that received an order finished it or died, how long the
    #: broker may still take to list it: its own processing of a request it already
    #: had, seconds at most for a retail broker's API (OpenAlgo's 120 s is how long its
    #: client would wait, not how long a broker takes).  An order not listed by then
    #: was not placed and is sent again.
    broker_settle_seconds: float = _variable("ORDER_QUEUE_BROKER_SETTLE_SECONDS", 5.0, minimum=0)
    #: While the orderbook cannot answer (OpenAlgo's semi_auto mode answers 403; an
    #: expired broker session; a broker outage), an in-doubt order waits and the
    #: orderbook asked again with backoff for about this long; then the operator is
    #: told (dead, reason in_doubt) and can settle it by hand.  Half a minute: whoever
    #: trades on it should learn soon that an order's fate is unknown.
    orderbook_wait_seconds: float = _variable("ORDER_QUEUE_ORDERBOOK_WAIT_SECONDS", 30.0, minimum=0)
    #: Alerts beyond the page (``alerts.py``): a webhook URL (Slack, Discord,
    #: a Telegram bot's sendMessage with the chat id), how soon the same alert may
    #: repeat, and how old the oldest pending order may get before it is an alert.
    alert_webhook_url: str = _variable("ORDER_QUEUE_ALERT_WEBHOOK_URL", "")
    alert_telegram_chat_id: str = _variable("ORDER_QUEUE_ALERT_TELEGRAM_CHAT_ID", "")
    alert_repeat_seconds: float = _variable("ORDER_QUEUE_ALERT_REPEAT_SECONDS", 300.0, minimum=0)
    alert_queue_age_seconds: float = _variable(
        "ORDER_QUEUE_ALERT_QUEUE_AGE_SECONDS", 120.0, minimum=1
    )
    #: Heartbeat period of a dispatcher, and the silence after which it counts as gone: its
    #: leases are free, its stamped sends go in doubt and its unstamped ones back to pending.
    heartbeat_seconds: float = _variable("ORDER_QUEUE_HEARTBEAT_SECONDS", 1.0, minimum=0.05)
    heartbeat_timeout_seconds: float = _variable(
        "ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS", 5.0, minimum=0.1
    )
    #: Fallback poll when nothing wakes the dispatcher (enqueue wakes it at once).
    poll_seconds: float = _variable("ORDER_QUEUE_POLL_SECONDS", 1.0, minimum=0.01)
    #: Bound on waiting for in-flight requests at shutdown.  ``docker compose stop``
    #: (OpenAlgo's compose file sets no ``stop_grace_period``) kills 10 s after SIGTERM,
    #: and gunicorn 25's master spends 2 s closing its control socket before it passes
    #: SIGTERM on to the worker: 4 s leaves the server 4 s more to close.  A request
    #: still out when it runs out is settled by the reconciler after the restart.
    shutdown_timeout_seconds: float = _variable(
        "ORDER_QUEUE_SHUTDOWN_TIMEOUT_SECONDS", 4.0, minimum=0.1
    )
    #: A strategy's squareoff whose minute passed while the app was down is run at
    #: start if the start comes within this many minutes of it (and before the session
    #: closes); later it is reported as missed.  A quarter of an hour covers a crash and
    #: restart; an exit much later than that is a decision for the trader.
    squareoff_catchup_minutes: float = _variable(
        "ORDER_QUEUE_SQUAREOFF_CATCHUP_MINUTES", 15.0, minimum=0
    )
    #: The host's webhook limit (OpenAlgo's ``WEBHOOK_RATE_LIMIT``, "100 per minute"
    #: per client address): a webhook it refuses is answered 429 with this many
    #: seconds in ``Retry-After`` (the limit's window), not OpenAlgo's redirect.
    webhook_limit_window_seconds: float = 60.0
    #: Sent, dismissed and cancelled orders are purged this many days after they
    #: finished (dead and open orders never are).
    retention_days: float = _variable("ORDER_QUEUE_RETENTION_DAYS", 30.0, minimum=1)
    #: The health check fails when the oldest pending order is older than this...
    health_max_pending_age_seconds: float = _variable(
        "ORDER_QUEUE_HEALTH_MAX_PENDING_AGE_SECONDS", 60.0, minimum=1
    )
    #: ...and, if set, while any dead order awaits a decision.
    health_fail_on_dead: bool = _variable("ORDER_QUEUE_HEALTH_FAIL_ON_DEAD", False)

    @property
    def lease_seconds(self) -> float:
        """A lease outlives the longest possible request by a margin."""
        return self.connect_timeout + self.read_timeout + 5.0

    @property
    def in_progress_seconds(self) -> float:
        """After sending, how long the order may still reach the broker: our own
        request, or the API's request to the broker after ours timed out, with margin."""
        return max(self.lease_seconds, self.upstream_timeout_seconds + 5.0)


#: How a variable's text is read: a type to call on it, or "boolean" (``_boolean``).
_Parse = Callable[[Any], str | int | float] | Literal["boolean"]
#: The parser for each field type.
_PARSERS: dict[Any, _Parse] = {str: str, int: int, float: float, bool: "boolean"}

#: environment variable → (field, parser, minimum), from the fields' declarations.
_VARIABLES: dict[str, tuple[str, _Parse, float | None]] = {
    f.metadata["variable"]: (f.name, _PARSERS[f.type], f.metadata["minimum"])
    for f in fields(OrderQueueSettings)
    if "variable" in f.metadata
}


def _boolean(raw) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


#: The host's own limits (OpenAlgo's .env, flask-limiter syntax), used for a lane whose
#: ORDER_QUEUE_* rate is not set: variable → (rate field, window field, our variable).
_HOST_LIMITS = {
    "ORDER_RATE_LIMIT": ("regular_rate", "regular_rate_window_seconds", "ORDER_QUEUE_REGULAR_RATE"),
    "SMART_ORDER_RATE_LIMIT": ("smart_rate", "smart_rate_window_seconds", "ORDER_QUEUE_SMART_RATE"),
}
_HOST_LIMIT_SYNTAX = re.compile(r"^\s*(\d+)\s*(?:per|/)\s*(second|minute)\s*$", re.I)


def parse_host_limit(variable: str, raw: str) -> tuple[int, float | None]:
    """ "10 per second" → (10, None); "100 per minute" → (100, 60.0).  Only the first
    limit of a list ("10 per second;100 per minute") is used."""
    match = _HOST_LIMIT_SYNTAX.match(raw.split(";")[0])
    if match is None or int(match.group(1)) < 1:
        raise SettingsError(
            f"{variable}={raw!r} is not a limit like '10 per second' or '100 per minute'"
        )
    return int(match.group(1)), (60.0 if match.group(2).lower() == "minute" else None)


def load_settings(
    source: Mapping[str, object] | None = None, *, overrides: Mapping[str, object] | None = None
) -> OrderQueueSettings:
    """Build settings from ``source`` (default: the environment) with ``overrides``
    (the host's app.config entries of the same names) on top; blank means default."""
    source = {**(os.environ if source is None else source), **(overrides or {})}
    values: dict[str, Any] = {}  # field name → value, checked by OrderQueueSettings
    for host_variable, (rate_field, window_field, ours) in _HOST_LIMITS.items():
        raw = source.get(host_variable)
        if isinstance(raw, str) and raw.strip() and not str(source.get(ours) or "").strip():
            values[rate_field], values[window_field] = parse_host_limit(host_variable, raw)
    for variable, (attribute, parse, minimum) in _VARIABLES.items():
        raw = source.get(variable)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        parser = _boolean if parse == "boolean" else parse
        try:
            value = parser(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            kind = "true/false" if parse == "boolean" else parse.__name__
            raise SettingsError(f"{variable}={raw!r} is not a valid {kind}") from None
        if minimum is not None:
            assert not isinstance(value, str)  # a minimum is only ever set for a number
            if value < minimum:
                raise SettingsError(f"{variable}={raw!r} must be at least {minimum}")
        values[attribute] = value
    webhook_limit = source.get("WEBHOOK_RATE_LIMIT")
    if isinstance(webhook_limit, str) and webhook_limit.strip():
        # Only the Retry-After of a refused webhook depends on it: a form this parser
        # does not know ("1000 per day") keeps the default rather than stop the host.
        try:
            _count, window = parse_host_limit("WEBHOOK_RATE_LIMIT", webhook_limit)
            values["webhook_limit_window_seconds"] = window or 1.0
        except SettingsError:
            pass
    settings = OrderQueueSettings(**values)
    if not settings.host_server.startswith(("http://", "https://")):
        raise SettingsError(
            f"HOST_SERVER={settings.host_server!r} must start with http:// or https://"
        )
    if settings.api_url not in ("", "inprocess") and not settings.api_url.startswith(
        ("http://", "https://", "unix:/")
    ):
        raise SettingsError(
            f"ORDER_QUEUE_API_URL={settings.api_url!r} must be empty, 'inprocess', an "
            "http(s):// URL or unix:/path/to/socket"
        )
    if settings.heartbeat_timeout_seconds <= settings.heartbeat_seconds:
        raise SettingsError(
            "ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS must exceed ORDER_QUEUE_HEARTBEAT_SECONDS"
        )
    return settings


def setting_names() -> list[str]:
    """Every variable of the queue's own (a test checks .env.example documents each)."""
    return list(_VARIABLES)


def host_setting_names() -> list[str]:
    """The host's variables the queue also reads: its rate limits."""
    return [*_HOST_LIMITS, "WEBHOOK_RATE_LIMIT"]
