"""The image OpenAlgo's Docker users build from their checkout, built by the
Dockerfile's steps without Docker (Docker cannot run here): the build context filtered
by the checkout's ``.dockerignore`` into a folder that stands for ``/app``, a fresh
environment with the requirements and no hook of any other environment, ``.env`` and
``db/`` as the compose file mounts them (``db/`` outliving every image, as the named
volume does), and ``start.sh``'s exec line run from the image's root.  Then a webhook
must reach the durable queue, after the install, and after each of OpenAlgo's update
paths followed by a rebuild; where it cannot (an anchor gone), the container says so
loudly, alerts, delivers what the queue holds and still serves OpenAlgo.

Not emulated: Docker itself (layers, users, the network): ``COPY . .`` is a filtered
copy, the container a process started in the image's folder.
"""

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from database.order_queue.store import QueueStore
from database.order_queue_db import utcnow
from install import image_hook
from install import openalgo as installer
from tests.conftest import TEST_PEPPER, TEST_SEALING
from tests.installer.test_updates import (
    FIXTURE,
    ROOT,
    check,
    fetch_and_reset,
    newer_upstream_commit,
    openalgo,  # noqa: F401 (fixture)
    stash_and_pull,
)
from tests.support.alert_receiver import Receiver
from tests.support.app_process import free_port
from tests.support.helpers import payload
from tests.support.server_venv import server_python


def build_image(checkout: Path, root: Path) -> Path:
    """``COPY . .`` into ``root/app``, filtered by the checkout's ``.dockerignore``;
    the state volume ``root/volumes/db`` is mounted at ``app/db``."""
    app = root / "app"
    if app.exists():
        shutil.rmtree(app)  # a rebuild (--no-cache) starts from nothing
    patterns = image_hook.dockerignore_patterns(checkout)
    for source in sorted(checkout.rglob("*")):
        relative = source.relative_to(checkout).as_posix()
        if source.is_dir() or image_hook.left_out(relative, patterns):
            continue
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, app / relative)
    volume = root / "volumes" / "db"
    volume.mkdir(parents=True, exist_ok=True)
    (app / "db").symlink_to(volume)
    if (checkout / ".env").exists():
        shutil.copy2(checkout / ".env", app / ".env")  # ./.env:/app/.env
    return app


def start_command(app: Path, port: int) -> list[str]:
    """``start.sh``'s exec line, with the image's environment (``/app/.venv``) being a
    fresh one with the requirements only, and the bind on loopback."""
    [line] = [
        line.strip()
        for line in (app / "start.sh").read_text().splitlines()
        if line.strip().startswith("exec ")
    ]
    words = shlex.split(line)[1:]
    assert words[0] == "/app/.venv/bin/gunicorn"
    words = [str(server_python()), "-m", "gunicorn", *words[1:]]
    return [f"127.0.0.1:{port}" if w.startswith("0.0.0.0:") else w for w in words]


class Container:
    def __init__(self, app: Path, **env):
        self.port = free_port()
        self.log_path = app.parent / "container.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            start_command(app, self.port),
            cwd=app,
            env={
                "PATH": os.environ["PATH"],
                "API_KEY_PEPPER": TEST_PEPPER,
                "APP_KEY": "fixture",
                "FIXTURE_APIKEY": "f" * 64,
                "HOST_SERVER": "http://127.0.0.1:9",
                **env,
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def webhook(self, symbol: str) -> httpx.Response:
        deadline = time.monotonic() + 60
        while True:
            try:
                return httpx.post(
                    f"http://127.0.0.1:{self.port}/strategy/webhook/docker",
                    json={"symbol": symbol, "action": "BUY"},
                    timeout=10,
                )
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError(f"the container did not serve:\n{self.log()}") from None
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(30)


def durable_symbols(root: Path) -> list[str]:
    database = root / "volumes" / "db" / "order_queue.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as conn:
        return [s for (s,) in conn.execute("SELECT symbol FROM order_queue ORDER BY id")]


def serve_one_webhook(checkout: Path, root: Path, symbol: str, **env) -> tuple[int, str]:
    """Build the image, start the container, send one alert; (status, container log)."""
    app = build_image(checkout, root)
    container = Container(app, **env)
    try:
        status = container.webhook(symbol).status_code
    finally:
        container.stop()
    return status, container.log()


def test_the_image_built_after_install_has_the_queue(openalgo, tmp_path):  # noqa: F811
    _upstream, checkout = openalgo
    status, log = serve_one_webhook(checkout, tmp_path / "docker", "SBIN")
    assert status == 200, log
    assert durable_symbols(tmp_path / "docker") == ["SBIN"]


@pytest.mark.parametrize("update", [stash_and_pull, fetch_and_reset], ids=["stash", "reset"])
def test_the_image_rebuilt_after_an_update_has_the_queue(openalgo, tmp_path, update):  # noqa: F811
    """``docker compose down``, the update, ``docker compose build --no-cache``, ``up``:
    the edits are gone from the checkout and the image's environment is fresh, so only
    what the build context carries can put the queue back, before app.py is read."""
    upstream, checkout = openalgo
    root = tmp_path / "docker"
    assert serve_one_webhook(checkout, root, "SBIN")[0] == 200
    newer_upstream_commit(upstream)
    update(checkout)
    assert "order_queue_plugin" not in (checkout / "app.py").read_text()  # edits gone

    status, log = serve_one_webhook(checkout, root, "TCS")
    assert status == 200, log
    assert "re-applied to app.py" in log
    assert durable_symbols(root) == ["SBIN", "TCS"]  # the volume kept the first one


def test_an_update_the_plugin_cannot_follow_is_loud_in_the_container(
    openalgo,  # noqa: F811
    tmp_path,
    broker,
):
    upstream, checkout = openalgo
    root = tmp_path / "docker"
    assert serve_one_webhook(checkout, root, "SBIN")[0] == 200
    store = QueueStore(
        f"sqlite:///{root / 'volumes' / 'db' / 'order_queue.db'}", sealing=TEST_SEALING
    )
    store.schema.create()
    store.intake.enqueue("placeorder", payload("INFY"), now=utcnow(), max_age_seconds=300)
    store.dispose()

    def rename_the_timing_line(tree):
        app_py = tree / "app.py"
        app_py.write_text(app_py.read_text().replace("db_init_time", "db_init_ms"))

    newer_upstream_commit(upstream, rename_the_timing_line)
    stash_and_pull(checkout)
    receiver = Receiver()
    try:
        app = build_image(checkout, root)
        container = Container(
            app, HOST_SERVER=broker.base_url, ORDER_QUEUE_ALERT_WEBHOOK_URL=receiver.url
        )
        try:
            # OpenAlgo still serves, on its own in-memory queue, and says why.
            assert container.webhook("TCS").status_code == 200, container.log()
            assert "ERROR order queue plugin NOT in force" in container.log()
            # What the queue had acknowledged (SBIN through the first image, INFY put in
            # its volume) still reaches the API: the drain.
            assert broker.wait_for(2, timeout=60), container.log()
            assert sorted(r.body["symbol"] for r in broker.received) == ["INFY", "SBIN"]
            assert receiver.wait_for(1)
            assert "NOT in force" in receiver.bodies[0]["text"]
        finally:
            container.stop()
    finally:
        receiver.server.shutdown()
    assert "TCS" not in durable_symbols(root)


def test_check_says_whether_the_next_image_carries_the_plugin(openalgo):  # noqa: F811
    _upstream, checkout = openalgo
    code, report = check(checkout)
    assert code == 0 and "Docker: images built from this checkout carry the plugin" in report

    ignore = checkout / ".dockerignore"
    ignore.write_text(ignore.read_text() + "gunicorn.conf.py\n")
    code, report = check(checkout)
    assert code == 1 and "leaves out gunicorn.conf.py" in report, report

    ignore.write_text(ignore.read_text().replace("gunicorn.conf.py\n", ".order_queue_plugin/\n"))
    code, report = check(checkout)
    assert code == 1 and "leaves out .order_queue_plugin/installed.json" in report, report

    ignore.write_text(ignore.read_text().replace(".order_queue_plugin/\n", ""))
    (checkout / "gunicorn.conf.py").unlink()
    code, report = check(checkout)
    assert code == 1 and "gunicorn.conf.py is missing: run the installer again" in report
    assert installer.install(checkout, out=installer.io.StringIO()) == 0
    assert check(checkout)[0] == 0


@pytest.mark.parametrize(
    ("pattern", "path", "left_out"),
    [
        ("db/", "db/order_queue.db", True),
        ("*.db", "order_queue.db", True),
        ("*.db", "db/order_queue.db", False),  # no slash: the context's root only
        ("**/*.db", "db/order_queue.db", True),
        ("__pycache__/", "services/__pycache__/x.pyc", False),
        (".env.*", ".env.local", True),
        ("*.py[cod]", "gunicorn.conf.py", False),
        ("docs", "docs/design.md", True),
    ],
)
def test_dockerignore_patterns_as_docker_reads_them(tmp_path, pattern, path, left_out):
    (tmp_path / ".dockerignore").write_text(f"# comment\n{pattern}\n")
    assert image_hook.left_out(path, image_hook.dockerignore_patterns(tmp_path)) is left_out


def test_an_exception_takes_a_path_back_in(tmp_path):
    (tmp_path / ".dockerignore").write_text("*.env\n!.sample.env\n")
    patterns = image_hook.dockerignore_patterns(tmp_path)
    assert image_hook.left_out("prod.env", patterns)
    assert not image_hook.left_out(".sample.env", patterns)


def test_a_derived_image_of_the_prebuilt_one_has_the_queue(tmp_path):
    """``docker-run.sh`` and compose files with only an ``image:`` pull OpenAlgo's
    prebuilt image, which has no plugin code.  The derived image (docs/installing.md, "Running it in
    OpenAlgo's Docker image") runs the installer on top of it at build time: emulated
    here as the upstream image's folder with the installer run against its ``/app`` by
    the image's interpreter."""
    pure = tmp_path / "upstream-checkout"
    shutil.copytree(FIXTURE, pure)
    root = tmp_path / "docker"
    app = build_image(pure, root)  # the prebuilt upstream image: no plugin anywhere
    assert not (app / "gunicorn.conf.py").exists()
    installed = subprocess.run(
        [str(server_python()), "-m", "install.openalgo", str(app)],
        cwd=ROOT,  # COPY of this repository, then RUN python -m install.openalgo /app
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    container = Container(app)
    try:
        assert container.webhook("SBIN").status_code == 200, container.log()
    finally:
        container.stop()
    assert durable_symbols(root) == ["SBIN"]
