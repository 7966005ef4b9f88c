"""Which road a dispatcher's requests take to the API (``api_road.py``): pure rules."""

import pytest

from services.order_queue.api_road import Road, choose_road, http_address, is_loopback
from services.order_queue.settings import OrderQueueSettings

PUBLIC = "https://openalgo.example.com"
LOOPBACK = "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("api_url", "host_server", "in_app", "road"),
    [
        # Inside the app that serves the API: its public name is never dialled.
        ("", PUBLIC, True, Road.IN_PROCESS),
        # A loopback address: ask whether this process answers there.
        ("", LOOPBACK, True, Road.ASK),
        ("", "http://localhost:5000", True, Road.ASK),
        # A worker or the drain: HTTP, whatever HOST_SERVER says.
        ("", PUBLIC, False, Road.HTTP),
        ("", LOOPBACK, False, Road.HTTP),
        # Told: as told.
        ("inprocess", LOOPBACK, True, Road.IN_PROCESS),
        ("http://127.0.0.1:8080", PUBLIC, True, Road.HTTP),
        ("unix:/run/openalgo.sock", PUBLIC, False, Road.HTTP),
    ],
)
def test_the_road_follows_the_table(api_url, host_server, in_app, road):
    assert choose_road(api_url=api_url, host_server=host_server, in_app=in_app) is road


@pytest.mark.parametrize(
    ("api_url", "host_server", "address"),
    [
        ("", PUBLIC, "http://127.0.0.1:5000"),  # never the public URL unless told
        ("", "http://127.0.0.1:5001/", "http://127.0.0.1:5001"),
        ("unix:/run/openalgo.sock", PUBLIC, "unix:/run/openalgo.sock"),
        ("https://api.internal:8443", PUBLIC, "https://api.internal:8443"),
    ],
)
def test_http_goes_to_loopback_unless_told(api_url, host_server, address):
    settings = OrderQueueSettings(api_url=api_url, host_server=host_server, flask_port=5000)
    assert http_address(settings) == address


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:5000", True),
        ("http://127.1.2.3", True),
        ("http://[::1]:5000", True),
        ("http://localhost:5000", True),
        ("https://openalgo.example.com", False),
        ("http://10.0.0.5:5000", False),
    ],
)
def test_loopback_addresses(url, loopback):
    assert is_loopback(url) is loopback
