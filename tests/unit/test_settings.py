"""Settings: defaults, bad values named at start-up, every variable documented."""

import re
from pathlib import Path

import pytest

from services.order_queue.settings import SettingsError, load_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design():
    settings = load_settings({})
    # docs/design.md, "Pacing": both lanes default to the host's "10 per second"; smart
    # orders for the same instrument keep upstream's 1 s settle gap between them.
    assert (settings.max_retries, settings.regular_rate, settings.smart_rate) == (3, 10, 10)
    assert settings.smart_settle_seconds == 1.0
    assert settings.database_url == "sqlite:///db/order_queue.db"
    assert settings.max_age_seconds == 300


@pytest.mark.parametrize(
    "variable, value",
    [
        ("ORDER_QUEUE_MAX_RETRIES", "three"),
        ("ORDER_QUEUE_MAX_RETRIES", "0"),
        ("ORDER_QUEUE_REGULAR_RATE", "1.5"),
        ("ORDER_QUEUE_SMART_RATE", "-1"),
        ("ORDER_QUEUE_MAX_AGE_SECONDS", "soon"),
        ("HOST_SERVER", "127.0.0.1:5000"),
    ],
)
def test_bad_values_fail_naming_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_env_example_documents_every_variable():
    # A commented-out line ("# NAME=value") documents a setting best left unset.
    documented = set(re.findall(r"^(?:# )?([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(setting_names()) <= documented
    assert {"API_KEY_PEPPER", "APP_KEY", "FLASK_PORT", "DATABASE_URL"} <= documented


def test_budgets_come_from_the_hosts_limits_unless_ours_are_set():
    host = {"ORDER_RATE_LIMIT": "8 per second", "SMART_ORDER_RATE_LIMIT": "100 per minute"}
    settings = load_settings(host)
    assert (settings.regular_rate, settings.regular_rate_window_seconds) == (8, None)
    assert (settings.smart_rate, settings.smart_rate_window_seconds) == (100, 60.0)
    ours = load_settings({**host, "ORDER_QUEUE_SMART_RATE": "3"})
    assert (ours.smart_rate, ours.smart_rate_window_seconds) == (3, None)
    with pytest.raises(SettingsError, match="SMART_ORDER_RATE_LIMIT"):
        load_settings({"SMART_ORDER_RATE_LIMIT": "lots"})


def test_first_run_writes_a_private_env_but_never_over_sealed_orders(tmp_path, monkeypatch):
    import app

    monkeypatch.setattr(app, "ENV_FILE", str(tmp_path / ".env"))
    monkeypatch.delenv("API_KEY_PEPPER", raising=False)
    monkeypatch.setattr(app, "load_dotenv", lambda path: None)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "order_queue.db").write_bytes(b"")
    with pytest.raises(SystemExit, match="Restore the .env"):
        app.bootstrap_env()
    assert not (tmp_path / ".env").exists()
    (tmp_path / "db" / "order_queue.db").unlink()
    app.bootstrap_env()
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert "API_KEY_PEPPER=" in (tmp_path / ".env").read_text()


def test_the_host_webhook_limit_sets_retry_after_and_never_stops_the_start():
    assert (
        load_settings({"WEBHOOK_RATE_LIMIT": "100 per minute"}).webhook_limit_window_seconds == 60
    )
    assert load_settings({"WEBHOOK_RATE_LIMIT": "5 per second"}).webhook_limit_window_seconds == 1
    assert load_settings({"WEBHOOK_RATE_LIMIT": "1000 per day"}).webhook_limit_window_seconds == 60
