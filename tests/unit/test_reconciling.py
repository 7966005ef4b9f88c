"""When an in-doubt order can be sent again, and what a kept answer decides: pure
functions, no I/O."""

from datetime import datetime, timedelta

import pytest

from database.order_queue.model import DeadReason
from database.order_queue_db import Receipt
from services.order_queue.outcome import Outcome
from services.order_queue.reconciling import (
    Decision,
    Do,
    from_kept_answer,
    from_orderbook,
    from_receipt,
    next_orderbook_try,
    recorded_verdict,
    request_over_at,
)

SENT = datetime(2026, 11, 28, 4, 0, 0)
LONG, SETTLE = 125.0, 5.0


def receipt(door=True, received=None, done=None, status=None, body=None, instance="d1"):
    return Receipt(door, instance if received else None, received, done, status, body)


def over_at(rec, gone_since=None):
    return request_over_at(
        rec,
        sent_at=SENT,
        receiver_gone_since=gone_since,
        broker_settle_seconds=SETTLE,
        in_progress_seconds=LONG,
    )


def test_a_host_without_the_door_gets_the_long_bound():
    assert over_at(receipt(door=False)) == SENT + timedelta(seconds=LONG)


def test_no_receipt_behind_the_door_means_it_cannot_be_placed_any_more():
    assert over_at(receipt()) == SENT


def test_a_finished_request_leaves_the_broker_settle_time():
    done = SENT + timedelta(seconds=2)
    assert over_at(receipt(received=SENT, done=done)) == done + timedelta(seconds=SETTLE)


def test_a_receiver_that_is_gone_leaves_the_settle_time_after_it_went():
    gone = SENT + timedelta(seconds=4)
    assert over_at(receipt(received=SENT), gone) == gone + timedelta(seconds=SETTLE)


def test_a_live_receiver_may_still_be_working_on_it():
    received = SENT + timedelta(seconds=1)
    assert over_at(receipt(received=received)) == received + timedelta(seconds=LONG)


@pytest.mark.parametrize(
    "status, body, outcome, orderid",
    [
        (200, '{"status": "success", "orderid": "42"}', Outcome.ACCEPTED, "42"),
        (400, '{"status": "error", "message": "bad symbol"}', Outcome.REJECTED, None),
        (429, '{"status": "error"}', Outcome.THROTTLED, None),
        (408, '{"status": "error"}', Outcome.TRANSIENT, None),
    ],
)
def test_a_kept_answer_is_read_as_its_sender_would_have(status, body, outcome, orderid):
    verdict = recorded_verdict(receipt(received=SENT, done=SENT, status=status, body=body))
    assert verdict.outcome is outcome and verdict.orderid == orderid


def test_no_kept_answer_decides_nothing():
    assert recorded_verdict(receipt(received=SENT)) is None
    assert recorded_verdict(receipt(door=False)) is None


def test_an_answered_5xx_leaves_only_the_settle_time_even_without_a_door():
    answered = SENT + timedelta(seconds=1)
    rec = Receipt(False, None, None, answered, 500, "")
    assert over_at(rec) == answered + timedelta(seconds=SETTLE)


def test_an_unavailable_orderbook_is_asked_again_with_growing_pauses_then_given_up():
    pauses = []
    while (pause := next_orderbook_try(len(pauses), interval=1.5, hold_seconds=30)) is not None:
        pauses.append(pause)
    assert pauses == [1.5, 3.0, 6.0, 10.0, 9.5]
    assert next_orderbook_try(0, interval=1.5, hold_seconds=0) is None


def test_a_receipt_shows_the_door_even_when_the_sender_did_not_expect_it():
    received = SENT + timedelta(seconds=1)
    gone = SENT + timedelta(seconds=3)
    rec = Receipt(False, "d1", received, None, None, None)
    assert over_at(rec, gone) == gone + timedelta(seconds=SETTLE)


def decide_from_orderbook(unbound, unreadable=0, *, last_check=False, behind_door=False, now=SENT):
    return from_orderbook(
        unbound,
        unreadable,
        checks_done=2,
        last_check=last_check,
        behind_door=behind_door,
        now=now,
        over_at=SENT + timedelta(seconds=LONG),
    )


def test_the_orderbook_decides_one_match_adopted_several_to_a_human():
    assert decide_from_orderbook(["B1"]) == Decision(
        Do.ADOPT, "adopted the broker's matching order", orderid="B1"
    )
    for ambiguous in (decide_from_orderbook(["B1", "B2"]), decide_from_orderbook([], 1)):
        assert (ambiguous.do, ambiguous.reason) == (Do.DEAD, DeadReason.IN_DOUBT)
        assert ambiguous.verdict.message.startswith("ambiguous: ")
        assert not ambiguous.counts_as_attempt


def test_no_match_is_not_placed_only_once_the_request_cannot_place_it():
    after = SENT + timedelta(seconds=LONG + 1)
    assert decide_from_orderbook([]).do is Do.CHECK_AGAIN  # checks left, no door: look again
    assert decide_from_orderbook([]).at is None
    for facts in ({"last_check": True}, {"behind_door": True}):
        waiting = decide_from_orderbook([], **facts)
        assert (waiting.do, waiting.at) == (Do.CHECK_AGAIN, SENT + timedelta(seconds=LONG))
        released = decide_from_orderbook([], now=after, **facts)
        assert released == Decision(Do.RELEASE, "not in the orderbook after 2 checks")


def test_a_kept_answer_decides_unless_it_says_nothing_of_the_placement():
    kept = lambda status, body="{}": recorded_verdict(  # noqa: E731
        receipt(received=SENT, done=SENT, status=status, body=body)
    )
    accepted = from_kept_answer(kept(200, '{"status": "success", "orderid": "42"}'))
    assert (accepted.do, accepted.orderid) == (Do.ADOPT, "42")
    rejected = from_kept_answer(kept(400, '{"status": "error", "message": "bad"}'))
    assert (rejected.do, rejected.reason, rejected.counts_as_attempt) == (
        Do.DEAD,
        DeadReason.REJECTED,
        True,
    )
    assert from_kept_answer(kept(429)).do is Do.RELEASE
    assert from_kept_answer(kept(500)) is None and from_kept_answer(None) is None


def test_the_receipt_alone_decides_a_refused_request_and_a_host_still_working():
    over = SENT + timedelta(seconds=LONG)
    never_got_in = from_receipt(receipt(), receiver_gone_since=None, now=SENT, over_at=over)
    assert never_got_in.do is Do.RELEASE
    working = from_receipt(receipt(received=SENT), receiver_gone_since=None, now=SENT, over_at=over)
    assert (working.do, working.counts_as_check) == (Do.CHECK_AGAIN, False)
    gone = from_receipt(receipt(received=SENT), receiver_gone_since=SENT, now=SENT, over_at=over)
    assert gone is None  # the orderbook decides
