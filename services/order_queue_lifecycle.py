"""This process's dispatcher: started once the host is ready, never taking the host
down, and stopped without cutting off a request in flight.

- **Start.** ``start_when_ready`` waits for the host's own start-up (OpenAlgo sets
  ``app.db_ready`` once its databases are initialised; sending earlier competes with
  that start-up for OpenAlgo's SQLite write lock).  If the queue database cannot be
  reached it logs why, keeps retrying with backoff in the background, and starts the
  dispatcher as soon as the database answers; meanwhile webhooks answer 503 and health
  says why.  Nothing here raises into the host's start-up thread.
- **Stop.** SIGTERM / SIGINT stop claiming at once and return to the server, which
  keeps serving, so a request the dispatcher already sent to its own host is answered.
  Once nothing is in flight (bounded by ``ORDER_QUEUE_SHUTDOWN_TIMEOUT_SECONDS``) the
  stop is recorded and the signal is delivered again to whatever handler was installed
  before (the server's own: gunicorn's worker, Werkzeug's KeyboardInterrupt), or the
  process exits 0.  Where signals cannot be caught (not the main thread), the stop runs
  at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from datetime import datetime

from database import order_queue_db
from database.order_queue_db import QueueStorageError, utcnow
from database.order_queue_green import server_model, spawn
from services.order_queue_alerts import alerter
from services.order_queue_dispatcher import Dispatcher
from services.order_queue_settings import OrderQueueSettings, configure, current_settings
from utils.logging import get_logger

logger = get_logger(__name__)

#: Pauses between tries to reach the queue database at start (the last one repeats).
START_RETRY_PAUSES = (0.5, 1.0, 2.0, 5.0)

_dispatcher: Dispatcher | None = None
_lock = threading.Lock()
_starter: threading.Thread | None = None
_stop_starting = threading.Event()
_start_problem: tuple[str, datetime] | None = None
_signals_handled: list[str] = []
_signals_lock = threading.Lock()
_watchdog: threading.Thread | None = None
_stop_watching = threading.Event()
WATCH_SECONDS = 5.0
_graceful_stop = False  # set by the first signal; the next one goes to the previous handler


def start_dispatcher(settings: OrderQueueSettings | None = None, *,
                     handle_signals: bool = False) -> Dispatcher:
    """Start this process's dispatcher now (later calls return the running one).

    Raises ``QueueStorageError`` when the queue database cannot be reached; hosts call
    ``start_when_ready``, which never raises.  ``handle_signals``: stop gracefully on
    SIGTERM / SIGINT (see ``install_shutdown_handlers``); tests leave it off.
    """
    global _dispatcher
    with _lock:
        started = _dispatcher is None or not _dispatcher.alive
        if started:
            if settings is not None:
                configure(settings)
            previous = _dispatcher
            # Known before it sends: its own host's door names it in receipts.
            _dispatcher = Dispatcher(order_queue_db.get_store(), current_settings())
            try:
                _dispatcher.start()
            except BaseException:
                _dispatcher = previous
                raise
        dispatcher = _dispatcher
    if started and handle_signals:  # outside the lock: a signal may arrive at once
        install_shutdown_handlers()
    return dispatcher


def start_when_ready(settings: OrderQueueSettings, *, host_ready=None,
                     handle_signals: bool = False) -> None:
    """Start the dispatcher once ``host_ready`` (an Event, or None) is set and the queue
    database answers; in the background where either has to be waited for.  Never
    raises."""
    global _starter
    configure(settings)
    if handle_signals:
        install_shutdown_handlers()
    _start_watchdog()
    with _lock:
        if _dispatcher is not None and _dispatcher.alive:
            return
        starter = _starter
    if starter is not None and starter.is_alive():
        if not _stop_starting.is_set():
            return  # a start is already under way
        starter.join(5.0)  # an earlier start that was told to stop: let it finish
    _stop_starting.clear()
    if (host_ready is None or host_ready.is_set()) and _try_start():
        return
    with _lock:
        _starter = threading.Thread(target=_start_in_background, args=(host_ready,),
                                    name="order-queue-start", daemon=True)
        _starter.start()


def _start_in_background(host_ready) -> None:
    if host_ready is not None and not host_ready.is_set():
        logger.info("order queue dispatcher waits for the host to finish starting")
        while not host_ready.wait(1.0):
            if _stop_starting.is_set():
                return
    attempt = 0
    while not _stop_starting.is_set() and not _try_start():
        _stop_starting.wait(START_RETRY_PAUSES[min(attempt, len(START_RETRY_PAUSES) - 1)])
        attempt += 1


def _start_watchdog() -> None:
    global _watchdog
    with _lock:
        if _watchdog is None or not _watchdog.is_alive():
            _stop_watching.clear()
            _watchdog = threading.Thread(target=_watch, name="order-queue-watchdog",
                                         daemon=True)
            _watchdog.start()


def _watch() -> None:
    """Alert when no dispatcher of any process beats while orders wait, or the oldest
    pending order gets too old; the page shows both, this tells someone."""
    while not _stop_watching.wait(WATCH_SECONDS):
        try:
            settings, now = current_settings(), utcnow()
            store = order_queue_db.get_store()
            oldest, open_work = store.watch_facts()
            if open_work and not store.live_dispatchers(
                    now=now, heartbeat_timeout=settings.heartbeat_timeout_seconds):
                alerter.raise_alert("dispatcher", "none beating",
                                    f"no order queue dispatcher is running while "
                                    f"{open_work} orders wait", open_orders=open_work)
            if oldest is not None:
                age = (now - oldest).total_seconds()
                if age > settings.alert_queue_age_seconds:
                    alerter.raise_alert("queue_age", "oldest pending",
                                        f"the oldest pending order has waited {age:.0f} s",
                                        oldest_pending_age_seconds=round(age))
        except QueueStorageError as exc:
            alerter.raise_alert("storage", "unavailable",
                                f"the order queue database cannot be read: {exc}")
        except Exception:
            logger.exception("order queue watchdog pass failed; carrying on")


def _try_start() -> bool:
    """Create the schema if needed and start the dispatcher; False (logged, and kept
    for health) while the queue database cannot be reached."""
    global _start_problem
    try:
        store = order_queue_db.get_store()
        store.create_schema()
        if not store.check_pepper():
            raise PepperChanged(PEPPER_CHANGED)
        start_dispatcher()
    except (QueueStorageError, PepperChanged) as exc:
        first = _start_problem is None
        _start_problem = (str(exc), _start_problem[1] if _start_problem else utcnow())
        if first:
            logger.error("order queue held at start: %s; webhooks answer 503 until it is "
                         "resolved, checking again in the background", exc)
        return False
    except Exception:
        logger.exception("order queue dispatcher could not start; retrying")
        return False
    if _start_problem is not None:
        logger.info("order queue database reachable again; dispatcher started")
    _start_problem = None
    return True


PEPPER_CHANGED = ("API_KEY_PEPPER is not the one the queued API keys were sealed with: "
                  "sending is held and webhooks answer 503. Put the previous API_KEY_PEPPER "
                  "back in .env and restart; the queued orders then go out as usual")


class PepperChanged(Exception):
    """The pepper does not open the queue database's check value."""


def holding_reason() -> str | None:
    """Why new orders must not be queued now (a changed pepper), or None."""
    problem = _start_problem
    return problem[0] if problem and problem[0] == PEPPER_CHANGED else None


def status() -> dict:
    """What health reports about this process: the server model, whether the dispatcher
    runs here, and why not if it should but cannot."""
    dispatcher = _dispatcher
    problem = _start_problem
    return {
        "server_model": server_model(),
        "dispatcher_running": dispatcher is not None and dispatcher.alive,
        "stopping": dispatcher is not None and dispatcher.stopping,
        "start_problem": problem[0] if problem else None,
        "start_problem_since": problem[1] if problem else None,
    }


def get_dispatcher() -> Dispatcher | None:
    return _dispatcher


def wake_dispatcher() -> None:
    """Have this process's dispatcher look for work now (no-op if none runs here)."""
    if _dispatcher is not None:
        _dispatcher.wake()


def stop_dispatcher(timeout: float | None = None) -> bool:
    """Graceful stop of this process's dispatcher; True if nothing was left in flight."""
    global _dispatcher
    _stop_starting.set()
    _stop_watching.set()
    with _lock:
        dispatcher, _dispatcher = _dispatcher, None
    return dispatcher.stop(timeout) if dispatcher is not None else True


def install_shutdown_handlers() -> list[str]:
    """Stop the dispatcher gracefully on SIGTERM and SIGINT, then hand over (see the
    module docstring).  Idempotent; returns the signals handled.  A host that starts
    the dispatcher from another thread (OpenAlgo starts it from its DB-init thread) also
    calls this from its main thread at import (the OpenAlgo installer adds the call)."""
    # Not under ``_lock``: the handler takes it, and a signal may arrive meanwhile.
    with _signals_lock:
        if _signals_handled:
            return list(_signals_handled)
        atexit.unregister(stop_dispatcher)  # once, however often this is called
        atexit.register(stop_dispatcher)
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            try:
                signal.signal(signum, _shutdown_handler(previous))
            except ValueError:  # only the main OS thread may install handlers
                logger.info("not in the main thread: order queue stops at interpreter exit")
                break
            _signals_handled.append(signal.Signals(signum).name)
        return list(_signals_handled)


def _shutdown_handler(previous):
    def handle(signum, frame):
        global _graceful_stop
        dispatcher = _dispatcher
        _stop_starting.set()
        if not _graceful_stop and dispatcher is not None and dispatcher.alive:
            logger.info("%s received: order queue stops claiming; requests in flight "
                        "finish first", signal.Signals(signum).name)
            dispatcher.request_stop()
            _graceful_stop = True
            spawn(_stop_then_signal_again, signum)
            return
        # The graceful stop is done (it delivers the signal again), there was nothing to
        # stop, or the signal came twice: the previous handler decides now.
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        elif previous is not signal.SIG_IGN:
            raise SystemExit(0)

    return handle


def _stop_then_signal_again(signum: int) -> None:
    stop_dispatcher()
    os.kill(os.getpid(), signum)
