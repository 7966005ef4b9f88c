"""Host stand-in for OpenAlgo's webhook rate limit (flask-limiter in OpenAlgo: a moving
window per client address, ``WEBHOOK_RATE_LIMIT``, "100 per minute" by default), and
its answer to a refused request outside ``/api/``: a redirect to the HTML page
``/rate-limited``.  Reproduced so the order queue's honest 429 is tested against the
same answer it meets inside OpenAlgo.  Here the limit applies only when
``WEBHOOK_RATE_LIMIT`` is set: the crash tests and benchmarks fire thousands of
webhooks from one address."""

import threading
import time
from collections import defaultdict, deque
from functools import wraps

from flask import abort, current_app, redirect, request

from services.order_queue.settings import parse_host_limit


class MovingWindowLimit:
    """At most ``count`` requests per client address in any ``window`` seconds."""

    def __init__(self, count: int, window: float):
        self.count, self.window = count, window
        self._hits: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits[client]
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.count:
                return False
            hits.append(now)
            return True


def webhook_limit(view):
    """Refuse (429) a webhook over the app's webhook limit for its client address."""

    @wraps(view)
    def limited(*args, **kwargs):
        limit = current_app.extensions.get("webhook_limit")
        if limit is not None and not limit.allow(request.remote_addr or "-"):
            abort(429)
        return view(*args, **kwargs)

    return limited


def init_app(app) -> None:
    """The limit from ``app.config["WEBHOOK_RATE_LIMIT"]`` (none if unset), and
    OpenAlgo's answer to a refused request: JSON under /api/, else a redirect."""
    raw = app.config.get("WEBHOOK_RATE_LIMIT")
    if raw:
        count, window = parse_host_limit("WEBHOOK_RATE_LIMIT", raw)
        app.extensions["webhook_limit"] = MovingWindowLimit(count, window or 1.0)

    @app.errorhandler(429)
    def _rate_limited(_error):
        if request.path.startswith("/api/"):
            return {"status": "error", "message": "Rate limit exceeded"}, 429
        return redirect("/rate-limited")

    @app.route("/rate-limited")
    def rate_limited_page():
        return "<!doctype html><title>Rate limited</title><p>Too many requests.</p>"
