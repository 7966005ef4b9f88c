"""The order queue's runtime in this process: the one owner of its settings, clock, store
(and with it the key sealing, ``store.sealing``), alerter and dispatcher.  Start and stop
go through it.

- **Build.** ``build(settings)`` (from the admin blueprint's ``init_app``) seals keys
  with the settings' pepper, opens the store on its database, and replaces any earlier
  runtime (tests build one per app).  ``current()`` is the one way to reach it, from a
  request, a dispatcher thread or the host's scheduler alike (these have no app
  context, so the runtime is not kept on the app); the seed's functions
  (``seed_names.py``) are calls over it.  What it does not own is the host's
  wiring done at import, before any runtime exists: the deadline providers
  (``deadlines.py``), the squareoff sources (``squareoffs.py``) and the signal handlers
  (below).
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
  at interpreter exit.  Signal handlers belong to the process, not to one runtime: they
  act on whichever runtime is current when the signal comes.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from datetime import datetime

from database.order_queue.api_keys import CredentialsUnavailable, KeySealing
from database.order_queue.green import server_model, spawn
from database.order_queue.model import QueueStorageError
from database.order_queue.store import QueueStore
from services.order_queue import deadlines, squareoffs
from services.order_queue.alerts import Alerter
from services.order_queue.clock import Clock
from services.order_queue.dispatcher import Dispatcher
from services.order_queue.settings import OrderQueueSettings, SettingsError
from utils.logging import get_logger

logger = get_logger(__name__)

#: Pauses between tries to reach the queue database at start (the last one repeats).
START_RETRY_PAUSES = (0.5, 1.0, 2.0, 5.0)
#: How often the watchdog looks for a queue nobody serves.
WATCH_SECONDS = 5.0

PEPPER_CHANGED = (
    "API_KEY_PEPPER is not the one the queued API keys were sealed with: "
    "sending is paused and webhooks answer 503. Put the previous API_KEY_PEPPER "
    "back in .env and restart; the queued orders then go out as usual"
)


class PepperChanged(Exception):
    """The pepper does not open the queue database's check value."""


class OrderQueueRuntime:
    """Settings, clock, store, alerter and this process's dispatcher, started and
    stopped here."""

    def __init__(self, settings: OrderQueueSettings, store: QueueStore, app=None):
        self.settings = settings
        self.store = store
        #: The host app that built this runtime: the dispatcher it starts may call the
        #: app's API in-process (``api_road.py``).
        self.app = app
        self.clock = Clock(store.reads.shared_now if store.backend.spans_machines else None)
        self.alerter = Alerter(settings)
        self.dispatcher: Dispatcher | None = None
        self.start_problem: tuple[str, datetime] | None = None
        self._lock = threading.Lock()
        self._starter: threading.Thread | None = None
        self._stop_starting = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stop_watching = threading.Event()
        self._graceful_stop = False  # set by the first signal; the next goes to the previous
        self._squareoffs_checked = False
        #: Webhooks the host's rate limit refused in this process: count, last moment.
        self.refused_webhooks: tuple[int, datetime | None] = (0, None)

    # ------------------------------------------------------------------ start

    def start_dispatcher(self) -> Dispatcher:
        """Prepare the queue database and start this process's dispatcher now (later
        calls return the running one): for a worker or a drain, which have no host to
        wait for.  Raises ``QueueStorageError`` when the queue database cannot be
        reached and ``PepperChanged`` when its keys cannot be opened; hosts call
        ``start_when_ready``, which never raises.  Posts to the API over HTTP: a worker
        or a drain is not the process that serves it."""
        self._prepare_database()
        with self._lock:
            return self._start_locked(in_app=False)

    def _prepare_database(self) -> None:
        """The schema, and the pepper check: a dispatcher must never start with a pepper
        that cannot open the queued keys (it would dead-letter every order)."""
        self.store.schema.create()
        if not self.store.schema.check_pepper():
            raise PepperChanged(PEPPER_CHANGED)

    def _start_locked(self, *, in_app: bool) -> Dispatcher:
        if self.dispatcher is None or not self.dispatcher.alive:
            dispatcher = Dispatcher(
                self.store,
                self.settings,
                clock=self.clock,
                alerter=self.alerter,
                app=self.app if in_app else None,
            )
            # Known before its first send: its own host's door names it in receipts.
            self.dispatcher = dispatcher
            dispatcher.start()
        return self.dispatcher

    def start_when_ready(self, *, host_ready=None, handle_signals: bool = False) -> None:
        """Start the dispatcher once ``host_ready`` (an Event, or None) is set and the
        queue database answers; in the background where either has to be waited for.
        ``handle_signals``: stop gracefully on SIGTERM / SIGINT (tests leave it off).
        Never raises."""
        if handle_signals:
            install_shutdown_handlers()
        self._start_watchdog()
        with self._lock:
            if self.dispatcher is not None and self.dispatcher.alive:
                return
            starter = self._starter
        if starter is not None and starter.is_alive():
            if not self._stop_starting.is_set():
                return  # a start is already under way
            starter.join(5.0)  # an earlier start that was told to stop: let it finish
        self._stop_starting.clear()
        if (host_ready is None or host_ready.is_set()) and self._try_start():
            return
        with self._lock:
            self._starter = threading.Thread(
                target=self._start_in_background,
                args=(host_ready,),
                name="order-queue-start",
                daemon=True,
            )
            self._starter.start()

    def _start_in_background(self, host_ready) -> None:
        if host_ready is not None and not host_ready.is_set():
            logger.info("order queue dispatcher waits for the host to finish starting")
            while not host_ready.wait(1.0):
                if self._stop_starting.is_set():
                    return
        attempt = 0
        while not self._stop_starting.is_set() and not self._try_start():
            self._stop_starting.wait(START_RETRY_PAUSES[min(attempt, len(START_RETRY_PAUSES) - 1)])
            attempt += 1

    def _try_start(self) -> bool:
        """Create the schema if needed and start the dispatcher; False (logged, and kept
        for health) while the queue database cannot be reached."""
        try:
            self._prepare_database()
            with self._lock:
                # Checked under the lock ``stop`` takes: a stop that came while the
                # database was being prepared wins, and no dispatcher outlives it.
                if self._stop_starting.is_set():
                    return False  # nothing to start; the starter's loop ends on the flag
                self._start_locked(in_app=True)
        except (QueueStorageError, PepperChanged) as exc:
            first = self.start_problem is None
            self.start_problem = (
                str(exc),
                self.start_problem[1] if self.start_problem else self.clock.now(),
            )
            if first:
                logger.error(
                    "order queue paused at start: %s; webhooks answer 503 until it "
                    "is resolved, checking again in the background",
                    exc,
                )
            return False
        except Exception:
            logger.exception("order queue dispatcher could not start; retrying")
            return False
        if self.start_problem is not None:
            logger.info("order queue database reachable again; dispatcher started")
        self.start_problem = None
        self._check_squareoffs_once()
        return True

    def _check_squareoffs_once(self) -> None:
        """Once per runtime, with the dispatcher running: the host's squareoffs that a
        restart would otherwise lose (``squareoffs.py``), off the start-up path."""
        with self._lock:
            if self._squareoffs_checked:
                return
            self._squareoffs_checked = True
        threading.Thread(
            target=squareoffs.catch_up, args=(self,), name="order-queue-squareoffs", daemon=True
        ).start()

    # ------------------------------------------------------------------ watching

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is None or not self._watchdog.is_alive():
                self._stop_watching.clear()
                self._watchdog = threading.Thread(
                    target=self._watch, name="order-queue-watchdog", daemon=True
                )
                self._watchdog.start()

    def _watch(self) -> None:
        """Alert when no dispatcher of any process beats while orders wait, or the oldest
        pending order gets too old; the page shows both, this tells someone."""
        while not self._stop_watching.wait(WATCH_SECONDS):
            try:
                settings, now = self.settings, self.clock.now()
                oldest, open_work = self.store.reads.watch_facts()
                if open_work and not self.store.dispatcher_registry.live_dispatchers(
                    now=now, heartbeat_timeout=settings.heartbeat_timeout_seconds
                ):
                    self.alerter.raise_alert(
                        "dispatcher",
                        "none beating",
                        f"no order queue dispatcher is running while {open_work} orders wait",
                        open_orders=open_work,
                    )
                if oldest is not None:
                    age = (now - oldest).total_seconds()
                    if age > settings.alert_queue_age_seconds:
                        self.alerter.raise_alert(
                            "queue_age",
                            "oldest pending",
                            f"the oldest pending order has waited {age:.0f} s",
                            oldest_pending_age_seconds=round(age),
                        )
            except QueueStorageError as exc:
                self.alerter.raise_alert(
                    "storage", "unavailable", f"the order queue database cannot be read: {exc}"
                )
            except Exception:
                logger.exception("order queue watchdog pass failed; carrying on")

    # ------------------------------------------------------------------ what others ask

    def deadline_for(self, payload: dict, now: datetime) -> datetime | None:
        """The host's squareoff deadline for this order, on the queue's steady time
        (``now`` is too), or None (``deadlines.py``)."""
        return deadlines.on_queue_time(self.clock, payload, now)

    def pause_reason(self) -> str | None:
        """Why new orders must not be queued now (a changed pepper), or None."""
        problem = self.start_problem
        return problem[0] if problem and problem[0] == PEPPER_CHANGED else None

    def status(self) -> dict:
        """What health reports about this process: the server model, whether the
        dispatcher runs here, and why not if it should but cannot."""
        dispatcher, problem = self.dispatcher, self.start_problem
        return {
            "server_model": server_model(),
            "dispatcher_running": dispatcher is not None and dispatcher.alive,
            "stopping": dispatcher is not None and dispatcher.stopping,
            "api_road": dispatcher.road.description if dispatcher is not None else None,
            "start_problem": problem[0] if problem else None,
            "start_problem_since": problem[1] if problem else None,
        }

    def note_refused_webhook(self, path: str) -> None:
        """Count an alert the host's rate limit refused: the sender has to send it again,
        and a trader should see that happening."""
        with self._lock:
            count, _last = self.refused_webhooks
            self.refused_webhooks = (count + 1, self.clock.now())
        logger.warning("webhook refused by the host's rate limit (429): %s", path)

    def wake(self) -> None:
        """Have this process's dispatcher look for work now (no-op if none runs here)."""
        dispatcher = self.dispatcher
        if dispatcher is not None:
            dispatcher.wake()

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float | None = None) -> bool:
        """Graceful stop of this process's dispatcher; True if nothing was left in flight."""
        self._stop_starting.set()
        self._stop_watching.set()
        with self._lock:
            dispatcher, self.dispatcher = self.dispatcher, None
        return dispatcher.stop(timeout) if dispatcher is not None else True

    def _on_signal(self, signum: int) -> bool:
        """First SIGTERM / SIGINT: stop claiming and finish in the background; True when
        that was started (the handler then returns to the server)."""
        dispatcher = self.dispatcher
        self._stop_starting.set()
        if self._graceful_stop or dispatcher is None or not dispatcher.alive:
            return False
        logger.info(
            "%s received: order queue stops claiming; requests in flight finish first",
            signal.Signals(signum).name,
        )
        dispatcher.request_stop()
        self._graceful_stop = True
        spawn(self._stop_then_signal_again, signum)
        return True

    def _stop_then_signal_again(self, signum: int) -> None:
        self.stop()
        os.kill(os.getpid(), signum)


# --------------------------------------------------------------------------- this process

_current: OrderQueueRuntime | None = None
_build_lock = threading.Lock()


def build(settings: OrderQueueSettings, app=None) -> OrderQueueRuntime:
    """The runtime for ``settings`` (and the host ``app`` it serves, if any), replacing
    (and stopping) any earlier one.  Raises ``SettingsError`` for a pepper too short to
    seal keys with."""
    global _current
    try:
        sealing = KeySealing(settings.api_key_pepper)
    except CredentialsUnavailable as exc:
        raise SettingsError(str(exc)) from None
    with _build_lock:
        previous = _current
        if previous is not None:
            previous.stop(timeout=5)
            previous.store.dispose()
        store = QueueStore(
            settings.database_url,
            sealing=sealing,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            disk_reserve_bytes=int(settings.disk_reserve_mb * 1024 * 1024),
            offload=True,  # off a green server's event loop (``green.py``)
        )
        _current = OrderQueueRuntime(settings, store, app)
        return _current


def current() -> OrderQueueRuntime:
    """This process's runtime.  Raises ``QueueStorageError`` before ``build`` (the
    queue is not set up, so nothing can be queued: webhooks answer 503)."""
    runtime = _current
    if runtime is None:
        raise QueueStorageError("the order queue is not configured yet (init_app sets it up)")
    return runtime


squareoffs.bind_runtime(current)  # the host's squareoff jobs reach the runtime this way


def stop_current(timeout: float | None = None) -> bool:
    """Stop the current runtime's dispatcher, if there is a runtime (atexit, tests)."""
    runtime = _current
    return runtime.stop(timeout) if runtime is not None else True


# --------------------------------------------------------------------------- signals

_signals_handled: list[str] = []
_signals_lock = threading.Lock()


def install_shutdown_handlers() -> list[str]:
    """Stop the dispatcher gracefully on SIGTERM and SIGINT, then hand over (see the
    module docstring).  Idempotent; returns the signals handled.  A host that starts
    the dispatcher from another thread (OpenAlgo starts it from its DB-init thread) also
    calls this from its main thread at import (the OpenAlgo installer adds the call)."""
    # Not under a runtime's lock: the handler takes it, and a signal may arrive meanwhile.
    with _signals_lock:
        if _signals_handled:
            return list(_signals_handled)
        atexit.unregister(stop_current)  # once, however often this is called
        atexit.register(stop_current)
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
        runtime = _current
        if runtime is not None and runtime._on_signal(signum):
            return
        # The graceful stop is done (it delivers the signal again), there was nothing to
        # stop, or the signal came twice: the previous handler decides now.
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        elif previous is not signal.SIG_IGN:
            raise SystemExit(0)

    return handle
