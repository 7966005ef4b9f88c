"""A fake OpenAlgo order API served over a real socket, for tests.

The order queue under test talks HTTP to OpenAlgo, and its hard cases (read
timeouts, refused connections, an order the broker accepted but never answered)
only exist on a real socket. So this fake binds one instead of being mocked
in-process. Tests program how it misbehaves with small behaviour objects and
afterwards inspect exactly what reached it.

Standard library only, so it also runs as a separate process that a test can
kill and restart: ``python -m tests.support.fake_broker --port N --log PATH``.

Simplification: a smart order goes into the book with the payload's own action
and quantity. Real OpenAlgo would trade the difference between the current
position and ``position_size``; the queue only needs to find the order again.
``Positions`` models whether a smart order places anything at all, which the
queue's pacing does depend on.  One real HTTP server with the scripted misbehaviours
(stall, drop, hold, reject, accept then hang) the scenarios need.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import select
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IST = timezone(timedelta(hours=5, minutes=30))
ORDER_ENDPOINTS = {
    "/api/v1/placeorder": "placeorder",
    "/api/v1/placesmartorder": "placesmartorder",
}
ORDERBOOK_PATH = "/api/v1/orderbook"

# Seeded from the clock so order ids never repeat across broker instances or
# processes: a restarted broker must not hand out an id an old book still has.
_order_ids = itertools.count(int(time.time() * 1000) * 100)

Body = dict[str, Any]
Key = str | Callable[[Body], Any]


@dataclass
class Received:
    """One order request as the broker saw it.

    ``orderid`` is set once the order is in the book and ``status`` once the
    broker answered (it stays None when the broker hung up without answering).
    ``status`` is what the broker sent, even if the client had already gone.
    """

    monotonic: float
    wall_time: float
    path: str
    endpoint: str
    body: Body | None
    orderid: str | None = None
    status: int | None = None

    @property
    def accepted(self) -> bool:
        """True when the order reached the book, whatever the client heard."""
        return self.orderid is not None


# --------------------------------------------------------------------------
# Behaviours: how the broker answers one request.


class Behaviour:
    """Decides the outcome of one request by driving its ``_Exchange``."""

    def run(self, ex: _Exchange) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Accept(Behaviour):
    """Book the order and answer 200 success (for the orderbook: serve it)."""

    def run(self, ex: _Exchange) -> None:
        ex.reply_success()


@dataclass(frozen=True)
class Status(Behaviour):
    """Answer ``code`` with ``body`` (dict as JSON, str as-is); book nothing."""

    code: int
    body: Body | str | None = None

    def run(self, ex: _Exchange) -> None:
        body = self.body
        if body is None:
            body = {"status": "error", "message": HTTPStatus(self.code).phrase}
        ex.reply(self.code, body)


class Positions(Behaviour):
    """Trades like OpenAlgo's smart order: a ``placesmartorder`` books the difference
    between the symbol's position and ``position_size``, and when there is none it
    answers success without an orderid (OpenAlgo's "No OpenPosition Found" / "No action
    needed"), placing nothing.  Plain orders move the position too.  ``delay`` (low,
    high) seconds before answering stands for a broker's own processing time."""

    def __init__(
        self, open_positions: dict[str, int] | None = None, delay: tuple[float, float] = (0.0, 0.0)
    ) -> None:
        self.positions = dict(open_positions or {})
        self.delay = delay
        self._lock = threading.Lock()

    def run(self, ex: _Exchange) -> None:
        if self.delay[1] > 0:
            time.sleep(random.uniform(*self.delay))
        body = ex.record.body
        symbol, size = body["symbol"], int(_number(body.get("quantity")))
        with self._lock:
            current = self.positions.get(symbol, 0)
            if ex.record.endpoint == "placesmartorder":
                target = int(_number(body.get("position_size")))
                if target == current:
                    message = (
                        "No OpenPosition Found. Not placing Exit order."
                        if target == 0
                        else "No action needed. Position size matches current position"
                    )
                    ex.reply(200, {"status": "success", "message": message})
                    return
            else:
                target = current + (size if str(body.get("action")).upper() == "BUY" else -size)
            self.positions[symbol] = target
        ex.reply_success()


@dataclass(frozen=True)
class BookThenFail(Behaviour):
    """Book the order, then answer ``code`` anyway: OpenAlgo answers 500 when a broker
    module raises, which can happen after the broker booked the order."""

    code: int = 500

    def run(self, ex: _Exchange) -> None:
        ex.accept()
        ex.reply(self.code, {"status": "error", "message": "broker module raised"})


@dataclass(frozen=True)
class Reject(Behaviour):
    """OpenAlgo's business rejection: HTTP 200 carrying ``status: error``."""

    message: str = "Order rejected"

    def run(self, ex: _Exchange) -> None:
        ex.reply(200, {"status": "error", "message": self.message})


@dataclass(frozen=True)
class Stall(Behaviour):
    """Sleep before answering, to push the client into its read timeout."""

    seconds: float
    then: Behaviour = field(default_factory=Accept)

    def run(self, ex: _Exchange) -> None:
        time.sleep(self.seconds)
        self.then.run(ex)


@dataclass(frozen=True)
class Hold(Behaviour):
    """Book the order, answer 200 only after ``broker.release_held()``.

    Lets a test freeze a request mid-flight and act while it is pending.
    """

    def run(self, ex: _Exchange) -> None:
        ex.accept()
        ex.wait_released()
        ex.reply_success()


@dataclass(frozen=True)
class Drop(Behaviour):
    """Read the request, then close the connection: no answer, no order."""

    def run(self, ex: _Exchange) -> None:
        ex.hang_up()


class AcceptThenHang(Behaviour):
    """Book the order, then go silent and finally close without answering.

    This is the ambiguous case the queue must reconcile through the
    orderbook: the order exists but the client never learns its id. The
    connection closes after ``seconds`` or as soon as ``release()`` is called.
    Release is sticky: later requests using this instance close at once.
    """

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._released = threading.Event()

    def __repr__(self) -> str:
        return f"AcceptThenHang({self.seconds!r})"

    def release(self) -> None:
        self._released.set()

    def run(self, ex: _Exchange) -> None:
        ex.accept()
        ex.wait_event(self._released, self.seconds)
        ex.hang_up()


# --------------------------------------------------------------------------
# The request in flight, as seen by behaviours.


class _Exchange:
    """One request in flight; behaviours act through it, never on sockets."""

    def __init__(self, broker: FakeBroker, handler: _Handler) -> None:
        self._broker = broker
        self._handler = handler
        # Captured on arrival so a release_held()/stop() that happens before
        # the behaviour reaches its wait still frees this request.
        self._release_gen = broker._release_gen
        self._stops = broker._stops

    def accept(self) -> str | None:
        """Put the order in the book (idempotent); return its id."""
        return None

    def reply_success(self) -> None:
        raise NotImplementedError

    def reply(self, status: int, body: Body | str) -> None:
        self._answered(status)
        _send(self._handler, status, body)

    def hang_up(self) -> None:
        self._handler.close_connection = True

    def wait_released(self) -> None:
        self._broker._wait_released(self._release_gen)

    def wait_event(self, event: threading.Event, timeout: float) -> None:
        self._broker._wait_event(event, timeout, self._stops)

    def _answered(self, status: int) -> None:
        pass


class _OrderExchange(_Exchange):
    def __init__(self, broker: FakeBroker, handler: _Handler, record: Received) -> None:
        super().__init__(broker, handler)
        self.record = record

    def accept(self) -> str:
        return self._broker._book_order(self.record)

    def reply_success(self) -> None:
        self.reply(200, {"status": "success", "orderid": self.accept()})

    def _answered(self, status: int) -> None:
        self._broker._set_status(self.record, status)


class _BookExchange(_Exchange):
    def reply_success(self) -> None:
        self.reply(200, self._broker._orderbook_payload())


# --------------------------------------------------------------------------
# HTTP plumbing.


def _send(handler: BaseHTTPRequestHandler, status: int, body: Body | str) -> None:
    if isinstance(body, str):
        data, ctype = body.encode(), "text/plain; charset=utf-8"
    else:
        data, ctype = json.dumps(body).encode(), "application/json"
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (e.g. its timeout fired); nothing to tell it


def _parse(raw: bytes) -> Body | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _Server(ThreadingHTTPServer):
    # The stdlib backlog of 5 makes bursts of concurrent connects overflow
    # and retry after a second, which would distort arrival times.
    request_queue_size = 128
    broker: FakeBroker

    def get_request(self) -> Any:
        """Counted before the accept, so ``wait_idle`` sees every connection at every
        moment: waiting in the backlog, being accepted, or being served."""
        self.broker._connection_opened()
        try:
            return super().get_request()
        except OSError:
            self.broker._connection_closed()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.broker._connection_closed()

    def has_pending_connection(self) -> bool:
        """A client connected and is waiting to be accepted."""
        readable, _, _ = select.select([self.socket], [], [], 0)
        return bool(readable)


class _Handler(BaseHTTPRequestHandler):
    """Routes POSTs to the broker. HTTP/1.0, so every connection is closed
    after one answer and refuse() is not bypassed by a pooled connection."""

    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        body = _parse(raw)
        if path in ORDER_ENDPOINTS and body == {}:
            # Like OpenAlgo's API: an empty order is refused, and it is no order to
            # record (the queue's door probe sends one to an API without the door).
            _send(self, 400, {"status": "error", "message": "Invalid order: no fields"})
        elif path in ORDER_ENDPOINTS:
            self.server.broker._serve_order(self, path, body)
        elif path == ORDERBOOK_PATH:
            self.server.broker._serve_orderbook(self)
        else:
            _send(self, 404, {"status": "error", "message": "Not found"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: tests assert on recorded requests, not on log lines."""


class _KeepAliveHandler(_Handler):
    """HTTP/1.1: a client's connection serves many requests, as a real API's does (for
    benchmarks, where a new connection per order would cost more than the order)."""

    protocol_version = "HTTP/1.1"


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _book_entry(body: Body, orderid: str) -> Body:
    """An orderbook row in OpenAlgo's shape, derived from an order payload."""
    pricetype = str(body.get("pricetype", "MARKET")).upper()
    market = pricetype == "MARKET"
    return {
        "action": body.get("action", "BUY"),
        "symbol": body.get("symbol", ""),
        "exchange": body.get("exchange", "NSE"),
        "orderid": orderid,
        "product": body.get("product", "MIS"),
        "quantity": str(body.get("quantity", "0")),
        "price": 0.0 if market else _number(body.get("price")),
        "pricetype": pricetype,
        "order_status": "complete" if market else "open",
        "trigger_price": _number(body.get("trigger_price")),
        "timestamp": datetime.now(IST).strftime("%d-%b-%Y %H:%M:%S"),
    }


def _statistics(orders: list[Body]) -> dict[str, float]:
    def count(name: str, value: str) -> float:
        return float(sum(str(o.get(name, "")).lower() == value for o in orders))

    return {
        "total_buy_orders": count("action", "buy"),
        "total_sell_orders": count("action", "sell"),
        "total_completed_orders": count("order_status", "complete"),
        "total_open_orders": count("order_status", "open"),
        "total_rejected_orders": count("order_status", "rejected"),
    }


def peak_count(times: Iterable[float], window: float) -> int:
    """Most timestamps inside any half-open interval ``[t, t + window)``."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _key_func(key: Key) -> Callable[[Body], Any]:
    if isinstance(key, str):
        return lambda body: body.get(key)
    return key


# --------------------------------------------------------------------------
# The broker.


class FakeBroker:
    """A programmable OpenAlgo order API on 127.0.0.1.

    Behaviour per order request: ``behaviour_for(body)`` if set and not None,
    else the next scripted behaviour, else ``default``. The orderbook endpoint
    answers with ``orderbook_behaviour`` (``Accept()`` serves the book).
    All shared state sits behind one lock; each request runs in its own
    thread, so held or hanging requests never block the others.
    """

    def __init__(self, port: int = 0, *, keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self.default: Behaviour = Accept()
        self.behaviour_for: Callable[[Body], Behaviour | None] | None = None
        self.orderbook_behaviour: Behaviour = Accept()
        self._port = port
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._script: deque[Behaviour] = deque()
        self._book: list[Body] = []
        self._orderbook_requests = 0
        self._release_gen = 0
        self._stops = 0
        self._open_connections = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ------------------------------------------------------------

    def start(self) -> FakeBroker:
        self._bind()
        return self

    def stop(self) -> None:
        """Stop listening and let held or hanging requests finish."""
        self._unbind()
        with self._cond:
            self._stops += 1
        self.release_held()

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused, like a
        broker that is down. Requests already in flight carry on."""
        self._unbind()

    def resume(self) -> None:
        """Listen again on the same port after refuse()."""
        self._bind()

    def __enter__(self) -> FakeBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeBroker has no port until start()")
        return f"http://127.0.0.1:{self._port}"

    def _bind(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeBroker is already listening")
        server = _Server(
            ("127.0.0.1", self._port), _KeepAliveHandler if self.keep_alive else _Handler
        )
        server.broker = self
        self._port = server.server_address[1]
        # A short poll interval keeps refuse()/stop() fast.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-broker:{self._port}",
            daemon=True,
        )
        self._server = server
        self._thread.start()

    def _unbind(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    # programming ------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours, consumed one per order request (FIFO)."""
        with self._cond:
            self._script.extend(behaviours)

    def release_held(self) -> None:
        """Answer every ``Hold()`` request that has arrived so far."""
        with self._cond:
            self._release_gen += 1
            self._cond.notify_all()

    def add_book_entry(self, entry: Body) -> Body:
        """Inject an order into the book, e.g. a look-alike that makes
        reconciliation ambiguous. Missing fields get defaults (a fresh
        orderid, NSE/MIS/MARKET, now); returns the stored row."""
        with self._cond:
            row = _book_entry(entry, str(next(_order_ids))) | entry
            self._book.append(row)
            self._cond.notify_all()
            return dict(row)

    def reset(self) -> None:
        """Forget requests, script and book. ``default``, ``behaviour_for`` and
        ``orderbook_behaviour`` are settings, not history, so they are kept."""
        with self._cond:
            self._received.clear()
            self._script.clear()
            self._book.clear()
            self._orderbook_requests = 0
            self._cond.notify_all()

    # inspection -------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """Snapshot of every order request, in arrival order."""
        with self._cond:
            return [replace(r) for r in self._received]

    def orders(self) -> list[Received]:
        """Snapshot of the order requests that reached the book."""
        return [r for r in self.received if r.accepted]

    @property
    def book(self) -> list[Body]:
        """Snapshot of the orderbook rows the broker would serve."""
        with self._cond:
            return [dict(row) for row in self._book]

    @property
    def orderbook_requests(self) -> int:
        with self._cond:
            return self._orderbook_requests

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds; re-checked on every state change
        (arrival, booking, answer, orderbook request). Returns False on timeout."""
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no connection is being served and none waits to be accepted.
        Once every sender has stopped (its process killed, its dispatcher stopped),
        nothing more can arrive: the book is final, and a duplicate would be in it.
        Proves "nothing more was sent" by an event instead of a fixed sleep."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                server = self._server
                pending = server is not None and server.has_pending_connection()
                if self._open_connections == 0 and not pending:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Woken by every closed connection; a pending accept is looked at again
                # within a few milliseconds (the server accepts it meanwhile).
                self._cond.wait(min(remaining, 0.01))

    def _connection_opened(self) -> None:
        with self._cond:
            self._open_connections += 1

    def _connection_closed(self) -> None:
        with self._cond:
            self._open_connections -= 1
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` order requests have arrived."""
        return self.wait_until(lambda: len(self._received) >= count, timeout)

    def max_in_window(
        self, endpoint: str | None = None, window: float = 1.0, key: Key | None = None
    ) -> int:
        """Peak number of order requests (accepted or not) arriving within any
        ``window`` seconds, optionally only for ``endpoint`` ("placeorder" /
        "placesmartorder"). With ``key`` (a body field name or a function of
        the body), the peak is per key value, e.g. per apikey for rate limits."""
        group = _key_func(key) if key is not None else (lambda body: None)
        times: dict[Any, list[float]] = defaultdict(list)
        for r in self.received:
            if endpoint is None or r.endpoint == endpoint:
                times[group(r.body or {})].append(r.monotonic)
        return max((peak_count(t, window) for t in times.values()), default=0)

    def count_by(self, key: Key) -> Counter:
        """Order requests per ``key`` value (a body field name or a function)."""
        func = _key_func(key)
        return Counter(func(r.body or {}) for r in self.received)

    # called from handler threads ----------------------------------------------

    def _serve_order(self, handler: _Handler, path: str, body: Body | None) -> None:
        with self._cond:
            record = Received(time.monotonic(), time.time(), path, ORDER_ENDPOINTS[path], body)
            self._received.append(record)
            behaviour = self._choose(body) if body is not None else None
            ex = _OrderExchange(self, handler, record)
            self._cond.notify_all()
        if behaviour is None:
            ex.reply(400, {"status": "error", "message": "Body must be a JSON object"})
        else:
            behaviour.run(ex)

    def _choose(self, body: Body) -> Behaviour:
        if self.behaviour_for is not None:
            chosen = self.behaviour_for(body)
            if chosen is not None:
                return chosen
        return self._script.popleft() if self._script else self.default

    def _serve_orderbook(self, handler: _Handler) -> None:
        with self._cond:
            self._orderbook_requests += 1
            behaviour = self.orderbook_behaviour
            ex = _BookExchange(self, handler)
            self._cond.notify_all()
        behaviour.run(ex)

    def _book_order(self, record: Received) -> str:
        with self._cond:
            if record.orderid is None:
                record.orderid = str(next(_order_ids))
                self._book.append(_book_entry(record.body or {}, record.orderid))
                self._cond.notify_all()
            return record.orderid

    def _set_status(self, record: Received, status: int) -> None:
        with self._cond:
            record.status = status
            self._cond.notify_all()

    def _orderbook_payload(self) -> Body:
        orders = self.book
        return {
            "status": "success",
            "data": {"orders": orders, "statistics": _statistics(orders)},
        }

    def _wait_released(self, gen: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._release_gen > gen)

    def _wait_event(self, event: threading.Event, timeout: float, stops: int) -> None:
        """Wait for ``event`` up to ``timeout``, cut short by stop(). Polls,
        because an Event cannot be waited on together with the condition."""
        deadline = time.monotonic() + timeout
        while not event.is_set() and self._stops == stops:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event.wait(min(remaining, 0.05))


# --------------------------------------------------------------------------
# Separate-process mode.


class _LoggedAccept(Behaviour):
    """Accept, but first make the order durable as one JSON line, so a test
    in another process can count what arrived even if this one is killed
    right after answering."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the process)
        self._lock = threading.Lock()

    def run(self, ex: _OrderExchange) -> None:  # type: ignore[override]
        orderid = ex.accept()
        line = json.dumps(
            {
                "endpoint": ex.record.endpoint,
                "body": ex.record.body,
                "orderid": orderid,
                "wall_time": ex.record.wall_time,
            }
        )
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        ex.reply_success()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAlgo broker that accepts every order.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", help="append each received order to this file as a JSON line")
    args = parser.parse_args(argv)
    broker = FakeBroker(port=args.port)
    if args.log:
        broker.default = _LoggedAccept(args.log)
    broker.start()
    print(broker.base_url, flush=True)  # tells the parent the port and that we listen
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
