"""Operator actions on queued orders: replay, dismiss, cancel, settle (docs/design.md,
"Dead letters and the record").

One implementation used by the admin page, the JSON API and the CLI.  Each action takes
a list of order ids (bulk is the general case) and returns one result per id; nothing
is retried or decided automatically: a human asked for exactly this.
"""

from dataclasses import asdict, dataclass, field

from database.order_queue.model import BrokerStatus, DeadReason, OrderState
from services.order_queue import events, runtime
from utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class ActionResult:
    order_id: int
    ok: bool
    message: str
    #: replay only: the order may already be at the broker, or later orders for the
    #: same instrument already went out; the replay waits until the operator confirms it
    needs_confirmation: bool = False
    later_sent: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def replay(order_ids: list[int], actor: str, *, confirm: bool = False) -> list[ActionResult]:
    """Send dead orders again through the dispatcher (same payload, rate limits and
    per-instrument order).  Without ``confirm``, two kinds are held back with
    ``needs_confirmation``: an order dead-lettered in doubt (its first request may have
    placed it; replaying could double it) and an order whose instrument has had a later
    order sent since (replaying an old entry after its exit went out would open a
    position nobody wants)."""
    queue = runtime.current()
    store, max_age = queue.store, queue.settings.max_age_seconds
    results = []
    for order_id in order_ids:
        row = store.reads.get_order(order_id)
        rejected = row is not None and _rejected_after_sent(row)
        if row is None or (row["state"] != OrderState.DEAD.value and not rejected):
            # Said first: asking to confirm a replay that cannot happen misleads.
            results.append(ActionResult(order_id, False, _why_not(store, order_id, "dead")))
            continue
        later = [later_row["id"] for later_row in store.reads.later_orders_gone_ahead(order_id)]
        warnings = []
        if row["dead_reason"] == DeadReason.IN_DOUBT.value:
            warnings.append(
                "it may already be at the broker (its first send was never "
                "confirmed): check the broker's orderbook"
            )
        if later:
            warnings.append(
                f"later orders for this instrument already went out ({', '.join(map(str, later))})"
            )
        if warnings and not confirm:
            results.append(
                ActionResult(
                    order_id,
                    False,
                    "; ".join(warnings) + "; confirm to replay anyway",
                    needs_confirmation=True,
                    later_sent=later,
                )
            )
            continue
        now = queue.clock.now()
        deadline = queue.deadline_for({**row["payload"], "strategy": row["strategy"]}, now)
        if rejected:
            results.append(_send_again(queue, row, actor, now, deadline))
            continue
        if store.operator_moves.replay(
            order_id, now=now, actor=actor, max_age_seconds=max_age, deadline=deadline
        ):
            logger.warning("order %s replayed by %s", order_id, actor)
            events.publish(queue.alerter, order_id, "pending", action="replayed")
            results.append(ActionResult(order_id, True, "replayed: queued for sending"))
        else:
            results.append(ActionResult(order_id, False, _why_not(store, order_id, "dead")))
    if any(result.ok for result in results):
        queue.wake()
    return results


def settle(
    order_ids: list[int],
    actor: str,
    *,
    placed: bool,
    broker_orderid: str | None = None,
    note: str | None = None,
    confirm: bool = False,
) -> list[ActionResult]:
    """Record what the operator found at the broker for orders whose fate the machine
    could not tell (in doubt, or dead-lettered in doubt): ``placed`` with the broker's
    orderid marks it sent; not placed sends it again (``settle_refusal`` says when that
    waits for ``confirm``).  Audited in the attempt trail like every action."""
    queue = runtime.current()
    store, results = queue.store, []
    for order_id in order_ids:
        row = store.reads.get_order(order_id)
        later = (
            [later_row["id"] for later_row in store.reads.later_orders_gone_ahead(order_id)]
            if not placed and row is not None and _settleable(row)
            else []
        )
        refusal = settle_refusal(
            placed=placed,
            orders=len(order_ids),
            broker_orderid=broker_orderid,
            later_gone_ahead=later,
            confirm=confirm,
        )
        if refusal is not None:
            results.append(
                ActionResult(
                    order_id,
                    False,
                    refusal,
                    needs_confirmation=bool(later),
                    later_sent=later,
                )
            )
            continue
        now = queue.clock.now()
        if placed:
            assert broker_orderid is not None  # settle_refusal asks for one
            done = store.operator_moves.settle_placed(
                order_id, now=now, actor=actor, broker_orderid=broker_orderid, note=note
            )
            outcome, state = f"settled as placed, broker order id {broker_orderid}", "sent"
        else:
            deadline = (
                queue.deadline_for({**row["payload"], "strategy": row["strategy"]}, now)
                if row
                else None
            )
            done = store.operator_moves.settle_not_placed(
                order_id,
                now=now,
                actor=actor,
                note=note,
                max_age_seconds=queue.settings.max_age_seconds,
                deadline=deadline,
            )
            outcome, state = "settled as not placed: queued for sending", "pending"
        if done:
            logger.warning("order %s %s by %s", order_id, outcome, actor)
            events.publish(queue.alerter, order_id, state, action="settled")
            results.append(ActionResult(order_id, True, outcome))
        else:
            results.append(
                ActionResult(order_id, False, _why_not_settled(store, order_id, broker_orderid))
            )
    if any(result.ok for result in results):
        queue.wake()
    return results


def settle_refusal(
    *,
    placed: bool,
    orders: int,
    broker_orderid: str | None,
    later_gone_ahead: list[int],
    confirm: bool,
) -> str | None:
    """Why a settle may not go ahead as asked, or None.  "Placed" takes one order and
    the broker's orderid (an orderid belongs to one order).  "Not placed" sends the
    order again, which, as for a replay, waits for ``confirm`` once later orders of its
    instrument went out (a dead letter holds nothing: an old entry sent after its exit
    would open a position nobody wants)."""
    if placed and (orders != 1 or not broker_orderid):
        return "'placed' needs one order and the broker's order id"
    if later_gone_ahead and not confirm:
        return (
            f"later orders for this instrument already went out "
            f"({', '.join(map(str, later_gone_ahead))}): sent now, it goes behind them; "
            f"confirm to send it anyway"
        )
    return None


def _settleable(row: dict) -> bool:
    return row["state"] == OrderState.IN_DOUBT.value or (
        row["state"] == OrderState.DEAD.value and row["dead_reason"] == DeadReason.IN_DOUBT.value
    )


def _why_not_settled(store, order_id: int, broker_orderid: str | None) -> str:
    row = store.reads.get_order(order_id)
    if row is None:
        return "no such order"
    if row["state"] == OrderState.IN_DOUBT.value:
        if broker_orderid and row["broker_orderid"] != broker_orderid:
            return (
                f"broker order id {broker_orderid} is already bound to another order, "
                f"or the order is being checked right now; try again"
            )
        return "the order is being checked against the orderbook right now; try again"
    if _settleable(row):  # dead in doubt: the id was the obstacle
        return f"broker order id {broker_orderid} is already bound to another order"
    return f"only an order in doubt can be settled (this one is {row['state']})"


def dismiss(order_ids: list[int], actor: str, *, note: str | None = None) -> list[ActionResult]:
    """Close dead orders without sending them; the record stays.  A sent order the
    broker rejected or cancelled afterwards is set aside (it stays sent, and rejected)."""
    queue = runtime.current()
    rows = {order_id: queue.store.reads.get_order(order_id) for order_id in order_ids}
    aside = [i for i, row in rows.items() if row is not None and _rejected_after_sent(row)]
    results = {
        result.order_id: result
        for result in _simple(
            "dismiss", "dismissed", "dead", [i for i in order_ids if i not in aside], actor, note
        )
    }
    for order_id in aside:
        done = queue.store.verdicts.set_aside(
            order_id, now=queue.clock.now(), actor=actor, note=note
        )
        if done:
            logger.warning("order %s (rejected at the broker) set aside by %s", order_id, actor)
        results[order_id] = ActionResult(
            order_id, done, "set aside: not sent again" if done else "already dealt with"
        )
    return [results[order_id] for order_id in order_ids]


def _rejected_after_sent(row: dict) -> bool:
    """Sent, then rejected or cancelled at the broker, and not yet dealt with."""
    return (
        row["state"] == OrderState.SENT.value
        and row.get("broker_status") in (BrokerStatus.REJECTED.value, BrokerStatus.CANCELLED.value)
        and row.get("verdict_handled_at") is None
    )


def _send_again(queue, row: dict, actor: str, now, deadline) -> ActionResult:
    """A sent order the broker rejected or cancelled: a new order asking the same."""
    new_id = queue.store.verdicts.send_again(
        row["id"],
        now=now,
        actor=actor,
        max_age_seconds=queue.settings.max_age_seconds,
        deadline=deadline,
    )
    if new_id is None:
        return ActionResult(row["id"], False, "already dealt with")
    logger.warning(
        "order %s (%s at the broker) sent again as order %s by %s",
        row["id"],
        row["broker_status"],
        new_id,
        actor,
    )
    events.publish(queue.alerter, new_id, "pending", action="sent_again")
    return ActionResult(row["id"], True, f"sent again as order {new_id}")


def cancel(order_ids: list[int], actor: str, *, note: str | None = None) -> list[ActionResult]:
    """Stop pending orders before they are sent."""
    return _simple("cancel", "cancelled", "pending", order_ids, actor, note)


def _simple(
    action: str,
    new_state: str,
    required_state: str,
    order_ids: list[int],
    actor: str,
    note: str | None,
) -> list[ActionResult]:
    queue = runtime.current()
    move = getattr(queue.store.operator_moves, action)
    results = []
    for order_id in order_ids:
        if move(order_id, now=queue.clock.now(), actor=actor, note=note):
            logger.warning(
                "order %s %s by %s%s", order_id, new_state, actor, f": {note}" if note else ""
            )
            events.publish(queue.alerter, order_id, new_state, action=action)
            results.append(ActionResult(order_id, True, new_state))
        else:
            results.append(
                ActionResult(order_id, False, _why_not(queue.store, order_id, required_state))
            )
    return results


def _why_not(store, order_id: int, required_state: str) -> str:
    row = store.reads.get_order(order_id)
    if row is None:
        return "no such order"
    return f"order is {row['state']}, not {required_state}"
