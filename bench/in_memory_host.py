"""This project's host app with an in-memory ``queue_order``: the baseline that tells
the queue's own share of a webhook's cost.

The same app, the same server, the same webhook handler (strategy lookup, validation,
building the order); only ``queue_order`` puts the order on a ``queue.Queue``, as
upstream's Strategy Manager does, and no dispatcher runs.  Run by ``bench.run`` with the
same environment as the real app; it prints ``READY_LINE`` once it listens.

    python -m bench.in_memory_host
"""

import queue
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app as host  # noqa: E402
from bench.upstream_model import READY_LINE  # noqa: E402
from blueprints import strategy  # noqa: E402
from extensions import socketio  # noqa: E402

orders: queue.Queue = queue.Queue()


def queue_order(endpoint, payload):
    orders.put((endpoint, payload))


def create_app():
    """The host app with the in-memory ``queue_order`` and no dispatcher; prints ``READY_LINE``.
    Under gunicorn: ``gunicorn -k eventlet -w 1 'bench.in_memory_host:create_app()'``."""
    strategy.queue_order = queue_order
    application = host.create_app()
    print(READY_LINE, flush=True)
    return application


def main() -> None:
    application = create_app()
    host.TimedRequestHandler.timeout = application.config["REQUEST_BODY_TIMEOUT_SECONDS"]
    socketio.run(
        application,
        host=application.config["FLASK_HOST"],
        port=application.config["FLASK_PORT"],
        debug=False,
        use_reloader=False,
        request_handler=host.TimedRequestHandler,
        allow_unsafe_werkzeug=True,
        log_output=False,
    )


if __name__ == "__main__":
    main()
