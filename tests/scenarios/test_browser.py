"""The admin page in real headless Chromium against the real app process.

Logs in, finds dead orders made by a rejecting fake broker, opens one, replays it once
the broker recovers and watches it turn "sent" and the counts change without a reload;
an order whose symbol and error carry markup must render as text.  A screenshot is
saved under ``test-output/``.  Skips only when Chromium is absent and CI is not set.
"""

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from database.order_queue_db import QueueStore, utcnow
from tests.conftest import TEST_PEPPER, TEST_SEALING
from tests.support.app_process import ROOT, AppProcess
from tests.support.fake_broker import Accept, Drop, Reject, Status

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
OUTPUT = ROOT / "test-output"
XSS_SYMBOL = "<script>window.__xss=1</script>"


def _browser_or_skip(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        missing.append(f"selenium ({exc})")
    if missing:
        if os.getenv("CI", "").lower() == "true":
            pytest.fail(
                f"browser test needs {missing} in CI (apt-get install chromium chromium-driver)"
            )
        pytest.skip(f"no browser here: missing {missing}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = _browser_or_skip(tmp_path)
    driver.set_page_load_timeout(30)
    yield driver
    # The host serves OpenAlgo's default policy (scripts from 'self' only): an inline
    # script or handler would be refused, and the page would never start.
    refused = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    driver.quit()
    assert not refused, refused


def wait_until(driver, predicate, timeout=15):
    """Poll ``predicate`` until truthy.  The page repaints its tables on every live event,
    so an element found in one poll may be gone in the next, or not laid out yet after a
    resize: stale or not interactable means "look again"."""
    from selenium.common.exceptions import (
        ElementNotInteractableException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(StaleElementReferenceException, ElementNotInteractableException),
    ).until(lambda d: predicate(d))


def dead_row_texts(driver):
    return [row.text for row in driver.find_elements("css selector", "#dead-table tbody tr")]


def click_in_dead_row(driver, symbol, xpath):
    """Find the dead-order row for ``symbol`` and click inside it, in one step."""

    def attempt(d):
        row = next(
            r for r in d.find_elements("css selector", "#dead-table tbody tr") if symbol in r.text
        )
        row.find_element("xpath", xpath).click()
        return True

    wait_until(driver, attempt)


def settle_placed_in_held(driver, orderid):
    """Type the broker's order id into the held order's form and press Placed, both in
    the same form: a repaint in between leaves the old form stale, and the step is retried."""
    form = driver.find_element("css selector", "#held form")
    field = form.find_element("css selector", "input")
    field.clear()
    field.send_keys(orderid)
    form.find_element("css selector", ".settle-placed").click()
    return True


def sign_in(driver, url):
    """Open ``url``, which sends the browser to the login page first, and sign in."""
    driver.get(url)
    driver.find_element("name", "username").send_keys("trader")
    driver.find_element("name", "password").send_keys("pw-for-test")
    driver.find_element("css selector", "button[type=submit]").click()


def text_of(driver, element_id):
    return driver.find_element("id", element_id).text


def app_without_orderbook(tmp_path, broker, behaviour_for, *more_symbols):
    """The app, started, on a broker that answers orders by ``behaviour_for`` and has no
    orderbook (semi_auto's 403): an order whose answer is lost reaches the operator in
    doubt within half a second.  A strategy on SBIN (and ``more_symbols``); returns the
    app and the strategy's webhook id."""
    broker.behaviour_for = behaviour_for
    broker.orderbook_behaviour = Status(403)
    app = AppProcess(
        tmp_path, broker.base_url, TEST_PEPPER, ORDER_QUEUE_ORDERBOOK_WAIT_SECONDS="0.5"
    )
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Doubt", "--symbol", "SBIN", "--quantity", "5")
    )["webhook_id"]
    for symbol in more_symbols:
        app.flask("strategy", "map", "--name", "Doubt", "--symbol", symbol, "--quantity", "5")
    app.flask("user", "set-password", "--username", "trader", "--password", "pw-for-test")
    app.start()
    return app, webhook_id


def test_operator_sees_dead_orders_replays_one_and_markup_stays_text(tmp_path, broker, browser):
    from selenium.webdriver.common.by import By

    broker.default = Reject("Symbol not tradable")
    app = AppProcess(tmp_path, broker.base_url, TEST_PEPPER)
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Browser", "--symbol", "SBIN", "--quantity", "5")
    )["webhook_id"]
    app.flask("strategy", "map", "--name", "Browser", "--symbol", "TCS", "--quantity", "5")
    app.flask("user", "set-password", "--username", "trader", "--password", "pw-for-test")
    app.start()
    try:
        for symbol in ("SBIN", "TCS"):
            response = httpx.post(
                f"{app.base_url}/strategy/webhook/{webhook_id}",
                json={"symbol": symbol, "action": "BUY"},
                timeout=5,
            )
            assert response.status_code == 200
        # An order whose symbol and broker error carry markup, queued beside the app.
        broker.behaviour_for = lambda body: (
            Reject('<img src=x onerror="window.__xss=2">')
            if body.get("symbol") == XSS_SYMBOL
            else None
        )
        store = QueueStore(app.env["ORDER_QUEUE_DATABASE_URL"], sealing=TEST_SEALING)
        store.intake.enqueue(
            "placeorder",
            {
                "apikey": "k" * 64,
                "strategy": "Browser",
                "symbol": XSS_SYMBOL,
                "exchange": "NSE",
                "action": "BUY",
                "product": "MIS",
                "quantity": "1",
            },
            now=utcnow(),
            max_age_seconds=300,
        )
        store.dispose()

        browser.get(f"{app.base_url}/order-queue/")
        assert "/auth/login" in browser.current_url
        browser.find_element(By.NAME, "username").send_keys("trader")
        browser.find_element(By.NAME, "password").send_keys("pw-for-test")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(browser, lambda d: text_of(d, "count-dead") == "3")
        wait_until(browser, lambda d: text_of(d, "live") == "live")
        texts = wait_until(browser, lambda d: len(dead_row_texts(d)) == 3 and dead_row_texts(d))
        assert any(
            XSS_SYMBOL in t and '<img src=x onerror="window.__xss=2">' in t for t in texts
        ), texts
        assert browser.execute_script("return window.__xss === undefined")
        assert any("Symbol not tradable" in t for t in texts)
        OUTPUT.mkdir(exist_ok=True)
        browser.save_screenshot(str(tmp_path / "admin.png"))
        shutil.copy(tmp_path / "admin.png", OUTPUT / "order_queue_admin.png")

        # The broker recovers; replay SBIN from its detail page and watch it go out.
        broker.behaviour_for = None
        broker.default = Accept()
        click_in_dead_row(browser, "SBIN", ".//a")
        wait_until(browser, lambda d: text_of(d, "order-state") == "dead")
        assert "Symbol not tradable" in text_of(browser, "f-error")
        assert "k" * 8 not in text_of(browser, "f-payload")  # key masked
        browser.execute_script("window.__marker = 'no reload'")
        browser.find_element(By.ID, "replay").click()
        wait_until(browser, lambda d: text_of(d, "order-state") == "sent")
        assert browser.execute_script("return window.__marker") == "no reload"
        assert any(r.orderid and r.body["symbol"] == "SBIN" for r in broker.orders())

        # Back on the list: replay TCS with the row button and watch the counts move.
        browser.get(f"{app.base_url}/order-queue/")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "2")
        wait_until(browser, lambda d: text_of(d, "live") == "live")
        browser.execute_script("window.__marker = 'no reload'")
        click_in_dead_row(browser, "TCS", ".//button[text()='Replay']")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "1")
        wait_until(browser, lambda d: "regular 2" in text_of(d, "lanes-sent"))
        assert browser.execute_script("return window.__marker") == "no reload"
        browser.save_screenshot(str(OUTPUT / "order_queue_admin_after_replay.png"))

        # A tick survives the repaint that a newly dead order causes.
        click_in_dead_row(browser, XSS_SYMBOL, ".//input[@type='checkbox']")
        broker.default = Reject("Market closed")
        store = QueueStore(app.env["ORDER_QUEUE_DATABASE_URL"], sealing=TEST_SEALING)
        store.intake.enqueue(
            "placeorder",
            {
                "apikey": "k" * 64,
                "strategy": "Browser",
                "symbol": "INFY",
                "exchange": "NSE",
                "action": "SELL",
                "product": "MIS",
                "quantity": "1",
            },
            now=utcnow(),
            max_age_seconds=300,
        )
        store.dispose()
        wait_until(browser, lambda d: len(dead_row_texts(d)) == 2)
        ticked = browser.find_elements(By.CSS_SELECTOR, "#dead-table tbody input:checked")
        assert [XSS_SYMBOL in box.find_element(By.XPATH, "./../..").text for box in ticked] == [
            True
        ]
        assert browser.find_element(By.ID, "bulk-replay").is_enabled()

        # On a phone: the page fits the screen; wide tables scroll inside their panel.
        browser.set_window_size(390, 844)
        browser.get(f"{app.base_url}/order-queue/")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "2")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        browser.save_screenshot(str(OUTPUT / "order_queue_admin_phone.png"))
    finally:
        app.stop()


def test_a_filter_link_opens_filtered_and_an_order_in_doubt_is_settled_from_its_page(
    tmp_path, broker, browser
):
    from selenium.webdriver.common.by import By

    # TCS is rejected; SBIN's answer is lost and the orderbook cannot tell (semi_auto's
    # 403), so SBIN reaches the operator in doubt.
    app, webhook_id = app_without_orderbook(
        tmp_path,
        broker,
        lambda body: Drop() if body.get("symbol") == "SBIN" else Reject("Symbol not tradable"),
        "TCS",
    )
    try:
        for symbol in ("SBIN", "TCS"):
            assert (
                httpx.post(
                    f"{app.base_url}/strategy/webhook/{webhook_id}",
                    json={"symbol": symbol, "action": "BUY"},
                    timeout=5,
                ).status_code
                == 200
            )
        sign_in(browser, f"{app.base_url}/order-queue/?reason=in_doubt")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "2")
        texts = wait_until(browser, lambda d: len(dead_row_texts(d)) == 1 and dead_row_texts(d))
        assert "SBIN" in texts[0] and "in_doubt" in texts[0]
        assert browser.find_element(By.NAME, "reason").get_attribute("value") == "in_doubt"
        assert "reason=in_doubt" in browser.current_url

        click_in_dead_row(browser, "SBIN", ".//a")
        wait_until(browser, lambda d: text_of(d, "order-state") == "dead")
        assert text_of(browser, "f-attempts") == "1"  # a count, not the trail
        browser.find_element(By.ID, "settle-orderid").send_keys("B-4711")
        browser.find_element(By.ID, "settle-placed").click()
        wait_until(browser, lambda d: text_of(d, "order-state") == "sent")
        assert text_of(browser, "f-orderid") == "B-4711"
        assert "settled_placed" in browser.find_element(By.ID, "attempts-table").text
    finally:
        app.stop()


def test_an_entry_settled_not_placed_after_its_exit_went_out_is_sent_only_once_confirmed(
    tmp_path, broker, browser
):
    """The entry's answer is lost and the orderbook cannot tell: dead in doubt.  The exit
    after it goes out (a dead letter holds nothing).  "Not placed" on the entry's page
    asks first whether to send it at all, then, naming the exit, whether to send it
    behind that exit."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import alert_is_present

    lost = []

    def first_entry_lost(body):
        if body.get("action") == "BUY" and not lost:
            lost.append(body)
            return Drop()
        return Accept()

    app, webhook_id = app_without_orderbook(tmp_path, broker, first_entry_lost)
    try:
        url = f"{app.base_url}/strategy/webhook/{webhook_id}"
        assert httpx.post(url, json={"symbol": "SBIN", "action": "BUY"}, timeout=5).is_success
        sign_in(browser, f"{app.base_url}/order-queue/?reason=in_doubt")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "1")
        assert httpx.post(url, json={"symbol": "SBIN", "action": "SELL"}, timeout=5).is_success
        assert broker.wait_until(lambda: len(broker.orders()) == 1, timeout=15)  # the exit

        click_in_dead_row(browser, "SBIN", ".//a")
        wait_until(browser, lambda d: text_of(d, "order-state") == "dead")
        browser.find_element(By.ID, "settle-not-placed").click()
        asked = []
        for _ in range(2):
            dialog = wait_until(browser, alert_is_present())
            asked.append(dialog.text)
            dialog.accept()
        assert "again?" in asked[0], asked
        assert asked[1].startswith("Send again anyway?") and "later orders" in asked[1], asked
        wait_until(browser, lambda d: text_of(d, "order-state") == "sent")
        assert "settled_not_placed" in browser.find_element(By.ID, "attempts-table").text
        assert [order.body["action"] for order in broker.orders()] == ["SELL", "BUY"]
    finally:
        app.stop()


def test_held_instruments_are_settled_from_the_main_page_charts_draw_and_a_filter_replays_all(
    tmp_path, broker, browser
):
    from selenium.webdriver.common.by import By

    # SBIN's answer is lost and the orderbook cannot tell: it reaches the operator in
    # doubt.  Three symbols are rejected, INFY goes through (a latency to draw).
    broker.behaviour_for = lambda body: (
        Drop()
        if body.get("symbol") == "SBIN"
        else Accept()
        if body.get("symbol") == "INFY"
        else Reject("Symbol not tradable")
    )
    broker.orderbook_behaviour = Status(403)
    app = AppProcess(
        tmp_path, broker.base_url, TEST_PEPPER, ORDER_QUEUE_ORDERBOOK_WAIT_SECONDS="0.5"
    )
    symbols = ["SBIN", "INFY", "TCS", "WIPRO", "HDFC"]
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Scalp", "--symbol", symbols[0], "--quantity", "5")
    )["webhook_id"]
    app.flask(
        "strategy",
        "map",
        "--name",
        "Scalp",
        "--quantity",
        "5",
        *(a for s in symbols[1:] for a in ("--symbol", s)),
    )
    app.flask("user", "set-password", "--username", "trader", "--password", "pw-for-test")
    app.start()
    try:
        for symbol in symbols:
            assert (
                httpx.post(
                    f"{app.base_url}/strategy/webhook/{webhook_id}",
                    json={"symbol": symbol, "action": "BUY"},
                    timeout=5,
                ).status_code
                == 200
            )
        sign_in(browser, f"{app.base_url}/order-queue/")
        wait_until(browser, lambda d: text_of(d, "count-dead") == "4")

        # The held row names SBIN and what it waits for; it is settled right there.
        held = wait_until(browser, lambda d: "SBIN" in text_of(d, "held") and text_of(d, "held"))
        assert "placed or not" in held
        wait_until(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-latency polyline")) == 2
        )
        assert "card-danger" in browser.find_element(By.ID, "card-dead").get_attribute("class")
        OUTPUT.mkdir(exist_ok=True)  # the incident at a glance: desktop and phone, both themes
        browser.save_screenshot(str(OUTPUT / "incident_desktop.png"))
        browser.find_element(By.ID, "theme-toggle").click()
        browser.save_screenshot(str(OUTPUT / "incident_dark.png"))
        browser.set_window_size(390, 844)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        browser.save_screenshot(str(OUTPUT / "incident_phone_dark.png"))
        browser.find_element(By.ID, "theme-toggle").click()
        browser.save_screenshot(str(OUTPUT / "incident_phone.png"))
        browser.set_window_size(1280, 900)
        wait_until(browser, lambda d: settle_placed_in_held(d, "B-9001"))
        wait_until(browser, lambda d: text_of(d, "count-dead") == "3")
        wait_until(browser, lambda d: d.find_element(By.ID, "held-empty").is_displayed())

        # The pictures, drawn from what is stored: INFY's trip shows as a latency.
        wait_until(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-latency polyline")) == 2
        )
        assert "no data yet" not in text_of(browser, "chart-latency")
        assert browser.execute_script(  # drawn as pictures, not shown as text
            "return [...document.querySelectorAll('.chart-box svg')].every("
            "svg => svg instanceof SVGSVGElement && svg.getBoundingClientRect().height > 100)"
        )
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-depth polyline.s-dead")
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-rate line.limit")

        # Every rejected order of the filter, replayed with one button, once the broker
        # takes them.
        broker.behaviour_for = None
        broker.default = Accept()
        browser.get(f"{app.base_url}/order-queue/?reason=rejected&strategy=Scalp")
        button = wait_until(
            browser,
            lambda d: (
                d.find_element(By.ID, "filter-replay").is_displayed()
                and d.find_element(By.ID, "filter-replay")
            ),
        )
        assert button.text == "Replay all 3 matching"
        button.click()
        browser.switch_to.alert.accept()
        wait_until(browser, lambda d: text_of(d, "count-dead") == "0")
        assert "card-danger" not in browser.find_element(By.ID, "card-dead").get_attribute("class")
        assert broker.wait_for(3 + 1 + 1, timeout=15)  # 3 replayed, INFY, SBIN's lost send
    finally:
        app.stop()


def test_an_order_rejected_after_sent_is_shown_with_the_verdict_and_sent_again(tmp_path, browser):
    """The real app is its own broker (in-process), whose paper broker accepts SBIN and
    then rejects it (``PAPER_BROKER_REJECT_SYMBOLS``): the page lists the order with the
    broker's verdict and reason, and "Send again" queues a new order asking the same."""
    app = AppProcess(
        tmp_path,
        "",
        TEST_PEPPER,
        PAPER_BROKER_REJECT_SYMBOLS="SBIN",
        ORDER_QUEUE_VERDICT_POLL_SECONDS="0.2",
    )
    app.env["HOST_SERVER"] = app.base_url
    webhook_id = json.loads(
        app.flask("strategy", "add", "--name", "Verdict", "--symbol", "SBIN", "--quantity", "5")
    )["webhook_id"]
    app.flask("user", "set-password", "--username", "trader", "--password", "pw-for-test")
    app.start()
    try:
        response = httpx.post(
            f"{app.base_url}/strategy/webhook/{webhook_id}",
            json={"symbol": "SBIN", "action": "BUY"},
            timeout=5,
        )
        assert response.status_code == 200
        sign_in(browser, f"{app.base_url}/order-queue/")

        def rejected_rows(d):
            rows = d.find_elements("css selector", "#rejected-table tbody tr")
            return [r.text for r in rows] or None

        [row] = wait_until(browser, rejected_rows, timeout=30)
        assert "SBIN" in row and "rejected" in row and "RMS" in row

        def send_again(d):  # the table repaints on every live event: find and click at once
            d.find_element(
                "xpath", "//*[@id='rejected-table']//button[text()='Send again']"
            ).click()
            return True

        wait_until(browser, send_again)
        wait_until(browser, lambda d: "sent again as order" in text_of(d, "alerts"))
        wait_until(
            browser,
            lambda d: (
                len(d.find_elements("css selector", "#rejected-table tbody tr")) == 1
                and "#2" in d.find_element("css selector", "#rejected-table tbody tr").text
            ),
            timeout=30,
        )  # the copy was sent, and the broker's rule rejected it too
        OUTPUT.mkdir(exist_ok=True)
        browser.save_screenshot(str(OUTPUT / "admin-rejected-after-sent.png"))
    finally:
        app.stop()
