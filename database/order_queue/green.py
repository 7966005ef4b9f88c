"""Green servers: which server model runs this process, and where blocking calls go.

OpenAlgo mostly runs as ``gunicorn --worker-class eventlet -w 1``: every thread of the
worker is a green thread on one event loop (the hub), and a call that blocks in C
(sqlite3 waiting on a lock or the busy timeout, an fsync, psycopg waiting for the
server) stops all of them: request handlers, the dispatcher, and whoever holds the lock
being waited for.  Network I/O through the patched socket module cooperates with the
hub; database calls do not.

So under eventlet or gevent every database call of the queue runs in the server
library's own pool of real OS threads, and the calling green thread waits for it
cooperatively.  Calls into the same store take turns (a green lock, contended only by
green threads of this one hub), because SQLAlchemy's pools and sessions guard
themselves with locks that the monkey patching made green: two OS threads contending
for one would switch between hubs and fail.  Under ordinary threads (the Werkzeug dev
server, ``flask`` commands, tests) calls run where they are made, concurrently.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

T = TypeVar("T")


def server_model() -> str:
    """``"eventlet"``, ``"gevent"`` or ``"threads"``: what the threading module is now."""
    eventlet = sys.modules.get("eventlet.patcher")
    if eventlet is not None and eventlet.is_monkey_patched("thread"):
        return "eventlet"
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("threading"):
        return "gevent"
    return "threads"


def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` where it cannot stall the event loop; return its result or raise its
    exception.  A plain call when no green server runs."""
    model = server_model()
    if model == "eventlet":
        from eventlet import tpool

        return tpool.execute(fn, *args, **kwargs)
    if model == "gevent":
        import gevent

        return gevent.get_hub().threadpool.apply(partial(fn, *args, **kwargs))
    return fn(*args, **kwargs)


def spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn`` concurrently without waiting for it to start: safe inside a signal
    handler, which under eventlet runs on the event loop itself, where starting a
    thread (which waits until the thread has started) fails."""
    model = server_model()
    if model == "eventlet":
        import eventlet

        eventlet.spawn_n(fn, *args)
    elif model == "gevent":
        import gevent

        gevent.spawn(fn, *args)
    else:
        threading.Thread(target=fn, args=args, daemon=True).start()


class GreenTurns:
    """The green lock that calls into one store take turns on: the server library's own,
    so waiting for it yields to the hub (a real lock held across the wait would block
    it).  Made on first use, for whichever green server is running."""

    def __init__(self) -> None:
        self._locks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_model(self, model: str) -> Any:
        with self._lock:
            if model not in self._locks:
                if model == "eventlet":
                    from eventlet.semaphore import Semaphore
                else:
                    from gevent.lock import Semaphore
                self._locks[model] = Semaphore(1)
            return self._locks[model]


class OffloadedCalls:
    """Wraps an object so that each of its public methods runs through ``run_blocking``,
    one call at a time (on ``turns``) under a green server.  Attributes that are not
    methods pass straight through; calls the object makes on itself are not wrapped (so
    they never wait for their own turn)."""

    def __init__(self, target: Any, turns: GreenTurns):
        self._target = target
        self._turns = turns

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name.startswith("_") or not callable(value):
            return value

        def offloaded_call(*args: Any, **kwargs: Any) -> Any:
            model = server_model()
            if model == "threads":
                return value(*args, **kwargs)
            with self._turns.for_model(model):
                return run_blocking(value, *args, **kwargs)

        offloaded_call.__name__ = name
        offloaded_call.__doc__ = value.__doc__
        return offloaded_call


def offloaded(target: T, turns: GreenTurns) -> T:
    """``target`` with its calls off the event loop (``OffloadedCalls``), typed as itself:
    it offers the same methods, through a ``__getattr__`` the type checker cannot see."""
    return cast(T, OffloadedCalls(target, turns))
