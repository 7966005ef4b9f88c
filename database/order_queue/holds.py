"""Which orders hold their instrument back: the one rule the claim obeys and the page shows.

An order holds the later orders of its instrument while it is on the wire or in doubt
(every later order: nothing may pass a request whose outcome is unknown), and a smart
order holds the later smart orders of its instrument for the settle gap after its send
stamp (a smart order sizes itself from the position the previous one left).  A smart
order the broker answered without placing anything (sent, no order id) changed no
position: it holds nothing.  The claim (``claims._CLAIM_CANDIDATE``) refuses what these
expressions hold; the page (``reads.held_orders``) lists the holders with the same
expressions, so what the page says is held is what the claim refuses.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import FromClause, and_, case, or_
from sqlalchemy.sql.elements import ColumnElement

from database.order_queue.model import Lane, OrderState

#: States whose request's outcome is not known yet: on the wire, or in doubt.
ON_THE_WIRE = (OrderState.SENDING.value, OrderState.IN_DOUBT.value)
#: A moment no send is stamped after: "nothing settles" when the settle gap is off.
_NEVER = datetime(9999, 12, 31)


class Holds:
    """What a holder holds back (``holds_what``): every later order, or the smart ones."""

    EVERY_ORDER = "every order"
    SMART_ORDERS = "smart orders"


def settling_since(now: datetime, settle_gap_seconds: float) -> datetime:
    """Smart orders stamped after this moment are still settling."""
    return now - timedelta(seconds=settle_gap_seconds) if settle_gap_seconds > 0 else _NEVER


def on_the_wire(table: FromClause) -> ColumnElement[bool]:
    """``table``'s row holds every later order of its instrument."""
    return table.c.state.in_(ON_THE_WIRE)


def settling(table: FromClause, since) -> ColumnElement[bool]:
    """``table``'s row holds the later smart orders of its instrument: a smart order
    stamped after ``since`` that may have moved the position."""
    return and_(
        table.c.lane == Lane.SMART.value,
        table.c.sent_at > since,
        or_(table.c.state != OrderState.SENT.value, table.c.broker_orderid.is_not(None)),
    )


def holds_what(table: FromClause, since) -> ColumnElement[str | None]:
    """What ``table``'s row holds back (a ``Holds`` value), or NULL for nothing."""
    return case(
        (on_the_wire(table), Holds.EVERY_ORDER),
        (settling(table, since), Holds.SMART_ORDERS),
        else_=None,
    )
