"""Admin page, JSON API, auth on every route, CSRF, live events, loud failures.

One short test per route and per rule of the page and its API.
"""

import logging
import re
import time
from datetime import timedelta

import pytest

from blueprints import order_queue
from database.auth_db import ensure_user
from database.order_queue_db import QueueStorageError, utcnow
from extensions import socketio
from services import order_queue_service
from services.order_queue import runtime
from services.order_queue.events import NAMESPACE
from tests.conftest import TEST_PEPPER, make_app
from tests.support.fake_broker import Reject
from tests.support.helpers import KEY, make_order, payload


@pytest.fixture
def logged_in(app, client):
    with app.app_context():
        ensure_user("alice", "s3cret-pass")
    response = client.post("/auth/login", data={"username": "alice", "password": "s3cret-pass"})
    assert response.status_code == 302
    return client


# ----------------------------------------------------------------- auth and CSRF


#: The only public routes: health (for Docker, counts only) and the page's CSS / JS.
PUBLIC_ENDPOINTS = {"order_queue_bp.health", "order_queue_bp.static"}


def routes_needing_login(app):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/order-queue") or rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = rule.rule.replace("<int:order_id>", "1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, url


def test_every_order_queue_route_requires_a_session(app, client):
    routes = list(routes_needing_login(app))
    assert len(routes) >= 8  # pages, API reads and the three actions
    for method, url in routes:
        body = {"ids": [1]} if method == "POST" else None
        as_browser = client.open(url, method=method)
        if "/api/" in url:  # a JSON API says so in JSON, whoever asks
            assert as_browser.status_code == 401, (method, url)
            assert "login required" in as_browser.get_json()["error"]
        else:  # a page visit goes to login
            assert as_browser.status_code == 302, (method, url)
            assert as_browser.headers["Location"].startswith("/auth/login")
        as_script = client.open(
            url, method=method, json=body, headers={"Accept": "application/json"}
        )
        assert as_script.status_code == 401, (method, url)  # fetch() gets JSON, not HTML
    assert runtime.current().store.reads.list_orders() == []


def test_health_is_public_and_reports(app, client):
    response = client.get("/order-queue/api/health")
    assert response.status_code == 503  # no dispatcher anywhere yet
    assert any("dispatcher not running" in p for p in response.get_json()["problems"])


def test_the_plugins_version_is_in_health_and_on_the_page(app, logged_in):
    from services.order_queue import VERSION

    assert logged_in.get("/order-queue/api/health").get_json()["version"] == VERSION
    assert f"Durable order queue {VERSION}" in logged_in.get("/order-queue/").get_data(as_text=True)


def test_health_sees_a_dispatcher_this_process_does_not_own(app, logged_in):
    """Sending may run in ``flask order-queue worker`` processes: the web process reads
    their heartbeats from the queue database."""
    from services.order_queue.dispatcher import Dispatcher

    elsewhere = Dispatcher(runtime.current().store, runtime.current().settings)
    elsewhere.start()
    try:
        assert runtime.current().dispatcher is None
        response = logged_in.get("/order-queue/api/health")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["dispatcher"]["ids"] == [elsewhere.id]
    finally:
        elsewhere.stop(timeout=5)
    assert logged_in.get("/order-queue/api/health").status_code == 503  # stopped: recorded


def test_wrong_password_is_refused(app, client):
    with app.app_context():
        ensure_user("alice", "s3cret-pass")
    response = client.post("/auth/login", data={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    assert (
        client.get("/order-queue/api/stats", headers={"Accept": "application/json"}).status_code
        == 401
    )


@pytest.mark.parametrize(
    "action, state, after",
    [
        ("replay", "dead", "pending"),
        ("dismiss", "dead", "dismissed"),
        ("cancel", "pending", "cancelled"),
    ],
)
def test_post_without_csrf_token_is_rejected(tmp_path, action, state, after):
    app = make_app(tmp_path, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    with app.app_context():
        ensure_user("alice", "s3cret-pass")
    login_page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page).group(1)
    assert (
        client.post(
            "/auth/login",
            data={"username": "alice", "password": "s3cret-pass", "csrf_token": token},
        ).status_code
        == 302
    )
    with app.app_context():
        order_id = make_order(state)
    refused = client.post(f"/order-queue/api/orders/{action}", json={"ids": [order_id]})
    assert refused.status_code == 400
    assert runtime.current().store.reads.get_order(order_id)["state"] == state
    page = client.get("/order-queue/").get_data(as_text=True)
    page_token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    accepted = client.post(
        f"/order-queue/api/orders/{action}",
        json={"ids": [order_id]},
        headers={"X-CSRFToken": page_token},
    )
    assert accepted.status_code == 200
    assert runtime.current().store.reads.get_order(order_id)["state"] == after


# ----------------------------------------------------------------- reading


def test_orders_api_filters_and_pages(logged_in):
    dead_ids = [make_order("dead", symbol=f"D{i}") for i in range(3)]
    make_order("dead", symbol="OTHER", strategy="Scalper")
    make_order("pending", symbol="P1")
    data = logged_in.get("/order-queue/api/orders?state=dead&strategy=Trend").get_json()
    assert data["total"] == 3 and {o["id"] for o in data["orders"]} == set(dead_ids)
    page = logged_in.get("/order-queue/api/orders?state=dead&per_page=2&page=2").get_json()
    assert page["total"] == 4 and len(page["orders"]) == 2
    assert logged_in.get("/order-queue/api/orders?symbol=P1").get_json()["total"] == 1
    assert logged_in.get("/order-queue/api/orders?reason=rejected").get_json()["total"] == 4
    assert logged_in.get("/order-queue/api/orders?state=bogus").status_code == 400
    assert logged_in.get("/order-queue/api/orders?since=yesterday").status_code == 400


def test_order_detail_masks_the_key_and_shows_the_trail(logged_in):
    order_id = make_order("dead")
    detail = logged_in.get(f"/order-queue/api/orders/{order_id}").get_json()
    assert detail["payload"]["apikey"] == "****9XyZ"
    assert [a["outcome"] for a in detail["trail"]] == ["rejected"]
    assert detail["attempts"] == 1  # the count, as in every listing
    page = logged_in.get(f"/order-queue/orders/{order_id}").get_data(as_text=True)
    assert KEY not in page and "****9XyZ" in page
    assert logged_in.get("/order-queue/api/orders/999").status_code == 404


def test_markup_in_symbol_and_error_is_escaped(logged_in):
    order_id = make_order(
        "dead", symbol="<script>alert(1)</script>", error='<img src=x onerror="alert(2)">'
    )
    page = logged_in.get(f"/order-queue/orders/{order_id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page


def test_stats_counts_and_dispatcher_block(logged_in):
    make_order("dead")
    make_order("sent", symbol="INFY")
    make_order("pending", symbol="TCS")
    stats = logged_in.get("/order-queue/api/stats").get_json()
    assert stats["depth"]["dead"]["regular"] == 1 and stats["dead"] == 1
    assert stats["sent_today"] == 1
    assert stats["oldest_pending_age_seconds"] is not None
    assert stats["dispatcher"]["regular_rate"] == 10


def test_admin_page_renders(logged_in):
    html = logged_in.get("/order-queue/").get_data(as_text=True)
    assert 'id="dead-table"' in html and "socket.io-4.8.4.min.js" in html
    assert logged_in.get("/order-queue/static/admin.js").status_code == 200


# ----------------------------------------------------------------- actions


def test_replay_dismiss_cancel_through_the_api(logged_in):
    dead, other_dead, pending = (
        make_order("dead"),
        make_order("dead", "TCS"),
        make_order("pending", "INFY"),
    )
    replay = logged_in.post("/order-queue/api/orders/replay", json={"ids": [dead]}).get_json()
    assert replay["ok"] and replay["results"][0]["message"].startswith("replayed")
    store = runtime.current().store
    assert store.reads.get_order(dead)["state"] == "pending"
    assert store.reads.list_attempts(dead)[-1]["actor"] == "alice"
    dismiss = logged_in.post(
        "/order-queue/api/orders/dismiss", json={"ids": [other_dead], "note": "checked by hand"}
    ).get_json()
    assert dismiss["ok"] and store.reads.get_order(other_dead)["state"] == "dismissed"
    cancel = logged_in.post("/order-queue/api/orders/cancel", json={"ids": [pending]}).get_json()
    assert cancel["ok"] and store.reads.get_order(pending)["state"] == "cancelled"
    again = logged_in.post("/order-queue/api/orders/cancel", json={"ids": [pending]}).get_json()
    assert not again["ok"] and "cancelled, not pending" in again["results"][0]["message"]


def test_bulk_actions_report_per_order(logged_in):
    ids = [make_order("dead", symbol=f"B{i}") for i in range(3)]
    result = logged_in.post("/order-queue/api/orders/dismiss", json={"ids": ids + [999]}).get_json()
    assert [r["ok"] for r in result["results"]] == [True, True, True, False]
    assert result["results"][-1]["message"] == "no such order"


def test_replay_after_a_later_order_was_sent_needs_confirmation(logged_in):
    dead = make_order("dead", symbol="SBIN")
    later = make_order("sent", symbol="SBIN")
    first = logged_in.post("/order-queue/api/orders/replay", json={"ids": [dead]}).get_json()
    assert not first["ok"] and first["results"][0]["needs_confirmation"]
    assert first["results"][0]["later_sent"] == [later]
    assert runtime.current().store.reads.get_order(dead)["state"] == "dead"
    confirmed = logged_in.post(
        "/order-queue/api/orders/replay", json={"ids": [dead], "confirm": True}
    ).get_json()
    assert confirmed["ok"]
    assert runtime.current().store.reads.get_order(dead)["state"] == "pending"


def test_replay_of_an_order_dead_in_doubt_needs_confirmation(logged_in):
    """Its first request may have placed it: the operator must check and confirm."""
    dead = make_order("dead_in_doubt", symbol="SBIN")
    first = logged_in.post("/order-queue/api/orders/replay", json={"ids": [dead]}).get_json()
    assert not first["ok"] and first["results"][0]["needs_confirmation"]
    assert "may already be at the broker" in first["results"][0]["message"]
    assert runtime.current().store.reads.get_order(dead)["state"] == "dead"
    confirmed = logged_in.post(
        "/order-queue/api/orders/replay", json={"ids": [dead], "confirm": True}
    ).get_json()
    assert confirmed["ok"]
    assert runtime.current().store.reads.get_order(dead)["state"] == "pending"


def test_an_order_in_doubt_is_settled_as_placed_with_the_brokers_orderid(logged_in):
    dead = make_order("dead_in_doubt", symbol="SBIN")
    settled = logged_in.post(
        "/order-queue/api/orders/settle",
        json={"ids": [dead], "placed": True, "broker_orderid": "B-777"},
    ).get_json()
    assert settled["ok"], settled
    row = runtime.current().store.reads.get_order(dead)
    assert (row["state"], row["broker_orderid"]) == ("sent", "B-777")
    trail = runtime.current().store.reads.list_attempts(dead)
    assert trail[-1]["outcome"] == "settled_placed" and trail[-1]["actor"] == "alice"


def test_an_order_in_doubt_is_settled_as_not_placed_and_sent_again(logged_in):
    dead = make_order("dead_in_doubt", symbol="SBIN")
    settled = logged_in.post(
        "/order-queue/api/orders/settle", json={"ids": [dead], "placed": False}
    ).get_json()
    assert settled["ok"]
    assert runtime.current().store.reads.get_order(dead)["state"] == "pending"


def test_settling_refuses_what_it_cannot_be(logged_in):
    rejected, in_doubt = make_order("dead"), make_order("dead_in_doubt", symbol="TCS")
    make_order("sent", symbol="INFY")  # bound to broker order id B<id>
    taken = runtime.current().store.reads.list_orders(states=["sent"])[0]["broker_orderid"]
    not_in_doubt = logged_in.post(
        "/order-queue/api/orders/settle", json={"ids": [rejected], "placed": False}
    ).get_json()
    assert (
        not not_in_doubt["ok"] and "only an order in doubt" in not_in_doubt["results"][0]["message"]
    )
    bound = logged_in.post(
        "/order-queue/api/orders/settle",
        json={"ids": [in_doubt], "placed": True, "broker_orderid": taken},
    ).get_json()
    assert not bound["ok"] and "already bound" in bound["results"][0]["message"]
    assert (
        logged_in.post(
            "/order-queue/api/orders/settle", json={"ids": [in_doubt], "placed": True}
        ).status_code
        == 400
    )
    assert (
        logged_in.post(
            "/order-queue/api/orders/settle", json={"ids": [in_doubt], "placed": "yes"}
        ).status_code
        == 400
    )
    assert runtime.current().store.reads.get_order(in_doubt)["state"] == "dead"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"ids": []},
        {"ids": "1"},
        {"ids": [True]},
        {"ids": [1.5]},
        {"ids": list(range(501))},
        {"ids": [1], "note": 5},
    ],
)
def test_bad_action_bodies_get_400(logged_in, body):
    response = logged_in.post("/order-queue/api/orders/dismiss", json=body)
    assert response.status_code == 400
    assert response.get_json()["status"] == "error"


# ----------------------------------------------------------------- live and loud


def test_a_dead_lettered_order_is_loud(tmp_path, broker, caplog):
    broker.script(Reject("Invalid symbol <BAD>"))
    app = make_app(tmp_path, HOST_SERVER=broker.base_url)
    live = live_client(app)
    order_queue.start(app)
    try:
        with caplog.at_level(logging.ERROR):
            order_queue_service.queue_order("placeorder", payload("SBIN"))
            deadline = time.monotonic() + 10
            events = []
            while not any(e["name"] == "order_queue:dead" for e in events):
                assert time.monotonic() < deadline, events
                events += live.get_received(NAMESPACE)
                time.sleep(0.05)
    finally:
        runtime.stop_current(timeout=5)
    dead_event = next(e for e in events if e["name"] == "order_queue:dead")["args"][0]
    assert (dead_event["reason"], dead_event["symbol"]) == ("rejected", "SBIN")
    assert [e["args"][0]["state"] for e in events if e["name"] == "order_queue:order"] == [
        "pending",
        "dead",
    ]
    [line] = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    for part in (
        "order 1",
        "reason=rejected",
        "strategy=Trend",
        "symbol=SBIN",
        "Invalid symbol <BAD>",
    ):
        assert part in line


def live_client(app):
    """A Socket.IO client on the admin namespace, with a logged-in session."""
    client = app.test_client()
    with app.app_context():
        ensure_user("watcher", "watch-pass-1")
    client.post("/auth/login", data={"username": "watcher", "password": "watch-pass-1"})
    live = socketio.test_client(app, namespace=NAMESPACE, flask_test_client=client)
    assert live.is_connected(NAMESPACE)
    return live


def test_live_events_need_a_session(app):
    anonymous = socketio.test_client(app, namespace=NAMESPACE)
    assert not anonymous.is_connected(NAMESPACE)


def test_operator_actions_are_published_live(logged_in, app):
    live = live_client(app)
    order_id = make_order("dead")
    logged_in.post("/order-queue/api/orders/dismiss", json={"ids": [order_id]})
    events = [e for e in live.get_received(NAMESPACE) if e["name"] == "order_queue:order"]
    assert events[-1]["args"][0] == {"id": order_id, "state": "dismissed", "action": "dismiss"}


def test_health_reasons(tmp_path, broker):
    app = make_app(tmp_path, HOST_SERVER=broker.base_url, ORDER_QUEUE_HEALTH_FAIL_ON_DEAD="true")
    client = app.test_client()
    order_queue.start(app)
    try:
        assert client.get("/order-queue/api/health").status_code == 200
        # Dead-lettered by the running dispatcher itself (a helper that claims the order
        # by hand would race it for the claim).
        broker.behaviour_for = lambda body: Reject("Symbol not tradable")
        with app.app_context():
            order_id = make_order("pending")
        runtime.current().wake()
        deadline = time.monotonic() + 10
        while runtime.current().store.reads.get_order(order_id)["state"] != "dead":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        report = client.get("/order-queue/api/health")
        assert report.status_code == 503
        assert report.get_json()["problems"] == ["1 dead orders await a decision"]
    finally:
        runtime.stop_current(timeout=5)


@pytest.mark.parametrize(
    "target",
    ["//evil.com", "/%09/evil.com", "/\\evil.com", "https://evil.com", "javascript:alert(1)"],
)
def test_login_never_redirects_off_site(app, client, target):
    with app.app_context():
        ensure_user("alice", "s3cret-pass")
    response = client.post(
        f"/auth/login?next={target}", data={"username": "alice", "password": "s3cret-pass"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/order-queue/"


@pytest.mark.parametrize("stored_first, status", [(False, 503), (True, 500)])
def test_a_host_view_that_hides_a_storage_failure_as_500(tmp_path, stored_first, status):
    """OpenAlgo's webhooks turn every exception into 500.  A queue storage failure
    becomes 503 (send again) unless the same request had already queued an order
    (a Chartink alert carries several symbols): then resending would double it."""
    import sqlite3

    from flask import jsonify

    app = make_app(tmp_path, ORDER_QUEUE_SQLITE_BUSY_TIMEOUT_MS=100)
    order = {
        "apikey": "k" * 64,
        "strategy": "Scan",
        "exchange": "NSE",
        "action": "BUY",
        "product": "MIS",
        "pricetype": "MARKET",
        "quantity": "1",
    }

    def alert():
        try:
            if stored_first:
                order_queue_service.queue_order("placeorder", {**order, "symbol": "SBIN"})
            holder = sqlite3.connect(tmp_path / "order_queue.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                order_queue_service.queue_order("placeorder", {**order, "symbol": "TCS"})
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return jsonify(message="queued"), 200
        except Exception:
            return jsonify(error="Internal server error"), 500

    app.add_url_rule("/scan-alert", "scan_alert", alert, methods=["POST"])
    response = app.test_client().post("/scan-alert")
    assert response.status_code == status
    if status == 503:
        assert "NOT queued" in response.get_json()["error"]
        assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_a_changed_pepper_holds_the_queue_until_the_old_one_is_back(app, tmp_path, monkeypatch):
    order_queue.start(app)  # seals the check value with the pepper of the day
    runtime.stop_current(timeout=5)
    monkeypatch.setenv("API_KEY_PEPPER", "f" * 64)
    changed = make_app(tmp_path)
    order_queue.start(changed)
    try:
        client = changed.test_client()
        health = client.get("/order-queue/api/health")
        assert health.status_code == 503
        assert "API_KEY_PEPPER" in " ".join(health.get_json()["problems"])
        assert runtime.current().dispatcher is None  # nothing is sent
        with pytest.raises(QueueStorageError, match="API_KEY_PEPPER"):
            order_queue_service.queue_order("placeorder", payload("SBIN"))
    finally:
        runtime.stop_current(timeout=5)
    monkeypatch.setenv("API_KEY_PEPPER", TEST_PEPPER)
    restored = make_app(tmp_path)
    order_queue.start(restored)
    assert runtime.current().dispatcher is not None
    assert restored.test_client().get("/order-queue/api/health").status_code == 200


def test_logins_are_throttled_after_a_few_wrong_passwords(app, client):
    from blueprints.auth import throttle

    with app.app_context():
        ensure_user("bob", "right-password")
    try:
        for _ in range(3):
            assert (
                client.post(
                    "/auth/login", data={"username": "bob", "password": "wrong"}
                ).status_code
                == 401
            )
        held = client.post("/auth/login", data={"username": "bob", "password": "right-password"})
        assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1
    finally:
        throttle.succeeded(["user:bob", "addr:127.0.0.1"])


def test_session_cookie_and_security_headers(app, client):
    with app.app_context():
        ensure_user("carol", "pw-carol-1")
    answer = client.post("/auth/login", data={"username": "carol", "password": "pw-carol-1"})
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/order-queue/")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_a_session_past_its_absolute_lifetime_is_logged_out(app, client):
    with client.session_transaction() as session:
        session.update(logged_in=True, user="dave", login_time=time.time() - 13 * 3600)
    assert (
        client.get("/order-queue/api/stats", headers={"Accept": "application/json"}).status_code
        == 401
    )


def test_anonymous_health_shows_no_host_names_or_pids(app, client):
    from blueprints.order_queue import start

    start(app)
    anonymous = client.get("/order-queue/api/health").get_json()
    assert "ids" not in anonymous["dispatcher"] and anonymous["dispatcher"]["alive"]
    with app.app_context():
        ensure_user("erin", "pw-erin-12")
    client.post("/auth/login", data={"username": "erin", "password": "pw-erin-12"})
    signed_in = client.get("/order-queue/api/health").get_json()
    assert signed_in["dispatcher"]["ids"]


def test_the_page_logs_out(logged_in):
    page = logged_in.get("/order-queue/").get_data(as_text=True)
    assert 'action="/auth/logout"' in page
    assert logged_in.post("/auth/logout").status_code == 302
    assert (
        logged_in.get("/order-queue/api/stats", headers={"Accept": "application/json"}).status_code
        == 401
    )


def test_charts_are_drawn_from_stored_samples_sends_and_answers(logged_in):
    store = runtime.current().store
    now = utcnow()
    assert store.samples.record_sample(now=now - timedelta(minutes=30), every_seconds=60)
    sent = make_order("sent")
    make_order("dead", symbol="TCS")
    assert store.samples.record_sample(now=now, every_seconds=60)
    assert not store.samples.record_sample(now=now, every_seconds=60)  # one a minute
    drawn = logged_in.get("/order-queue/api/charts").get_json()
    assert set(drawn) == {"depth", "rate", "latency"}
    for markup in drawn.values():
        assert markup.startswith("<svg") and "<polyline" in markup
    assert "no data yet" not in drawn["latency"]  # order #sent was accepted
    assert store.reads.get_order(sent)["state"] == "sent"


def test_held_instruments_say_what_they_wait_for_and_an_in_doubt_one_is_settled(logged_in):
    in_doubt = make_order("dead_in_doubt", symbol="INFY")
    make_order("sent")
    held = logged_in.get("/order-queue/api/held").get_json()["held"]
    assert [(h["id"], h["settle"]) for h in held] == [(in_doubt, True)]
    assert "placed or not" in held[0]["waits_for"]
    settled = logged_in.post(
        "/order-queue/api/orders/settle",
        json={"ids": [in_doubt], "placed": True, "broker_orderid": "B-77"},
    ).get_json()
    assert settled["ok"]
    assert logged_in.get("/order-queue/api/held").get_json()["held"] == []


def test_bulk_replay_by_filter_takes_every_match_beyond_the_rows_shown(logged_in):
    wanted = [make_order("dead", symbol=f"S{i}", strategy="Scalper") for i in range(120)]
    other = make_order("dead", symbol="OTHER", strategy="Swing")
    shown = logged_in.get("/order-queue/api/orders?state=dead&strategy=Scalper&per_page=100")
    assert len(shown.get_json()["orders"]) == 100 and shown.get_json()["total"] == 120
    replayed = logged_in.post(
        "/order-queue/api/orders/replay",
        json={"filter": {"state": "dead", "strategy": "Scalper", "reason": "rejected"}},
    ).get_json()
    assert replayed["ok"] and sorted(r["order_id"] for r in replayed["results"]) == wanted
    store = runtime.current().store
    assert {store.reads.get_order(i)["state"] for i in wanted} == {"pending"}
    assert store.reads.get_order(other)["state"] == "dead"
    refused = logged_in.post(
        "/order-queue/api/orders/dismiss", json={"filter": {"state": "pending"}}
    )
    assert refused.status_code == 400
