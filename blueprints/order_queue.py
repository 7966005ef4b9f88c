"""The order queue's Flask face: wiring, the admin page, its JSON API and the CLI.

``init_app(app)`` is the one call a host makes at start-up: it validates the settings,
points the queue at its database and registers the blueprint and the
``flask order-queue`` commands.  The dispatcher is started separately by
``start(app)``, from the host's start-up path once its databases are ready, so CLI
commands and the reloader's parent process never start one.

Every route needs a logged-in session (``check_session_validity``) except
``/order-queue/api/health``, which Docker and uptime checks call without one.  Pages
render values with Jinja's escaping and the page script writes them with
``textContent`` only.
"""

import json
import os
import time
from datetime import datetime, timedelta

import click
import pytz
from flask import Blueprint, abort, current_app, g, jsonify, render_template, request, session
from flask.cli import AppGroup

from database import order_queue_db, order_queue_secrets
from database.order_queue_db import DeadReason, OrderState, QueueStorageError, utcnow
from services import (
    order_queue_actions,
    order_queue_charts,
    order_queue_fence,
    order_queue_lifecycle,
)
from services.order_queue_settings import (
    OrderQueueSettings,
    SettingsError,
    configure,
    current_settings,
    load_settings,
    setting_names,
)
from extensions import socketio
from services.order_queue_events import NAMESPACE
from utils.session import check_session_validity, is_session_valid

IST = pytz.timezone("Asia/Kolkata")
MAX_PAGE_SIZE = 200
MAX_BULK = 500
MAX_PAGE = 1_000_000
MAX_ORDER_ID = 2**63 - 1  # the databases' integer range

# The page brings its own templates and static files (OpenAlgo's React UI has neither
# a Jinja templates folder nor a static folder any more), served from /order-queue/static.
_PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
order_queue_bp = Blueprint(
    "order_queue_bp", __name__, url_prefix="/order-queue",
    template_folder=os.path.join(_PLUGIN_ROOT, "templates"),
    static_folder=os.path.join(_PLUGIN_ROOT, "static", "order_queue"),
    static_url_path="/static")


# --------------------------------------------------------------------------- wiring


def settings_for(app) -> OrderQueueSettings:
    """Environment first, app.config entries of the same names on top."""
    overrides = {name: app.config[name] for name in setting_names() if name in app.config}
    return load_settings({**os.environ, **overrides})


def init_app(app) -> OrderQueueSettings:
    """Validate settings, configure storage and the service, register web and CLI."""
    settings = settings_for(app)
    try:
        order_queue_secrets.seal("start-up check")  # fails early, and derives the key once
    except order_queue_secrets.CredentialsUnavailable as exc:
        raise SettingsError(str(exc)) from None
    configure(settings)
    order_queue_db.configure(settings.database_url,
                             busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    app.extensions["order_queue"] = settings
    app.register_blueprint(order_queue_bp)
    app.after_request(_storage_failure_is_503)
    order_queue_fence.init_app(app)
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
    unavailable = jsonify(status="error",
                          error="Order queue unavailable: order NOT queued, retry later")
    unavailable.status_code = 503
    unavailable.headers["Retry-After"] = "5"
    return unavailable


def _live_connect(auth=None):
    """Live order events carry symbols, strategies and broker messages: only for a
    logged-in session."""
    return is_session_valid()


def start(app) -> None:
    """Start this process's dispatcher once the host is ready (OpenAlgo's
    ``app.db_ready``) and the queue database answers; never raises into the host's
    start-up (see ``order_queue_lifecycle``).  Outside tests it also stops gracefully
    on SIGTERM / SIGINT."""
    order_queue_lifecycle.start_when_ready(app.extensions["order_queue"],
                                           host_ready=getattr(app, "db_ready", None),
                                           handle_signals=not app.testing)


def handle_signals() -> list[str]:
    """Graceful stop on SIGTERM / SIGINT.  ``start`` does this itself when it runs in
    the main thread; a host that starts the dispatcher from another thread (OpenAlgo
    starts it from its DB-init thread) calls this from the main thread at import."""
    return order_queue_lifecycle.install_shutdown_handlers()


# --------------------------------------------------------------------------- reading


def _day_start_utc(now: datetime) -> datetime:
    """Midnight IST (the trading day) of ``now``, as naive UTC."""
    local = pytz.utc.localize(now).astimezone(IST)
    midnight = IST.localize(datetime(local.year, local.month, local.day))
    return midnight.astimezone(pytz.utc).replace(tzinfo=None)


def _iso(value):
    return value.isoformat(timespec="milliseconds") + "Z" if isinstance(value, datetime) else value


def order_json(row: dict, now: datetime) -> dict:
    data = {key: _iso(value) for key, value in row.items()}
    data["age_seconds"] = round((now - row["created_at"]).total_seconds(), 1)
    return data


def stats_report() -> dict:
    """Counts, oldest pending age, sent today, dead awaiting a decision, dispatchers.

    Dispatchers are read from their heartbeats in the queue database, not from this
    process: with ``flask order-queue worker`` processes doing the sending, a web
    process without a dispatcher of its own is still served."""
    now = utcnow()
    settings = current_settings()
    store = order_queue_db.get_store()
    report = store.stats(now=now, day_start=_day_start_utc(now))
    live = store.live_dispatchers(now=now,
                                  heartbeat_timeout=settings.heartbeat_timeout_seconds)
    report["dispatcher"] = {
        "alive": bool(live),
        "ids": [d["id"] for d in live],
        "last_heartbeat": _iso(max(d["heartbeat_at"] for d in live)) if live else None,
        "regular_rate": settings.regular_rate,
        "smart_rate": settings.smart_rate,
        "rate_window_seconds": settings.rate_window_seconds,
    }
    report["now"] = _iso(now)
    return report


def health_report() -> tuple[dict, bool]:
    """Healthy when the dispatcher runs, storage answers, nothing waits too long, and
    (if so configured) no dead order awaits a decision."""
    settings = current_settings()
    here = order_queue_lifecycle.status()
    process = {"server_model": here["server_model"],
               "dispatcher_running": here["dispatcher_running"],
               "stopping": here["stopping"]}
    problems = []
    if here["start_problem"]:
        # The detail is logged for the operator; the public answer stays generic.
        problems.append(order_queue_lifecycle.holding_reason() or
                        f"dispatcher waiting for the queue database since "
                        f"{_iso(here['start_problem_since'])}; webhooks answer 503 meanwhile")
    try:
        report = stats_report()
    except QueueStorageError:
        problems.append("queue database unavailable")
        return {"status": "unhealthy", "problems": problems, "process": process}, False
    report["process"] = process
    if not report["dispatcher"]["alive"]:
        problems.append("dispatcher not running (no heartbeat from any process)")
    age = report["oldest_pending_age_seconds"]
    if age is not None and age > settings.health_max_pending_age_seconds:
        problems.append(f"oldest pending order is {age:.0f}s old "
                        f"(limit {settings.health_max_pending_age_seconds:.0f}s)")
    if settings.health_fail_on_dead and report["dead"]:
        problems.append(f"{report['dead']} dead orders await a decision")
    report.update(status="ok" if not problems else "unhealthy", problems=problems)
    return report, not problems


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
                start = IST.localize(day).astimezone(pytz.utc).replace(tzinfo=None)
                filters[name] = start + (timedelta(days=1) if name == "until" else timedelta())
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


def order_detail(order_id: int) -> dict:
    if order_id > MAX_ORDER_ID:
        abort(404, description=f"no order {order_id}")
    store = order_queue_db.get_store()
    row = store.get_order(order_id, with_key_token=True)
    if row is None:
        abort(404, description=f"no order {order_id}")
    try:
        masked = order_queue_secrets.mask(order_queue_secrets.unseal(row.pop("apikey_token")))
    except order_queue_secrets.CredentialsUnavailable:
        masked = "(cannot be decrypted)"
    now = utcnow()
    detail = order_json(row, now)
    detail["payload"] = {**row["payload"], "apikey": masked}
    detail["trail"] = [{k: _iso(v) for k, v in a.items()} for a in store.list_attempts(order_id)]
    detail["later_sent"] = [r["id"] for r in store.later_orders_gone_ahead(order_id)]
    return detail


# --------------------------------------------------------------------------- pages


@order_queue_bp.route("/")
@check_session_validity
def index():
    return render_template("order_queue/index.html", reasons=[r.value for r in DeadReason])


@order_queue_bp.route("/orders/<int:order_id>")
@check_session_validity
def detail_page(order_id):
    order = order_detail(order_id)
    return render_template("order_queue/detail.html", order=order,
                           payload_text=json.dumps(order["payload"], indent=2,
                                                   ensure_ascii=False, sort_keys=True))


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
    report, healthy = health_report()
    if not is_session_valid() and "dispatcher" in report:
        report["dispatcher"] = {key: value for key, value in report["dispatcher"].items()
                                if key != "ids"}
    return jsonify(report), 200 if healthy else 503


@order_queue_bp.route("/api/stats")
@check_session_validity
def api_stats():
    return jsonify(stats_report())


@order_queue_bp.route("/api/orders")
@check_session_validity
def api_orders():
    filters, (page, per_page) = _filters(request.args), _page(request.args)
    store, now = order_queue_db.get_store(), utcnow()
    rows = store.list_orders(limit=per_page, offset=(page - 1) * per_page, **filters)
    return jsonify({"orders": [order_json(r, now) for r in rows], "page": page,
                    "per_page": per_page, "total": store.count_orders(**filters)})


@order_queue_bp.route("/api/orders/<int:order_id>")
@check_session_validity
def api_order(order_id):
    return jsonify(order_detail(order_id))


@order_queue_bp.route("/api/charts")
@check_session_validity
def api_charts():
    """The page's pictures as SVG markup (``order_queue_charts``)."""
    now, settings, store = utcnow(), current_settings(), order_queue_db.get_store()
    facts = store.chart_facts(
        since_samples=now - timedelta(hours=order_queue_charts.DEPTH_HOURS),
        since_sends=now - timedelta(minutes=order_queue_charts.RATE_MINUTES),
        since_latency=now - timedelta(minutes=order_queue_charts.LATENCY_MINUTES))
    current = {state: sum(lanes.values()) for state, lanes in store.depth().items()}
    return jsonify({
        "depth": order_queue_charts.depth_chart(facts["depth"], now, current),
        "rate": order_queue_charts.rate_chart(
            facts["sends"], now, {"smart": settings.smart_rate, "regular": settings.regular_rate}),
        "latency": order_queue_charts.latency_chart(facts["accepted"], now),
    })


@order_queue_bp.route("/api/held")
@check_session_validity
def api_held():
    """Instruments held back, each with what its order waits for and until when."""
    now, settings = utcnow(), current_settings()
    rows = order_queue_db.get_store().held_orders(now=now,
                                                  settle_seconds=settings.smart_settle_seconds)
    return jsonify({"held": [dict(order_json(row, now), **_waits_for(row, settings))
                             for row in rows]})


def _waits_for(row: dict, settings: OrderQueueSettings) -> dict:
    """What an order holding its instrument waits for, in words, and until when."""
    state = row["state"]
    if state == OrderState.SENDING.value:
        return {"waits_for": "the broker's answer", "until": _iso(row["lease_expires_at"]),
                "settle": False}
    if state == OrderState.IN_DOUBT.value:
        return {"waits_for": "the broker's orderbook: was it placed?",
                "until": _iso(row["available_at"]), "settle": True}
    if state == OrderState.DEAD.value:
        return {"waits_for": "you: placed or not? Check the broker's orderbook",
                "until": None, "settle": True}
    until = row["dispatched_at"] + timedelta(seconds=settings.smart_settle_seconds)
    return {"waits_for": "the position to settle before the next smart order",
            "until": _iso(until), "settle": False}


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
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_BULK
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ORDER_ID
                       for i in ids)):
        abort(400, description=f"'ids' must be a list of 1 to {MAX_BULK} order ids")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        abort(400, description="'note' must be text of at most 500 characters")
    return ids, {"note": note, "confirm": body.get("confirm") is True}


def _dead_ids_matching(chosen) -> list[int]:
    if not isinstance(chosen, dict) or not all(isinstance(v, str) for v in chosen.values()):
        abort(400, description="'filter' must be an object of text values, like the page's")
    if chosen.get("state", "dead") != "dead":
        abort(400, description="only dead orders are replayed or dismissed by filter")
    filters = _filters({**chosen, "state": "dead"})
    rows = order_queue_db.get_store().list_orders(limit=MAX_BULK, **filters)
    if not rows:
        abort(400, description="no dead order matches the filter")
    return [row["id"] for row in rows]


def _action_response(results):
    return jsonify({"results": [r.to_dict() for r in results],
                    "ok": all(r.ok for r in results)})


@order_queue_bp.route("/api/orders/replay", methods=["POST"])
@check_session_validity
def api_replay():
    ids, options = _action_request()
    return _action_response(order_queue_actions.replay(ids, session["user"],
                                                       confirm=options["confirm"]))


@order_queue_bp.route("/api/orders/dismiss", methods=["POST"])
@check_session_validity
def api_dismiss():
    ids, options = _action_request()
    return _action_response(order_queue_actions.dismiss(ids, session["user"],
                                                        note=options["note"]))


@order_queue_bp.route("/api/orders/settle", methods=["POST"])
@check_session_validity
def api_settle():
    """``{"ids": [...], "placed": true, "broker_orderid": "X"}`` or ``"placed": false``."""
    ids, options = _action_request()
    body = request.get_json()
    placed, orderid = body.get("placed"), body.get("broker_orderid")
    if not isinstance(placed, bool):
        abort(400, description="'placed' must be true (it is at the broker) or false (it is not)")
    if placed and (not isinstance(orderid, str) or not orderid.strip() or len(orderid) > 64):
        abort(400, description="'broker_orderid' must be the broker's order id (1-64 characters)")
    return _action_response(order_queue_actions.settle(
        ids, session["user"], placed=placed,
        broker_orderid=orderid.strip() if placed else None, note=options["note"]))


@order_queue_bp.route("/api/orders/cancel", methods=["POST"])
@check_session_validity
def api_cancel():
    ids, options = _action_request()
    return _action_response(order_queue_actions.cancel(ids, session["user"],
                                                       note=options["note"]))


# --------------------------------------------------------------------------- CLI

class _QueueCommands(AppGroup):
    """A fault the operator can act on (the database unreachable, a bad value) is one
    line on stderr and exit code 1, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (QueueStorageError, SettingsError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_PARTIAL) from None


order_queue_cli = _QueueCommands("order-queue", help="""Inspect the durable order queue and
act on failed orders.  Exit codes: 0 done, 1 some orders could not be acted on (or the
queue database could not be reached), 2 bad arguments, 3 a replay needs --confirm, 4 no
such order.""")

EXIT_PARTIAL, EXIT_NEEDS_CONFIRMATION, EXIT_NOT_FOUND = 1, 3, 4
CLI_ACTOR = "cli"


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@order_queue_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(as_json):
    """Orders per state and lane, oldest pending age, sent today."""
    report = stats_report()
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{'state':<10} {'smart':>7} {'regular':>8}")
    for state in OrderState:
        counts = report["depth"][state.value]
        click.echo(f"{state.value:<10} {counts['smart']:>7} {counts['regular']:>8}")
    age = report["oldest_pending_age_seconds"]
    click.echo(f"oldest pending: {'-' if age is None else f'{age:.0f}s'}   "
               f"sent today: {report['sent_today']}   dead: {report['dead']}")
    running = report["dispatcher"]["ids"]
    click.echo(f"dispatchers running: {', '.join(running) if running else 'NONE'}")


@order_queue_cli.command("list")
@click.option("--state", help="Comma-separated states, e.g. dead or pending,in_doubt.")
@click.option("--strategy")
@click.option("--symbol")
@click.option("--reason", type=click.Choice([r.value for r in DeadReason]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(state, strategy, symbol, reason, limit, as_json):
    """Orders, newest first."""
    if state and not set(state.split(",")) <= {s.value for s in OrderState}:
        raise click.BadParameter(f"states are {', '.join(s.value for s in OrderState)}",
                                 param_hint="--state")
    now = utcnow()
    rows = order_queue_db.get_store().list_orders(
        states=state.split(",") if state else None, strategy=strategy, symbol=symbol,
        reason=reason, limit=limit)
    if as_json:
        _echo_json([order_json(r, now) for r in rows])
        return
    for row in rows:
        click.echo(f"#{row['id']:<6} {row['state']:<9} {row['endpoint']:<15} "
                   f"{row['symbol']:<12} {row['payload'].get('action', ''):<4} "
                   f"{row['strategy'] or '':<16} {row['dead_reason'] or '':<17} "
                   f"{(row['last_error'] or '')[:60]}")


@order_queue_cli.command("show")
@click.argument("order_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_command(order_id, as_json):
    """One order with its payload (API key masked) and attempt trail."""
    row = order_queue_db.get_store().get_order(order_id)
    if row is None:
        click.echo(f"no order {order_id}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    detail = order_detail(order_id)
    if as_json:
        _echo_json(detail)
        return
    for key in ("id", "state", "dead_reason", "endpoint", "strategy", "symbol", "exchange",
                "attempts", "broker_orderid", "created_at", "last_error"):
        click.echo(f"{key:>15}: {detail[key]}")
    click.echo(f"{'payload':>15}: {json.dumps(detail['payload'], sort_keys=True)}")
    for attempt in detail["trail"]:
        click.echo(f"  {attempt['at']} {attempt['kind']:<9} {attempt['outcome']:<16} "
                   f"{attempt['http_status'] or '':<4} {attempt['actor'] or ''} "
                   f"{attempt['message'] or ''}")


def _report(results, as_json) -> None:
    if as_json:
        _echo_json([r.to_dict() for r in results])
    else:
        for result in results:
            click.echo(f"#{result.order_id}: {'ok' if result.ok else 'not done'}: "
                       f"{result.message}")
    if any(r.needs_confirmation for r in results):
        raise SystemExit(EXIT_NEEDS_CONFIRMATION)
    if not all(r.ok for r in results):
        raise SystemExit(EXIT_PARTIAL)


@order_queue_cli.command("replay")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--confirm", is_flag=True,
              help="Replay even if later orders for the same instrument were sent.")
@click.option("--json", "as_json", is_flag=True)
def replay_command(order_ids, confirm, as_json):
    """Send dead orders again."""
    _report(order_queue_actions.replay(list(order_ids), CLI_ACTOR, confirm=confirm), as_json)


@order_queue_cli.command("settle")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--placed", "broker_orderid", metavar="BROKER_ORDER_ID",
              help="It is at the broker under this order id: mark it sent.")
@click.option("--not-placed", is_flag=True, help="It is not at the broker: send it again.")
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def settle_command(order_ids, broker_orderid, not_placed, note, as_json):
    """Settle orders in doubt with what the broker's orderbook shows."""
    if bool(broker_orderid) == not_placed:
        raise click.UsageError("give exactly one of --placed BROKER_ORDER_ID or --not-placed")
    _report(order_queue_actions.settle(list(order_ids), CLI_ACTOR, placed=not not_placed,
                                       broker_orderid=broker_orderid, note=note), as_json)


@order_queue_cli.command("dismiss")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def dismiss_command(order_ids, note, as_json):
    """Close dead orders without sending them."""
    _report(order_queue_actions.dismiss(list(order_ids), CLI_ACTOR, note=note), as_json)


@order_queue_cli.command("cancel")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def cancel_command(order_ids, note, as_json):
    """Stop pending orders before they are sent."""
    _report(order_queue_actions.cancel(list(order_ids), CLI_ACTOR, note=note), as_json)


@order_queue_cli.command("worker")
def worker_command():
    """Run a dispatcher without the web app, until SIGTERM or Ctrl+C.

    For scaling dispatch apart from the web processes (PostgreSQL); any number of
    workers and web processes may share one queue database.
    """
    dispatcher = order_queue_lifecycle.start_dispatcher(
        current_app.extensions["order_queue"], handle_signals=True)
    click.echo(f"order queue worker {dispatcher.id} running; stop with SIGTERM or Ctrl+C")
    while True:  # the signal handler ends the process once the dispatcher has stopped
        time.sleep(0.5)


@order_queue_cli.command("purge")
@click.option("--days", type=click.FloatRange(min=0, min_open=True),
              help="Override ORDER_QUEUE_RETENTION_DAYS (more than 0).")
def purge_command(days):
    """Delete finished orders (sent, dismissed, cancelled) older than the retention."""
    days = days if days is not None else current_settings().retention_days
    purged = order_queue_db.get_store().purge_finished(
        older_than=utcnow() - timedelta(days=days))
    click.echo(f"purged {purged} finished orders older than {days:g} days")
