"""What an operator does to orders (shared by the page, the API and the CLI), on both
stores, through the runtime the app built."""

from services.order_queue import actions, runtime
from tests.support.helpers import make_order


def state_of(order_id):
    return runtime.current().store.reads.get_order(order_id)["state"]


def test_replay_sends_a_rejected_order_again(app):
    order_id = make_order("dead")
    [result] = actions.replay([order_id], "alice")
    assert result.ok and state_of(order_id) == "pending"
    trail = runtime.current().store.reads.list_attempts(order_id)
    assert (trail[-1]["outcome"], trail[-1]["actor"]) == ("replayed", "alice")


def test_replay_of_an_order_dead_in_doubt_needs_confirmation(app):
    order_id = make_order("dead_in_doubt")
    [held] = actions.replay([order_id], "alice")
    assert not held.ok and held.needs_confirmation and "orderbook" in held.message
    assert state_of(order_id) == "dead"
    [done] = actions.replay([order_id], "alice", confirm=True)
    assert done.ok and state_of(order_id) == "pending"


def test_replay_behind_a_later_order_already_sent_needs_confirmation(app):
    first = make_order("dead", symbol="SBIN")
    later = make_order("sent", symbol="SBIN")
    [held] = actions.replay([first], "alice")
    assert held.needs_confirmation and held.later_sent == [later]


def test_settling_not_placed_behind_a_later_order_already_sent_needs_confirmation(app):
    """A dead letter holds nothing: the exit after it went out.  Sending the entry now
    would open a position nobody wants, so the operator confirms it."""
    entry = make_order("dead_in_doubt", symbol="SBIN")
    exit_ = make_order("sent", symbol="SBIN")
    [held] = actions.settle([entry], "alice", placed=False)
    assert not held.ok and held.needs_confirmation and held.later_sent == [exit_]
    assert state_of(entry) == "dead"
    [done] = actions.settle([entry], "alice", placed=False, confirm=True)
    assert done.ok and state_of(entry) == "pending"


def test_settle_as_placed_needs_one_order_and_its_broker_id(app):
    one, two = make_order("dead_in_doubt"), make_order("dead_in_doubt", symbol="TCS")
    refused = actions.settle([one, two], "alice", placed=True, broker_orderid="B1")
    assert not any(result.ok for result in refused)
    [settled] = actions.settle([one], "alice", placed=True, broker_orderid="B1")
    assert settled.ok and state_of(one) == "sent"
    [again] = actions.settle([two], "alice", placed=False)
    assert again.ok and state_of(two) == "pending"


def test_dismiss_and_cancel_say_why_when_the_state_is_wrong(app):
    dead, pending = make_order("dead"), make_order("pending", symbol="TCS")
    [wrong] = actions.cancel([dead], "alice")
    assert not wrong.ok and wrong.message == "order is dead, not pending"
    assert actions.cancel([pending], "alice")[0].ok and state_of(pending) == "cancelled"
    assert actions.dismiss([dead], "alice", note="checked")[0].ok
    assert state_of(dead) == "dismissed"
    assert actions.dismiss([999], "alice")[0].message == "no such order"
