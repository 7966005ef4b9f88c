"""Squareoffs across restarts inside a real OpenAlgo checkout.

    python tools/openalgo_squareoff.py /path/to/openalgo [--server gunicorn|dev] [--unpatched]

OpenAlgo registers an intraday strategy's squareoff job only when the strategy is
created, toggled or edited, never at start.  Two scenarios, each in a fresh copy of the
checkout in analyzer mode (its sandbox keeps orders and positions without a broker), with
an intraday LONG strategy on three symbols whose sandbox positions are open (10 each):

1. **restart before the squareoff**: OpenAlgo boots, the strategy's squareoff is two
   minutes ahead; OpenAlgo is restarted one minute before it.  Then: how many closing
   SELL orders the sandbox filed by a minute after the squareoff (upstream: none).
2. **down across the squareoff**: OpenAlgo is stopped before the squareoff minute and
   started a minute after it: closes filed at start; then restarted once more: closes
   filed in all (must stay one per symbol).

OpenAlgo runs under libfaketime (Debian's ``faketime``) shifted to 14:00 IST of today, so
the squareoff falls inside the equity session whatever the hour here; everything in it,
the queue included, reads that one shifted clock.  Reuses the kill matrix's helpers
(``tools/openalgo_matrix.py``) for the copy, the install, the ``.env`` and the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openalgo_matrix as matrix

SYMBOLS = ["SBIN", "INFY", "TCS"]
OPEN_QUANTITY = 10
IST = timezone(timedelta(hours=5, minutes=30))

SEED = r"""
import json, secrets, sys
from utils.env_check import load_and_check_env_variables
load_and_check_env_variables()
cfg = json.loads(sys.argv[1])
from database import auth_db, sandbox_db, settings_db, strategy_db, symbol, user_db
for module in (user_db, auth_db, strategy_db, settings_db, symbol, sandbox_db):
    module.init_db()
user = "admin"
assert user_db.add_user(user, "admin@example.invalid", secrets.token_urlsafe(16) + "Aa1!",
                        is_admin=True) is not None
auth_db.upsert_api_key(user, secrets.token_hex(32))
strategy = strategy_db.create_strategy(
    name="Intraday", webhook_id=cfg["webhook_id"], user_id=user, is_intraday=True,
    trading_mode="LONG", start_time="09:20", end_time="13:00",
    squareoff_time=cfg["squareoff"])
for i, name in enumerate(cfg["symbols"]):
    assert strategy_db.add_symbol_mapping(strategy.id, name, "NSE", 1, "CNC") is not None
    symbol.db_session.add(symbol.SymToken(
        symbol=name, brsymbol=name + "-EQ", name=name, exchange="NSE", brexchange="NSE",
        token=str(1000 + i), expiry="", strike=0.0, lotsize=1, instrumenttype="EQ",
        tick_size=0.05))
    sandbox_db.db_session.add(sandbox_db.SandboxPositions(
        user_id=user, symbol=name, exchange="NSE", product="CNC",
        quantity=cfg["open_quantity"], average_price=100, ltp=100))
symbol.db_session.commit()
sandbox_db.db_session.commit()
assert auth_db.update_order_mode(user, "auto")
settings_db.set_analyze_mode(True)
auth_db.upsert_auth(user, "offline-token", "offline")
print("SEEDED", strategy.id)
"""


def shifted_clock() -> int:
    """Seconds to add to this machine's clock for 14:00 IST today (libfaketime offset)."""
    now = datetime.now(IST)
    return round((now.replace(hour=14, minute=0, second=0, microsecond=0) - now).total_seconds())


def fake_now(offset: int) -> datetime:
    return datetime.now(IST) + timedelta(seconds=offset)


def wait_until(moment: datetime, offset: int) -> None:
    while fake_now(offset) < moment:
        time.sleep(0.5)


def closes(checkout: Path) -> list[tuple]:
    return matrix._query(
        checkout / "db" / "sandbox.db",
        "SELECT symbol, action, quantity FROM sandbox_orders ORDER BY id",
    )


def health(port: int) -> dict:
    conn = http.client.HTTPConnection(matrix.HOST, port, timeout=10)
    try:
        conn.request("GET", "/order-queue/api/health")
        return json.loads(conn.getresponse().read() or b"{}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return {"error": str(exc)}
    finally:
        conn.close()


def prepare(src: Path, work: Path, name: str, squareoff: str, args, offset: int):
    checkout = work / name
    matrix.copy_checkout(src, checkout)
    if not args.unpatched:
        matrix.run_checked(
            [args.installer_python, "-m", "install.openalgo", str(checkout)],
            matrix.MAIN,
            120,
            "plugin install",
        )
    port, ws_port, zmq_port = matrix.free_port(), matrix.free_port(), matrix.free_port()
    matrix.write_env(checkout, port, ws_port, zmq_port)
    seed = {
        "webhook_id": str(uuid.uuid4()),
        "symbols": SYMBOLS,
        "squareoff": squareoff,
        "open_quantity": OPEN_QUANTITY,
    }
    matrix.run_checked(
        ["faketime", "-f", f"{offset:+d}", args.oa_python, "-c", SEED, json.dumps(seed)],
        checkout,
        180,
        "seeding OpenAlgo",
    )
    return checkout, matrix.Server(
        args.server, checkout, port, args.oa_python, work / f"{name}.log"
    )


def boot(server, args, offset: int) -> None:
    os.environ["FAKETIME"] = f"{offset:+d}"
    # Monotonic time is shifted too: libfaketime 0.9.10 refuses Python's sleeps
    # (clock_nanosleep on the monotonic clock) when only the wall clock is shifted.
    os.environ["LD_PRELOAD"] = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
    try:
        server.start()
    finally:
        for name in ("FAKETIME", "LD_PRELOAD"):
            os.environ.pop(name, None)
    if not matrix.wait_answering(server.port, "/", 120):
        raise RuntimeError(f"OpenAlgo did not answer; see {server.log_path}")
    if not args.unpatched:
        matrix.wait_dispatcher(server.port, 60)


def restart_before(src: Path, work: Path, args, offset: int) -> dict:
    due = (fake_now(offset) + timedelta(minutes=2)).replace(second=0, microsecond=0) + timedelta(
        minutes=1
    )
    checkout, server = prepare(src, work, "restart-before", due.strftime("%H:%M"), args, offset)
    try:
        boot(server, args, offset)
        wait_until(due - timedelta(minutes=1), offset)
        server.stop(30)
        boot(server, args, offset)
        wait_until(due + timedelta(seconds=60), offset)
        return {
            "scenario": "restart 1 min before the squareoff",
            "squareoff": due.strftime("%H:%M"),
            "closes filed": len(closes(checkout)),
            "orders": closes(checkout),
        }
    finally:
        server.force_kill()


def down_across(src: Path, work: Path, args, offset: int) -> dict:
    due = (fake_now(offset) + timedelta(minutes=2)).replace(second=0, microsecond=0)
    checkout, server = prepare(src, work, "down-across", due.strftime("%H:%M"), args, offset)
    try:
        boot(server, args, offset)
        wait_until(due - timedelta(seconds=30), offset)
        server.stop(30)
        wait_until(due + timedelta(minutes=1), offset)
        boot(server, args, offset)
        started = time.monotonic()
        while len(closes(checkout)) < len(SYMBOLS) and time.monotonic() - started < 60:
            time.sleep(0.5)
        at_start = len(closes(checkout))
        first_start = health(server.port)
        server.stop(30)
        boot(server, args, offset)
        time.sleep(20)
        return {
            "scenario": "down across the squareoff, started 1 min after",
            "squareoff": due.strftime("%H:%M"),
            "closes filed at start": at_start,
            "closes filed after another restart": len(closes(checkout)),
            "health warnings": first_start.get("warnings"),
            "orders": closes(checkout),
        }
    finally:
        server.force_kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("openalgo", type=Path)
    parser.add_argument("--server", choices=("gunicorn", "dev"), default="gunicorn")
    parser.add_argument("--unpatched", action="store_true", help="plain OpenAlgo: the baseline")
    parser.add_argument("--oa-python", default=matrix.DEFAULT_OA_PYTHON)
    parser.add_argument("--installer-python", default=matrix.DEFAULT_INSTALLER_PYTHON)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="oa-squareoff-"))
    offset = shifted_clock()
    matrix.log(
        f"OpenAlgo's clock shifted by {offset:+d} s (now {fake_now(offset):%H:%M} IST); "
        f"work in {work}"
    )
    results = [
        restart_before(args.openalgo, work, args, offset),
        down_across(args.openalgo, work, args, offset),
    ]
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
