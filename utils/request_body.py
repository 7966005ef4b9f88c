"""Reading a request body within a time limit, whatever server runs the app.

A client that announces a body and trickles it a byte a second would otherwise hold its
thread for as long as it likes: Werkzeug's socket timeout (``app.TimedRequestHandler``)
counts silence, not the whole read, and gunicorn's eventlet and gevent workers time
nothing out inside a request.  Under a green server a green timeout interrupts the
read; under threads a timer stops the socket's reading side, which ends the read at once
(the answer still goes out on the writing side).
"""

import socket
import threading

from flask import Request
from werkzeug.exceptions import ClientDisconnected

from database.order_queue.green import server_model


class BodyTimeout(Exception):
    """The client did not send its whole body in time."""


def read_body(request: Request, seconds: float) -> bytes:
    """The raw body, or ``BodyTimeout`` after ``seconds``.  Kept on the request for later
    readers (the queue's alert key), as OpenAlgo's ``request.get_json()`` keeps it."""
    model = server_model()
    if model == "threads":
        return _read_with_timer(request, seconds)
    if model == "eventlet":
        from eventlet import Timeout
    else:
        from gevent import Timeout
    timer = Timeout(seconds, BodyTimeout())
    try:
        return request.get_data(cache=True)
    finally:
        timer.cancel()


def _read_with_timer(request: Request, seconds: float) -> bytes:
    connection = request.environ.get("werkzeug.socket")
    if connection is None:  # not a socket server (the test client): nothing to wait for
        return request.get_data(cache=True)
    stopped = threading.Event()

    def stop_reading() -> None:
        stopped.set()  # before the read can end, so the reader knows why it ended
        try:
            connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # already closed: the read has ended anyway

    timer = threading.Timer(seconds, stop_reading)
    timer.daemon = True
    timer.start()
    try:
        body = request.get_data(cache=True)
    except (ClientDisconnected, OSError) as exc:
        if stopped.is_set():
            raise BodyTimeout() from exc
        raise
    finally:
        timer.cancel()
    if stopped.is_set() and len(body) < (request.content_length or 0):
        raise BodyTimeout()  # the stream ended where the timer stopped it
    return body
