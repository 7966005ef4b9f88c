"""The road a dispatcher's requests take to OpenAlgo's API: in-process or HTTP.

On a server OpenAlgo's ``HOST_SERVER`` is its public URL (``https://<domain>``, behind
nginx, TLS and maybe a CDN).  Posting orders there would make every order depend on
DNS, the certificate, the machine reaching its own public address and the gateways on
the way, and a gateway's timeout could pass for OpenAlgo's answer.  So:

* **In-process** (``httpx.WSGITransport``): a dispatcher started by the app that serves
  the API hands each request to that app, through the path an HTTP request takes (the
  WSGI middlewares, before-request hooks, rate limiter, validation, API-key check and
  the queue's door with its receipt), from client address 127.0.0.1 as a loopback post
  had.  No socket, so nothing on the network can answer for OpenAlgo.  There is no read
  timeout: the call ends when OpenAlgo's handler does (its broker client gives up after
  120 s); a lease outlives it or the door's receipt keeps the order safe (a request
  whose lease passed on is in doubt until OpenAlgo's kept answer settles it).
* **HTTP**: a dispatcher outside that app (``flask order-queue worker``, the drain), or
  one told an address.

The default (``ORDER_QUEUE_API_URL`` empty), decided by ``choose_road``:

=====================================  =========================================
dispatcher started by the app that     road
serves ``/api/v1/placeorder``, and
=====================================  =========================================
HOST_SERVER not a loopback address     in-process: it is this OpenAlgo's public
                                       name (OpenAlgo's installers write the
                                       domain there); never dialled
HOST_SERVER a loopback address         ask it once who answers: the door naming
                                       this process → in-process; anyone else
                                       (another OpenAlgo, a test's fake API) →
                                       HTTP to it, as before
=====================================  =========================================

A dispatcher not started by such an app posts over HTTP to HOST_SERVER when that is a
loopback address, else to ``http://127.0.0.1:<FLASK_PORT>``: never the public URL unless
``ORDER_QUEUE_API_URL`` names it.  ``ORDER_QUEUE_API_URL`` overrides: ``inprocess``, an
``http(s)://`` URL, or ``unix:/path`` (gunicorn bound to a unix socket, as OpenAlgo's
install.sh runs it).
"""

from __future__ import annotations

import enum
import ipaddress
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from services.order_queue.door_probe import DOOR_HEADER, LEASE_HEADER, PROBE
from services.order_queue.settings import OrderQueueSettings, SettingsError
from utils.logging import get_logger

logger = get_logger(__name__)

IN_PROCESS_SETTING = "inprocess"
UNIX_PREFIX = "unix:"
#: The API route whose presence tells that an app serves OpenAlgo's order API.
ORDER_ROUTE = "/api/v1/placeorder"


class Road(str, enum.Enum):
    IN_PROCESS = "in-process"
    HTTP = "http"
    #: HOST_SERVER is loopback: ask it once whether this process answers there.
    ASK = "ask"


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serves_api(app) -> bool:
    """Whether ``app`` has OpenAlgo's order route (a POST to it would not be a 404)."""
    try:
        app.url_map.bind("localhost").match(ORDER_ROUTE, method="POST")
    except (NotFound, MethodNotAllowed):
        return False
    except RequestRedirect:  # OpenAlgo's route ends in a slash: it is there
        return True
    return True


def choose_road(*, api_url: str, host_server: str, in_app: bool) -> Road:
    """The road for a dispatcher: ``in_app`` when it was started by the app that serves
    the order API (the module's table)."""
    if api_url == IN_PROCESS_SETTING:
        return Road.IN_PROCESS
    if api_url or not in_app:
        return Road.HTTP
    return Road.ASK if is_loopback(host_server) else Road.IN_PROCESS


def http_address(settings: OrderQueueSettings) -> str:
    """Where HTTP requests go: the explicit address, else HOST_SERVER over loopback,
    else OpenAlgo's own port on loopback."""
    if settings.api_url and settings.api_url != IN_PROCESS_SETTING:
        return settings.api_url.rstrip("/")
    if is_loopback(settings.host_server):
        return settings.host_server.rstrip("/")
    return f"http://127.0.0.1:{settings.flask_port}"


class ApiRoad(httpx.BaseTransport):
    """The transport of a dispatcher's client: each request in-process or over HTTP,
    as ``choose_road`` decides (asking the loopback address once where it must)."""

    def __init__(
        self,
        settings: OrderQueueSettings,
        *,
        app=None,
        own_name: Callable[[], str] = lambda: "",
    ):
        in_app = app is not None and serves_api(app)
        self.road = choose_road(
            api_url=settings.api_url, host_server=settings.host_server, in_app=in_app
        )
        if self.road is Road.IN_PROCESS and not in_app:
            raise SettingsError(
                "ORDER_QUEUE_API_URL=inprocess needs the dispatcher inside the app that "
                "serves the API; a worker or the drain posts over HTTP"
            )
        address = http_address(settings)
        unix_path = address[len(UNIX_PREFIX) :] if address.startswith(UNIX_PREFIX) else None
        self._http_base = "http://localhost" if unix_path else address
        self._http = httpx.HTTPTransport(
            uds=unix_path, limits=httpx.Limits(max_connections=settings.workers + 2)
        )
        self._in_process = httpx.WSGITransport(app=app, remote_addr="127.0.0.1") if in_app else None
        self._own_name = own_name
        self._asking = threading.Lock()
        #: In-process requests carry HOST_SERVER's name, as they did through nginx.
        self.base_url = (
            settings.host_server.rstrip("/") if self.road is not Road.HTTP else self._http_base
        )
        self.address = address

    @property
    def description(self) -> str:
        if self.road is Road.IN_PROCESS:
            return "in-process (the app that serves the API)"
        if self.road is Road.HTTP:
            return f"HTTP to {self.address}"
        return f"undecided: asking {self.address} whether it is this process"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.road is Road.ASK:
            self._ask()
        if self.road is Road.IN_PROCESS:
            assert self._in_process is not None
            # Let the green thread that queued this order (the webhook's) finish its answer
            # first: under eventlet nothing else runs until this call yields, and OpenAlgo's
            # whole handler runs inside it.  Measured inside OpenAlgo under gunicorn +
            # eventlet: webhook answer p50 22.4 -> 15.9 ms, alert to filed 64.9 -> 43.7 ms.
            # Under real threads it only offers the GIL.
            time.sleep(0)
            return self._in_process.handle_request(request)
        return self._http.handle_request(request)

    def _ask(self) -> None:
        """Ask the loopback HOST_SERVER who answers there.  A request cannot go before
        the road is known: an error here is raised as a connect error (not sent)."""
        with self._asking:
            if self.road is not Road.ASK:
                return
            probe = httpx.Request(
                "POST", f"{self._http_base}{ORDER_ROUTE}", json={}, headers={LEASE_HEADER: PROBE}
            )
            probe.extensions["timeout"] = httpx.Timeout(5.0).as_dict()
            try:
                answer = self._http.handle_request(probe)
                answer.read()
                answer.close()
            except httpx.HTTPError as exc:
                raise httpx.ConnectError(
                    f"asking {self.address} whether it is this process: "
                    f"{type(exc).__name__}: {exc}",
                    request=probe,
                ) from exc
            own = answer.headers.get(DOOR_HEADER) == self._own_name()
            self.road = Road.IN_PROCESS if own else Road.HTTP
            logger.info(
                "order queue: orders go to the API %s (%s answered as %s)",
                "in-process" if own else f"over HTTP at {self.address}",
                self.address,
                "this process" if own else "another process",
            )

    def close(self) -> None:
        self._http.close()
