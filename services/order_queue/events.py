"""Live order-queue events for the admin page, over the host's Socket.IO (docs/design.md,
"Operating it").

Every state change is published as ``order_queue:order``; a dead-lettered order is also
published as ``order_queue:dead`` so the page can raise an alert, and raised as an alert
beyond the page (``alerts.py``).  Publishing never breaks the queue: without a
Socket.IO server (CLI, tests, a worker process) the page events are a no-op, and an emit
error is logged and swallowed.
"""

from database.order_queue.model import OrderState
from extensions import socketio
from services.order_queue.alerts import Alerter
from utils.logging import get_logger

logger = get_logger(__name__)

#: Events go only to the admin page's namespace, whose connections need a logged-in
#: session (see blueprints/order_queue.py), never to every Socket.IO client of the host.
NAMESPACE = "/order-queue"
ORDER_EVENT = "order_queue:order"
DEAD_EVENT = "order_queue:dead"


def publish(alerter: Alerter, order_id: int, state: str, **details) -> None:
    """Tell connected admin pages that ``order_id`` is now in ``state``; a dead order is
    also raised through ``alerter`` (the runtime's)."""
    if state == OrderState.DEAD.value:
        alerter.raise_alert(
            "dead",
            str(order_id),
            f"order #{order_id} {details.get('symbol') or ''} ({details.get('strategy') or '-'}) "
            f"dead-lettered: {details.get('reason')}: {details.get('error') or ''}".strip(),
            order_id=order_id,
            **details,
        )
    if getattr(socketio, "server", None) is None:
        return
    event = {"id": order_id, "state": state, **details}
    try:
        socketio.emit(ORDER_EVENT, event, namespace=NAMESPACE)
        if state == OrderState.DEAD.value:
            socketio.emit(DEAD_EVENT, event, namespace=NAMESPACE)
    except Exception:  # a broken socket must never stop an order
        logger.exception("could not publish order-queue event for order %s", order_id)
