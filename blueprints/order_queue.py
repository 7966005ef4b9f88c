"""The order queue's Flask face: wiring, the admin page and its JSON API.

``init_app(app)`` is the one call a host makes at start-up: it validates the settings,
builds the queue's runtime (``services/order_queue/runtime.py``), and registers the
blueprint, the host's door (``door.py``) and the ``flask order-queue`` commands
(``cli.py``).  The dispatcher is started separately by ``start(app)``, from the host's
start-up path once its databases are ready, so CLI commands and the reloader's parent
process never start one.  What the page and the API show is built in ``reports.py``.

Every route needs a logged-in session (``check_session_validity``) except
``/order-queue/api/health``, which Docker and uptime checks call without one.  Pages
render values with Jinja's escaping and the page script writes them with
``textContent`` only.
"""

import json
import os
from datetime import datetime, timedelta
from functools import wraps

from flask import Blueprint, abort, g, jsonify, render_template, request, session

from database.order_queue.model import MAX_ORDER_ID, DeadReason, OrderState, QueueStorageError
from extensions import socketio
from services.order_queue import VERSION, actions, alert_keys, door, reports, runtime
from services.order_queue.cli import order_queue_cli
from services.order_queue.events import NAMESPACE
from services.order_queue.ist import ist_to_utc
from services.order_queue.settings import (
    OrderQueueSettings,
    host_setting_names,
    load_settings,
    setting_names,
)
from utils.session import check_session_validity, is_session_valid

MAX_PAGE_SIZE = 200
MAX_BULK = 500
MAX_PAGE = 1_000_000

# The page brings its own templates and static files (OpenAlgo's React UI has neither
# a Jinja templates folder nor a static folder any more), served from /order-queue/static.
_PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
order_queue_bp = Blueprint(
    "order_queue_bp",
    __name__,
    url_prefix="/order-queue",
    template_folder=os.path.join(_PLUGIN_ROOT, "templates"),
    static_folder=os.path.join(_PLUGIN_ROOT, "static", "order_queue"),
    static_url_path="/static",
)


# --------------------------------------------------------------------------- wiring


def init_app(app) -> OrderQueueSettings:
    """Validate settings (the environment, app.config entries of the same names on
    top), build the runtime, register web, door and CLI.  Raises ``SettingsError``."""
    settings = load_settings(
        overrides={
            name: app.config[name]
            for name in setting_names() + host_setting_names()
            if app.config.get(name) is not None
        }
    )
    runtime.build(settings, app)
    app.register_blueprint(order_queue_bp)
    app.after_request(_storage_failure_is_503)
    app.after_request(_refused_webhook_is_429)
    door.init_app(app)
    alert_keys.init_app(app)
    app.cli.add_command(order_queue_cli)
    socketio.on_event("connect", _live_connect, namespace=NAMESPACE)
    return settings


def _storage_failure_is_503(response):
    """A host view that answered 500 because ``queue_order`` could not store the order
    (OpenAlgo's webhook catches every exception) answers 503 instead: the order was not
    queued and the sender should send it again, which is what 503 tells TradingView,
    Amibroker or a script.  Not when the request had already queued other orders (a
    Chartink alert carries several symbols): sending it again would double those, so
    the host's 500 stands.  Any other response passes through untouched."""
    error = g.pop("order_queue_storage_error", None)
    if error is None or response.status_code != 500 or g.get("order_queue_stored"):
        return response
    unavailable = jsonify(
        status="error", error="Order queue unavailable: order NOT queued, retry later"
    )
    unavailable.status_code = 503
    unavailable.headers["Retry-After"] = "5"
    return unavailable


#: The host's webhooks that queue orders (OpenAlgo's Strategy and Chartink managers).
WEBHOOK_PATHS = ("/strategy/webhook/", "/chartink/webhook/")


def _refused_webhook_is_429(response):
    """OpenAlgo answers a webhook its rate limit refuses (``WEBHOOK_RATE_LIMIT``) with a
    redirect to its HTML page ``/rate-limited``: a sender that follows redirects gets
    a 200 page and believes the alert was taken, one that does not sees a 302 it does
    not understand.  On the webhook paths the refusal is said as it is: 429, JSON,
    ``Retry-After``; and counted for health and the page."""
    refused = response.status_code == 429 or (
        response.status_code in (301, 302, 303, 307, 308)
        and (response.location or "").endswith("/rate-limited")
    )
    if not refused or not request.path.startswith(WEBHOOK_PATHS):
        return response
    queue = runtime.current()
    queue.note_refused_webhook(request.path)
    answer = jsonify(
        status="error",
        error="Rate limit exceeded: alert NOT taken, send it again after Retry-After seconds",
    )
    answer.status_code = 429
    answer.headers["Retry-After"] = str(round(queue.settings.webhook_limit_window_seconds))
    return answer


def _live_connect(auth=None):
    """Live order events carry symbols, strategies and broker messages: only for a
    logged-in session."""
    return is_session_valid()


def start(app) -> None:
    """Start this process's dispatcher once the host is ready (OpenAlgo's
    ``app.db_ready``) and the queue database answers; never raises into the host's
    start-up (see ``runtime.py``).  Outside tests it also stops gracefully on SIGTERM /
    SIGINT."""
    runtime.current().start_when_ready(
        host_ready=getattr(app, "db_ready", None), handle_signals=not app.testing
    )


def handle_signals() -> list[str]:
    """Graceful stop on SIGTERM / SIGINT.  ``start`` does this itself when it runs in
    the main thread; a host that starts the dispatcher from another thread (OpenAlgo
    starts it from its DB-init thread) calls this from the main thread at import."""
    return runtime.install_shutdown_handlers()


# --------------------------------------------------------------------------- requests


def api_login_required(view):
    """The JSON API's own answer to a caller without a session: 401 with JSON.  The
    host's ``check_session_validity`` (OpenAlgo's redirects every caller to its HTML
    login) still guards the rest, so the host's own session rules apply too."""
    guarded = check_session_validity(view)

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not is_session_valid():
            return jsonify(
                status="error",
                error="login required: sign in to OpenAlgo and call again with its session cookie",
            ), 401
        return guarded(*args, **kwargs)

    return wrapped


def _filters(args) -> dict:
    """Query-string filters shared by the API, the page and validated in one place."""
    filters = {}
    if args.get("state"):
        states = args.get("state").split(",")
        if not set(states) <= {s.value for s in OrderState}:
            abort(400, description=f"unknown state in {args.get('state')!r}")
        filters["states"] = states
    for name in ("strategy", "symbol"):
        if args.get(name):
            filters[name] = args.get(name)
    if args.get("reason"):
        if args["reason"] not in {r.value for r in DeadReason}:
            abort(400, description=f"unknown reason {args['reason']!r}")
        filters["reason"] = args["reason"]
    for name in ("since", "until"):
        if args.get(name):
            try:
                day = datetime.strptime(args[name], "%Y-%m-%d")
                start = ist_to_utc(day) + (timedelta(days=1) if name == "until" else timedelta())
                filters[name] = runtime.current().clock.from_wall(start)  # the queue's time
            except (ValueError, OverflowError):
                abort(400, description=f"{name} must be a date YYYY-MM-DD")
    return filters


def _page(args) -> tuple[int, int]:
    try:
        page = max(1, int(args.get("page", 1)))
        per_page = min(MAX_PAGE_SIZE, max(1, int(args.get("per_page", 50))))
    except ValueError:
        abort(400, description="page and per_page must be whole numbers")
    if page > MAX_PAGE:
        abort(400, description=f"page must be at most {MAX_PAGE}")
    return page, per_page


def _order_detail(order_id: int) -> dict:
    detail = reports.order_detail(runtime.current(), order_id) if order_id <= MAX_ORDER_ID else None
    if detail is None:
        abort(404, description=f"no order {order_id}")
    return detail


# --------------------------------------------------------------------------- pages


@order_queue_bp.context_processor
def _version():
    return {"order_queue_version": VERSION}


@order_queue_bp.route("/")
@check_session_validity
def index():
    # Dead first: the list opens on what needs a human.
    states = [OrderState.DEAD] + [state for state in OrderState if state is not OrderState.DEAD]
    return render_template(
        "order_queue/index.html",
        states=[state.value for state in states],
        reasons=[reason.value for reason in DeadReason],
    )


@order_queue_bp.route("/orders/<int:order_id>")
@check_session_validity
def detail_page(order_id):
    order = _order_detail(order_id)
    return render_template(
        "order_queue/detail.html",
        order=order,
        payload_text=json.dumps(order["payload"], indent=2, ensure_ascii=False, sort_keys=True),
    )


# --------------------------------------------------------------------------- JSON API


@order_queue_bp.errorhandler(400)
@order_queue_bp.errorhandler(404)
def _json_error(error):
    if request.path.startswith("/order-queue/api/"):
        return jsonify({"status": "error", "message": error.description}), error.code
    return error


@order_queue_bp.errorhandler(QueueStorageError)
def _storage_error(error):
    return jsonify({"status": "error", "message": f"queue database unavailable: {error}"}), 503


@order_queue_bp.route("/api/health")
def health():
    """200 when the queue can take and deliver orders, 503 with reasons otherwise.

    Deliberately public (no login): Docker healthchecks and uptime monitors cannot log
    in.  They get the verdict, the problems and the counts; which hosts and processes
    run dispatchers (host names, pids) only a signed-in operator sees.
    """
    report, healthy = reports.health_report(runtime.current())
    if not is_session_valid() and "dispatcher" in report:
        report["dispatcher"] = {
            key: value for key, value in report["dispatcher"].items() if key != "ids"
        }
    return jsonify(report), 200 if healthy else 503


@order_queue_bp.route("/api/stats")
@api_login_required
def api_stats():
    return jsonify(reports.stats_report(runtime.current()))


@order_queue_bp.route("/api/orders")
@api_login_required
def api_orders():
    filters, (page, per_page) = _filters(request.args), _page(request.args)
    queue = runtime.current()
    store, now = queue.store, queue.clock.now()
    rows = store.reads.list_orders(limit=per_page, offset=(page - 1) * per_page, **filters)
    return jsonify(
        {
            "orders": [reports.order_json(r, now) for r in rows],
            "page": page,
            "per_page": per_page,
            "total": store.reads.count_orders(**filters),
        }
    )


@order_queue_bp.route("/api/orders/<int:order_id>")
@api_login_required
def api_order(order_id):
    return jsonify(_order_detail(order_id))


@order_queue_bp.route("/api/charts")
@api_login_required
def api_charts():
    """The page's pictures as SVG markup (``charts.py``)."""
    return jsonify(reports.charts_report(runtime.current()))


@order_queue_bp.route("/api/rejected")
@api_login_required
def api_rejected():
    """Sent orders the broker rejected or cancelled afterwards, awaiting a human."""
    queue = runtime.current()
    now = queue.clock.now()
    orders = queue.store.verdicts.rejected_after_sent()
    return jsonify(orders=[reports.order_json(order, now) for order in orders])


@order_queue_bp.route("/api/held")
@api_login_required
def api_held():
    """Instruments held back, each with what its order waits for and until when."""
    return jsonify({"held": reports.held_report(runtime.current())})


def _action_request() -> tuple[list[int], dict]:
    """``{"ids": [...]}``, or ``{"filter": {...}}`` (the page's filters: strategy,
    symbol, reason, since, until) for every dead order that matches, beyond the rows
    shown."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        abort(400, description="body is nested too deeply")
    if not isinstance(body, dict):
        abort(400, description="body must be a JSON object with 'ids'")
    if "filter" in body and "ids" not in body:
        body = {**body, "ids": _dead_ids_matching(body["filter"])}
    ids = body.get("ids")
    if (
        not isinstance(ids, list)
        or not ids
        or len(ids) > MAX_BULK
        or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ORDER_ID for i in ids
        )
    ):
        abort(400, description=f"'ids' must be a list of 1 to {MAX_BULK} order ids")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        abort(400, description="'note' must be text of at most 500 characters")
    return ids, {"note": note, "confirm": body.get("confirm") is True}


def _dead_ids_matching(chosen) -> list[int]:
    if not isinstance(chosen, dict) or not all(isinstance(v, str) for v in chosen.values()):
        abort(400, description="'filter' must be an object of text values, like the page's")
    dead = OrderState.DEAD.value
    if chosen.get("state", dead) != dead:
        abort(400, description="only dead orders are replayed or dismissed by filter")
    filters = _filters({**chosen, "state": dead})
    rows = runtime.current().store.reads.list_orders(limit=MAX_BULK, **filters)
    if not rows:
        abort(400, description="no dead order matches the filter")
    return [row["id"] for row in rows]


def _action_response(results):
    return jsonify({"results": [r.to_dict() for r in results], "ok": all(r.ok for r in results)})


@order_queue_bp.route("/api/orders/replay", methods=["POST"])
@api_login_required
def api_replay():
    ids, options = _action_request()
    return _action_response(actions.replay(ids, session["user"], confirm=options["confirm"]))


@order_queue_bp.route("/api/orders/dismiss", methods=["POST"])
@api_login_required
def api_dismiss():
    ids, options = _action_request()
    return _action_response(actions.dismiss(ids, session["user"], note=options["note"]))


@order_queue_bp.route("/api/orders/settle", methods=["POST"])
@api_login_required
def api_settle():
    """``{"ids": [...], "placed": true, "broker_orderid": "X"}`` or ``"placed": false``."""
    ids, options = _action_request()
    body = request.get_json()
    placed, orderid = body.get("placed"), body.get("broker_orderid")
    if not isinstance(placed, bool):
        abort(400, description="'placed' must be true (it is at the broker) or false (it is not)")
    if placed and (not isinstance(orderid, str) or not orderid.strip() or len(orderid) > 64):
        abort(400, description="'broker_orderid' must be the broker's order id (1-64 characters)")
    return _action_response(
        actions.settle(
            ids,
            session["user"],
            placed=placed,
            broker_orderid=orderid.strip() if placed else None,
            note=options["note"],
            confirm=options["confirm"],
        )
    )


@order_queue_bp.route("/api/orders/cancel", methods=["POST"])
@api_login_required
def api_cancel():
    ids, options = _action_request()
    return _action_response(actions.cancel(ids, session["user"], note=options["note"]))
