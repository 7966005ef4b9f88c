"""The host app: an OpenAlgo-shaped Flask app that runs the durable order queue on its own.

``python app.py`` starts it on 127.0.0.1:$FLASK_PORT with SQLite files under ``db/`` and
the built-in paper broker behind ``/api/v1``.  ``create_app()`` is also what
``flask --app app ...`` uses, and it starts nothing in the background: the dispatcher and
the squareoff scheduler start in ``start_background_services``, from ``main()`` (or a
WSGI entry point), once the databases are ready.
"""

import gc
import os
import secrets
import socket
from datetime import timedelta

from dotenv import load_dotenv
from flask import Flask, jsonify
from flask_wtf.csrf import CSRFProtect
from werkzeug.serving import WSGIRequestHandler

from blueprints import order_queue
from blueprints.auth import auth_bp, user_cli
from blueprints.paper_broker import paper_broker_bp
from blueprints.strategy import (
    squareoff_deadline,
    start_scheduler,
    strategy_bp,
    strategy_cli,
)
from database import auth_db, host_db, order_queue_db, paper_broker_db, strategy_db
from extensions import socketio
from services.order_queue_service import set_deadline_provider
from utils import rate_limit
from utils.logging import get_logger, setup_logging

logger = get_logger(__name__)
ENV_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env")


def bootstrap_env() -> None:
    """First run on a fresh machine: write ``.env`` (mode 600) with fresh random secrets,
    so the quickstart needs no manual step.  An existing ``.env`` is never touched, and
    none is made up where a queue database already exists: its API keys are sealed with
    the old pepper, which a new one could not open."""
    if not os.path.exists(ENV_FILE) and not os.getenv("API_KEY_PEPPER"):
        queue_file = os.path.join(os.path.dirname(ENV_FILE), "db", "order_queue.db")
        if os.path.exists(queue_file):
            raise SystemExit(
                f"{ENV_FILE} is missing but {queue_file} exists: its queued API "
                f"keys are sealed with the API_KEY_PEPPER of that .env. Restore "
                f"the .env (or set API_KEY_PEPPER) and start again; a new "
                f"pepper would leave every queued order unreadable."
            )
        # Created 0600 from the start: the secrets are never readable by others.
        descriptor = os.open(ENV_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(
                "# Generated on first run; see .env.example for every setting.\n"
                f"APP_KEY={secrets.token_hex(32)}\n"
                f"API_KEY_PEPPER={secrets.token_hex(32)}\n"
            )
        logger.warning("created %s with new APP_KEY and API_KEY_PEPPER", ENV_FILE)
    load_dotenv(ENV_FILE)


def _non_negative_int(variable: str) -> int:
    raw = os.getenv(variable, "").strip() or "0"
    if not raw.isdigit():
        raise SystemExit(f"{variable}={raw!r} must be a whole number of milliseconds >= 0")
    return int(raw)


def _positive_seconds(variable: str, default: float) -> float:
    raw = os.getenv(variable, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SystemExit(f"{variable}={raw!r} must be a number of seconds > 0")
    return value


def create_app(test_config=None):
    """Build the app.  ``test_config`` overrides settings and skips reading ``.env``."""
    if test_config is None:
        bootstrap_env()  # before logging: .env may set LOG_LEVEL
    setup_logging()
    port = int(os.getenv("FLASK_PORT", "5000"))
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=os.getenv("APP_KEY") or secrets.token_hex(32),
        FLASK_HOST=os.getenv("FLASK_HOST_IP", "127.0.0.1"),
        FLASK_PORT=port,
        HOST_SERVER=os.getenv("HOST_SERVER") or f"http://127.0.0.1:{port}",
        DATABASE_URL=os.getenv("DATABASE_URL") or host_db.DEFAULT_DATABASE_URL,
        MAX_CONTENT_LENGTH=1024 * 1024,
        # A client that has not sent its whole request by then is cut off (408).
        REQUEST_BODY_TIMEOUT_SECONDS=_positive_seconds("REQUEST_BODY_TIMEOUT_SECONDS", 20.0),
        PAPER_BROKER_LATENCY_MS=_non_negative_int("PAPER_BROKER_LATENCY_MS"),
        # Symbols the paper broker accepts and then rejects (a broker's RMS, for demos).
        PAPER_BROKER_REJECT_SYMBOLS=os.getenv("PAPER_BROKER_REJECT_SYMBOLS", ""),
        # OpenAlgo's webhook limit ("100 per minute" there); none here unless set.
        WEBHOOK_RATE_LIMIT=os.getenv("WEBHOOK_RATE_LIMIT") or None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=os.getenv("SESSION_COOKIE_SECURE", "").lower() == "true",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=1),  # idle expiry
    )
    if test_config:
        app.config.update(test_config)

    host_db.configure(app.config["DATABASE_URL"])
    order_queue.init_app(app)
    set_deadline_provider(squareoff_deadline)
    # The start-up DB init list, as in OpenAlgo's app.py.
    db_init_functions = [
        ("Auth DB", auth_db.init_db),
        ("Strategy DB", strategy_db.init_db),
        ("Paper broker DB", paper_broker_db.init_db),
        ("Order Queue DB", order_queue_db.init_db),
    ]
    for name, init_fn in db_init_functions:
        try:  # as in OpenAlgo: one database failing must not keep the others down
            init_fn()
            logger.debug("%s initialised", name)
        except Exception as exc:
            logger.error("%s failed to initialise: %s", name, exc)

    csrf = CSRFProtect(app)
    app.register_blueprint(auth_bp)
    app.register_blueprint(strategy_bp)
    app.register_blueprint(paper_broker_bp)
    csrf.exempt(strategy_bp)  # webhooks come from TradingView / ChartInk, not a browser
    csrf.exempt(paper_broker_bp)  # API-key authenticated REST API
    rate_limit.init_app(app)
    app.cli.add_command(strategy_cli)
    app.cli.add_command(user_cli)
    socketio.init_app(app)

    @app.teardown_appcontext
    def _release_session(_exc):
        host_db.db_session.remove()

    @app.after_request
    def _security_headers(response):
        """What OpenAlgo sets for itself by default (its ``csp.py`` without
        ``CSP_SCRIPT_SRC``: no inline script), so the browser tests hold the admin page
        to the same rules here."""
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' "
            "'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; "
            "object-src 'none'; form-action 'self'; frame-ancestors 'none'",
        )
        return response

    @app.route("/")
    def index():
        return jsonify(
            {
                "app": "openalgo-durable-order-queue host",
                "admin": "/order-queue/",
                "health": "/order-queue/api/health",
            }
        )

    return app


def start_background_services(app) -> None:
    """Dispatcher and squareoff scheduler: once per process, after the DBs are ready."""
    order_queue.start(app)
    start_scheduler()


class TimedRequestHandler(WSGIRequestHandler):
    """A client that sends its request slowly (or stops) is cut off after
    ``REQUEST_BODY_TIMEOUT_SECONDS`` of silence instead of holding a server thread for
    ever (``main`` sets ``timeout``; under gunicorn ``utils.request_body`` bounds it)."""


def _check_port_free(host: str, port: int) -> None:
    """Before anything starts: a busy port would otherwise end the app only after its
    dispatcher started, with Werkzeug's message, which does not name the setting."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"port {port} on {host} is in use ({exc.strerror}): set FLASK_PORT "
                f"(and FLASK_HOST_IP for the address), in .env or the "
                f"environment"
            ) from None


def main() -> None:
    app = create_app()
    _check_port_free(app.config["FLASK_HOST"], app.config["FLASK_PORT"])
    start_background_services(app)
    # Start-up objects never die: keep them out of the collector, so full collections
    # stay short and do not stall a request between its rate-limit turn and the wire.
    gc.freeze()
    host, port = app.config["FLASK_HOST"], app.config["FLASK_PORT"]
    TimedRequestHandler.timeout = app.config["REQUEST_BODY_TIMEOUT_SECONDS"]
    logger.info("listening on http://%s:%s", host, port)
    # Werkzeug (threaded) is fine for one trader's box; it also runs without a terminal
    # (nohup, systemd), which Flask-SocketIO refuses unless told it is allowed.
    socketio.run(
        app,
        host=host,
        port=port,
        debug=False,
        use_reloader=False,
        request_handler=TimedRequestHandler,
        allow_unsafe_werkzeug=True,
        log_output=False,
    )


if __name__ == "__main__":
    main()
