"""Generated bodies thrown at the webhook, the paper broker API and the admin API: every
answer is a clear 4xx (or a 200 for a body that is a valid order), never a 5xx, and the
queue holds exactly one row per webhook answered 200 (nothing partial)."""

import json
import random

import pytest

from database.auth_db import ensure_user
from services.order_queue import runtime
from tests.support.helpers import add_strategy

SEED = 20261128
ODD_VALUES = [
    None,
    True,
    0,
    -1,
    1,
    10**40,
    -(10**40),
    1.5,
    float("1e308"),
    "",
    " ",
    "BUY",
    "SELL",
    "buy",
    "SBIN",
    "١٢٣",
    "１２",
    "10",
    "-5",
    "0x10",
    "1e3",
    "NaN",
    "<script>",
    "'; DROP TABLE order_queue; --",
    "x" * 5000,
    [],
    {},
    [1, 2],
    {"a": {"b": [1]}},
    "\u0000",
    "\ud7ff",
    2**63,
    -(2**63) - 1,
]
FIELDS = [
    "symbol",
    "action",
    "position_size",
    "quantity",
    "ids",
    "confirm",
    "note",
    "placed",
    "broker_orderid",
    "apikey",
    "exchange",
    "product",
    "pricetype",
    "price",
    "trigger_price",
    "page",
    "per_page",
]


def bodies(rng: random.Random, count: int):
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        elif roll < 0.15:
            depth = rng.choice([50, 500, 3000])
            yield ("[" * depth + "]" * depth).encode()
        else:
            body = {
                field: rng.choice(ODD_VALUES) for field in rng.sample(FIELDS, rng.randrange(0, 8))
            }
            if rng.random() < 0.5:
                body.update(symbol="SBIN", action=rng.choice(["BUY", "SELL"]))
            yield json.dumps(body).encode()


@pytest.fixture
def logged_in_client(app, client):
    with app.app_context():
        ensure_user("fuzz", "fuzz-password")
    client.post("/auth/login", data={"username": "fuzz", "password": "fuzz-password"})
    return client


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_generated_bodies_get_a_4xx_and_leave_nothing_partial(app, logged_in_client, runner):
    webhook_id = add_strategy(runner)["webhook_id"]
    paths = [
        f"/strategy/webhook/{webhook_id}",
        "/api/v1/placeorder",
        "/api/v1/placesmartorder",
        "/api/v1/orderbook",
        "/order-queue/api/orders/replay",
        "/order-queue/api/orders/settle",
        "/order-queue/api/orders/cancel",
    ]
    rng, accepted, seen = random.Random(SEED), 0, 0
    for body in bodies(rng, 400):
        path = rng.choice(paths)
        answer = logged_in_client.post(
            path,
            data=body,
            content_type=rng.choice(
                ["application/json", "text/plain", "application/x-www-form-urlencoded"]
            ),
        )
        seen += 1
        assert answer.status_code < 500, (path, body[:200], answer.data[:300])
        if path.startswith("/strategy/") and answer.status_code == 200:
            accepted += 1
    for query in (
        "page=99999999999999999999",
        "per_page=-1",
        "since=9999-99-99",
        "until=0000-00-00",
        "state=%00",
        "page=1e9",
    ):
        assert logged_in_client.get(f"/order-queue/api/orders?{query}").status_code < 500
    assert logged_in_client.get("/order-queue/api/orders/99999999999999999999").status_code < 500
    rows = runtime.current().store.reads.count_orders()
    assert rows == accepted and seen == 400
