"""The runtime: built once per app, the only holder of settings, store, clock and the
dispatcher; start and stop go through it."""

import pytest

from database.order_queue_db import QueueStorageError
from services.order_queue import runtime
from services.order_queue.settings import OrderQueueSettings, SettingsError
from tests.conftest import TEST_PEPPER


def settings_for(tmp_path, **overrides):
    return OrderQueueSettings(
        **{
            "database_url": f"sqlite:///{tmp_path}/order_queue.db",
            "api_key_pepper": TEST_PEPPER,
            "host_server": "http://127.0.0.1:9",
            **overrides,
        }
    )


@pytest.fixture
def fresh(monkeypatch):
    """No runtime before the test; whatever it builds is stopped after it."""
    monkeypatch.setattr(runtime, "_current", None)
    yield
    runtime.stop_current(timeout=5)


def test_nothing_can_be_queued_before_the_runtime_is_built(fresh):
    with pytest.raises(QueueStorageError, match="not configured"):
        runtime.current()


def test_a_pepper_too_short_to_seal_keys_fails_the_build(fresh, tmp_path):
    with pytest.raises(SettingsError, match="API_KEY_PEPPER"):
        runtime.build(settings_for(tmp_path, api_key_pepper="short"))


def test_the_runtime_holds_the_settings_store_and_clock_it_was_built_with(fresh, tmp_path):
    queue = runtime.build(settings_for(tmp_path, max_retries=7))
    assert runtime.current() is queue
    assert queue.settings.max_retries == 7
    assert queue.store.url.endswith("order_queue.db")
    assert abs((queue.clock.now() - queue.store.reads.shared_now()).total_seconds()) < 1


def test_building_again_stops_the_earlier_dispatcher(fresh, tmp_path):
    first = runtime.build(settings_for(tmp_path))
    dispatcher = first.start_dispatcher()
    assert dispatcher.alive and first.status()["dispatcher_running"]
    second = runtime.build(settings_for(tmp_path))
    assert not dispatcher.alive
    assert runtime.current() is second and second.dispatcher is None


def test_stop_leaves_nothing_running_and_is_safe_twice(fresh, tmp_path):
    queue = runtime.build(settings_for(tmp_path))
    dispatcher = queue.start_dispatcher()
    assert queue.stop(timeout=5)
    assert not dispatcher.alive and queue.dispatcher is None
    assert queue.stop(timeout=5)


def test_a_dispatcher_never_starts_with_a_pepper_that_cannot_open_the_queued_keys(fresh, tmp_path):
    """Started directly (a worker, the drain) as much as by a host: every queued order
    would otherwise die as ``credentials``."""
    runtime.build(settings_for(tmp_path)).start_dispatcher()  # seals the check value
    queue = runtime.build(settings_for(tmp_path, api_key_pepper="e" * 64))
    with pytest.raises(runtime.PepperChanged, match="API_KEY_PEPPER"):
        queue.start_dispatcher()
    assert queue.dispatcher is None and not queue.store.dispatcher_registry.live_dispatchers(
        now=queue.clock.now(), heartbeat_timeout=60
    )
