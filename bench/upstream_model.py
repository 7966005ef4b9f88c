"""A faithful model of upstream's in-memory order queue, for benchmark baselines.

OpenAlgo's Strategy Manager (August 2026) puts each webhook's order on a ``queue.Queue``
and one thread drains it: a smart order is posted, then the thread sleeps 1 s; otherwise
a regular order is posted if fewer than 10 went out in the last second; then it sleeps
100 ms and looks again.  This reproduces that loop (written from its description, not
its code) behind the same webhook shape our app has: BUY enters (placeorder), SELL exits
(placesmartorder), ``position_size`` sets the quantity.

    python -m bench.upstream_model --port 5101 --broker http://127.0.0.1:5102
    UPSTREAM_MODEL_BROKER=http://127.0.0.1:5102 \
        gunicorn -k eventlet -w 1 'bench.upstream_model:create_served_app()'
"""

import argparse
import queue
import threading
import time
from collections import deque

import httpx
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

#: Printed once the app is built (not "ready": eventlet's deprecation notice says "already").
READY_LINE = "bench host listening"

regular_orders: queue.Queue = queue.Queue()
smart_orders: queue.Queue = queue.Queue()


def drain(broker: str) -> None:
    client = httpx.Client(timeout=10)
    recent = deque(maxlen=10)
    while True:
        try:
            order = smart_orders.get_nowait()
            client.post(f"{broker}/api/v1/placesmartorder", json=order)
            time.sleep(1)  # upstream: always wait a second after a smart order
            continue
        except queue.Empty:
            pass
        now = time.time()
        while recent and now - recent[0] > 1:
            recent.popleft()
        if len(recent) < 10:
            try:
                order = regular_orders.get_nowait()
                client.post(f"{broker}/api/v1/placeorder", json=order)
                recent.append(now)
            except queue.Empty:
                pass
        time.sleep(0.1)  # upstream: look again in 100 ms


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/strategy/webhook/<webhook_id>")
    def webhook(webhook_id):
        data = request.get_json(force=True)
        order = {
            "apikey": "model" + "0" * 59,
            "strategy": webhook_id,
            "symbol": data["symbol"],
            "exchange": "NSE",
            "product": "MIS",
            "action": data["action"],
            "pricetype": "MARKET",
            "quantity": str(data.get("position_size", 1)),
        }
        if data["action"] == "SELL":
            smart_orders.put({**order, "quantity": "0", "position_size": "0"})
        else:
            regular_orders.put(order)
        return jsonify({"message": f"Order queued successfully for {data['symbol']}"})

    return app


def create_served_app() -> Flask:
    """For gunicorn (``bench.upstream_model:create_served_app()``): the app with its drain
    thread started, posting to ``UPSTREAM_MODEL_BROKER``; prints ``READY_LINE``."""
    import os

    threading.Thread(target=drain, args=(os.environ["UPSTREAM_MODEL_BROKER"],), daemon=True).start()
    print(READY_LINE, flush=True)
    return create_app()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broker", required=True)
    args = parser.parse_args()
    threading.Thread(target=drain, args=(args.broker,), daemon=True).start()
    server = make_server("127.0.0.1", args.port, create_app(), threaded=True)
    print(READY_LINE, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
