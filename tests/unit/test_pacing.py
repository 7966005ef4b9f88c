"""Pacing decisions: pure, no clock, database or broker."""

from datetime import datetime, timedelta

import pytest

from services.order_queue.pacing import backoff_seconds, loop_wait_seconds, stamp_is_timely

NOW = datetime(2026, 11, 28, 9, 15)


def lowest(_low, _high):
    return _low


def highest(_low, high):
    return high


@pytest.mark.parametrize("attempt, expected_high", [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0)])
def test_backoff_doubles_per_attempt_up_to_the_cap(attempt, expected_high):
    assert backoff_seconds(attempt, base=1.0, cap=30.0, floor=0.0, draw=highest) == expected_high


def test_backoff_jitter_stays_in_the_upper_half():
    assert backoff_seconds(3, base=1.0, cap=30.0, floor=0.0, draw=lowest) == 2.0  # half of 4


def test_backoff_is_never_shorter_than_the_rate_window():
    # A retry must find its earlier send out of the window it was counted in.
    assert backoff_seconds(1, base=0.05, cap=30.0, floor=1.0, draw=highest) == 1.0


def test_a_stamp_is_timely_within_half_the_tolerance():
    assert stamp_is_timely(taken_at=100.0, now=100.02, tolerance=0.05)
    assert not stamp_is_timely(taken_at=100.0, now=100.03, tolerance=0.05)


def test_the_loop_sleeps_until_the_next_due_moment_at_most_the_poll():
    assert loop_wait_seconds(1.0, None, NOW) == 1.0
    assert loop_wait_seconds(1.0, NOW + timedelta(milliseconds=250), NOW) == 0.25
    assert loop_wait_seconds(1.0, NOW + timedelta(seconds=5), NOW) == 1.0


def test_a_moment_already_due_still_yields_for_a_millisecond():
    assert loop_wait_seconds(1.0, NOW - timedelta(seconds=3), NOW) == 0.001
