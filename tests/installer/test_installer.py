"""``python -m install.openalgo`` against a miniature OpenAlgo tree
(tests/support/fixtures/openalgo)."""

import io
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from install import edits
from install import openalgo as installer
from install.manifest import PLUGIN_FILES
from tests.conftest import TEST_PEPPER

FIXTURE = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "openalgo"
ROOT = Path(__file__).resolve().parents[2]


def snapshot(tree: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tree)): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture
def tree(tmp_path):
    target = tmp_path / "openalgo"
    shutil.copytree(FIXTURE, target)
    return target


def run(*args):
    out = io.StringIO()
    target, *flags = args
    if "--check" in flags:
        return installer.check(target, out=out), out.getvalue()
    if "--uninstall" in flags:
        return installer.uninstall(target, out=out), out.getvalue()
    return installer.install(target, dry_run="--dry-run" in flags, out=out), out.getvalue()


def test_install_copies_byte_identical_files_and_check_passes(tree):
    assert run(tree, "--check")[0] == 1
    assert run(tree)[0] == 0
    for path in PLUGIN_FILES:
        assert (tree / path).read_bytes() == (ROOT / path).read_bytes(), path
    code, report = run(tree, "--check")
    assert code == 0 and "installed and current (version " in report
    app_py = (tree / "app.py").read_text()
    assert '("Order Queue DB", ensure_order_queue_tables_exists)' in app_py
    assert "order_queue_plugin.init_app(app)" in app_py
    assert "order_queue_plugin.start(app)" in app_py
    assert '"database.order_queue_db", "db_session"' in (tree / "utils/db_sessions.py").read_text()
    assert "ORDER_QUEUE_MAX_RETRIES" in (tree / ".sample.env").read_text()


def test_second_install_changes_nothing(tree):
    run(tree)
    before = snapshot(tree)
    code, report = run(tree)
    assert code == 0 and "nothing changed" in report
    assert snapshot(tree) == before


def test_uninstall_restores_the_original_tree_byte_for_byte(tree):
    original = snapshot(tree)
    run(tree)
    run(tree)
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == original
    assert not (tree / "services").exists() and not (tree / ".order_queue_plugin").exists()


def test_upgrading_removes_files_an_earlier_version_installed_and_no_longer_has(tree):
    original = snapshot(tree)
    run(tree)
    # What an install of the previous layout left: a module that has since been split.
    old = tree / "services" / "order_queue_dispatcher.py"
    old.write_text("# the previous version's dispatcher\n")
    state = tree / ".order_queue_plugin" / "installed.json"
    record = json.loads(state.read_text())
    record["added"].append("services/order_queue_dispatcher.py")
    state.write_text(json.dumps(record))
    assert (
        "would remove (no longer part of the plugin): services/order_queue_dispatcher.py"
        in run(tree, "--dry-run")[1]
    )
    code, report = run(tree)
    assert code == 0 and "removed (no longer part of the plugin)" in report
    assert not old.exists()
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == original


def test_uninstall_leaves_no_plugin_folder_behind_after_openalgo_ran_it(tree):
    original = snapshot(tree)
    run(tree)
    for folder in ("database/order_queue", "services/order_queue"):  # Python's cache of a run
        cache = tree / folder / "__pycache__"
        cache.mkdir()
        (cache / "store.cpython-312.pyc").write_bytes(b"compiled")
    assert run(tree, "--uninstall")[0] == 0
    assert not (tree / "database" / "order_queue").exists()
    assert snapshot(tree) == original


def test_uninstall_keeps_changes_made_since_and_removes_only_the_plugin(tree):
    """OpenAlgo updated (or hand-edited) after install: those changes survive."""
    original = snapshot(tree)
    run(tree)
    app_py = tree / "app.py"
    app_py.write_text(
        app_py.read_text().replace("def create_app():", "def create_app():  # updated upstream")
    )
    code, report = run(tree, "--uninstall")
    assert code == 0 and "app.py changed since install" in report
    expected = original["app.py"].replace(
        b"def create_app():", b"def create_app():  # updated upstream"
    )
    assert app_py.read_bytes() == expected
    assert {k: v for k, v in snapshot(tree).items() if k != "app.py"} == {
        k: v for k, v in original.items() if k != "app.py"
    }


def test_uninstall_refuses_when_the_plugin_lines_were_changed(tree):
    run(tree)
    strategy = tree / "blueprints" / "strategy.py"
    strategy.write_text(
        strategy.read_text().replace(
            "set_deadline_provider(_order_queue", "# set_deadline_provider(_order_queue"
        )
    )
    before = snapshot(tree)
    result = subprocess.run(
        [sys.executable, "-m", "install.openalgo", str(tree), "--uninstall"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "blueprints/strategy.py" in result.stderr and "nothing was written" in result.stderr
    assert snapshot(tree) == before


def test_a_file_the_checkout_already_had_is_kept_and_restored(tree):
    (tree / "services").mkdir()
    (tree / "services" / "order_queue_service.py").write_text("# the checkout's own file\n")
    original = snapshot(tree)
    run(tree)
    assert (tree / "services" / "order_queue_service.py").read_bytes() == (
        ROOT / "services" / "order_queue_service.py"
    ).read_bytes()
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == original


# An upstream commit: one line changed and one added in each of app.py and strategy.py.
UPSTREAM_CHANGES = [
    ("app.py", "def create_app():\n", "def create_app():  # updated upstream\n"),
    (
        "app.py",
        "    csrf.exempt(chartink_bp)\n",
        '    csrf.exempt(chartink_bp)\n    app.config["UPDATED"] = True\n',
    ),
    (
        "blueprints/strategy.py",
        '"""Add order to the in-memory queue."""',
        '"""Add order to the in-memory queue (updated upstream)."""',
    ),
    (
        "blueprints/strategy.py",
        "order_queue = queue.Queue()\n",
        "order_queue = queue.Queue()\nORDER_DELAY_SECONDS = 0.1\n",
    ),
]


def openalgo_update(tree: Path) -> None:
    for path, old, new in UPSTREAM_CHANGES:
        text = (tree / path).read_text()
        assert old in text, (path, old)
        (tree / path).write_text(text.replace(old, new, 1))


@pytest.fixture
def updated(tmp_path):
    """The fixture tree as OpenAlgo's update leaves it, the plugin never installed."""
    target = tmp_path / "updated"
    shutil.copytree(FIXTURE, target)
    openalgo_update(target)
    return snapshot(target)


def test_reinstall_after_an_openalgo_update_then_uninstall_gives_the_updated_tree(tree, updated):
    """Edits discarded (git checkout -- .) so the update applies, OpenAlgo updated, plugin
    installed again: uninstall must not bring back the files the first install saw."""
    pristine = snapshot(tree)
    run(tree)
    for path, data in pristine.items():  # the plugin's edits discarded
        (tree / path).write_bytes(data)
    openalgo_update(tree)
    assert run(tree)[0] == 0
    assert run(tree, "--check")[0] == 0
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == updated
    assert not (tree / "services").exists() and not (tree / ".order_queue_plugin").exists()


def test_reinstall_after_an_update_merged_around_the_edits_keeps_the_update(tree, updated):
    """git pull merged the update around the plugin's edits, then the plugin reinstalled."""
    run(tree)
    openalgo_update(tree)
    assert run(tree)[0] == 0
    assert run(tree, "--check")[0] == 0
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == updated


def test_uninstall_after_an_openalgo_update_without_reinstall_keeps_the_update(tree):
    """Edits discarded and OpenAlgo updated, then uninstalled straight away: the updated
    files, the checkout's own file at a plugin path included, are left as they are."""
    own = tree / "services" / "order_queue_service.py"
    own.parent.mkdir()
    own.write_text("# the checkout's own file\n")
    pristine = snapshot(tree)
    run(tree)
    for path, data in pristine.items():  # the plugin's edits discarded
        (tree / path).write_bytes(data)
    openalgo_update(tree)
    own.write_text("# the checkout's own file, updated upstream\n")
    updated = {path: data for path, data in snapshot(tree).items() if path in pristine}
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == updated


def test_reinstall_refuses_when_the_plugin_lines_were_changed(tree):
    """Their original could not be told, so nothing is backed up or written."""
    run(tree)
    strategy = tree / "blueprints" / "strategy.py"
    strategy.write_text(
        strategy.read_text().replace(
            "set_deadline_provider(_order_queue", "# set_deadline_provider(_order_queue"
        )
    )
    before = snapshot(tree)
    with pytest.raises(edits.InstallError, match="blueprints/strategy.py"):
        run(tree)
    assert snapshot(tree) == before


def test_reinstall_after_the_checkouts_own_file_changed_keeps_the_change(tree):
    own = tree / "services" / "order_queue_service.py"
    own.parent.mkdir()
    own.write_text("# the checkout's own file\n")
    original = snapshot(tree)
    run(tree)
    own.write_text("# the checkout's own file, updated upstream\n")  # plugin's copy discarded
    assert run(tree)[0] == 0
    assert own.read_bytes() == (ROOT / "services" / "order_queue_service.py").read_bytes()
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == {
        **original,
        "services/order_queue_service.py": b"# the checkout's own file, updated upstream\n",
    }


def test_a_plugin_update_over_an_old_install_uninstalls_to_the_original(
    tree, tmp_path, monkeypatch
):
    """Plugin v1 installed, then v2 (other file contents, one app.py edit more): the v1
    files are the plugin's, not the checkout's, and nothing of either version remains."""
    own = tree / "services" / "order_queue_service.py"
    own.parent.mkdir()
    own.write_text("# the checkout's own file\n")
    original = snapshot(tree)
    plugin_v1 = tmp_path / "plugin-v1"
    for path in PLUGIN_FILES:
        (plugin_v1 / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, plugin_v1 / path)
    for path in ("services/order_queue_service.py", "services/order_queue/settings.py"):
        with open(plugin_v1 / path, "a") as file:
            file.write("# plugin v1\n")
    new_app_edit = [e for e in edits.CORE_EDITS if e.path == "app.py"][-1]
    with monkeypatch.context() as v1:
        v1.setattr(installer, "SOURCE_ROOT", plugin_v1)
        v1.setattr(edits, "CORE_EDITS", [e for e in edits.CORE_EDITS if e is not new_app_edit])
        assert run(tree)[0] == 0
    code, report = run(tree)
    assert code == 0 and "3 files changed" in report
    assert run(tree, "--check")[0] == 0
    assert run(tree, "--uninstall")[0] == 0
    assert snapshot(tree) == original
    assert not (tree / ".order_queue_plugin").exists()


def test_dry_run_shows_files_and_diffs_and_writes_nothing(tree):
    before = snapshot(tree)
    code, report = run(tree, "--dry-run")
    assert code == 0 and snapshot(tree) == before
    assert "would add: database/order_queue_db.py" in report
    assert "+from services.order_queue_service import queue_order" in report
    assert "--- a/app.py" in report


def test_check_notices_an_outdated_plugin_file(tree):
    run(tree)
    (tree / "services/order_queue_service.py").write_text("# edited by hand\n")
    code, report = run(tree, "--check")
    assert code == 1 and "outdated: services/order_queue_service.py" in report


ANCHORS = [
    (edit, pattern)
    for edit in edits.EDITS
    for pattern in ((edit.anchor,) if edit.anchor else edit.requires)
    if pattern != edits.QUEUE_ORDER
]


@pytest.mark.parametrize("edit,pattern", ANCHORS, ids=lambda v: getattr(v, "path", v))
def test_missing_anchor_is_refused_and_nothing_is_written(tree, edit, pattern):
    import re

    file = tree / edit.path
    file.write_text(re.sub(pattern, "# (moved elsewhere)", file.read_text(), flags=re.M))
    before = snapshot(tree)
    result = subprocess.run(
        [sys.executable, "-m", "install.openalgo", str(tree)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert edit.path in result.stderr and "anchor not found" in result.stderr
    assert "nothing was written" in result.stderr
    assert snapshot(tree) == before


def without_queue_order(tree, path):
    """The blueprint as upstream left it after retiring its in-memory queue."""
    file = tree / path
    file.write_text(
        file.read_text().replace(
            "def queue_order(endpoint, payload):", "def place_in_process(endpoint, payload):"
        )
    )


def test_a_blueprint_without_queue_order_is_left_alone_and_the_report_says_so(tree):
    without_queue_order(tree, "blueprints/strategy.py")
    strategy_before = (tree / "blueprints/strategy.py").read_bytes()
    code, report = run(tree)
    assert code == 0
    assert (tree / "blueprints/strategy.py").read_bytes() == strategy_before
    assert "durable: Chartink webhooks" in report
    assert "NOT durable: Strategy webhooks" in report and "has no queue_order" in report
    assert "register_squareoffs(" in (tree / "blueprints/chartink.py").read_text()
    code, report = run(tree, "--check")
    assert code == 0 and "NOT durable: Strategy webhooks" in report


def test_an_openalgo_with_no_queue_at_all_is_refused(tree):
    without_queue_order(tree, "blueprints/strategy.py")
    without_queue_order(tree, "blueprints/chartink.py")
    before = snapshot(tree)
    with pytest.raises(edits.InstallError, match="no queue to make durable"):
        run(tree)
    assert snapshot(tree) == before


PATCHED_APP_SCRIPT = textwrap.dedent("""
    import os
    import sqlite3
    import threading
    from datetime import datetime

    import app
    from database.strategy_db import Strategy, db_session
    from services.order_queue import runtime
    from services.order_queue.deadlines import deadline_for

    assert app.app.db_ready.wait(20)
    for _ in range(400):  # the dispatcher starts once db_ready is set
        if runtime.current().status()["dispatcher_running"]:
            break
        threading.Event().wait(0.05)
    client = app.app.test_client()
    for path in ("/strategy/webhook/s1", "/chartink/webhook/c1"):
        response = client.post(path, json={"symbol": "SBIN", "action": "BUY"})
        assert response.status_code == 200, response.data
    names = {t.name for t in threading.enumerate()}
    assert "in-memory-order-processor" not in names, names
    assert "order-queue-dispatcher" in names, names
    assert client.get("/order-queue/api/health").status_code in (200, 503)

    # The squareoff deadline comes from the host's Strategy model.
    db_session.add_all([Strategy(name="s1", is_intraday=True, squareoff_time="15:15"),
                        Strategy(name="swing", is_intraday=False, squareoff_time="15:15")])
    db_session.commit()
    morning = datetime(2026, 11, 23, 4, 0)  # 09:30 IST
    assert deadline_for({"strategy": "s1"}, morning) == datetime(2026, 11, 23, 9, 45)
    assert deadline_for({"strategy": "swing"}, morning) is None
    assert deadline_for({"strategy": "nobody"}, morning) is None

    # Chartink's entries expire at its strategies' squareoff too.
    from database.chartink_db import ChartinkStrategy, ChartinkSymbolMapping
    from database.chartink_db import db_session as chartink_session
    chartink_session.add(ChartinkStrategy(name="scan", is_intraday=True,
                                          squareoff_time="15:05"))
    chartink_session.commit()
    assert deadline_for({"strategy": "scan"}, morning) == datetime(2026, 11, 23, 9, 35)

    # Squareoffs: the installed blocks hand both blueprints' functions to the queue, which
    # registers each active intraday squareoff again and runs one missed while down.
    from database.strategy_db import StrategySymbolMapping
    from blueprints import chartink, strategy
    from services.order_queue import squareoffs
    db_session.add(StrategySymbolMapping(strategy_id=1, symbol="SBIN", exchange="NSE",
                                         quantity=1, product_type="MIS"))
    db_session.commit()
    chartink_session.add(ChartinkSymbolMapping(strategy_id=1, chartink_symbol="TCS",
                                               exchange="NSE", quantity=1, product_type="MIS"))
    chartink_session.commit()
    monday_1512_ist = datetime(2026, 11, 30, 9, 42)
    runtime.current().clock.now = lambda: monday_1512_ist
    done = squareoffs.catch_up(runtime.current())
    # Chartink's 15:05 was 7 minutes ago: run now; the Strategy's 15:15 is still ahead.
    assert [(d["source"], d["outcome"]) for d in done] == [("chartink", "caught_up")], done
    assert set(strategy.scheduled_jobs) == {"squareoff_1"}, strategy.scheduled_jobs
    assert set(chartink.scheduled_jobs) == {"squareoff_1"}, chartink.scheduled_jobs
    job = chartink.scheduled_jobs["squareoff_1"][0]
    assert job(1) is None  # the scheduler's own run that day: already done

    # Another writer holds the queue database past the busy timeout: the host's
    # catch-all 500 becomes a 503, and the next webhook after the fault goes through.
    blocker = sqlite3.connect(os.environ["QUEUE_DB"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    response = client.post("/strategy/webhook/s1", json={"symbol": "TCS", "action": "BUY"})
    assert response.status_code == 503, (response.status_code, response.data)
    assert "NOT queued" in response.get_json()["error"], response.data
    assert response.headers["Retry-After"] == "5"
    blocker.execute("ROLLBACK")
    response = client.post("/strategy/webhook/s1", json={"symbol": "INFY", "action": "BUY"})
    assert response.status_code == 200, response.data
    print("patched app ok")
""")


def test_patched_tree_imports_and_webhooks_reach_the_durable_queue(tree, tmp_path):
    run(tree)
    queue_db = tmp_path / "queue" / "order_queue.db"
    env = {
        "PATH": "/usr/bin:/bin",
        "API_KEY_PEPPER": TEST_PEPPER,
        "APP_KEY": "fixture",
        "FIXTURE_APIKEY": "f" * 64,
        "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{queue_db}",
        "QUEUE_DB": str(queue_db),
        "ORDER_QUEUE_SQLITE_BUSY_TIMEOUT_MS": "300",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'openalgo.db'}",
        "HOST_SERVER": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", PATCHED_APP_SCRIPT],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "patched app ok" in result.stdout
    with sqlite3.connect(queue_db) as conn:
        rows = conn.execute("SELECT strategy, symbol FROM order_queue ORDER BY id").fetchall()
    assert rows == [("s1", "SBIN"), ("c1", "SBIN"), ("scan", "TCS"), ("s1", "INFY")], rows


SIGTERM_SCRIPT = textwrap.dedent("""
    import os
    import signal

    import time

    import app
    from services.order_queue import runtime

    assert app.app.db_ready.wait(20)
    deadline = time.monotonic() + 20  # it starts once db_ready is set
    while not runtime.current().status()["dispatcher_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.current().dispatcher.alive
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()  # the handler stops the dispatcher and exits; never returns
""")


def test_patched_tree_stops_the_dispatcher_gracefully_on_sigterm(tree, tmp_path):
    """The dispatcher is started from the fixture's DB-init thread, like OpenAlgo's, where
    no signal handler can be installed; the installer's main-thread line makes SIGTERM
    stop it cleanly (recorded in the queue database) and exit 0."""
    run(tree)
    queue_db = tmp_path / "order_queue.db"
    env = {
        "PATH": "/usr/bin:/bin",
        "API_KEY_PEPPER": TEST_PEPPER,
        "APP_KEY": "fixture",
        "FIXTURE_APIKEY": "f" * 64,
        "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{queue_db}",
        "HOST_SERVER": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr  # not killed by the signal
    with sqlite3.connect(queue_db) as conn:
        [(stopped_at,)] = conn.execute("SELECT stopped_at FROM order_queue_dispatchers")
    assert stopped_at is not None


def test_check_names_the_installed_and_the_new_version_when_files_are_outdated(tree):
    assert run(tree)[0] == 0
    init = tree / "services/order_queue/__init__.py"
    init.write_text(init.read_text().replace('VERSION = "', 'VERSION = "0.9-'))
    code, report = run(tree, "--check")
    assert code == 1
    assert "installed version 0.9-" in report and "this installer's" in report
    assert "CHANGELOG.md" in report
