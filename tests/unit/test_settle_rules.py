"""``actions.settle_refusal``: when an operator's settle waits or is refused, as facts in
and a reason out."""

from services.order_queue.actions import settle_refusal


def refusal(placed=False, orders=1, orderid=None, later=(), confirm=False):
    return settle_refusal(
        placed=placed,
        orders=orders,
        broker_orderid=orderid,
        later_gone_ahead=list(later),
        confirm=confirm,
    )


def test_placed_takes_one_order_and_its_broker_orderid():
    assert refusal(placed=True, orderid="B1") is None
    assert "one order" in refusal(placed=True, orders=2, orderid="B1")
    assert "broker's order id" in refusal(placed=True, orderid="")


def test_not_placed_waits_for_confirmation_once_later_orders_went_out():
    assert refusal() is None
    waiting = refusal(later=[7, 9])
    assert "(7, 9)" in waiting and "confirm" in waiting
    assert refusal(later=[7, 9], confirm=True) is None
