"""``flask order-queue``: the operator's command line.

Thin commands over the same functions the admin page uses (``actions.py`` for what
changes an order, ``reports.py`` for what is shown), registered by the admin
blueprint's ``init_app``.  Exit codes are part of the interface: scripts act on them.
"""

import json
import time
from datetime import timedelta

import click
from flask.cli import AppGroup

from database.order_queue.model import MAX_ORDER_ID, DeadReason, OrderState, QueueStorageError
from services.order_queue import actions, runtime
from services.order_queue.reports import order_detail, order_json, stats_report
from services.order_queue.settings import SettingsError


class _QueueCommands(AppGroup):
    """A fault the operator can act on (the database unreachable, a bad value) is one
    line on stderr and exit code 1, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (QueueStorageError, SettingsError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_PARTIAL) from None


order_queue_cli = _QueueCommands(
    "order-queue",
    help="""Inspect the durable order queue and
act on dead-lettered orders.  Exit codes: 0 done, 1 some orders could not be acted on (or the
queue database could not be reached), 2 bad arguments, 3 a replay or a settle needs --confirm, 4 no
such order.""",
)

EXIT_PARTIAL, EXIT_NEEDS_CONFIRMATION, EXIT_NOT_FOUND = 1, 3, 4
CLI_ACTOR = "cli"


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@order_queue_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(as_json):
    """Orders per state and lane, oldest pending age, sent today."""
    report = stats_report(runtime.current())
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{'state':<10} {'smart':>7} {'regular':>8}")
    for state in OrderState:
        counts = report["depth"][state.value]
        click.echo(f"{state.value:<10} {counts['smart']:>7} {counts['regular']:>8}")
    age = report["oldest_pending_age_seconds"]
    click.echo(
        f"oldest pending: {'-' if age is None else f'{age:.0f}s'}   "
        f"sent today: {report['sent_today']}   dead: {report['dead']}"
    )
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
        raise click.BadParameter(
            f"states are {', '.join(s.value for s in OrderState)}", param_hint="--state"
        )
    queue = runtime.current()
    now = queue.clock.now()
    rows = queue.store.reads.list_orders(
        states=state.split(",") if state else None,
        strategy=strategy,
        symbol=symbol,
        reason=reason,
        limit=limit,
    )
    if as_json:
        _echo_json([order_json(r, now) for r in rows])
        return
    for row in rows:
        click.echo(
            f"#{row['id']:<6} {row['state']:<9} {row['endpoint']:<15} "
            f"{row['symbol']:<12} {row['payload'].get('action', ''):<4} "
            f"{row['strategy'] or '':<16} {row['dead_reason'] or '':<17} "
            f"{(row['last_error'] or '')[:60]}"
        )


@order_queue_cli.command("show")
@click.argument("order_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_command(order_id, as_json):
    """One order with its payload (API key masked) and attempt trail."""
    detail = order_detail(runtime.current(), order_id) if _in_range(order_id) else None
    if detail is None:
        click.echo(f"no order {order_id}", err=True)
        raise SystemExit(EXIT_NOT_FOUND)
    if as_json:
        _echo_json(detail)
        return
    for key in (
        "id",
        "state",
        "dead_reason",
        "endpoint",
        "strategy",
        "symbol",
        "exchange",
        "attempts",
        "broker_orderid",
        "created_at",
        "last_error",
    ):
        click.echo(f"{key:>15}: {detail[key]}")
    click.echo(f"{'payload':>15}: {json.dumps(detail['payload'], sort_keys=True)}")
    for attempt in detail["trail"]:
        click.echo(
            f"  {attempt['at']} {attempt['kind']:<9} {attempt['outcome']:<16} "
            f"{attempt['http_status'] or '':<4} {attempt['actor'] or ''} "
            f"{attempt['message'] or ''}"
        )


def _in_range(order_id: int) -> bool:
    """Whether an id can exist at all (beyond the databases' integer range, none can)."""
    return 0 < order_id <= MAX_ORDER_ID


def _act(action, order_ids, *args, **kwargs) -> list:
    """``action`` on the ids that can exist; the others are reported as unknown."""
    known = [order_id for order_id in order_ids if _in_range(order_id)]
    results = action(known, *args, **kwargs) if known else []
    return results + [
        actions.ActionResult(order_id, False, "no such order")
        for order_id in order_ids
        if not _in_range(order_id)
    ]


def _report(results, as_json) -> None:
    if as_json:
        _echo_json([r.to_dict() for r in results])
    else:
        for result in results:
            click.echo(f"#{result.order_id}: {'ok' if result.ok else 'not done'}: {result.message}")
    if any(r.needs_confirmation for r in results):
        raise SystemExit(EXIT_NEEDS_CONFIRMATION)
    if not all(r.ok for r in results):
        raise SystemExit(EXIT_PARTIAL)


@order_queue_cli.command("replay")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option(
    "--confirm", is_flag=True, help="Replay even if later orders for the same instrument were sent."
)
@click.option("--json", "as_json", is_flag=True)
def replay_command(order_ids, confirm, as_json):
    """Send dead orders again."""
    _report(_act(actions.replay, order_ids, CLI_ACTOR, confirm=confirm), as_json)


@order_queue_cli.command("settle")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option(
    "--placed",
    "broker_orderid",
    metavar="BROKER_ORDER_ID",
    help="It is at the broker under this order id: mark it sent.",
)
@click.option("--not-placed", is_flag=True, help="It is not at the broker: send it again.")
@click.option(
    "--confirm",
    is_flag=True,
    help="Send it again even if later orders for the same instrument were sent.",
)
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def settle_command(order_ids, broker_orderid, not_placed, confirm, note, as_json):
    """Settle orders in doubt with what the broker's orderbook shows."""
    if bool(broker_orderid) == not_placed:
        raise click.UsageError("give exactly one of --placed BROKER_ORDER_ID or --not-placed")
    _report(
        _act(
            actions.settle,
            order_ids,
            CLI_ACTOR,
            placed=not not_placed,
            broker_orderid=broker_orderid,
            note=note,
            confirm=confirm,
        ),
        as_json,
    )


@order_queue_cli.command("dismiss")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def dismiss_command(order_ids, note, as_json):
    """Close dead orders without sending them."""
    _report(_act(actions.dismiss, order_ids, CLI_ACTOR, note=note), as_json)


@order_queue_cli.command("cancel")
@click.argument("order_ids", type=int, nargs=-1, required=True)
@click.option("--note")
@click.option("--json", "as_json", is_flag=True)
def cancel_command(order_ids, note, as_json):
    """Stop pending orders before they are sent."""
    _report(_act(actions.cancel, order_ids, CLI_ACTOR, note=note), as_json)


@order_queue_cli.command("worker")
def worker_command():
    """Run a dispatcher without the web app, until SIGTERM or Ctrl+C.

    For scaling dispatch apart from the web processes (PostgreSQL); any number of
    workers and web processes may share one queue database.
    """
    runtime.install_shutdown_handlers()
    try:
        dispatcher = runtime.current().start_dispatcher()
    except (QueueStorageError, runtime.PepperChanged) as exc:
        raise click.ClickException(f"order queue worker not started: {exc}") from None
    click.echo(f"order queue worker {dispatcher.id} running; stop with SIGTERM or Ctrl+C")
    while True:  # the signal handler ends the process once the dispatcher has stopped
        time.sleep(0.5)


@order_queue_cli.command("purge")
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    help="Override ORDER_QUEUE_RETENTION_DAYS (more than 0).",
)
def purge_command(days):
    """Delete finished orders (sent, dismissed, cancelled) older than the retention."""
    queue = runtime.current()
    days = days if days is not None else queue.settings.retention_days
    older_than, purged = queue.clock.now() - timedelta(days=days), 0
    while batch := queue.store.operator_moves.purge_finished(older_than=older_than):
        purged += batch
    click.echo(f"purged {purged} finished orders older than {days:g} days")
