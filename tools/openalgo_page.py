"""The admin page and the webhook limit inside a real OpenAlgo checkout, in real Chromium.

    python tools/openalgo_page.py /path/to/openalgo [--screenshot docs/openalgo-admin.png]

In a fresh copy of the checkout (analyzer mode, gunicorn + eventlet as OpenAlgo's image
runs it), with OpenAlgo's default Content-Security-Policy (``CSP_SCRIPT_SRC`` removed from
the ``.env``: scripts from 'self' and cdn.socket.io only, no inline script):

1. ``WEBHOOK_RATE_LIMIT`` is 5 per minute: a burst of webhooks past it gets the plugin's
   429 with JSON and ``Retry-After``, not OpenAlgo's redirect to /rate-limited;
2. headless Chromium signs in through OpenAlgo's own React login (the broker session is
   resumed through a stand-in ``broker/offline/api/funds.py`` written into the copy, as
   no broker can be reached here), opens /order-queue/, and checks: the page goes live,
   the charts draw, a dead order is replayed, an order dead in doubt is settled "not
   placed" from its page and then reaches the sandbox; no script refused by the policy.

Prints one JSON line of findings; exit status 1 if any check failed.  Needs Debian's
chromium and chromium-driver, and selenium (this project's dev requirements).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import openalgo_matrix as matrix

PASSWORD = "Page-check-pw-1!"
FUNDS_STANDIN = '''"""Stand-in written by the order queue's page check: a valid broker session."""


def get_margin_data(auth_token):
    return {"availablecash": "100000.00", "collateral": "0", "utiliseddebits": "0"}
'''

SEED = r"""
import json, sys
from utils.env_check import load_and_check_env_variables
load_and_check_env_variables()
cfg = json.loads(sys.argv[1])
from database import auth_db, sandbox_db, settings_db, strategy_db, symbol, user_db
for module in (user_db, auth_db, strategy_db, settings_db, symbol, sandbox_db):
    module.init_db()
assert user_db.add_user("admin", "admin@example.invalid", cfg["password"], is_admin=True)
auth_db.upsert_api_key("admin", "k" * 64)
strategy = strategy_db.create_strategy(name="Page", webhook_id=cfg["webhook_id"],
                                       user_id="admin", is_intraday=False, trading_mode="LONG")
for i, name in enumerate(["SBIN", "INFY", "NOSUCH"]):
    assert strategy_db.add_symbol_mapping(strategy.id, name, "NSE", 1, "CNC") is not None
    if name != "NOSUCH":  # no symtoken: OpenAlgo refuses it (a dead order to replay)
        symbol.db_session.add(symbol.SymToken(
            symbol=name, brsymbol=name + "-EQ", name=name, exchange="NSE", brexchange="NSE",
            token=str(1000 + i), expiry="", strike=0.0, lotsize=1, instrumenttype="EQ",
            tick_size=0.05))
        sandbox_db.db_session.add(sandbox_db.SandboxPositions(
            user_id="admin", symbol=name, exchange="NSE", product="CNC", quantity=0,
            average_price=100, ltp=100))
symbol.db_session.commit()
sandbox_db.db_session.commit()
assert auth_db.update_order_mode("admin", "auto")
settings_db.set_analyze_mode(True)
auth_db.upsert_auth("admin", "offline-token", "offline")
print("SEEDED")
"""

# Run with this project's interpreter: an order dead in doubt, written through the
# plugin's own store with the checkout's pepper (nothing inside OpenAlgo can make one on
# demand: it takes a lost answer and an orderbook that cannot tell).
IN_DOUBT = r"""
import json, sys
from database.order_queue import api_keys
from database.order_queue.store import QueueStore
from database.order_queue_db import DeadReason, RateLimits, utcnow
cfg = json.loads(sys.argv[1])
store = QueueStore(cfg["url"], sealing=api_keys.KeySealing(cfg["pepper"]))
payload = {"apikey": "k" * 64, "strategy": "Page", "symbol": "INFY", "exchange": "NSE",
           "product": "CNC", "action": "BUY", "pricetype": "MARKET", "quantity": "3"}
for _ in range(20):
    now = utcnow()
    order_id = store.intake.enqueue("placeorder", payload, now=now, max_age_seconds=300)
    claimed = store.claims.claim_next("page-check", now=now, lease_seconds=30,
                               limits=RateLimits(smart=100, regular=100, window=1.0)).order
    if claimed is not None and claimed.id == order_id:
        store.lifecycle.mark_dead(claimed, now=now, actor="page-check", reason=DeadReason.IN_DOUBT,
                        outcome="unknown", error="answer lost; orderbook could not tell")
        print(order_id)
        break
"""


def env_value(checkout: Path, name: str) -> str:
    found = re.search(rf"^{name}\s*=\s*'([^']*)'", (checkout / ".env").read_text(), re.M)
    return found.group(1) if found else ""


def post_webhook(port: int, webhook_id: str, symbol: str) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection(matrix.HOST, port, timeout=30)
    try:
        conn.request(
            "POST",
            f"/strategy/webhook/{webhook_id}",
            json.dumps({"symbol": symbol, "action": "BUY"}),
            {"Content-Type": "application/json"},
        )
        answer = conn.getresponse()
        body = answer.read()
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        return (
            answer.status,
            data,
            answer.getheader("Retry-After") or answer.getheader("Location") or "",
        )
    finally:
        conn.close()


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver, predicate, timeout=30):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(predicate)


def run(args) -> dict:
    work = args.out or Path(tempfile.mkdtemp(prefix="oa-page-"))
    checkout = work / "openalgo"
    matrix.copy_checkout(args.openalgo, checkout)
    matrix.run_checked(
        [args.installer_python, "-m", "install.openalgo", str(checkout)],
        matrix.MAIN,
        120,
        "plugin install",
    )
    port = matrix.free_port()
    matrix.write_env(checkout, port, matrix.free_port(), matrix.free_port())
    env = (checkout / ".env").read_text()
    env = re.sub(r"^[ \t]*CSP_SCRIPT_SRC[ \t]*=.*\n", "", env, flags=re.M)  # OpenAlgo's default
    env = re.sub(
        r"^WEBHOOK_RATE_LIMIT = .*$", "WEBHOOK_RATE_LIMIT = '5 per minute'", env, flags=re.M
    )
    (checkout / ".env").write_text(env)
    (checkout / "broker" / "offline" / "api").mkdir(parents=True)
    (checkout / "broker" / "offline" / "api" / "funds.py").write_text(FUNDS_STANDIN)
    webhook_id = str(uuid.uuid4())
    matrix.run_checked(
        [args.oa_python, "-c", SEED, json.dumps({"password": PASSWORD, "webhook_id": webhook_id})],
        checkout,
        180,
        "seeding OpenAlgo",
    )
    server = matrix.Server("gunicorn", checkout, port, args.oa_python, work / "openalgo.log")
    found: dict = {"work": str(work)}
    try:
        server.start()
        assert matrix.wait_answering(port, "/", 120), "OpenAlgo did not answer"
        matrix.wait_dispatcher(port, 60)
        # 1. The webhook limit: one for the dead order, then a burst past it.
        answers = [post_webhook(port, webhook_id, symbol) for symbol in ["NOSUCH"] + ["SBIN"] * 6]
        found["webhook statuses"] = [status for status, _, _ in answers]
        refused = [a for a in answers if a[0] != 200]
        found["refused answer"] = (
            {"status": refused[0][0], "body": refused[0][1], "Retry-After": refused[0][2]}
            if refused
            else None
        )
        in_doubt = subprocess.run(
            [
                args.installer_python,
                "-c",
                IN_DOUBT,
                json.dumps(
                    {
                        "pepper": env_value(checkout, "API_KEY_PEPPER"),
                        "url": f"sqlite:///{checkout / 'db' / 'order_queue.db'}",
                    }
                ),
            ],
            cwd=matrix.MAIN,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doubt_id = int(in_doubt.stdout.split()[-1])
        found.update(page_checks(args, work, port, doubt_id))
        found["health"] = health_summary(port)
    finally:
        server.force_kill()
    found["sandbox orders"] = matrix._query(
        checkout / "db" / "sandbox.db", "SELECT symbol, action, quantity FROM sandbox_orders"
    )
    return found


def page_checks(args, work: Path, port: int, doubt_id: int) -> dict:
    from selenium.webdriver.common.by import By

    base = f"http://{matrix.HOST}:{port}"
    driver = browser(work / "chromium-profile")
    found: dict = {}
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{base}/login")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
        driver.find_element(By.ID, "username").send_keys("admin")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(driver, lambda d: "/login" not in d.current_url)
        found["after login"] = driver.current_url.replace(base, "")
        driver.get(f"{base}/order-queue/")
        wait(driver, lambda d: d.find_element(By.ID, "live").text.strip().lower() == "live")
        found["page live"] = True
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#charts svg")) == 3)
        found["charts drawn"] = len(driver.find_elements(By.CSS_SELECTOR, "#charts svg"))

        def tick_and_replay(d):  # the table repaints on live events: find and click at once
            row = next(
                r
                for r in d.find_elements(By.CSS_SELECTOR, "#dead-table tbody tr")
                if "NOSUCH" in r.text
            )
            row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
            d.find_element(By.ID, "bulk-replay").click()
            return True

        wait(driver, tick_and_replay)
        wait(driver, lambda d: "#" in d.find_element(By.ID, "alerts").text)
        found["replay answer"] = driver.find_element(By.ID, "alerts").text.splitlines()[:2]
        if args.screenshot:
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.5)
            driver.save_screenshot(str(args.screenshot))
        driver.get(f"{base}/order-queue/orders/{doubt_id}")
        wait(driver, lambda d: d.find_element(By.ID, "order-state").text == "dead")
        driver.find_element(By.ID, "settle-not-placed").click()
        driver.switch_to.alert.accept()
        wait(driver, lambda d: d.find_element(By.ID, "order-state").text == "sent", 60)
        found["in-doubt order settled not placed, then"] = driver.find_element(
            By.ID, "order-state"
        ).text
        found["scripts refused by the policy"] = [
            e["message"]
            for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"]
        ]
        found["policy served"] = csp_of(port)
    finally:
        driver.quit()
    return found


def csp_of(port: int) -> str:
    conn = http.client.HTTPConnection(matrix.HOST, port, timeout=10)
    try:
        conn.request("GET", "/order-queue/api/health")
        answer = conn.getresponse()
        answer.read()
        policy = answer.getheader("Content-Security-Policy") or ""
        return next((part.strip() for part in policy.split(";") if "script-src" in part), "")
    finally:
        conn.close()


def health_summary(port: int) -> dict:
    conn = http.client.HTTPConnection(matrix.HOST, port, timeout=10)
    try:
        conn.request("GET", "/order-queue/api/health")
        body = json.loads(conn.getresponse().read() or b"{}")
        return {"status": body.get("status"), "webhooks_refused": body.get("webhooks_refused")}
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("openalgo", type=Path)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--oa-python", default=matrix.DEFAULT_OA_PYTHON)
    parser.add_argument("--installer-python", default=matrix.DEFAULT_INSTALLER_PYTHON)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    found = run(args)
    print(json.dumps(found, default=str))
    ok = (
        found.get("page live")
        and found.get("charts drawn") == 3
        and not found.get("scripts refused by the policy")
        and found.get("in-doubt order settled not placed, then") == "sent"
        and (found.get("refused answer") or {}).get("status") == 429
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
