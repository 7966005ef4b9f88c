"""The soak's short version (``bench/soak.py``; docs/benchmarks.md has the 30-minute one): the app
under gunicorn + eventlet for 2 minutes at 5 webhooks/s, SIGKILLed after the first: nothing
lost or doubled, and the worker's descriptors, threads and the WAL stay where they were."""

from bench.soak import print_report, soak, stretches
from database.order_queue.backend_sqlite import WAL_SIZE_LIMIT_BYTES


def test_two_minutes_at_five_orders_a_second_with_a_sigkill(tmp_path):
    result = soak(tmp_path, minutes=2, rate=5, kill_every=60)
    print_report(result, 2, 5, 60)
    assert result.kills == 1 and result.drained
    assert len(result.acknowledged) >= 400  # most of 600, less the seconds of the restart
    assert not result.lost and not result.duplicated
    for first, last in stretches(result):
        # Within a stretch, after the start-up sample: a leak of descriptors or threads
        # would grow with every order; a few come and go with the load.
        assert last.fds <= first.fds + 8, (first, last)
        assert last.threads <= first.threads + 4, (first, last)
    assert max(s.wal_mb for s in result.samples) * 2**20 <= WAL_SIZE_LIMIT_BYTES + 2**20
