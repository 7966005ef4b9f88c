"""What a dispatcher learns of its host's door."""

import httpx

from services.order_queue.door_probe import DOOR_HEADER, DoorProbe


def test_an_answer_through_the_door_says_so_and_one_without_it_takes_it_back():
    door = DoorProbe(httpx.Client(base_url="http://127.0.0.1:9"))
    assert not door.known
    door.learn(httpx.Response(200, headers={DOOR_HEADER: "host:1"}))
    assert door.known and door.host_has_door
    door.learn(httpx.Response(200, json={"status": "success", "orderid": "1"}))
    assert door.known and not door.host_has_door


def test_a_gateways_own_answer_says_nothing_about_the_door():
    """nginx's HTML 502 while OpenAlgo restarts, a CDN's 524: not OpenAlgo's answer, so
    the orders after it are still sent expecting the door (and its receipts)."""
    door = DoorProbe(httpx.Client(base_url="http://127.0.0.1:9"))
    door.learn(httpx.Response(200, headers={DOOR_HEADER: "host:1"}))
    for status, body in (
        (502, "<html><head><title>502 Bad Gateway</title></head></html>"),
        (504, "<html><body><h1>504 Gateway Time-out</h1></body></html>"),
        (524, "error code: 524"),
    ):
        door.learn(httpx.Response(status, text=body))
        assert door.host_has_door, status


def test_a_probe_of_an_api_without_a_door_learns_that(broker):
    with httpx.Client(base_url=broker.base_url, timeout=5) as client:
        door = DoorProbe(client)
        door.probe()
    assert door.known and not door.host_has_door


def test_a_probe_of_an_api_not_answering_yet_learns_nothing():
    with httpx.Client(base_url="http://127.0.0.1:9", timeout=1) as client:
        door = DoorProbe(client)
        door.probe()
    assert not door.known
