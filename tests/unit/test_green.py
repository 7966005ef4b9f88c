"""Store calls off the event loop: in a process without one they run as plain calls."""

import pytest

from database.order_queue.green import GreenTurns, OffloadedCalls, run_blocking, server_model


class Target:
    limit = 3

    def double(self, value):
        return 2 * value

    def fail(self):
        raise ValueError("from the store")


def test_a_threaded_process_runs_calls_where_they_are():
    assert server_model() == "threads"
    assert run_blocking(sum, [1, 2, 3]) == 6


def test_offloaded_calls_return_results_raise_errors_and_pass_attributes_through():
    wrapped = OffloadedCalls(Target(), GreenTurns())
    assert wrapped.double(21) == 42
    assert wrapped.limit == 3
    with pytest.raises(ValueError, match="from the store"):
        wrapped.fail()
