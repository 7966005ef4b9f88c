"""Squareoff deadlines: the moment after which an order must not be sent, from the host.

OpenAlgo's strategies live in the host's database, which the plugin does not import:
each strategy manager ("strategy", "chartink") hands over a provider
(``order_queue_service.set_deadline_provider``), and the earliest deadline wins.  A
provider answers in wall-clock time (a squareoff is an IST hour); the queue keeps its
own steady time (``clock.py``), so deadlines are converted on the way in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.order_queue.clock import Clock
from utils.logging import get_logger

logger = get_logger(__name__)

DeadlineProvider = Callable[[dict, datetime], "datetime | None"]

#: The host's deadline providers, one per strategy manager.
_providers: dict[str, DeadlineProvider] = {}


def set_provider(provider: DeadlineProvider | None, source: str) -> None:
    """Register (or, with None, remove) ``source``'s provider."""
    if provider is None:
        _providers.pop(source, None)
    else:
        _providers[source] = provider


def deadline_for(payload: dict, now: datetime) -> datetime | None:
    """The earliest of the host's deadlines for this order at wall-clock ``now``, or
    None.  A failing provider costs its deadline (the age limit still applies), never
    the order."""
    found = []
    for source, provider in list(_providers.items()):
        try:
            deadline = provider(payload, now)
        except Exception:
            logger.exception(
                "%s deadline lookup failed for %s %s; only the age limit applies",
                source,
                payload.get("strategy"),
                payload.get("symbol"),
            )
            continue
        if deadline is not None:
            found.append(deadline)
    return min(found, default=None)


def on_queue_time(clock: Clock, payload: dict, now: datetime) -> datetime | None:
    """The order's deadline on the queue's steady time (``now`` is too), so a step of
    this machine's clock cannot send an order past its squareoff."""
    deadline = deadline_for(payload, clock.to_wall(now))
    return None if deadline is None else clock.from_wall(deadline)
