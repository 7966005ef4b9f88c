"""The shared clock: this machine's time corrected to the database server's."""

from datetime import datetime, timedelta

from services.order_queue.clock import SYNC_READS, SYNC_SECONDS, Clock

LOCAL = datetime(2026, 11, 28, 9, 0, 0)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_without_a_shared_clock_now_is_the_local_time():
    assert Clock(local=lambda: LOCAL).now() == LOCAL


def test_now_follows_the_server_clock_without_asking_it_every_time():
    asked, ticks = [], Ticks()

    def server():
        asked.append(1)
        return LOCAL + timedelta(seconds=7)  # the server runs 7 s ahead

    clock = Clock(server, local=lambda: LOCAL, monotonic=ticks)
    assert clock.now() == LOCAL + timedelta(seconds=7)
    assert clock.now() == LOCAL + timedelta(seconds=7)
    assert len(asked) == SYNC_READS  # one measurement
    ticks.now += SYNC_SECONDS
    clock.now()
    assert len(asked) == 2 * SYNC_READS


def test_an_unreachable_server_keeps_the_last_offset():
    answers = [LOCAL - timedelta(seconds=2)]

    def server():
        if not answers:
            raise ConnectionError("down")
        return answers.pop()

    ticks = Ticks()
    clock = Clock(server, local=lambda: LOCAL, monotonic=ticks)
    assert clock.now() == LOCAL - timedelta(seconds=2)
    ticks.now += SYNC_SECONDS
    assert clock.now() == LOCAL - timedelta(seconds=2)


def test_the_read_with_the_shortest_round_trip_sets_the_offset():
    # Local time advances 400 ms, then 2 ms, then 100 ms across the three reads; the
    # server answers the same 5 s ahead each time it is asked.
    steps = iter([0.0, 0.4, 0.4, 0.402, 0.402, 0.502])
    moments = []

    def local():
        moment = LOCAL + timedelta(seconds=next(steps))
        moments.append(moment)
        return moment

    def server():
        return moments[-1] + timedelta(seconds=5)  # asked right after the "before" read

    offset = Clock(server, local=local).sync()
    assert abs(offset.total_seconds() - (5 - 0.001)) < 1e-6  # half the 2 ms round trip


def test_a_slow_measurement_does_not_replace_a_good_one():
    slow, ticks = [False], Ticks()
    base = [LOCAL]

    def local():
        base[0] += timedelta(seconds=1 if slow[0] else 0)  # each read takes a second
        return base[0]

    def server():
        return base[0] + timedelta(seconds=3)

    clock = Clock(server, local=local, monotonic=ticks)
    good = clock.sync()
    slow[0] = True
    ticks.now += SYNC_SECONDS
    assert clock.sync() == good


def test_a_skewed_machine_still_reads_the_databases_clock(store):
    # A machine whose own clock runs an hour fast: its leases and stamps must not.
    skewed = Clock(store.shared_now, local=lambda: store.shared_now() + timedelta(hours=1))
    assert abs((skewed.now() - store.shared_now()).total_seconds()) < 1
