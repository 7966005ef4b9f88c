"""What a dispatcher learns of its host's door."""

import httpx

from services.order_queue.door_probe import DOOR_HEADER, DoorProbe


def test_an_answer_through_the_door_says_so_and_one_without_it_takes_it_back():
    door = DoorProbe(httpx.Client(), "http://127.0.0.1:9")
    assert not door.known
    door.learn(httpx.Response(200, headers={DOOR_HEADER: "host:1"}))
    assert door.known and door.host_has_door
    door.learn(httpx.Response(200))
    assert door.known and not door.host_has_door


def test_a_probe_of_an_api_without_a_door_learns_that(broker):
    with httpx.Client(timeout=5) as client:
        door = DoorProbe(client, broker.base_url)
        door.probe()
    assert door.known and not door.host_has_door


def test_a_probe_of_an_api_not_answering_yet_learns_nothing():
    with httpx.Client(timeout=1) as client:
        door = DoorProbe(client, "http://127.0.0.1:9")
        door.probe()
    assert not door.known
