"""``flask order-queue ...``: readable by default, --json for scripts, meaningful exits."""

import json
import subprocess
import sys
import time
from dataclasses import replace

from database.order_queue_db import QueueStore, utcnow
from services.order_queue import runtime
from tests.conftest import TEST_SEALING
from tests.support.app_process import ROOT, AppProcess
from tests.support.helpers import make_order, payload


def test_stats_human_and_json(app, runner):
    make_order("dead")
    human = runner.invoke(args=["order-queue", "stats"])
    assert human.exit_code == 0 and "dead" in human.output and "sent today: 0" in human.output
    assert "dispatchers running: NONE" in human.output
    data = json.loads(runner.invoke(args=["order-queue", "stats", "--json"]).output)
    assert data["depth"]["dead"]["regular"] == 1


def test_list_and_show(app, runner):
    order_id = make_order("dead", symbol="TCS", error="RMS rejected")
    listing = runner.invoke(args=["order-queue", "list", "--state", "dead"])
    assert f"#{order_id}" in listing.output and "RMS rejected" in listing.output
    rows = json.loads(runner.invoke(args=["order-queue", "list", "--json"]).output)
    assert [r["id"] for r in rows] == [order_id]
    shown = runner.invoke(args=["order-queue", "show", str(order_id)])
    assert shown.exit_code == 0 and "****9XyZ" in shown.output and "rejected" in shown.output
    assert runner.invoke(args=["order-queue", "show", "999"]).exit_code == 4
    assert runner.invoke(args=["order-queue", "list", "--state", "nope"]).exit_code == 2


def test_actions_and_exit_codes(app, runner):
    dead, pending = make_order("dead"), make_order("pending", symbol="INFY")
    done = runner.invoke(args=["order-queue", "dismiss", str(dead), "--note", "by hand"])
    assert done.exit_code == 0 and "dismissed" in done.output
    partial = runner.invoke(args=["order-queue", "cancel", str(pending), "999"])
    assert partial.exit_code == 1
    assert runtime.current().store.reads.get_order(pending)["state"] == "cancelled"


def test_replay_needs_confirm_after_a_later_send(app, runner):
    dead = make_order("dead", symbol="SBIN")
    make_order("sent", symbol="SBIN")
    held = runner.invoke(args=["order-queue", "replay", str(dead), "--json"])
    assert held.exit_code == 3 and json.loads(held.output)[0]["needs_confirmation"]
    done = runner.invoke(args=["order-queue", "replay", str(dead), "--confirm"])
    assert done.exit_code == 0
    assert runtime.current().store.reads.get_order(dead)["state"] == "pending"


def test_purge_keeps_dead_orders(app, runner):
    dead, sent = make_order("dead"), make_order("sent", symbol="TCS")
    time.sleep(0.1)
    result = runner.invoke(args=["order-queue", "purge", "--days", "0.000001"])  # 86 ms
    assert result.exit_code == 0 and "purged 1" in result.output
    assert runtime.current().store.reads.get_order(sent) is None
    assert runtime.current().store.reads.get_order(dead)["state"] == "dead"


def test_settling_not_placed_behind_a_sent_exit_needs_confirm(app, runner):
    entry = make_order("dead_in_doubt", symbol="SBIN")
    make_order("sent", symbol="SBIN")
    held = runner.invoke(args=["order-queue", "settle", str(entry), "--not-placed"])
    assert held.exit_code == 3 and "confirm" in held.output
    done = runner.invoke(args=["order-queue", "settle", str(entry), "--not-placed", "--confirm"])
    assert done.exit_code == 0
    assert runtime.current().store.reads.get_order(entry)["state"] == "pending"


def test_settle_in_doubt_orders(app, runner):
    placed, missing = make_order("dead_in_doubt"), make_order("dead_in_doubt", symbol="TCS")
    done = runner.invoke(args=["order-queue", "settle", str(placed), "--placed", "B-9"])
    assert done.exit_code == 0 and "B-9" in done.output
    again = runner.invoke(args=["order-queue", "settle", str(missing), "--not-placed"])
    assert again.exit_code == 0
    store = runtime.current().store
    assert store.reads.get_order(placed)["state"] == "sent"
    assert store.reads.get_order(missing)["state"] == "pending"
    assert runner.invoke(args=["order-queue", "settle", str(placed)]).exit_code == 2
    assert runner.invoke(args=["order-queue", "settle", str(placed), "--not-placed"]).exit_code == 1


def test_purge_refuses_a_non_positive_age(app, runner):
    sent = make_order("sent")
    for days in ("0", "-1"):
        refused = runner.invoke(args=["order-queue", "purge", "--days", days])
        assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert runtime.current().store.reads.get_order(sent) is not None


def test_an_unreachable_queue_database_is_one_line_and_exit_1(app, runner, tmp_path):
    runtime.build(
        replace(
            runtime.current().settings, database_url=f"sqlite:///{tmp_path}/missing-dir/gone.db"
        )
    )
    result = runner.invoke(args=["order-queue", "stats"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and len(result.output.splitlines()) == 1


def test_an_id_beyond_the_databases_range_is_an_unknown_order(app, runner):
    huge = str(2**64)
    shown = runner.invoke(args=["order-queue", "show", huge])
    assert shown.exit_code == 4 and "Traceback" not in shown.output
    assert shown.output.strip() == f"no order {huge}"
    replayed = runner.invoke(args=["order-queue", "replay", huge])
    assert replayed.exit_code == 1 and "no such order" in replayed.output


def test_replaying_an_order_that_is_not_dead_is_refused_before_any_confirmation(app, runner):
    sent = make_order("sent", symbol="INFY")
    make_order("sent", symbol="INFY")  # a later order for the instrument went out
    replayed = runner.invoke(args=["order-queue", "replay", str(sent)])
    assert replayed.exit_code == 1, replayed.output
    assert "order is sent, not dead" in replayed.output
    assert "confirm" not in replayed.output


def test_the_api_key_is_shown_on_request_and_passwords_have_a_minimum(app, runner):
    shown = runner.invoke(args=["user", "api-key"])
    assert shown.exit_code == 0
    key = shown.output.strip()
    assert len(key) == 64 and runner.invoke(args=["user", "api-key"]).output.strip() == key
    short = runner.invoke(args=["user", "set-password", "--password", "short"])
    assert short.exit_code == 2 and "at least 8 characters" in short.output
    assert runner.invoke(args=["user", "set-password", "--password", "long-enough"]).exit_code == 0


def queue_sealed_with_the_days_pepper(url: str, *, orders: int = 0) -> None:
    """A queue database whose check value (and ``orders`` queued orders) were sealed
    with the test pepper."""
    sealed = QueueStore(url, sealing=TEST_SEALING)
    sealed.schema.create()
    assert sealed.schema.check_pepper()
    for n in range(orders):
        sealed.intake.enqueue("placeorder", payload(f"S{n}"), now=utcnow(), max_age_seconds=300)
    sealed.dispose()


def test_a_worker_with_a_changed_pepper_refuses_to_start_and_says_why(tmp_path):
    changed = AppProcess(tmp_path, "http://127.0.0.1:9", "e" * 64)
    queue_sealed_with_the_days_pepper(changed.env["ORDER_QUEUE_DATABASE_URL"])
    worker = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "order-queue", "worker"],
        cwd=ROOT,
        env=changed.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert "worker not started" in worker.stderr and "API_KEY_PEPPER" in worker.stderr


def test_the_update_drain_with_a_changed_pepper_sends_nothing_and_says_why(tmp_path):
    changed = AppProcess(tmp_path, "http://127.0.0.1:9", "e" * 64)
    url = changed.env["ORDER_QUEUE_DATABASE_URL"]
    queue_sealed_with_the_days_pepper(url, orders=2)
    drain = subprocess.run(
        [sys.executable, "-m", "services.order_queue.drain", "an anchor was renamed"],
        cwd=tmp_path,  # its .env, if any, is the checkout's: none here
        env={**changed.env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drain.returncode == 1, drain.stdout + drain.stderr
    output = drain.stdout + drain.stderr
    assert "cannot deliver" in output and "API_KEY_PEPPER" in output
    store = QueueStore(url, sealing=TEST_SEALING)
    try:  # nothing dead-lettered as credentials: both wait for the old pepper
        assert store.reads.depth()["pending"]["regular"] == 2
    finally:
        store.dispose()
