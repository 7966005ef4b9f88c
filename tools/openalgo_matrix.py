"""Kill-test matrix: the durable order queue inside a real OpenAlgo checkout.

    python tools/openalgo_matrix.py /path/to/openalgo [--servers dev,gunicorn]
        [--modes analyzer,semi_auto] [--rounds N] [--unpatched]

What it measures, and why
-------------------------
The plugin's promise (docs/guarantees.md, "Delivery guarantees") is that a webhook answered
200 is an order that reaches OpenAlgo's order API exactly once, across crashes and restarts,
and that the server keeps answering meanwhile, also under gunicorn + eventlet where one
blocking call freezes every request.  The plugin's own tests prove it against a stand-in
host; this script checks it against real OpenAlgo, driven only from outside: the plugin's
installer, HTTP, and SQLite reads.

For each server (``dev``: ``python app.py`` under a pseudo-terminal; ``gunicorn``: the
production command of OpenAlgo's start.sh) and each order mode, in a fresh copy of the
checkout:

1. install the plugin (``python -m install.openalgo``; skipped with ``--unpatched``), write a
   ``.env`` with fresh secrets and free ports, and seed OpenAlgo with its own database
   functions run by OpenAlgo's interpreter: an admin user, an API key, a LONG strategy with
   25 symbol mappings, and either
   - ``semi_auto``: orders are filed in the Action Center table ``pending_orders``
     (db/openalgo.db) and ``/api/v1/placeorder`` answers 200 without any broker; or
   - ``analyzer``: OpenAlgo's sandbox files them in ``sandbox_orders`` (db/sandbox.db) and
     serves an orderbook, so the plugin's reconciliation runs for real.  Needs order mode
     auto, an auth row for a broker name with no broker module, symtoken rows, and a flat
     position with an ltp per symbol (the MARKET price when no quote can be fetched).  Only
     BUY webhooks here: a LONG strategy's SELL is a smart order that the sandbox turns into
     "no position, nothing to do", which cannot be counted.
2. run rounds: a burst of webhooks from several client threads, the server killed part-way
   through (dev: SIGKILL and SIGTERM of the process, alternately; gunicorn: SIGKILL of the
   worker and SIGTERM of the master, alternately), restarted, next round.  A probe thread
   requests a cheap URL every 100 ms and keeps the slowest answer seen while the server was
   up (from "ready" to the next kill, and during the final drain).  After the last round the
   server stays up until the queue is drained (no pending / sending / in_doubt rows in
   db/order_queue.db; unpatched: the filed count has stopped moving) or the drain timeout.
3. count, per (symbol, action): acknowledged (answered 200), stored (rows in the queue
   database), filed (rows in pending_orders / sandbox_orders), and print one row per cell:
   lost = acknowledged but not filed, and of those the ``silent`` ones (not held in the
   queue as dead or in_doubt, i.e. invisible to the operator); duplicated = filed beyond
   what may legitimately have been filed (acknowledged, or stored though the answer was
   cut off; unpatched, where nothing is stored, acknowledged plus unanswered); orders
   handed to the operator (dead with reason in_doubt, or left in_doubt: such an order may
   or may not have been filed, which is why the operator gets it); seconds from the last
   restart to the last order filed; the slowest probe and webhook answers while up.
   ``--unpatched`` runs the same bursts against plain OpenAlgo and its in-memory queue:
   the baseline row.

Everything it starts runs in its own process groups and is killed when it finishes, fails
or is interrupted.  Logs and a JSON summary are kept in ``--out`` (a fresh temp dir by
default); the checkout copies are deleted unless ``--keep``.  The plugin is installed from
this working tree, or with ``--plugin-ref HEAD`` from a committed snapshot (``git archive``),
which keeps the run stable while someone edits the plugin.  Exit status 1 if a cell failed,
or (with the plugin) if any order was duplicated or silently lost.

``--layout nginx`` runs the production layout of OpenAlgo's install/install.sh instead of
the loopback one (gunicorn only): gunicorn ``--worker-class eventlet -w 1`` bound to a unix
socket in the cell's temp dir (no TCP port), and Debian's nginx in front of it (``daemon
off``, its conf, pid, logs and temp paths in the cell's dir, its own process group) on
HOST:<free port> with TLS for ``--public-name`` (default openalgo.test, which must resolve to
127.0.0.1), install.sh's proxy headers, and ``proxy_read_timeout`` ``--nginx-read-timeout``
(default 300 s as install.sh) on /api/, /strategy/webhook/ and /chartink/webhook.  The
``.env`` gets ``HOST_SERVER = 'https://<name>:<port>'`` and ``TRUST_PROXY_HEADERS = 'TRUE'``
as install.sh writes them; OpenAlgo runs with ``SSL_CERT_FILE=--ca-bundle``.  Webhooks and
the probe go through nginx over TLS verified against ``--ca-bundle``.  Kills are the
gunicorn ones; nginx stays up, and what it answers itself while OpenAlgo is gone or too slow
(502/503/504) is counted as unanswered, never acknowledged.  ``--latency N`` (either layout)
first sends N calm alerts per road, webhook vs direct ``/api/v1/placeorder`` with the seeded
API key, and reports alert-to-filed times; those orders are left out of the row.

Changes made to OpenAlgo's defaults, and why: ``WEBHOOK_RATE_LIMIT`` is raised to 1000 per
second, because the stock "100 per minute" would answer most of a burst with 429 and leave
nothing to measure; everything else (ORDER_RATE_LIMIT 10/s included) is as shipped.
Only the standard library is used; run it with any Python 3.11+.  It is one file (about
1,000 lines) on purpose: it is copied to and run on machines that have an OpenAlgo checkout
but not this project's packages, so it imports nothing of the project.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

MAIN = Path(__file__).resolve().parents[1]
DEFAULT_OA_PYTHON = "/work/scratch/oa-venv/bin/python"
DEFAULT_INSTALLER_PYTHON = str(MAIN / ".venv" / "bin" / "python")
HOST = "127.0.0.1"
#: The nginx layout (``--layout nginx``): the TLS name, its certificate and the CA bundle.
DEFAULT_PUBLIC_NAME = "openalgo.test"
DEFAULT_TLS_CERT = "/work/scratch/tls/server.pem"
DEFAULT_TLS_KEY = "/work/scratch/tls/server.key"
DEFAULT_CA_BUNDLE = "/work/scratch/tls/ca-bundle.pem"
#: nginx's own answers when it got none from OpenAlgo (worker gone, read timeout).
GATEWAY_STATUSES = (502, 503, 504)

SYMBOLS = [
    "SBIN",
    "INFY",
    "TCS",
    "RELIANCE",
    "HDFCBANK",
    "ICICIBANK",
    "ITC",
    "LT",
    "AXISBANK",
    "KOTAKBANK",
    "HINDUNILVR",
    "BHARTIARTL",
    "ASIANPAINT",
    "MARUTI",
    "SUNPHARMA",
    "TITAN",
    "ULTRACEMCO",
    "WIPRO",
    "NESTLEIND",
    "POWERGRID",
    "NTPC",
    "ONGC",
    "TATASTEEL",
    "JSWSTEEL",
    "HCLTECH",
]
PRODUCT = "CNC"  # accepted by the sandbox at any hour (MIS is refused outside 09:00-15:15 IST)
OFFLINE_BROKER = "offline"  # no broker/offline module: quote lookups fail at once

#: How each server is killed, round after round (cycled).
KILL_PLANS = {
    "dev": ["sigkill", "sigterm"],
    "gunicorn": ["sigkill_worker", "sigterm_master"],
}
UNFINISHED_STATES = ("pending", "sending", "in_doubt")
#: App-log lines worth counting (case-insensitive), reported per cell.
LOG_PATTERNS = {
    "database is locked": r"database is locked",
    "WORKER TIMEOUT": r"worker timeout",
    "timeout": r"timed? ?out",
    "Traceback": r"traceback \(most recent call last\)",
    "ERROR lines": r"\berror\b in ",
    "order queue dead": r"dead-letter|dead letter|\bdead\b.*reason",
    "in doubt": r"in.doubt",
    "429 from OpenAlgo's limiter": r"throttled by the api's limiter",
}
#: Expected noise, not counted: analyzer mode's quote lookups for the module-less broker.
LOG_NOISE = re.compile(r"broker\.offline|broker module 'broker\.offline")

# Run by OpenAlgo's interpreter inside the checkout (python -c SEED_SNIPPET CONFIG_JSON):
# OpenAlgo's own init and insert functions, nothing written by hand but the symtoken and
# sandbox position rows (OpenAlgo fills those from broker downloads and fills, not by API).
SEED_SNIPPET = r"""
import json, secrets, sys
from utils.env_check import load_and_check_env_variables
load_and_check_env_variables()
cfg = json.loads(sys.argv[1])
from database import (action_center_db, auth_db, sandbox_db, settings_db, strategy_db,
                      symbol, user_db)
for module in (user_db, auth_db, strategy_db, settings_db, symbol, action_center_db,
               sandbox_db):
    module.init_db()
user = cfg["user"]
if user_db.add_user(user, user + "@example.invalid", secrets.token_urlsafe(16) + "Aa1!",
                    is_admin=True) is None:
    sys.exit("add_user failed")
api_key = secrets.token_hex(32)
auth_db.upsert_api_key(user, api_key)
strategy = strategy_db.create_strategy(name="Matrix", webhook_id=cfg["webhook_id"],
                                       user_id=user, is_intraday=False, trading_mode="LONG")
if strategy is None:
    sys.exit("create_strategy failed")
for name in cfg["symbols"]:
    if strategy_db.add_symbol_mapping(strategy.id, name, "NSE", 1, cfg["product"]) is None:
        sys.exit("add_symbol_mapping failed")
if cfg["mode"] == "semi_auto":
    assert auth_db.update_order_mode(user, "semi_auto")
    settings_db.set_analyze_mode(False)
else:
    assert auth_db.update_order_mode(user, "auto")
    settings_db.set_analyze_mode(True)
    auth_db.upsert_auth(user, "offline-token", cfg["broker"])
    for i, name in enumerate(cfg["symbols"]):
        symbol.db_session.add(symbol.SymToken(
            symbol=name, brsymbol=name + "-EQ", name=name, exchange="NSE", brexchange="NSE",
            token=str(1000 + i), expiry="", strike=0.0, lotsize=1, instrumenttype="EQ",
            tick_size=0.05))
        sandbox_db.db_session.add(sandbox_db.SandboxPositions(
            user_id=user, symbol=name, exchange="NSE", product=cfg["product"], quantity=0,
            average_price=100, ltp=100))
    symbol.db_session.commit()
    sandbox_db.db_session.commit()
print("SEEDED", json.dumps({"strategy_id": strategy.id, "mode": cfg["mode"]}))
print("APIKEY", api_key)  # read by the caller for direct placement; never logged
"""


def log(msg: str) -> None:
    """Progress line on stderr, with wall-clock time."""
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def _ppid(pid: int) -> int | None:
    """Parent pid of ``pid`` from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    """Command line of ``pid`` ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``, parents before children."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def _group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process belongs to process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _killpg(pgid: int, sig: int) -> None:
    """Signal a process group we created; it may be gone already."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """One OpenAlgo server in a checkout: start, find its pids, kill it, stop it.

    Every process group it creates is remembered so ``force_kill`` can end all of them,
    including orphans (a SIGKILLed gunicorn worker's children stay in the master's group).
    A group is forgotten as soon as it is empty, so a recycled group id is never signalled.
    """

    def __init__(
        self,
        kind: str,
        checkout: Path,
        port: int,
        oa_python: str,
        log_path: Path,
        bind: str = "",
        extra_env: dict | None = None,
    ):
        """``bind``: gunicorn's address instead of HOST:port (the nginx layout's
        ``unix:<socket>``); ``extra_env``: added to the server's environment."""
        self.kind, self.checkout, self.port = kind, checkout, port
        self.oa_python, self.log_path = oa_python, log_path
        self.bind, self.extra_env = bind, dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.pgids: set[int] = set()
        self.starts = 0

    def start(self) -> None:
        """Launch the server (dev: under ``script`` for a pty; gunicorn: start.sh's flags)."""
        if self.kind == "dev":
            cmd = ["script", "-qfec", f"exec {self.oa_python} app.py", "/dev/null"]
        else:
            gunicorn = str(Path(self.oa_python).parent / "gunicorn")
            cmd = [
                gunicorn,
                "--worker-class",
                "eventlet",
                "--workers",
                "1",
                "--timeout",
                "300",
                "--graceful-timeout",
                "30",
                "--no-control-socket",
                "-b",
                self.bind or f"{HOST}:{self.port}",
                "app:app",
            ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TERM=os.environ.get("TERM", "dumb"))
        env.update(self.extra_env)
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== matrix: start #{self.starts + 1} {time.ctime()} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.checkout,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.pgids.add(self.proc.pid)
        self.starts += 1

    def main_pid(self) -> int | None:
        """dev: the ``python app.py`` process (inside script's pty); gunicorn: the master."""
        if not self.proc:
            return None
        if self.kind == "gunicorn":
            return self.proc.pid if _alive(self.proc.pid) else None
        for pid in _descendants(self.proc.pid):
            if "app.py" in _cmdline(pid) and _alive(pid):
                try:
                    self.pgids.add(os.getpgid(pid))  # script gives it a session of its own
                except ProcessLookupError:
                    return None
                return pid
        return None

    def worker_pid(self) -> int | None:
        """gunicorn's worker (the master's gunicorn child), or None."""
        master = self.main_pid()
        if not master:
            return None
        for pid in _descendants(master):
            if _ppid(pid) == master and "gunicorn" in _cmdline(pid) and _alive(pid):
                return pid
        return None

    def kill(self, how: str) -> tuple[bool, int | None]:
        """Deliver one kill; returns (server restarts by itself, pid that was signalled)."""
        if how == "sigkill_worker":
            pid = self.worker_pid()
            sig, self_restarting = signal.SIGKILL, True
        else:
            pid = self.main_pid()
            sig = signal.SIGKILL if how == "sigkill" else signal.SIGTERM
            self_restarting = False
        if pid:
            os.kill(pid, sig)
        return self_restarting, pid

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the whole server to exit; SIGKILL it if it takes longer than ``timeout``.

        Returns True when it exited by itself.  Leftovers in its process groups are killed
        either way, as a container restart would.
        """
        deadline = time.monotonic() + timeout
        clean = True
        while self.proc and self.proc.poll() is None:
            if time.monotonic() > deadline:
                clean = False
                break
            time.sleep(0.1)
        self.force_kill()
        return clean

    def stop(self, timeout: float = 60) -> bool:
        """Graceful stop (SIGTERM to the app / master), forced after ``timeout``."""
        pid = self.main_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        return self.wait_exit(timeout)

    def force_kill(self) -> None:
        """SIGKILL whatever is left in this server's process groups, then forget them."""
        self.main_pid()  # records the dev app's own group if it is still there
        for pgid in list(self.pgids):
            _killpg(pgid, signal.SIGKILL)
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        for pgid in list(self.pgids):
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _group_alive(pgid):
                self.pgids.discard(pgid)


NGINX_CONF = """\
# Written by openalgo_matrix.py: the server block of OpenAlgo's install/install.sh
# (TLS, gunicorn on a unix socket), run unprivileged-style under the cell's directory.
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen {host}:{port} ssl;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_ciphers EECDH+AESGCM:EDH+AESGCM;
        ssl_session_timeout 10m;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets off;
        add_header X-Frame-Options DENY;
        add_header X-Content-Type-Options nosniff;
        add_header X-XSS-Protection "1; mode=block";
        add_header Strict-Transport-Security "max-age=63072000" always;
        # the order API and the webhooks: --nginx-read-timeout (install.sh: 300s for all)
        location /api/ {{
{api_block}
        }}
        location /strategy/webhook/ {{
{api_block}
        }}
        location /chartink/webhook {{
{api_block}
        }}
        # Main app (Gunicorn UDS), as install.sh
        location / {{
{main_block}
        }}
    }}
}}
"""
NGINX_PROXY_BLOCK = """\
            proxy_pass http://unix:{socket};
            proxy_http_version 1.1;
            proxy_read_timeout {read_timeout};
            proxy_connect_timeout 300s;
            proxy_send_timeout 300s;
            proxy_buffer_size 128k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_redirect off;"""


def _nginx_seconds(value: float) -> str:
    """nginx time: whole seconds as ``300s``, else milliseconds."""
    return f"{int(value)}s" if float(value).is_integer() else f"{int(value * 1000)}ms"


class Nginx:
    """Debian's nginx in front of gunicorn's unix socket, as install.sh sets it up: TLS on
    HOST:``port``, its conf, pid, logs and temp paths in ``directory``, ``daemon off`` in a
    process group of its own.  It stays up while OpenAlgo is killed and restarted."""

    def __init__(
        self,
        directory: Path,
        port: int,
        socket_path: Path,
        args,
    ):
        self.directory, self.port, self.socket_path = directory, port, socket_path
        self.binary = args.nginx
        self.conf = directory / "nginx.conf"
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)

        def block(read_timeout: str) -> str:
            return NGINX_PROXY_BLOCK.format(socket=socket_path, read_timeout=read_timeout)

        # As root, nginx's workers would run as nobody, who cannot reach a socket in a
        # 0700 temp dir; run them as the user who owns the cell.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
        self.conf.write_text(
            NGINX_CONF.format(
                user=user,
                dir=directory,
                host=HOST,
                port=port,
                name=args.public_name,
                cert=Path(args.tls_cert).resolve(),
                key=Path(args.tls_key).resolve(),
                api_block=block(_nginx_seconds(args.nginx_read_timeout)),
                main_block=block("300s"),
            )
        )

    def _cmd(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.directory),
            "-c",
            str(self.conf),
            "-e",
            str(self.directory / "error.log"),
            *extra,
        ]

    def start(self, timeout: float = 15) -> None:
        """Test the conf, start nginx, wait until it accepts TLS connections."""
        run_checked(self._cmd("-t"), self.directory, 30, "nginx -t")
        out = open(self.directory / "nginx.out", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            self._cmd(),
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited ({self.proc.returncode}): "
                    f"{(self.directory / 'error.log').read_text(errors='replace')[-1500:]}"
                )
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx is not listening on {HOST}:{self.port} after {timeout}s")

    def force_kill(self) -> None:
        """SIGKILL nginx's process group (master and worker)."""
        if self.proc is None:
            return
        _killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def keep_logs(self, out_dir: Path, label: str) -> None:
        """Copy nginx's error and access logs next to the app log."""
        for name in ("error.log", "access.log"):
            source = self.directory / name
            if source.exists():
                shutil.copyfile(source, out_dir / f"{label}.nginx-{name}")


def tls_client_context(ca_bundle: str) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_bundle`` (as TradingView
    verifies a public certificate)."""
    return ssl.create_default_context(cafile=ca_bundle)


# --------------------------------------------------------------------------- HTTP


@dataclass
class Endpoint:
    """Where the clients connect: OpenAlgo's own port on loopback (the default layout), or
    nginx in front of it (``gateway``), over TLS verified against a CA bundle."""

    port: int
    host: str = HOST
    tls: ssl.SSLContext | None = None
    gateway: bool = False

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)

    def __str__(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"


def as_endpoint(target: int | Endpoint) -> Endpoint:
    """A bare port is OpenAlgo's own, on loopback (the default layout)."""
    return target if isinstance(target, Endpoint) else Endpoint(target)


def http_call(
    target: int | Endpoint,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 30,
    headers: dict | None = None,
) -> tuple[str, int | None, float]:
    """One request on a fresh connection.

    Returns (outcome, status, seconds): outcome is ``answered``, ``refused`` (no connection:
    nothing was sent) or ``unanswered`` (connected, then no answer: reset, closed, timeout);
    through nginx, ``gateway``: nginx answered 502/503/504 itself, OpenAlgo's answer (if
    any) never came, which for the sender is an unanswered request, not an answer.
    """
    endpoint = as_endpoint(target)
    conn = endpoint.connection(timeout)
    started = time.monotonic()
    try:
        try:
            conn.connect()
        except OSError:
            return "refused", None, time.monotonic() - started
        try:
            headers = {"Connection": "close", **(headers or {})}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if endpoint.gateway and resp.status in GATEWAY_STATUSES:
                return "gateway", resp.status, time.monotonic() - started
            return "answered", resp.status, time.monotonic() - started
        except (OSError, http.client.HTTPException):
            return "unanswered", None, time.monotonic() - started
    finally:
        conn.close()


class UpWindow:
    """Marks when the server counts as up, so probes that straddle a kill or a boot are
    not mistaken for stalls.  A measurement counts only if the window was open, in the same
    generation, both when it started and when it ended."""

    def __init__(self):
        self._lock = threading.Lock()
        self.generation, self.open = 0, False

    def set(self, is_open: bool) -> None:
        with self._lock:
            self.generation += 1
            self.open = is_open

    def token(self) -> int | None:
        with self._lock:
            return self.generation if self.open else None

    def still(self, token: int | None) -> bool:
        with self._lock:
            return token is not None and self.open and self.generation == token


@dataclass
class Ledger:
    """What the client side saw, per (symbol, action)."""

    fired: int = 0
    acked: Counter = field(default_factory=Counter)
    unanswered: Counter = field(default_factory=Counter)
    refused: int = 0
    gateway: int = 0  # nginx answered 502/503/504 itself (counted in unanswered too)
    statuses: Counter = field(default_factory=Counter)
    slowest_webhook: float = 0.0
    slowest_webhook_at: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


class Burst(threading.Thread):
    """Fires a list of webhooks from ``threads`` client threads, spaced by ``gap`` seconds.

    After ``killed`` is set, a client stops at its first refused connection (the server is
    gone); until then it keeps firing, so orders arrive during a graceful shutdown and while
    gunicorn respawns a worker (those connections wait in the listen backlog).  Through
    nginx no connection is refused: while OpenAlgo is gone nginx answers 502, which counts
    as unanswered (not acknowledged); a client backs off 0.2 s after one and fires on.
    """

    def __init__(
        self,
        port: int | Endpoint,
        webhook_path: str,
        orders: list[tuple[str, str]],
        threads: int,
        gap: float,
        ledger: Ledger,
        window: UpWindow,
    ):
        super().__init__(daemon=True)
        self.port, self.path, self.ledger, self.window = port, webhook_path, ledger, window
        self.threads, self.gap = threads, gap
        self.orders = list(orders)
        self.orders_lock = threading.Lock()
        self.killed = threading.Event()
        self.answered = 0

    def _next(self) -> tuple[str, str] | None:
        with self.orders_lock:
            return self.orders.pop(0) if self.orders else None

    def _client(self) -> None:
        while (order := self._next()) is not None:
            symbol, action = order
            body = json.dumps({"symbol": symbol, "action": action}).encode()
            token = self.window.token()
            outcome, status, took = http_call(self.port, "POST", self.path, body)
            with self.ledger.lock:
                if outcome == "refused":
                    self.ledger.refused += 1
                else:
                    self.ledger.fired += 1
                if outcome == "answered":
                    self.answered += 1
                    self.ledger.statuses[status] += 1
                    if status == 200:
                        self.ledger.acked[order] += 1
                    if self.window.still(token) and took > self.ledger.slowest_webhook:
                        self.ledger.slowest_webhook = took
                        self.ledger.slowest_webhook_at = time.strftime("%H:%M:%S")
                elif outcome in ("unanswered", "gateway"):
                    self.ledger.unanswered[order] += 1
                if outcome == "gateway":
                    self.ledger.gateway += 1
                    self.ledger.statuses[status] += 1
            if outcome == "refused" and self.killed.is_set():
                return
            if outcome in ("refused", "gateway"):
                time.sleep(0.2)
            time.sleep(self.gap)

    def run(self) -> None:
        clients = [threading.Thread(target=self._client, daemon=True) for _ in range(self.threads)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()


class Probe(threading.Thread):
    """Requests ``path`` every ``interval`` s; keeps the slowest answer while the server is up."""

    def __init__(self, port: int | Endpoint, path: str, window: UpWindow, interval: float = 0.1):
        super().__init__(daemon=True)
        self.port, self.path, self.window, self.interval = port, path, window, interval
        self.stop_event = threading.Event()
        self.slowest = 0.0
        self.slowest_at = ""
        self.count = 0
        self.timeouts = 0  # no answer within 10 s while up

    def run(self) -> None:
        while not self.stop_event.is_set():
            token = self.window.token()
            outcome, _status, took = http_call(self.port, "GET", self.path, timeout=10)
            if self.window.still(token):
                if outcome == "answered":
                    self.count += 1
                    if took > self.slowest:
                        self.slowest, self.slowest_at = took, time.strftime("%H:%M:%S")
                elif took >= 9.9:
                    self.timeouts += 1
                    self.slowest = max(self.slowest, took)
            self.stop_event.wait(self.interval)


def wait_answering(port: int | Endpoint, path: str, timeout: float) -> bool:
    """Wait until ``path`` gets any HTTP answer from the app (not nginx's 502 for it: the
    app is serving); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome, _status, _took = http_call(port, "GET", path, timeout=5)
        if outcome == "answered":
            return True
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- SQLite reads


def _query(db: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on ``db``; [] while the file or table does not exist yet."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def read_filed(checkout: Path, mode: str) -> Counter:
    """Orders OpenAlgo filed, per (symbol, action): Action Center or sandbox orders."""
    filed: Counter = Counter()
    if mode == "semi_auto":
        for (data,) in _query(
            checkout / "db" / "openalgo.db", "SELECT order_data FROM pending_orders"
        ):
            try:
                order = json.loads(data)
                filed[(order.get("symbol"), str(order.get("action", "")).upper())] += 1
            except (TypeError, ValueError):
                filed[("?", "?")] += 1
    else:
        for symbol, action in _query(
            checkout / "db" / "sandbox.db", "SELECT symbol, action FROM sandbox_orders"
        ):
            filed[(symbol, str(action).upper())] += 1
    return filed


def filed_count(checkout: Path, mode: str) -> int:
    """How many orders are filed (cheap count for polling)."""
    if mode == "semi_auto":
        rows = _query(checkout / "db" / "openalgo.db", "SELECT count(*) FROM pending_orders")
    else:
        rows = _query(checkout / "db" / "sandbox.db", "SELECT count(*) FROM sandbox_orders")
    return rows[0][0] if rows else 0


@dataclass
class QueueState:
    """The plugin's queue database, summarised."""

    stored: Counter = field(default_factory=Counter)  # per (symbol, action)
    held: Counter = field(default_factory=Counter)  # dead or in_doubt, per (symbol, action)
    states: Counter = field(default_factory=Counter)
    dead_reasons: Counter = field(default_factory=Counter)
    attempts: Counter = field(default_factory=Counter)  # "kind:outcome" -> rows

    @property
    def unfinished(self) -> int:
        return sum(self.states[s] for s in UNFINISHED_STATES)


def queue_url_of(checkout: Path) -> str:
    """The cell's ORDER_QUEUE_DATABASE_URL from its .env ('' = the SQLite default)."""
    env = checkout / ".env"
    found = (
        re.search(r"^ORDER_QUEUE_DATABASE_URL\s*=\s*'([^']*)'", env.read_text(), re.M)
        if env.exists()
        else None
    )
    return found.group(1) if found else ""


def _queue_query(checkout: Path, sql: str) -> list[tuple]:
    """``sql`` on the cell's queue database: db/order_queue.db, or PostgreSQL through
    ``psql`` (its schema named in the URL's search_path option)."""
    url = queue_url_of(checkout)
    if not url.startswith("postgresql"):
        return _query(checkout / "db" / "order_queue.db", sql)
    base, _, options = url.partition("?")
    schema = re.search(r"search_path%3D(\w+)", options).group(1)
    proc = subprocess.run(
        [
            "psql",
            base,
            "-At",
            "-F",
            "\x1f",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"SET search_path TO {schema}; {sql}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        return []  # the schema's tables are not created yet
    rows = []
    for line in proc.stdout.splitlines():
        if line == "SET":
            continue
        rows.append(tuple(int(v) if v.isdigit() else (v or None) for v in line.split("\x1f")))
    return rows


def last_settled_at(checkout: Path) -> float | None:
    """When (epoch seconds) the last in-doubt order was settled by the reconciler: found at
    the broker, known not placed, or decided from the host's kept answer."""
    rows = _queue_query(
        checkout,
        "SELECT max(at) FROM order_queue_attempts WHERE kind = "
        "'reconcile' AND outcome <> 'not_found_yet'",
    )
    if not rows or not rows[0][0]:
        return None
    at = datetime.fromisoformat(str(rows[0][0]))
    return at.replace(tzinfo=UTC).timestamp()


def read_queue(checkout: Path) -> QueueState:
    """Rows of the queue database (empty when the plugin is not installed)."""
    result = QueueState()
    rows = _queue_query(checkout, "SELECT symbol, payload, state, dead_reason FROM order_queue")
    for symbol, payload, state, reason in rows:
        try:
            action = str(json.loads(payload).get("action", "?")).upper()
        except (TypeError, ValueError):
            action = "?"
        result.stored[(symbol, action)] += 1
        result.states[state] += 1
        if state in ("dead", "in_doubt"):
            result.held[(symbol, action)] += 1
        if state == "dead":
            result.dead_reasons[reason or "?"] += 1
    for kind, outcome, n in _queue_query(
        checkout, "SELECT kind, outcome, count(*) FROM order_queue_attempts GROUP BY kind, outcome"
    ):
        result.attempts[f"{kind}:{outcome}"] = n
    return result


class FiledMonitor(threading.Thread):
    """Polls the filed count every 0.25 s and remembers when it last grew."""

    def __init__(self, checkout: Path, mode: str):
        super().__init__(daemon=True)
        self.checkout, self.mode = checkout, mode
        self.stop_event = threading.Event()
        self.count = 0
        self.last_change = 0.0  # time.time()

    def run(self) -> None:
        while not self.stop_event.is_set():
            count = filed_count(self.checkout, self.mode)
            if count != self.count:
                self.count, self.last_change = count, time.time()
            self.stop_event.wait(0.25)


# --------------------------------------------------------------------------- one cell


@dataclass
class CellResult:
    """One row of the table, plus notes."""

    server: str
    mode: str
    patched: bool
    layout: str = "loopback"
    rounds: int = 0
    kills: list[str] = field(default_factory=list)
    fired: int = 0
    acked: int = 0
    unanswered: int = 0
    refused: int = 0
    gateway: int = 0  # answered 502/503/504 by nginx itself (also in unanswered)
    stored: int | None = None
    filed: int = 0
    lost: int = 0
    silent: int | None = None
    duplicated: int = 0
    in_doubt: int | None = None
    dead_other: dict = field(default_factory=dict)
    left_unfinished: int | None = None
    restart_to_last_filed: float | None = None
    #: last restart to the last in-doubt order settled (found, or known not placed)
    restart_to_last_settled: float | None = None
    drained: bool = False
    slowest_probe_ms: float = 0.0
    probe_timeouts: int = 0
    slowest_probe_at: str = ""
    probe_path: str = ""
    server_model: str = ""
    api_road: str = ""  # the dispatcher's road to the API, from the plugin's health
    api_road_log: str = ""  # the plugin's log line naming it, if it logged one
    latency: dict = field(default_factory=dict)  # --latency: road -> figures
    slowest_webhook_ms: float = 0.0
    slowest_webhook_at: str = ""
    attempts: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    forced_stops: int = 0
    log_counts: dict = field(default_factory=dict)
    log_samples: list[str] = field(default_factory=list)
    log_path: str = ""
    seconds: float = 0.0
    error: str = ""


def copy_checkout(src: Path, dest: Path) -> None:
    """Copy the OpenAlgo checkout without VCS data, caches, local state or secrets."""
    ignore = shutil.ignore_patterns(
        ".git", "__pycache__", ".venv", "node_modules", ".order_queue_plugin"
    )
    shutil.copytree(src, dest, ignore=ignore, symlinks=True)
    for leftover in list((dest / "db").glob("*.db*")) + [dest / ".env"]:
        leftover.unlink(missing_ok=True)


def write_env(checkout: Path, port: int, ws_port: int, zmq_port: int, public_url: str = "") -> None:
    """.env from .sample.env: fresh secrets, our ports, webhook rate limit lifted.

    ``public_url`` (the nginx layout): OpenAlgo's public https address behind nginx, as
    install.sh writes it: HOST_SERVER and the other loopback URLs become it, and
    TRUST_PROXY_HEADERS is TRUE."""
    text = (checkout / ".sample.env").read_text()
    base = public_url or f"http://{HOST}:{port}"
    values = {
        "APP_KEY": secrets.token_hex(32),
        "HOST_SERVER": base,
        "FLASK_HOST_IP": HOST,
        "FLASK_PORT": str(port),
        "FLASK_DEBUG": "False",
        "REDIRECT_URL": f"{base}/zerodha/callback",
        "WEBSOCKET_HOST": HOST,
        "WEBSOCKET_PORT": str(ws_port),
        "WEBSOCKET_URL": f"ws://{HOST}:{ws_port}",
        "ZMQ_HOST": HOST,
        "ZMQ_PORT": str(zmq_port),
        "CORS_ALLOWED_ORIGINS": base,
        "WEBHOOK_RATE_LIMIT": "1000 per second",
        "NGROK_ALLOW": "FALSE",
        "LOG_TO_FILE": "False",
    }
    if public_url:
        values["TRUST_PROXY_HEADERS"] = "TRUE"
        values["WEBSOCKET_URL"] = f"wss://{public_url.split('://', 1)[1]}/ws"
    for key, value in values.items():
        pattern = re.compile(rf"^[ \t]*{key}[ \t]*=.*$", re.MULTILINE)
        if not pattern.search(text):
            raise RuntimeError(f".sample.env has no {key} line")
        text = pattern.sub(lambda _m, k=key, v=value: f"{k} = '{v}'", text, count=1)
    # env_check wants FERNET_SALT on the line right after API_KEY_PEPPER (else it rewrites .env)
    text = re.sub(r"^[ \t]*FERNET_SALT[ \t]*=.*\n?", "", text, flags=re.MULTILINE)
    pepper = re.compile(r"^[ \t]*API_KEY_PEPPER[ \t]*=.*$", re.MULTILINE)
    text = pepper.sub(
        lambda _m: (
            f"API_KEY_PEPPER = '{secrets.token_hex(32)}'\nFERNET_SALT = '{secrets.token_hex(32)}'"
        ),
        text,
        count=1,
    )
    (checkout / ".env").write_text(text)


def run_checked(cmd: list[str], cwd: Path, timeout: float, what: str) -> str:
    """Run a setup command; raise with its output if it fails."""
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def make_burst_orders(
    rng: random.Random, size: int, mode: str, sell_share: float
) -> list[tuple[str, str]]:
    """``size`` (symbol, action) pairs over all symbols; SELL only in semi_auto mode."""
    orders = []
    for _ in range(size):
        symbol = rng.choice(SYMBOLS)
        sell = mode == "semi_auto" and rng.random() < sell_share
        orders.append((symbol, "SELL" if sell else "BUY"))
    return orders


def scan_log(path: Path, samples: int) -> tuple[dict, list[str]]:
    """Count notable app-log lines; return the counts and a few distinct ERROR/lock lines."""
    counts: Counter = Counter()
    seen: dict[str, None] = {}
    if not path.exists():
        return {}, []
    strip = re.compile(r"\x1b\[[0-9;]*m|\r")
    stamp = re.compile(r"^\[[^\]]*\]\s*|\d{4}-\d\d-\d\d[ T][\d:,.]+\s*")
    for raw in path.read_text(errors="replace").splitlines():
        line = strip.sub("", raw)
        if LOG_NOISE.search(line):
            counts["noise skipped"] += 1
            continue
        lower = line.lower()
        for name, pattern in LOG_PATTERNS.items():
            if re.search(pattern, lower):
                counts[name] += 1
        if re.search(r"\berror\b in |database is locked|worker timeout|critical", lower):
            key = re.sub(r"\d+", "N", stamp.sub("", line))[:160]
            if key not in seen and len(seen) < samples:
                seen[key] = None
    return dict(counts), list(seen)


def road_line(path: Path) -> str:
    """The plugin's log line saying which road orders take to the API, if it logged one."""
    if not path.exists():
        return ""
    for line in path.read_text(errors="replace").splitlines():
        if "orders go to the API" in line:
            return re.sub(r"\x1b\[[0-9;]*m|\r", "", line).strip()[:200]
    return ""


def plugin_source(ref: str, into: Path) -> Path:
    """Where the installer runs from: this working tree, or ``git archive REF`` of it.

    The plugin may be edited while the matrix runs; ``--plugin-ref HEAD`` installs a
    committed snapshot instead of whatever the working tree holds at that moment.
    """
    if not ref:
        return MAIN
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(MAIN), "archive", "--format=tar", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wait_dispatcher(port: int | Endpoint, timeout: float) -> dict:
    """The plugin's health JSON once this process's dispatcher runs; raise if it never does.

    A plugin that installs but cannot start its dispatcher would otherwise show up only as
    every order lost, minutes later.
    """
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        conn = as_endpoint(port).connection(timeout=5)
        try:
            conn.request("GET", "/order-queue/api/health")
            body = json.loads(conn.getresponse().read() or b"{}")
            if body.get("process", {}).get("dispatcher_running"):
                return body
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    raise RuntimeError(
        f"the plugin's dispatcher is not running {timeout:.0f}s after boot "
        f"(health: {json.dumps(body)[:300]}); see the app log"
    )


def prepare_checkout(
    src: Path,
    checkout: Path,
    mode: str,
    patched: bool,
    args,
    plugin_root: Path,
    label: str,
    public_url: str = "",
) -> tuple[int, str, str]:
    """Copy, install the plugin, write .env (``public_url``: see ``write_env``), seed;
    returns (port, webhook id, API key)."""
    log(f"[{label}] copying {src} -> {checkout}")
    copy_checkout(src, checkout)
    if patched:
        out = run_checked(
            [args.installer_python, "-m", "install.openalgo", str(checkout)],
            plugin_root,
            120,
            "plugin install",
        )
        log(f"[{label}] {out.strip().splitlines()[-1] if out.strip() else 'installed'}")
        run_checked(
            [args.installer_python, "-m", "install.openalgo", str(checkout), "--check"],
            plugin_root,
            60,
            "plugin install --check",
        )
    port, ws_port, zmq_port = free_port(), free_port(), free_port()
    write_env(checkout, port, ws_port, zmq_port, public_url)
    if args.queue_url:
        schema = f"oq_matrix_{uuid.uuid4().hex[:10]}"
        run_checked(
            ["psql", args.queue_url, "-c", f"CREATE SCHEMA {schema}"],
            checkout,
            30,
            "creating the cell's schema",
        )
        separator = "&" if "?" in args.queue_url else "?"
        url = f"{args.queue_url}{separator}options=-csearch_path%3D{schema}"
        env = checkout / ".env"
        text, found = re.subn(
            r"^ORDER_QUEUE_DATABASE_URL\s*=.*$",
            lambda _m: f"ORDER_QUEUE_DATABASE_URL = '{url}'",
            env.read_text(),
            flags=re.M,
        )
        env.write_text(text if found else text + f"\nORDER_QUEUE_DATABASE_URL = '{url}'\n")
        log(f"[{label}] queue database: PostgreSQL schema {schema}")
    if getattr(args, "queue_road", "default") == "http":
        # The queue's requests over HTTP to OpenAlgo's own loopback port, as before the
        # in-process road: the two roads side by side.
        with (checkout / ".env").open("a") as env:
            env.write(f"\nORDER_QUEUE_API_URL = 'http://{HOST}:{port}'\n")
        log(f"[{label}] the queue's road: HTTP to {HOST}:{port}")
    webhook_id = str(uuid.uuid4())
    seed = {
        "user": "admin",
        "webhook_id": webhook_id,
        "symbols": SYMBOLS,
        "product": PRODUCT,
        "mode": mode,
        "broker": OFFLINE_BROKER,
    }
    out = run_checked(
        [args.oa_python, "-c", SEED_SNIPPET, json.dumps(seed)], checkout, 180, "seeding OpenAlgo"
    )
    log(f"[{label}] seeded: {[line for line in out.splitlines() if line.startswith('SEEDED')]}")
    api_key = next(line.split()[1] for line in out.splitlines() if line.startswith("APIKEY"))
    return port, webhook_id, api_key


class Cell:
    """One server x mode run: the server, its clients, its probe, and what they saw."""

    def __init__(
        self,
        server: Server,
        mode: str,
        patched: bool,
        webhook_id: str,
        args,
        rng: random.Random,
        result: CellResult,
        label: str,
        endpoint: Endpoint | None = None,
        api_key: str = "",
    ):
        """``endpoint``: where clients connect (default: the server's own port)."""
        self.server, self.mode, self.patched = server, mode, patched
        self.args, self.rng, self.result, self.label = args, rng, result, label
        self.port: int | Endpoint = endpoint or server.port
        self.checkout, self.api_key = server.checkout, api_key
        #: Filed orders and queue rows of the latency phase, not counted in the row.
        self.filed_before: Counter = Counter()
        self.stored_before: Counter = Counter()
        self.webhook_path = f"/strategy/webhook/{webhook_id}"
        self.probe_path = args.probe_path or ("/order-queue/api/health" if patched else "/")
        result.probe_path = self.probe_path
        self.window, self.ledger = UpWindow(), Ledger()
        self.monitor = FiledMonitor(self.checkout, mode)
        self.probe = Probe(self.port, self.probe_path, self.window)
        self.last_restart = 0.0

    def _wait_up(self, after: str) -> None:
        """Block until the app answers again, then count the server as up."""
        if not wait_answering(self.port, self.probe_path, self.args.boot_timeout):
            raise RuntimeError(
                f"server did not answer {self.probe_path} {after} within "
                f"{self.args.boot_timeout}s (see {self.server.log_path})"
            )
        self.window.set(True)

    def boot(self) -> None:
        """First start; for the plugin, also wait until its dispatcher runs."""
        self.monitor.start()
        self.server.start()
        self.last_restart = time.time()
        self._wait_up("at first start")
        if self.patched:
            health = wait_dispatcher(self.port, 30)
            self.result.server_model = health.get("process", {}).get("server_model", "?")
            self.result.api_road = str(health.get("process", {}).get("api_road"))
        self.probe.start()
        log(
            f"[{self.label}] up on port {self.port} (pid {self.server.main_pid()}"
            f"{', queue runs as ' + self.result.server_model if self.patched else ''})"
        )

    def measure_latency(self, count: int) -> None:
        """Calm alerts, one at a time, each once the last is filed: alert to filed through
        the webhook (and the queue) vs direct placement on ``/api/v1/placeorder`` with the
        API key, both on the clients' endpoint (nginx in that layout).  What they file is
        left out of the row's counts."""
        paths = {
            "webhook": self.webhook_path,
            "direct": "/api/v1/placeorder",
        }
        for road, path in paths.items():
            took_ms: list[float] = []
            answers: Counter = Counter()
            for index in range(count):
                symbol = SYMBOLS[index % len(SYMBOLS)]
                if road == "direct":
                    body = {
                        "apikey": self.api_key,
                        "strategy": "Direct",
                        "symbol": symbol,
                        "exchange": "NSE",
                        "action": "BUY",
                        "product": PRODUCT,
                        "pricetype": "MARKET",
                        "quantity": "1",
                    }
                else:
                    body = {"symbol": symbol, "action": "BUY"}
                seen = filed_count(self.checkout, self.mode)
                started = time.perf_counter()
                outcome, status, _took = http_call(
                    self.port, "POST", path, json.dumps(body).encode(), timeout=120
                )
                answers[str(status) if status else outcome] += 1
                deadline = time.perf_counter() + 30
                while (
                    filed_count(self.checkout, self.mode) == seen and time.perf_counter() < deadline
                ):
                    time.sleep(0.001)
                if filed_count(self.checkout, self.mode) > seen:
                    took_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(1.1)  # OpenAlgo's limiter window, so no alert meets the last one's
            self.result.latency[road] = {
                "sent": count,
                "filed": len(took_ms),
                "p50_ms": round(statistics.median(took_ms), 1) if took_ms else None,
                "max_ms": round(max(took_ms), 1) if took_ms else None,
                "answers": dict(answers),
            }
            log(f"[{self.label}] latency {road}: {self.result.latency[road]}")
        time.sleep(2)  # an answer cut off by nginx may still be filed
        self.filed_before = read_filed(self.checkout, self.mode)
        if self.patched:
            self.stored_before = read_queue(self.checkout).stored

    def run_round(self, number: int, how: str) -> None:
        """One burst, killed part-way (after 20-70% of it was answered), then restarted."""
        args = self.args
        size = args.burst or (60 if self.mode == "analyzer" else 80)
        orders = make_burst_orders(self.rng, size, self.mode, args.sell_share)
        burst = Burst(
            self.port, self.webhook_path, orders, args.threads, args.gap, self.ledger, self.window
        )
        burst.start()
        if args.no_kill:  # a calm burst: every webhook answered, nothing killed
            burst.join()
            self.result.rounds += 1
            return
        kill_after = self.rng.randint(int(size * 0.2), int(size * 0.7))
        deadline = time.monotonic() + 60
        while burst.answered < kill_after and burst.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.window.set(False)
        burst.killed.set()
        self_restarting, pid = self.server.kill(how)
        kill_time = time.time()
        self.result.kills.append(how)
        log(
            f"[{self.label}] round {number}/{args.rounds}: {how} pid {pid} after "
            f"{burst.answered} answers"
        )
        if self_restarting:  # gunicorn's master forks a new worker at once
            self.last_restart = kill_time
            deadline = time.monotonic() + 30
            while self.server.worker_pid() in (None, pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        elif not self.server.wait_exit(args.exit_timeout):
            self.result.forced_stops += 1
            log(f"[{self.label}] server needed SIGKILL after {args.exit_timeout}s")
        burst.join(120)
        if not self_restarting:
            self.server.start()
            self.last_restart = time.time()
        self._wait_up(f"after {how}")
        self.result.rounds += 1

    def finish(self) -> None:
        """Drain, stop probing, count, and stop the server gracefully."""
        log(f"[{self.label}] bursts done: {sum(self.ledger.acked.values())} acknowledged; draining")
        self.result.drained = drain(
            self.checkout,
            self.mode,
            self.patched,
            self.ledger,
            self.monitor,
            self.args.drain_timeout,
        )
        self.window.set(False)
        self.probe.stop_event.set()
        self.probe.join(15)
        time.sleep(1)
        self.count()
        if not self.server.stop(self.args.exit_timeout):
            self.result.forced_stops += 1

    def count(self) -> None:
        """Fill the result row from the ledger and the databases."""
        r, ledger = self.result, self.ledger
        filed = read_filed(self.checkout, self.mode) - self.filed_before
        queue = read_queue(self.checkout) if self.patched else None
        if queue is not None and self.stored_before:
            queue.stored -= self.stored_before
        r.fired, r.refused, r.gateway = ledger.fired, ledger.refused, ledger.gateway
        r.acked = sum(ledger.acked.values())
        r.unanswered = sum(ledger.unanswered.values())
        r.statuses = {str(k): v for k, v in sorted(ledger.statuses.items())}
        r.filed = sum(filed.values())
        keys = set(filed) | set(ledger.acked) | set(ledger.unanswered)
        if queue is not None:
            keys |= set(queue.stored)
            r.stored = sum(queue.stored.values())
            r.in_doubt = queue.dead_reasons.get("in_doubt", 0) + queue.states["in_doubt"]
            r.dead_other = {k: n for k, n in queue.dead_reasons.items() if k != "in_doubt"}
            r.left_unfinished = queue.unfinished
            r.attempts = dict(sorted(queue.attempts.items()))
            r.silent = 0
        for key in keys:
            acked = ledger.acked[key]
            # what may legitimately be filed: acknowledged, or stored with the answer cut
            # off; without a queue database, any webhook that may have been taken in
            allowed = (
                max(acked, queue.stored[key])
                if queue is not None
                else acked + ledger.unanswered[key]
            )
            r.lost += max(0, acked - filed[key])
            if queue is not None:
                r.silent += max(0, acked - filed[key] - queue.held[key])
            r.duplicated += max(0, filed[key] - allowed)
        if self.monitor.last_change:
            r.restart_to_last_filed = self.monitor.last_change - self.last_restart
        settled = last_settled_at(self.checkout) if self.patched else None
        if settled is not None and settled >= self.last_restart:
            r.restart_to_last_settled = settled - self.last_restart
        r.slowest_probe_ms = self.probe.slowest * 1000
        r.slowest_probe_at = self.probe.slowest_at
        r.probe_timeouts = self.probe.timeouts
        r.slowest_webhook_ms = ledger.slowest_webhook * 1000
        r.slowest_webhook_at = ledger.slowest_webhook_at
        log(
            f"[{self.label}] counted: acked {r.acked} filed {r.filed} lost {r.lost} "
            f"duplicated {r.duplicated}; slowest probe {r.slowest_probe_ms:.0f} ms at "
            f"{self.probe.slowest_at}"
        )

    def stop_threads(self) -> None:
        self.probe.stop_event.set()
        self.monitor.stop_event.set()


def run_cell(
    src: Path,
    server_kind: str,
    mode: str,
    args,
    rng: random.Random,
    out_dir: Path,
    registry: list[Server | Nginx],
    plugin_root: Path,
) -> CellResult:
    """Build, seed, burst-kill-restart and count one server x mode cell.

    ``--layout nginx``: gunicorn bound to a unix socket in the cell's directory, nginx
    (TLS, ``args.public_name``) in front of it; clients and probe go through nginx."""
    patched = not args.unpatched
    layout = getattr(args, "layout", "loopback")
    result = CellResult(server=server_kind, mode=mode, patched=patched, layout=layout)
    label = f"{server_kind}-{mode}-{'patched' if patched else 'unpatched'}"
    if layout == "nginx":
        label = f"nginx-{label}"
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"oa-matrix-{label}-"))
    checkout = work / "oa"
    log_path = out_dir / f"{label}.log"
    log_path.unlink(missing_ok=True)  # the server appends across its restarts
    result.log_path = str(log_path)
    server = cell = nginx = None
    try:
        endpoint, public_url, bind, extra_env = None, "", "", {}
        if layout == "nginx":
            nginx_port = free_port()
            public_url = f"https://{args.public_name}:{nginx_port}"
            socket_path = work / "openalgo.sock"
            bind = f"unix:{socket_path}"
            extra_env = {"SSL_CERT_FILE": str(Path(args.ca_bundle).resolve())}
            endpoint = Endpoint(
                nginx_port, args.public_name, tls_client_context(args.ca_bundle), gateway=True
            )
        port, webhook_id, api_key = prepare_checkout(
            src, checkout, mode, patched, args, plugin_root, label, public_url
        )
        if layout == "nginx":
            nginx = Nginx(work / "nginx", nginx_port, socket_path, args)
            registry.append(nginx)
            nginx.start()
            log(f"[{label}] nginx on {public_url} -> {bind}")
        server = Server(
            server_kind, checkout, port, args.oa_python, log_path, bind=bind, extra_env=extra_env
        )
        registry.append(server)
        cell = Cell(server, mode, patched, webhook_id, args, rng, result, label, endpoint, api_key)
        cell.boot()
        if getattr(args, "latency", 0):
            cell.measure_latency(args.latency)
        plan = KILL_PLANS[server_kind]
        for number in range(1, args.rounds + 1):
            cell.run_round(number, plan[(number - 1) % len(plan)])
        cell.finish()
    except Exception as exc:  # noqa: BLE001 - one broken cell must not hide the others
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"[{label}] FAILED: {result.error}")
    finally:
        if cell is not None:
            cell.stop_threads()
        if server is not None:
            server.force_kill()
        if nginx is not None:
            nginx.force_kill()
            nginx.keep_logs(out_dir, label)
        result.log_counts, result.log_samples = scan_log(log_path, args.log_samples)
        result.api_road_log = road_line(log_path)
        result.seconds = time.monotonic() - started
        if args.keep:
            log(f"[{label}] checkout kept at {checkout}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def drain(
    checkout: Path, mode: str, patched: bool, ledger: Ledger, monitor: FiledMonitor, timeout: float
) -> bool:
    """Wait until every order that can still arrive has arrived; False on timeout.

    Patched: no pending / sending / in_doubt rows in the queue database.  Unpatched (no
    record of what is queued in memory): the filed count has not moved for 15 s since the
    drain began, or for 3 s once it covers every acknowledged and unanswered webhook.
    """
    deadline = time.monotonic() + timeout
    began = time.time()
    possible = sum(ledger.acked.values()) + sum(ledger.unanswered.values())
    while time.monotonic() < deadline:
        if patched:
            queue = read_queue(checkout)
            if queue.states and queue.unfinished == 0:
                time.sleep(1)
                return True
        else:
            quiet = 3 if monitor.count >= possible else 15
            if time.time() - max(monitor.last_change, began) > quiet:
                return True
        time.sleep(0.5)
    return False


# --------------------------------------------------------------------------- report

COLUMNS = [
    ("server", 8),
    ("mode", 9),
    ("queue", 9),
    ("rounds", 6),
    ("fired", 5),
    ("acked", 5),
    ("unans", 5),
    ("stored", 6),
    ("filed", 5),
    ("lost", 4),
    ("silent", 6),
    ("dup", 3),
    ("doubt", 5),
    ("dead*", 5),
    ("left", 4),
    ("restart->last s", 15),
    ("probe ms", 8),
    ("hook ms", 7),
]


def _cell(value, digits=0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(results: list[CellResult]) -> None:
    """The matrix: one row per server x mode, then notes per row."""
    header = " | ".join(name.ljust(width) for name, width in COLUMNS)
    print(header)
    print("-" * len(header))
    for r in results:
        if r.error and not r.rounds:
            print(f"{r.server:<8} | {r.mode:<9} | FAILED: {r.error}")
            continue
        restart = r.restart_to_last_filed
        row = [
            r.server,
            r.mode,
            "durable" if r.patched else "memory",
            r.rounds,
            r.fired,
            r.acked,
            r.unanswered,
            r.stored,
            r.filed,
            r.lost,
            r.silent,
            r.duplicated,
            r.in_doubt,
            sum(r.dead_other.values()) if r.patched else None,
            r.left_unfinished,
            (
                f"{restart:.1f}"
                if restart is not None and restart >= 0
                else "none after"
                if restart is not None
                else None
            ),
            r.slowest_probe_ms,
            r.slowest_webhook_ms,
        ]
        print(
            " | ".join(
                _cell(v, 0).ljust(width) for v, (_n, width) in zip(row, COLUMNS, strict=False)
            )
        )
    print()
    print(
        "fired = webhooks that reached a connection (refused ones not counted); unans = "
        "connection cut before an answer;\nstored = rows in order_queue.db; silent = lost and "
        "not held as dead/in_doubt in the queue;\ndoubt = dead "
        "with reason in_doubt + left in_doubt (handed to the operator);\ndead* = dead for "
        "another reason; left = pending/sending/in_doubt at the end; restart->last = last "
        "restart to last order filed;\nprobe ms = slowest probe answer while up; hook ms = "
        "slowest webhook answer while up."
    )
    for r in results:
        if r.restart_to_last_settled is not None:
            print(
                f"[{r.server} / {r.mode}] recovery: last in-doubt order settled "
                f"{r.restart_to_last_settled:.1f} s after the last restart; backlog: last "
                f"order filed {r.restart_to_last_filed or 0:.1f} s after it"
            )
    for r in results:
        print(
            f"\n[{r.server} / {r.mode} / {'durable' if r.patched else 'memory'}] "
            f"kills: {', '.join(r.kills) or '-'}; answers: {r.statuses}; refused "
            f"connections: {r.refused}; drained: {r.drained}; forced stops: "
            f"{r.forced_stops}; probe {r.probe_path}: slowest at {r.slowest_probe_at or '-'}, "
            f"timeouts {r.probe_timeouts}; "
            f"cell took {r.seconds:.0f} s"
            f"{'; queue runs as ' + r.server_model if r.server_model else ''}"
        )
        print(f"  slowest webhook answer at {r.slowest_webhook_at or '-'}")
        if r.gateway:
            print(f"  answered by nginx itself (502/503/504, counted as unans): {r.gateway}")
        if r.api_road or r.api_road_log:
            print(f"  orders' road to the API: health {r.api_road or '-'}")
            if r.api_road_log:
                print(f"    log: {r.api_road_log}")
        for road, figures in r.latency.items():
            print(f"  latency, alert -> filed, {road}: {figures}")
        if r.attempts:
            print(f"  queue attempt trail (kind:outcome): {r.attempts}")
        if r.dead_other:
            print(f"  dead (other reasons): {r.dead_other}")
        if r.error:
            print(f"  ERROR: {r.error}")
        print(f"  app log {r.log_path}: {r.log_counts}")
        for sample in r.log_samples:
            print(f"    {sample}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every cell, print the table; always clean up."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("openalgo", type=Path, help="OpenAlgo checkout (left untouched)")
    parser.add_argument("--servers", default="dev,gunicorn")
    parser.add_argument("--modes", default="analyzer,semi_auto")
    parser.add_argument("--rounds", type=int, default=6, help="kill rounds per cell")
    parser.add_argument(
        "--no-kill",
        action="store_true",
        help="bursts without kills (pacing against OpenAlgo's limiter)",
    )
    parser.add_argument(
        "--unpatched", action="store_true", help="baseline: plain OpenAlgo with its in-memory queue"
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="webhooks per round (default 60 analyzer, 80 semi_auto)",
    )
    parser.add_argument("--threads", type=int, default=6, help="webhook client threads")
    parser.add_argument(
        "--gap", type=float, default=0.02, help="pause between one client's webhooks (s)"
    )
    parser.add_argument(
        "--sell-share",
        type=float,
        default=0.15,
        help="share of SELL (smart order) webhooks in semi_auto",
    )
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument(
        "--queue-road",
        choices=("default", "http"),
        default="default",
        help="http: the queue posts to OpenAlgo's loopback port instead of in-process",
    )
    parser.add_argument("--boot-timeout", type=float, default=90)
    parser.add_argument(
        "--exit-timeout",
        type=float,
        default=60,
        help="how long a SIGTERMed server may take before SIGKILL",
    )
    parser.add_argument(
        "--probe-path", default="", help="probe URL path (default: plugin health, or / unpatched)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--queue-url",
        default="",
        help="a PostgreSQL URL: each cell's queue in a fresh schema there "
        "(OpenAlgo's environment needs psycopg); default: SQLite",
    )
    parser.add_argument("--oa-python", default=DEFAULT_OA_PYTHON)
    parser.add_argument("--installer-python", default=DEFAULT_INSTALLER_PYTHON)
    parser.add_argument(
        "--plugin-ref",
        default="",
        help="install the plugin from this git ref of the project "
        "(git archive) instead of the working tree, e.g. HEAD",
    )
    parser.add_argument("--out", type=Path, default=None, help="where logs and JSON go")
    parser.add_argument("--keep", action="store_true", help="keep the checkout copies")
    parser.add_argument("--log-samples", type=int, default=8)
    parser.add_argument(
        "--layout",
        choices=("loopback", "nginx"),
        default="loopback",
        help="loopback: clients on OpenAlgo's own TCP port (default); nginx: install.sh's "
        "production layout, gunicorn on a unix socket behind nginx with TLS",
    )
    parser.add_argument(
        "--nginx-read-timeout",
        type=float,
        default=300,
        help="nginx's proxy_read_timeout (s) for /api/ and the webhooks (install.sh: 300)",
    )
    parser.add_argument("--nginx", default="nginx", help="the nginx binary")
    parser.add_argument(
        "--public-name", default=DEFAULT_PUBLIC_NAME, help="TLS name of nginx (-> 127.0.0.1)"
    )
    parser.add_argument("--tls-cert", default=DEFAULT_TLS_CERT)
    parser.add_argument("--tls-key", default=DEFAULT_TLS_KEY)
    parser.add_argument(
        "--ca-bundle",
        default=DEFAULT_CA_BUNDLE,
        help="CAs the clients verify nginx with; also OpenAlgo's SSL_CERT_FILE",
    )
    parser.add_argument(
        "--latency",
        type=int,
        default=0,
        help="after boot, N calm alerts per road: alert -> filed through the webhook vs "
        "direct /api/v1/placeorder, on the clients' endpoint (not counted in the row)",
    )
    args = parser.parse_args(argv)

    src = args.openalgo.resolve()
    if not (src / "app.py").exists() or not (src / ".sample.env").exists():
        parser.error(f"{src} does not look like an OpenAlgo checkout")
    if (src / ".order_queue_plugin").exists():
        parser.error(f"{src} has the plugin installed; pass a pristine checkout")
    servers = [s for s in args.servers.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for s in servers:
        if s not in KILL_PLANS:
            parser.error(f"unknown server {s!r} (dev, gunicorn)")
    for m in modes:
        if m not in ("analyzer", "semi_auto"):
            parser.error(f"unknown mode {m!r} (analyzer, semi_auto)")
    if args.layout == "nginx":
        if servers != ["gunicorn"]:
            parser.error("--layout nginx runs gunicorn only (--servers gunicorn)")
        for option in ("tls_cert", "tls_key", "ca_bundle"):
            if not Path(getattr(args, option)).is_file():
                parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: no file")
        if shutil.which(args.nginx) is None:
            parser.error(f"no nginx binary {args.nginx!r}")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="openalgo-matrix-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(
        ["git", "-C", str(MAIN), "rev-parse", "--short", args.plugin_ref or "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(MAIN), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    dirty = [d.strip() for d in dirty if d.strip()] if not args.plugin_ref else []
    plugin_root = MAIN
    if not args.unpatched:
        try:
            plugin_root = plugin_source(args.plugin_ref, out_dir / "plugin-src")
        except subprocess.CalledProcessError as exc:
            parser.error(f"cannot export --plugin-ref {args.plugin_ref}: {exc}")
    log(
        f"seed {seed}; plugin {MAIN} at {head}{' (+ uncommitted: ' + ', '.join(dirty) + ')' if dirty else ''}; "  # noqa: E501
        f"logs in {out_dir}"
    )

    registry: list[Server | Nginx] = []
    results: list[CellResult] = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        for server_kind in servers:
            for mode in modes:
                results.append(
                    run_cell(src, server_kind, mode, args, rng, out_dir, registry, plugin_root)
                )
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
    finally:
        for server in registry:
            server.force_kill()
    log(f"matrix took {time.monotonic() - started:.0f} s")
    print(
        f"\nOpenAlgo {src} | plugin {'not installed (--unpatched)' if args.unpatched else head}"
        f" | seed {seed} | rounds {args.rounds} | threads {args.threads}"
        + (
            f" | layout nginx: TLS {args.public_name}, proxy_read_timeout "
            f"{_nginx_seconds(args.nginx_read_timeout)} on /api/ and webhooks, gunicorn "
            f"on a unix socket"
            if args.layout == "nginx"
            else ""
        )
        + "\n"
    )
    print_table(results)
    (out_dir / "results.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "plugin_head": head,
                "plugin_dirty": dirty,
                "results": [{k: v for k, v in r.__dict__.items()} for r in results],
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nlogs and results.json in {out_dir}")
    failed = any(r.error or (r.patched and (r.silent or r.duplicated)) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
