"""``recording.after_send``: what a send's verdict does to its order, as a table of facts
in and decisions out (no store, no clock)."""

from datetime import datetime, timedelta

import pytest

from database.order_queue.model import DeadReason
from services.order_queue.outcome import Outcome, Verdict
from services.order_queue.recording import AfterSend, Next, after_send

NOW = datetime(2026, 12, 7, 4, 0)
CHECK = timedelta(seconds=7)


def backoff(attempt: int) -> timedelta:
    return timedelta(seconds=10 * attempt)


def decide(outcome: Outcome, *, attempts: int = 0, retry_after=None) -> AfterSend:
    return after_send(
        Verdict(outcome, retry_after=retry_after),
        attempts=attempts,
        now=NOW,
        max_retries=3,
        backoff=backoff,
        check_after=CHECK,
    )


@pytest.mark.parametrize(
    ("outcome", "attempts", "retry_after", "expected"),
    [
        (Outcome.ACCEPTED, 0, None, AfterSend(Next.SENT)),
        (Outcome.NOT_SENT, 2, None, AfterSend(Next.PENDING, NOW + backoff(1), False)),
        (Outcome.THROTTLED, 2, None, AfterSend(Next.PENDING, NOW + backoff(1), False)),
        # The API's Retry-After, when longer than the backoff, is waited out.
        (Outcome.THROTTLED, 0, 25.0, AfterSend(Next.PENDING, NOW + timedelta(seconds=25), False)),
        (Outcome.TRANSIENT, 0, None, AfterSend(Next.PENDING, NOW + backoff(1))),
        (Outcome.TRANSIENT, 1, None, AfterSend(Next.PENDING, NOW + backoff(2))),
        (
            Outcome.TRANSIENT,
            2,
            None,
            AfterSend(Next.DEAD, reason=DeadReason.RETRIES_EXHAUSTED),
        ),
        (Outcome.UNKNOWN, 2, None, AfterSend(Next.IN_DOUBT, NOW + CHECK)),
        (Outcome.REJECTED, 0, None, AfterSend(Next.DEAD, reason=DeadReason.REJECTED)),
        (Outcome.CREDENTIALS, 0, None, AfterSend(Next.DEAD, reason=DeadReason.CREDENTIALS)),
    ],
)
def test_each_verdict_takes_the_order_where_the_lifecycle_says(
    outcome, attempts, retry_after, expected
):
    assert decide(outcome, attempts=attempts, retry_after=retry_after) == expected


def test_an_unknown_outcome_is_never_retried_blindly_whatever_was_spent():
    """However many attempts were spent, an unknown outcome goes to the reconciler."""
    assert {decide(Outcome.UNKNOWN, attempts=n).state for n in range(10)} == {Next.IN_DOUBT}
