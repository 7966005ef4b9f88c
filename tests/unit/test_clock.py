"""The queue's clock: steady across steps of the wall clock, on the database server's
time where processes on several machines share the queue."""

import logging
from datetime import datetime, timedelta

from services.order_queue.clock import SYNC_READS, SYNC_SECONDS, Clock

LOCAL = datetime(2026, 11, 28, 9, 0, 0)


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Wall:
    """This machine's wall clock, which the test moves with the ticks or steps alone."""

    def __init__(self, ticks: Ticks):
        self.ticks, self.stepped = ticks, timedelta(0)

    def __call__(self):
        return LOCAL + timedelta(seconds=self.ticks.now - 1000.0) + self.stepped


def test_without_a_shared_clock_now_is_the_wall_time_carried_forward_steadily():
    ticks = Ticks()
    clock = Clock(wall=Wall(ticks), monotonic=ticks)
    assert clock.now() == LOCAL
    ticks.now += 5
    assert clock.now() == LOCAL + timedelta(seconds=5)
    assert clock.warnings() == []


def test_a_step_of_the_wall_clock_moves_neither_now_nor_anything_stored(caplog):
    ticks = Ticks()
    wall = Wall(ticks)
    clock = Clock(wall=wall, monotonic=ticks)
    stamp = clock.now()  # a send stamped before the step
    ticks.now += 10
    wall.stepped = timedelta(minutes=-5)  # NTP steps the clock back five minutes
    with caplog.at_level(logging.WARNING):
        assert clock.now() == LOCAL + timedelta(seconds=10)
        clock.now()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "stepped by -300.0 s" in caplog.records[0].message
    # The broker's orderbook and IST schedules go by the wall clock: converted.
    assert clock.to_wall(stamp) == LOCAL - timedelta(minutes=5)
    assert clock.from_wall(clock.to_wall(stamp)) == stamp
    assert clock.to_wall(clock.now()) == wall()
    assert "stepped by -300 s" in clock.warnings()[0]
    wall.stepped = timedelta(minutes=2)  # and forward, past where it was
    assert clock.now() == LOCAL + timedelta(seconds=10)
    assert clock.to_wall(stamp) == LOCAL + timedelta(minutes=2)
    assert "stepped by +120 s" in clock.warnings()[0]


def test_drift_under_a_second_is_not_a_step():
    ticks = Ticks()
    wall = Wall(ticks)
    clock = Clock(wall=wall, monotonic=ticks)
    wall.stepped = timedelta(milliseconds=600)
    assert clock.to_wall(LOCAL) == LOCAL and clock.warnings() == []


def test_now_follows_the_server_clock_without_asking_it_every_time():
    asked, ticks = [], Ticks()

    def server():
        asked.append(1)
        return LOCAL + timedelta(seconds=7)  # the server runs 7 s ahead

    clock = Clock(server, wall=lambda: LOCAL, monotonic=ticks)
    assert clock.now() == LOCAL + timedelta(seconds=7)
    assert clock.now() == LOCAL + timedelta(seconds=7)
    assert len(asked) == SYNC_READS  # one measurement
    ticks.now += SYNC_SECONDS
    clock.now()
    assert len(asked) == 2 * SYNC_READS


def test_a_machine_whose_clock_disagrees_with_the_database_is_reported():
    ticks = Ticks()
    clock = Clock(lambda: LOCAL + timedelta(seconds=7), wall=lambda: LOCAL, monotonic=ticks)
    clock.now()
    assert "7.0 s behind the database server's" in clock.warnings()[0]
    # The database's clock is the outside world's too: nothing to convert.
    assert clock.to_wall(LOCAL) == LOCAL
    in_step = Clock(lambda: LOCAL, wall=lambda: LOCAL, monotonic=ticks)
    in_step.now()
    assert in_step.warnings() == []


def test_an_unreachable_server_keeps_the_last_offset():
    answers = [LOCAL - timedelta(seconds=2)]

    def server():
        if not answers:
            raise ConnectionError("down")
        return answers.pop()

    ticks = Ticks()
    clock = Clock(server, wall=lambda: LOCAL, monotonic=ticks)
    assert clock.now() == LOCAL - timedelta(seconds=2)
    ticks.now += SYNC_SECONDS
    assert clock.now() == LOCAL - timedelta(seconds=2) + timedelta(seconds=SYNC_SECONDS)


def test_the_read_with_the_shortest_round_trip_sets_the_offset():
    # The steady clock advances 400 ms, then 2 ms, then 100 ms across the three reads;
    # the server answers the same 5 s ahead each time it is asked.
    steps = iter([0.0, 0.0, 0.4, 0.4, 0.402, 0.402, 0.502])
    seen = []

    def monotonic():
        seen.append(next(steps, 0.502))
        return seen[-1]

    def server():
        return LOCAL + timedelta(seconds=seen[-1] + 5)  # asked right after the "before" read

    offset = Clock(server, wall=lambda: LOCAL, monotonic=monotonic).sync()
    assert abs(offset.total_seconds() - (5 - 0.001)) < 1e-6  # half the 2 ms round trip


def test_a_slow_measurement_does_not_replace_a_good_one():
    slow, ticks = [False], Ticks()

    def monotonic():
        ticks.now += 1 if slow[0] else 0  # each read takes a second
        return ticks.now

    def server():
        return LOCAL + timedelta(seconds=ticks.now - 1000 + 3)

    clock = Clock(server, wall=lambda: LOCAL, monotonic=monotonic)
    good = clock.sync()
    slow[0] = True
    ticks.now += SYNC_SECONDS
    assert clock.sync() == good


def test_a_skewed_machine_still_reads_the_databases_clock(store):
    # A machine whose own clock runs an hour fast: its leases and stamps must not.
    skewed = Clock(
        store.reads.shared_now, wall=lambda: store.reads.shared_now() + timedelta(hours=1)
    )
    assert abs((skewed.now() - store.reads.shared_now()).total_seconds()) < 1
