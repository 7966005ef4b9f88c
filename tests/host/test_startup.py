"""``python app.py`` as a new user starts it: a busy port is named before anything runs,
and a bad setting stops the app with the variable's name."""

import socket
import subprocess
import sys

import pytest

from services.order_queue.settings import SettingsError
from tests.conftest import TEST_PEPPER, make_app
from tests.support.app_process import ROOT, free_port


def test_a_busy_port_is_named_with_the_setting_before_anything_starts(tmp_path):
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        started = subprocess.run(
            [sys.executable, "app.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PATH": "/usr/bin:/bin",
                "FLASK_PORT": str(port),
                "APP_KEY": "k",
                "API_KEY_PEPPER": TEST_PEPPER,
                "DATABASE_URL": f"sqlite:///{tmp_path}/openalgo.db",
                "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{tmp_path}/order_queue.db",
            },
            stdin=subprocess.DEVNULL,
        )
    assert started.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in started.stderr
    assert "set FLASK_PORT" in started.stderr
    assert "listening on" not in started.stderr and "dispatcher" not in started.stderr


def test_app_refuses_to_start_with_a_bad_value(tmp_path):
    with pytest.raises(SettingsError, match="ORDER_QUEUE_REGULAR_RATE"):
        make_app(tmp_path, ORDER_QUEUE_REGULAR_RATE="fast")


def test_app_refuses_to_start_without_a_pepper(tmp_path, monkeypatch):
    monkeypatch.delenv("API_KEY_PEPPER")
    with pytest.raises(SettingsError, match="API_KEY_PEPPER"):
        make_app(tmp_path)
