"""OpenAlgo's own update paths, run with their own git commands against a checkout of a
local upstream that has a newer commit: the queue stays in force through each, and where
it cannot (an anchor gone), the failure is loud and no queued order is stranded."""

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from database.order_queue.store import QueueStore
from database.order_queue_db import utcnow
from install import openalgo as installer
from tests.conftest import TEST_PEPPER, TEST_SEALING
from tests.support.alert_receiver import Receiver
from tests.support.helpers import payload

FIXTURE = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "openalgo"
ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(folder, *args):
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=folder,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def commit_all(folder, message):
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)


@pytest.fixture
def openalgo(tmp_path):
    """An upstream repository, a checkout of it with its own virtual environment (which
    finds this project's packages), and the plugin installed there."""
    upstream = tmp_path / "upstream"
    shutil.copytree(FIXTURE, upstream)
    git(upstream, "init", "-q")
    commit_all(upstream, "OpenAlgo as installed")
    checkout = tmp_path / "openalgo"
    git(tmp_path, "clone", "-q", str(upstream), str(checkout))
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(checkout / ".venv")], check=True
    )
    [site] = (checkout / ".venv").glob("lib/python3*/site-packages")
    (site / "project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = installer.io.StringIO()
    assert installer.install(checkout, out=out) == 0
    assert "start-up hook in" in out.getvalue()
    return upstream, checkout


def newer_upstream_commit(upstream, change=None):
    """Upstream moves on: a change away from the plugin's anchors, or ``change``."""
    strategy = upstream / "blueprints" / "strategy.py"
    strategy.write_text(strategy.read_text() + "\n# upstream: a newer commit\n")
    if change:
        change(upstream)
    commit_all(upstream, "upstream moves on")


def check(checkout):
    out = installer.io.StringIO()
    return installer.check(checkout, out=out), out.getvalue()


def start_openalgo(checkout, tmp_path, **env):
    """``python app.py`` with OpenAlgo's virtual environment, as its scripts start it."""
    environment = {
        "PATH": os.environ["PATH"],
        "API_KEY_PEPPER": TEST_PEPPER,
        "APP_KEY": "fixture",
        "FIXTURE_APIKEY": "f" * 64,
        "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{tmp_path / 'order_queue.db'}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'openalgo.db'}",
        "HOST_SERVER": "http://127.0.0.1:9",
        **env,
    }
    return subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "app.py"],
        cwd=checkout,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def queued_symbols(tmp_path):
    with sqlite3.connect(tmp_path / "order_queue.db") as conn:
        return [symbol for (symbol,) in conn.execute("SELECT symbol FROM order_queue ORDER BY id")]


def stash_and_pull(checkout):
    """``install/update.sh``: stash local changes, pull, and leave the stash."""
    git(checkout, "stash", "push", "-m", "auto-stash before update")
    git(checkout, "pull", "-q", "origin", "main")


def fetch_and_reset(checkout):
    """``install/install-docker-multi-custom-ssl.sh``."""
    git(checkout, "fetch", "-q", "origin")
    git(checkout, "reset", "-q", "--hard", "origin/main")


@pytest.mark.parametrize(
    "update,upstream_moves",
    [(stash_and_pull, True), (stash_and_pull, False), (fetch_and_reset, True)],
    ids=["stash+pull newer", "stash+pull up to date", "reset --hard"],
)
def test_the_queue_stays_in_force_through_openalgos_update_paths(
    openalgo, tmp_path, update, upstream_moves
):
    upstream, checkout = openalgo
    if upstream_moves:
        newer_upstream_commit(upstream)
    update(checkout)
    assert "order_queue_plugin" not in (checkout / "app.py").read_text()  # edits gone
    code, report = check(checkout)
    assert code == 0 and "the start-up hook puts them back" in report, report

    started = start_openalgo(checkout, tmp_path, FIXTURE_SYMBOL="TCS")
    assert started.returncode == 0, started.stderr
    assert "webhook 200 via services.order_queue_service" in started.stdout, started.stdout
    assert "re-applied to app.py" in started.stderr
    assert queued_symbols(tmp_path) == ["TCS"]
    code, report = check(checkout)
    assert code == 0 and "installed and current" in report, report
    if upstream_moves:  # the update itself is kept
        assert "# upstream: a newer commit" in (checkout / "blueprints/strategy.py").read_text()


def test_an_update_that_removes_an_anchor_is_loud_and_strands_no_order(openalgo, tmp_path, broker):
    upstream, checkout = openalgo
    queue_url = f"sqlite:///{tmp_path / 'order_queue.db'}"
    store = QueueStore(queue_url, sealing=TEST_SEALING)
    store.schema.create()
    store.intake.enqueue("placeorder", payload("INFY"), now=utcnow(), max_age_seconds=300)
    store.dispose()

    def rename_the_timing_line(tree):
        app_py = tree / "app.py"
        app_py.write_text(app_py.read_text().replace("db_init_time", "db_init_ms"))

    newer_upstream_commit(upstream, rename_the_timing_line)
    stash_and_pull(checkout)
    code, report = check(checkout)
    assert code == 1 and "NOT in force" in report and "anchor not found" in report, report

    receiver = Receiver()
    try:
        started = start_openalgo(
            checkout,
            tmp_path,
            HOST_SERVER=broker.base_url,
            ORDER_QUEUE_ALERT_WEBHOOK_URL=receiver.url,
        )
        assert started.returncode == 0, started.stderr
        # OpenAlgo runs on without the queue, and says so.
        assert "webhook 200 via blueprints.strategy" in started.stdout, started.stdout
        assert "ERROR order queue plugin NOT in force" in started.stderr
        # What the queue had acknowledged before the update still reaches the broker.
        assert broker.wait_for(1, timeout=30)
        assert [r.body["symbol"] for r in broker.received] == ["INFY"]
        assert receiver.wait_for(1)
        assert "NOT in force" in receiver.bodies[0]["text"]
    finally:
        receiver.server.shutdown()


def test_uninstall_takes_the_start_up_hook_away(openalgo):
    _upstream, checkout = openalgo
    [site] = (checkout / ".venv").glob("lib/python3*/site-packages")
    assert (site / "order_queue_plugin.pth").exists()
    assert installer.uninstall(checkout, out=installer.io.StringIO()) == 0
    assert not (site / "order_queue_plugin.pth").exists()
    assert not (site / "order_queue_plugin_hook.py").exists()
    assert git(checkout, "status", "--porcelain") == ""


def test_a_postgresql_queue_without_its_driver_says_what_to_install_and_where(openalgo):
    _upstream, checkout = openalgo
    (checkout / ".env").write_text("ORDER_QUEUE_DATABASE_URL='postgresql://u@db/openalgo'\n")
    # The checkout's environment finds this project's packages, psycopg among them;
    # hide it the way a fresh OpenAlgo environment lacks it.
    [site] = (checkout / ".venv").glob("lib/python3*/site-packages")
    (site / "no_psycopg.py").write_text(
        "import sys\nsys.modules['psycopg'] = None  # as if not installed\n"
    )
    (site / "zz_no_psycopg.pth").write_text("import no_psycopg\n")
    out = installer.io.StringIO()
    assert installer.install(checkout, out=out) == 0
    assert "psycopg is not installed in" in out.getvalue()
    assert "pip install 'psycopg[binary]==3.2.13'" in out.getvalue()
    code, report = check(checkout)
    assert code == 1 and "psycopg is not installed" in report, report
    (site / "zz_no_psycopg.pth").unlink()
    code, report = check(checkout)
    assert code == 0, report
