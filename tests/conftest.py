"""Shared fixtures: a fresh app on real SQLite files, the queue store on SQLite and
PostgreSQL, and a real HTTP fake broker on 127.0.0.1.

PostgreSQL tests use ``ORDER_QUEUE_TEST_POSTGRES_URL`` (default: the local server's
``test`` database); each test gets a schema of its own.  When the server is unreachable
they skip, except under ``CI=true``, where they fail.
"""

import gc
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from database.order_queue.api_keys import KeySealing
from database.order_queue_db import QueueStore
from services.order_queue import runtime
from tests.support.fake_broker import FakeBroker

TEST_PEPPER = "a3f1" * 16
#: The sealing of stores a test drives directly (an app builds its own from the pepper).
TEST_SEALING = KeySealing(TEST_PEPPER)
POSTGRES_URL = os.getenv(
    "ORDER_QUEUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def _pepper(monkeypatch):
    """The pepper in the environment, for apps the test starts (their settings read it)."""
    monkeypatch.setenv("API_KEY_PEPPER", TEST_PEPPER)


def _postgres_or_skip() -> None:
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # unreachable server, missing driver
        if os.getenv("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL required in CI but unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}")


@pytest.fixture
def postgres_schema_url():
    """A URL whose connections use a fresh schema, dropped afterwards."""
    _postgres_or_skip()
    schema = f"oq_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request, tmp_path):
    """The queue database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/order_queue.db"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def store(queue_url):
    """A queue store with its schema, on each backend."""
    queue_store = QueueStore(queue_url, sealing=TEST_SEALING)
    queue_store.schema.create()
    yield queue_store
    queue_store.dispose()


@pytest.fixture
def frozen_heap():
    """For tests that time arrivals at the in-process fake broker: the broker shares
    this process, and a full collection of the whole test session's heap (~200 ms,
    seen here) would delay its arrival stamps.  Freezing what exists now keeps
    collections small; the dispatcher's own pacing is what is measured."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def broker():
    with FakeBroker() as fake:
        yield fake


def make_app(tmp_path, **overrides):
    """A host app on fresh SQLite files; ``overrides`` go into its config."""
    from app import create_app

    config = {
        "TESTING": True,
        "WTF_CSRF_ENABLED": False,
        "SECRET_KEY": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path}/openalgo.db",
        "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{tmp_path}/order_queue.db",
        "HOST_SERVER": "http://127.0.0.1:9",
        "ORDER_QUEUE_HEARTBEAT_SECONDS": "0.2",
        "ORDER_QUEUE_HEARTBEAT_TIMEOUT_SECONDS": "1",
        "ORDER_QUEUE_RETRY_BASE_SECONDS": "0.05",
        "ORDER_QUEUE_RECONCILE_INTERVAL_SECONDS": "0.2",
        "ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS": "0",  # see tests/support/app_process.py
    }
    config.update({k: str(v) if k.startswith("ORDER_QUEUE_") else v for k, v in overrides.items()})
    return create_app(config)


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path, monkeypatch, _pepper):
    """The host app, once per queue backend (host tables stay on SQLite).  pytest-flask's
    ``client`` fixture builds on this one.  A test about SQLite files narrows it with
    ``@pytest.mark.parametrize("app", ["sqlite"], indirect=True)``."""
    monkeypatch.delenv("ORDER_QUEUE_DATABASE_URL", raising=False)
    overrides = {}
    if request.param == "postgresql":
        overrides["ORDER_QUEUE_DATABASE_URL"] = request.getfixturevalue("postgres_schema_url")
    application = make_app(tmp_path, **overrides)
    yield application
    runtime.stop_current(timeout=5)
    runtime.current().store.dispose()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
