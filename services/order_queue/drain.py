"""Deliver the queue's unfinished orders when the plugin could not be wired into OpenAlgo.

``python -m services.order_queue.drain REASON``, from the OpenAlgo checkout, is started
by the start-up hook (``install/startup_hook.py``) when an OpenAlgo update removed an
anchor the plugin's edits need: OpenAlgo then runs without the queue, and the orders
the queue had already acknowledged would be stranded.  This process says so (ERROR log,
an alert through the configured channels), runs a dispatcher until nothing is pending,
sending or in doubt any more (each order delivered, or dead-lettered by its own bounds
and alerted as every dead order is), and exits.  Two at once (two restarts in a row)
are safe: they share the queue as any two dispatchers do.
"""

from __future__ import annotations

import os
import sys
import time

from dotenv import load_dotenv

from services.order_queue import runtime
from services.order_queue.settings import load_settings
from utils.logging import get_logger

logger = get_logger(__name__)

#: How often the queue is looked at while draining.
LOOK_SECONDS = 1.0


def drain(reason: str) -> int:
    """Run until no order is unfinished; returns how many still are at the end."""
    load_dotenv(os.path.join(os.getcwd(), ".env"))
    queue = runtime.build(load_settings())
    queue.store.schema.create()
    _oldest, open_work = queue.store.reads.watch_facts()
    text = (
        f"order queue plugin NOT in force after an OpenAlgo update: {reason}. New "
        f"webhooks use OpenAlgo's in-memory queue again: run the plugin's installer. "
        f"{open_work} orders the queue had acknowledged are being delivered or expire "
        f"by their own bounds"
    )
    logger.error("%s", text)
    queue.alerter.raise_alert("plugin", "not in force", text, open_orders=open_work)
    # Long enough for the oldest order to go out or expire, and for one in doubt to settle.
    settings = queue.settings
    deadline = time.monotonic() + settings.max_age_seconds + settings.in_progress_seconds + 60
    if open_work:
        try:
            queue.start_dispatcher()
        except runtime.PepperChanged as exc:
            logger.error("order queue drain cannot deliver: %s", exc)
            queue.alerter.raise_alert("plugin", "drain paused", str(exc), open_orders=open_work)
            queue.alerter.wait_delivered(10.0)
            return open_work
        while open_work and time.monotonic() < deadline:
            time.sleep(LOOK_SECONDS)
            _oldest, open_work = queue.store.reads.watch_facts()
        queue.stop(timeout=settings.shutdown_timeout_seconds)
    logger.info("order queue drain finished: %s orders still open", open_work)
    queue.alerter.wait_delivered(10.0)
    return open_work


def main(argv: list[str]) -> int:
    reason = argv[0] if argv else "the plugin's edits could not be made"
    return 0 if drain(reason) == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
