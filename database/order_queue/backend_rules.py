"""The rules both backends' triggers keep, in one place: the words of each refusal and
the SQL lists they are built from, and the order insert both enqueue paths run.

The rules themselves (allowed state changes, write-once identity columns, no deletion of
an order that still owes a delivery or a decision, an append-only attempt trail) come from
``model.py``; each backend turns them into triggers of its dialect.
"""

from database.order_queue.model import ALLOWED_TRANSITIONS, OWING_STATES, orders

#: Built once: building ``insert().values(...)`` per order cost more than the commit.
INSERT_ORDER = orders.insert()


OWING_SQL = ", ".join(f"'{state.value}'" for state in OWING_STATES)
TRANSITIONS_SQL = ", ".join(f"'{a}>{b}'" for a, b in ALLOWED_TRANSITIONS)
TRANSITION_ERROR = "order_queue: this state change is not part of the order lifecycle"
IDENTITY_ERROR = "order_queue: identity columns are write-once"
OWING_DELETE_ERROR = (
    "order_queue: an order that still owes a delivery or a decision cannot be deleted"
)
ATTEMPTS_ERROR = "order_queue_attempts: the attempt trail is append-only"
REPLACE_ERROR = "order_queue: a row with this id exists; rows are never replaced"
#: Only an order dead in doubt may be marked sent (the operator's settle "placed"); a
#: rejected or expired one was never placed, and "sent" would let it be purged.
DEAD_TO_SENT_NEEDS = "in_doubt"
