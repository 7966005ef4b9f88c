"""The door probe: what the sending side knows of the host's door, that is whether the
API we post to checks each order's lease before its order code runs (``door.py`` is
the door itself, where the API runs the plugin).

Where it does, an order that left no receipt was refused at the door and never placed,
so the reconciler need not wait for it; each order is stamped with what the sender
knew (``door_expected``).  The sender learns it from every answer and asks once with
a probe before the first order after a start.
"""

from __future__ import annotations

import json

import httpx

from utils.logging import get_logger

logger = get_logger(__name__)

#: On each request to the host: ``<order id>:<lease token>`` (or ``probe``), which a
#: host running the plugin checks at its door (``door.py``).
LEASE_HEADER = "X-Order-Queue-Lease"
PROBE = "probe"
#: On the host's answer: it checked the lease; the value names the receiving process.
DOOR_HEADER = "X-Order-Queue-Door"


def from_gateway(response: httpx.Response) -> bool:
    """Whether this answer came from something in front of the API (nginx, a CDN, a
    load balancer) rather than its handler: OpenAlgo's API always answers JSON, and a
    host with the door marks every answer to a queued order."""
    if DOOR_HEADER in response.headers:
        return False
    try:
        return not isinstance(response.json(), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return True


class DoorProbe:
    """What this dispatcher knows of its host's door."""

    def __init__(self, client: httpx.Client):
        """``client``: the dispatcher's, on the API's road (``api_road.py``)."""
        self._client = client
        #: The host answered with the door's header last time.
        self.host_has_door = False
        #: The host has answered at all since the start (until then, ask first).
        self.known = False

    def probe(self) -> None:
        """Ask the host once whether it checks leases at its door, so that even the
        first orders after a start are sent with ``door_expected`` where it does.  A
        POST like every order (a host's middleware may treat other methods apart); a
        door answers it before the order code, and an API without one refuses the empty
        order.  A host that does not answer yet is asked again later."""
        try:
            response = self._client.post(
                "/api/v1/placeorder", json={}, headers={LEASE_HEADER: PROBE}
            )
        except httpx.HTTPError as exc:
            logger.info("order queue: the API is not answering yet (%s)", type(exc).__name__)
            return
        self.learn(response)
        logger.info(
            "order queue: the API %s the door (HTTP %s)",
            "has" if self.host_has_door else "does not have",
            response.status_code,
        )

    def learn(self, response: httpx.Response) -> None:
        """Take note of whether this answer came through the door.  A gateway's own
        answer (``from_gateway``: an HTML 502 while OpenAlgo restarts) says
        nothing about OpenAlgo's door, so it changes nothing."""
        if from_gateway(response):
            return
        has_door = DOOR_HEADER in response.headers
        if self.host_has_door and not has_door:
            logger.warning(
                "order queue: an answer from the API came without the door's "
                "header (HTTP %s); orders go without it until it shows again",
                response.status_code,
            )
        self.host_has_door = has_door
        self.known = True
