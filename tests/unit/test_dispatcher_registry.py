"""``store.dispatcher_registry``: registrations and heartbeats, and who is alive.  Run against
SQLite and PostgreSQL alike."""

from datetime import timedelta

from tests.support.store_steps import T0


def test_a_beating_dispatcher_is_alive_and_a_silent_one_is_gone_from_its_last_beat(store):
    registry = store.dispatcher_registry
    registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    registry.register_dispatcher("d2", host="h", pid=2, now=T0)
    beat = T0 + timedelta(seconds=4)
    registry.heartbeat("d1", now=beat)
    now = T0 + timedelta(seconds=6)
    assert [d["id"] for d in registry.live_dispatchers(now=now, heartbeat_timeout=5)] == ["d1"]
    assert registry.dispatcher_gone_since("d1", now=now, heartbeat_timeout=5) is None
    assert registry.dispatcher_gone_since("d2", now=now, heartbeat_timeout=5) == T0 + timedelta(
        seconds=5
    )


def test_a_stopped_dispatcher_is_gone_since_its_stop(store):
    registry = store.dispatcher_registry
    registry.register_dispatcher("d1", host="h", pid=1, now=T0)
    stopped = T0 + timedelta(seconds=1)
    registry.stop_dispatcher("d1", now=stopped)
    later = T0 + timedelta(seconds=2)
    assert registry.live_dispatchers(now=later, heartbeat_timeout=5) == []
    assert registry.dispatcher_gone_since("d1", now=later, heartbeat_timeout=5) == stopped


def test_nothing_is_known_of_a_dispatcher_that_never_registered(store):
    assert (
        store.dispatcher_registry.dispatcher_gone_since("nobody", now=T0, heartbeat_timeout=5)
        is None
    )
