"""Benchmarks: every figure beside its baseline, measured in the same run.

    .venv/bin/python -m bench.run              # the full table (about 35 minutes)
    .venv/bin/python -m bench.run --quick      # small counts, a smoke run

Machines here are shared and noisy, so every figure is measured ``--repeats`` times
(default 3) and reported as the median with min-max.  Nothing here is a pass/fail test.
Each benchmark stands beside the baseline it is read against, so one invocation prints
one comparable table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.upstream_model import READY_LINE  # noqa: E402
from database.order_queue.api_keys import KeySealing  # noqa: E402
from database.order_queue_db import QueueStore, RateLimits, utcnow  # noqa: E402
from tests.support.app_process import AppProcess, free_port  # noqa: E402
from tests.support.fake_broker import FakeBroker, Positions  # noqa: E402
from tests.support.rows import finished_order_row  # noqa: E402

PEPPER = "b3nch" * 10
#: The sealing of the stores the bench drives directly.
SEALING = KeySealing(PEPPER)
KEY = "k" * 64
ROWS: list[tuple[str, str, str]] = []
LATENCIES: dict[str, list[float]] = {}


def report(name: str, ours: str, baseline: str, note: str = "") -> None:
    if SERVING["label_rows"]:
        name = f"[{serving_label()}] {name}"
    ROWS.append((name, ours, baseline, note))
    print(f"  {name}: {ours}  |  baseline {baseline}  {note}", flush=True)


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}-{fmt.format(max(values))})"
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def payload(symbol: str, quantity: int, apikey: str = KEY) -> dict:
    return {
        "apikey": apikey,
        "strategy": "Bench",
        "symbol": symbol,
        "exchange": "NSE",
        "product": "MIS",
        "action": "BUY",
        "pricetype": "MARKET",
        "quantity": str(quantity),
    }


# --------------------------------------------------------------------------- 1. enqueue


def raw_sqlite_commits(path: Path, count: int) -> list[float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    times = []
    for i in range(count):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (payload) VALUES (?)", (json.dumps(payload("SBIN", i)),))
        conn.execute("COMMIT")
        times.append(time.perf_counter() - started)
    conn.close()
    return times


def bench_enqueue(work: Path, count: int, repeats: int) -> None:
    from services import order_queue_service
    from services.order_queue import runtime
    from services.order_queue.settings import load_settings

    ours_p50, ours_p99, raw_p50, raw_p99, threaded = [], [], [], [], []
    for run in range(repeats):
        raw = raw_sqlite_commits(work / f"raw{run}.db", count)
        store = runtime.build(
            load_settings(
                {
                    "API_KEY_PEPPER": PEPPER,
                    "ORDER_QUEUE_DATABASE_URL": f"sqlite:///{work}/queue{run}.db",
                }
            )
        ).store
        store.schema.create()
        times = []
        for i in range(count):
            started = time.perf_counter()
            order_queue_service.queue_order("placeorder", payload(f"S{i % 50}", i + 1))
            times.append(time.perf_counter() - started)
        ours_p50.append(pct(times, 50) * 1000)
        ours_p99.append(pct(times, 99) * 1000)
        raw_p50.append(pct(raw, 50) * 1000)
        raw_p99.append(pct(raw, 99) * 1000)
        per_thread = count // 8
        started = time.perf_counter()
        workers = [
            threading.Thread(
                target=lambda t=t, n=per_thread: [
                    order_queue_service.queue_order("placeorder", payload(f"T{t}", i + 1))
                    for i in range(n)
                ]
            )
            for t in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        threaded.append(per_thread * 8 / (time.perf_counter() - started))
    floor_rate = [1000 / p for p in raw_p50]
    report(
        "enqueue p50 (ms): queue_order vs raw INSERT+COMMIT",
        spread(ours_p50),
        spread(raw_p50),
        f"ratio {statistics.median(ours_p50) / statistics.median(raw_p50):.2f}x",
    )
    report("enqueue p99 (ms)", spread(ours_p99), spread(raw_p99))
    report(
        "enqueue, 8 threads (orders/s) vs single-thread raw floor",
        spread(threaded, "{:.0f}"),
        spread(floor_rate, "{:.0f}"),
        f"ratio {statistics.median(threaded) / statistics.median(floor_rate):.2f}",
    )
    driver, core = [], []
    for run in range(repeats):
        driver_ms, core_ms = insert_paths(work / f"paths{run}.db", count)
        driver.append(driver_ms)
        core.append(core_ms)
    report(
        "enqueue insert p50 (ms): driver cursor vs SQLAlchemy Core transaction",
        spread(driver),
        spread(core),
        f"ratio {statistics.median(driver) / statistics.median(core):.2f}x",
    )


def insert_paths(path: Path, count: int) -> tuple[float, float]:
    """p50 of the SQLite backend's enqueue transaction on the driver's own cursor, and of
    the same row committed through SQLAlchemy Core (``engine.begin()``),
    alternating on one file: whether the driver-level insert still pays."""
    from database.order_queue import backend_rules

    store = QueueStore(f"sqlite:///{path}", sealing=SEALING)
    store.schema.create()
    rows: list[dict] = []
    real_insert = store.backend.insert_order
    store.backend.insert_order = lambda engine, row: rows.append(row) or real_insert(engine, row)
    store.intake.enqueue("placeorder", payload("P", 1), now=utcnow(), max_age_seconds=600)
    store.backend.insert_order = real_insert
    row = rows[0]
    driver, core = [], []
    for _ in range(count):
        started = time.perf_counter()
        real_insert(store.engine, row)
        driver.append(time.perf_counter() - started)
        started = time.perf_counter()
        with store.engine.begin() as conn:  # the backend's own BEGIN, as every write
            conn.execute(backend_rules.INSERT_ORDER, row)
        core.append(time.perf_counter() - started)
    store.dispose()
    return pct(driver, 50) * 1000, pct(core, 50) * 1000


# --------------------------------------------------------------------------- 2-4. end to end


#: What the systems under test run on (``--server``, ``--queue``): set per pass by main.
SERVING = {"server": "dev", "queue": "sqlite", "label_rows": False, "drain": True}
POSTGRES_URL = os.getenv(
    "ORDER_QUEUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def serving_label() -> str:
    server = "gunicorn + eventlet" if SERVING["server"] == "gunicorn" else "dev server"
    return f"{server}, {'PostgreSQL' if SERVING['queue'] == 'postgres' else 'SQLite'}"


def fresh_postgres_schema(name: str) -> str:
    """A URL whose tables live in a new, empty schema ``name`` of the test database."""
    admin = QueueStore(POSTGRES_URL, sealing=SEALING)
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    admin.dispose()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{name}"


def gunicorn_command(port: int, target: str) -> list[str]:
    """OpenAlgo's production server: gunicorn, one eventlet worker."""
    from tests.support.server_venv import server_python

    return [
        str(server_python()),
        "-m",
        "gunicorn",
        "--worker-class",
        "eventlet",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        target,
    ]


class Side:
    """One system under test: our app, the same host with an in-memory queue, or the
    upstream model, posting to ``broker``, on the server ``SERVING`` names."""

    def __init__(self, name: str, work: Path, broker: FakeBroker, symbols: list[str]):
        self.name, self.broker = name, broker
        work.mkdir()
        gunicorn = SERVING["server"] == "gunicorn"
        if name in ("ours", "in-memory"):
            queue = (
                {"ORDER_QUEUE_DATABASE_URL": fresh_postgres_schema(f"bench_{work.name}")}
                if SERVING["queue"] == "postgres" and name == "ours"
                else {}
            )
            self.process = AppProcess(work, broker.base_url, PEPPER, LOG_LEVEL="WARNING", **queue)
            created = json.loads(
                self.process.flask(
                    "strategy", "add", "--name", "Bench", "--symbol", symbols[0], "--quantity", "1"
                )
            )
            self.process.flask(
                "strategy",
                "map",
                "--name",
                "Bench",
                "--quantity",
                "1",
                *(a for s in symbols[1:] for a in ("--symbol", s)),
            )
            if name == "ours":
                if gunicorn:
                    self.process.command = gunicorn_command(self.process.port, "wsgi:app")
                self.process.start()
            else:  # the same host, its queue_order in memory (bench/in_memory_host.py)
                self.process.command = (
                    gunicorn_command(self.process.port, "bench.in_memory_host:create_app()")
                    if gunicorn
                    else [sys.executable, "-m", "bench.in_memory_host"]
                )
                self.process.start(ready_line=READY_LINE)
            self.url = f"{self.process.base_url}/strategy/webhook/{created['webhook_id']}"
        else:
            port = free_port()
            command = (
                gunicorn_command(port, "bench.upstream_model:create_served_app()")
                if gunicorn
                else [
                    sys.executable,
                    "-m",
                    "bench.upstream_model",
                    "--port",
                    str(port),
                    "--broker",
                    broker.base_url,
                ]
            )
            self.process = AppProcess(
                work,
                broker.base_url,
                PEPPER,
                command=command,
                UPSTREAM_MODEL_BROKER=broker.base_url,
            )
            self.process.start(ready_line=READY_LINE)
            self.url = f"http://127.0.0.1:{port}/strategy/webhook/bench"
        self.client = httpx.Client(timeout=10)
        self.answer_times: list[float] = []

    def fire(self, symbol: str, action: str, quantity: int) -> float:
        sent = time.time()
        started = time.perf_counter()
        response = self.client.post(
            self.url, json={"symbol": symbol, "action": action, "position_size": str(quantity)}
        )
        self.answer_times.append(time.perf_counter() - started)
        response.raise_for_status()
        return sent

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


def bench_latency(work: Path, count: int, repeats: int) -> None:
    """One webhook every 200 ms: webhook to broker beside the upstream model, and the
    webhook's answer beside the same host with an in-memory ``queue_order`` (what storing
    the order costs the sender's wait, on this server)."""
    symbols = [f"L{i:02d}" for i in range(20)]
    p50s = {"ours": [], "upstream": []}
    p99s = {"ours": [], "upstream": []}
    answers = {"ours": [], "in-memory": []}
    for run in range(repeats):
        for name in ("ours", "in-memory", "upstream"):
            with FakeBroker() as broker:
                side = Side(name, work / f"latency-{name}-{run}", broker, symbols)
                try:
                    sent = {}
                    for i in range(count):
                        sent[i + 1] = side.fire(symbols[i % 20], "BUY", i + 1)
                        time.sleep(0.2)
                    if name != "in-memory":
                        broker.wait_for(count, timeout=30)
                    latencies = [
                        (r.wall_time - sent[int(r.body["quantity"])]) * 1000
                        for r in broker.received
                        if r.body
                    ]
                finally:
                    side.stop()
            if name in answers:
                answers[name].append(pct(side.answer_times, 50) * 1000)
            if name in p50s:
                p50s[name].append(pct(latencies, 50))
                p99s[name].append(pct(latencies, 99))
                label = serving_label() if name == "ours" else serving_label().split(",")[0]
                LATENCIES.setdefault(f"{name} ({label})", []).extend(latencies)
    ratio = statistics.median(p50s["ours"]) / statistics.median(p50s["upstream"])
    report(
        f"webhook→broker p50 (ms), {count} orders at 5/s",
        spread(p50s["ours"], "{:.1f}"),
        spread(p50s["upstream"], "{:.1f}"),
        f"ours/theirs {ratio:.2f}",
    )
    report(
        "webhook→broker p99 (ms)",
        spread(p99s["ours"], "{:.1f}"),
        spread(p99s["upstream"], "{:.1f}"),
    )
    added = statistics.median(answers["ours"]) - statistics.median(answers["in-memory"])
    report(
        "webhook answer p50 (ms) vs the same host with an in-memory queue_order",
        spread(answers["ours"], "{:.2f}"),
        spread(answers["in-memory"], "{:.2f}"),
        f"storing the order adds {added:.2f} ms",
    )


def bench_burst(work: Path, count: int, repeats: int) -> None:
    """``count`` webhooks from 16 clients at once: how fast they are acknowledged, beside
    the same host with an in-memory queue_order (the queue's share of the cost), and how
    many orders the broker saw in its busiest second while ours drained them."""
    symbols = [f"B{i:02d}" for i in range(40)]
    accepted = {"ours": [], "in-memory": []}
    peaks, drained, errors = [], [], {"ours": 0, "in-memory": 0}
    lock = threading.Lock()
    for run in range(repeats):
        for name in ("ours", "in-memory"):
            with FakeBroker() as broker:
                side = Side(name, work / f"burst-{name}-{run}", broker, symbols)

                def client(indexes, name=name, side=side):
                    with httpx.Client(timeout=10) as http:
                        for i in indexes:
                            try:
                                http.post(
                                    side.url,
                                    json={
                                        "symbol": symbols[i % 40],
                                        "action": "BUY",
                                        "position_size": str(i + 1),
                                    },
                                ).raise_for_status()
                            except httpx.HTTPError:
                                with lock:
                                    errors[name] += 1

                started = time.monotonic()
                threads = [
                    threading.Thread(target=client, args=(range(t, count, 16),)) for t in range(16)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                accepted[name].append(count / (time.monotonic() - started))
                if name == "ours" and SERVING["drain"]:
                    broker.wait_for(count, timeout=count / 7 + 60)
                    drained.append(time.monotonic() - started)
                    peaks.append(broker.max_in_window("placeorder", window=1.0))
                side.stop()
    share = statistics.median(accepted["ours"]) / statistics.median(accepted["in-memory"])
    report(
        f"burst: {count} webhooks from 16 clients, accepted/s vs in-memory queue_order",
        spread(accepted["ours"], "{:.0f}"),
        spread(accepted["in-memory"], "{:.0f}"),
        f"ratio {share:.2f}; errors {errors['ours']} / {errors['in-memory']}",
    )
    if peaks:
        report(
            "burst: max orders at the broker in any 1 s",
            spread(peaks, "{:.0f}"),
            "limit 10",
            f"drained in {spread(drained, '{:.1f}')} s",
        )


def bench_lanes(work: Path, repeats: int) -> None:
    entries = [f"E{i}" for i in range(4)]
    exits = [f"X{i}" for i in range(4)]
    figures = {(name, lane): ([], []) for name in ("ours", "upstream") for lane in (0, 1)}
    for run in range(repeats):
        for name in ("ours", "upstream"):
            with FakeBroker() as broker:
                # Each exit instrument holds a position: its first flatten closes it,
                # and the broker places nothing for the four after it.
                broker.default = Positions({symbol: 50 for symbol in exits})
                side = Side(name, work / f"lanes-{name}-{run}", broker, entries + exits)
                try:
                    # Entries are told apart by quantity; the 5 flattens of one exit
                    # instrument are identical, and both systems keep per-instrument order,
                    # so they are matched first-sent, first-arrived.
                    sent, exits_sent = {}, {symbol: [] for symbol in exits}
                    plan = [("BUY", entries[i % 4], 9000 + i) for i in range(40)] + [
                        ("SELL", exits[i % 4], 0) for i in range(20)
                    ]
                    random.Random(7).shuffle(plan)  # interleaved, as a scanner fires
                    for action, symbol, quantity in plan:
                        at = side.fire(symbol, action, quantity)
                        if action == "SELL":
                            exits_sent[symbol].append(at)
                        else:
                            sent[quantity] = at
                        time.sleep(1.0 / len(plan))
                    broker.wait_for(60, timeout=120)
                    regular, smart = [], []
                    for request in broker.received:
                        body = request.body
                        if body["symbol"] in exits:
                            first = exits_sent[body["symbol"]].pop(0)
                            smart.append((request.wall_time - first) * 1000)
                        else:
                            regular.append((request.wall_time - sent[int(body["quantity"])]) * 1000)
                finally:
                    side.stop()
            for lane, latencies in ((0, regular), (1, smart)):
                figures[(name, lane)][0].append(pct(latencies, 50))
                figures[(name, lane)][1].append(max(latencies))
    for label, lane in (("entries (regular)", 0), ("exits (smart)", 1)):
        ours, theirs = figures[("ours", lane)], figures[("upstream", lane)]
        report(
            f"mixed burst, {label}: p50 / max (ms)",
            f"{spread(ours[0], '{:.0f}')} / {spread(ours[1], '{:.0f}')}",
            f"{spread(theirs[0], '{:.0f}')} / {spread(theirs[1], '{:.0f}')}",
        )


def bench_flatten(work: Path, count: int, repeats: int, label: str) -> None:
    """``count`` exit signals for ``count`` different symbols of one account, fired
    together from 8 clients (a kill switch, a market-wide stop, the squareoff): how long
    until the last exit is at the broker, counted from the first signal."""
    symbols = [f"F{i:02d}" for i in range(count)]
    lasts = {"ours": [], "upstream": []}
    for run in range(repeats):
        for name in ("ours", "upstream"):
            with FakeBroker() as broker:
                broker.default = Positions({symbol: 25 for symbol in symbols})
                side = Side(name, work / f"flatten{count}-{name}-{run}", broker, symbols)
                try:
                    started = time.time()
                    clients = [
                        threading.Thread(
                            target=lambda chunk=symbols[i::8], side=side: [
                                side.fire(symbol, "SELL", 0) for symbol in chunk
                            ]
                        )
                        for i in range(8)
                    ]
                    for client in clients:
                        client.start()
                    for client in clients:
                        client.join()
                    broker.wait_for(count, timeout=count * 2 + 30)
                    lasts[name].append(max(r.wall_time for r in broker.received) - started)
                finally:
                    side.stop()
    ratio = statistics.median(lasts["ours"]) / statistics.median(lasts["upstream"])
    report(
        f"{label}: last exit at the broker (s)",
        spread(lasts["ours"], "{:.1f}"),
        spread(lasts["upstream"], "{:.1f}"),
        f"ours/theirs {ratio:.2f}",
    )


# --------------------------------------------------------------------------- 5. growth


def fill_finished(store: QueueStore, count: int, age: timedelta = timedelta(days=1)) -> None:
    from database.order_queue_db import orders

    batch = [finished_order_row(utcnow() - age)] * min(count, 10_000)
    with store.engine.begin() as conn:
        for _ in range(max(count // 10_000, 1)):
            conn.execute(orders.insert(), batch)


def claim_mark_times(store: QueueStore, count: int) -> list[float]:
    """Seconds per claim + mark sent, for ``count`` fresh orders."""
    limits = RateLimits(smart=10**6, regular=10**6, window=1.1)
    for i in range(count):
        store.intake.enqueue(
            "placeorder", payload(f"G{i}", i + 1), now=utcnow(), max_age_seconds=600
        )
    times = []
    for _ in range(count):
        started = time.perf_counter()
        claim = store.claims.claim_next(
            "bench", now=utcnow(), lease_seconds=30, limits=limits
        ).order
        store.lifecycle.mark_sent(claim, now=utcnow(), actor="bench", broker_orderid="1")
        times.append(time.perf_counter() - started)
    return times


def claim_mark_cost(store: QueueStore, count: int) -> float:
    return statistics.median(claim_mark_times(store, count)) * 1000


def sent_orders(store: QueueStore, count: int) -> None:
    """``count`` orders taken, claimed, stamped and marked sent through the store (each
    with its payload, sealed key and attempt row), as a day of trading leaves them."""
    limits = RateLimits(smart=10**6, regular=10**6, window=1.1)
    for i in range(count):
        store.intake.enqueue(
            "placeorder", payload(f"S{i % 200}", i % 50 + 1), now=utcnow(), max_age_seconds=600
        )
        claim = store.claims.claim_next(
            "bench", now=utcnow(), lease_seconds=30, limits=limits
        ).order
        store.claims.stamp_send(claim, clock=utcnow, lease_seconds=30)
        store.lifecycle.mark_sent(
            claim, now=utcnow(), actor="bench", broker_orderid=str(10**14 + i)
        )


def file_mb(store: QueueStore, path: Path) -> float:
    """The database file's size with its WAL checkpointed into it (the store closed)."""
    store.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / 1e6


def bench_size(work: Path, count: int) -> None:
    """The queue database's size per 100,000 sent orders, beside the same orders' payloads
    written as JSON lines (the least any record of them could take)."""
    path = work / "size.db"
    store = QueueStore(f"sqlite:///{path}", sealing=SEALING)
    store.schema.create()
    empty = file_mb(store, path)
    sent_orders(store, count)
    per_100k = (file_mb(store, path) - empty) * 100_000 / count
    lines = sum(len(json.dumps(payload(f"S{i % 200}", i % 50 + 1))) + 1 for i in range(count))
    store.dispose()
    report(
        "queue database size per 100,000 sent orders (MB) vs their payloads as JSON lines",
        f"{per_100k:.1f}",
        f"{lines * 100_000 / count / 1e6:.1f}",
        f"measured over {count:,} orders; with ORDER_QUEUE_RETENTION_DAYS=30 a trader "
        f"sending 1,000 orders a day keeps about {per_100k * 0.3:.0f} MB",
    )


def bench_purging(work: Path, big: int, repeats: int) -> None:
    """Claim + mark while the retention purge removes ``big`` finished orders in batches
    (as the dispatcher does), beside the same store with nothing being purged."""
    from database.order_queue_db import PURGE_BATCH

    quiet, purging, purged_during = [], [], []
    for _ in range(repeats):
        for label, times in (("quiet", quiet), ("purging", purging)):
            path = work / f"purge-{label}.db"
            store = QueueStore(f"sqlite:///{path}", sealing=SEALING)
            store.schema.create()
            fill_finished(store, big, age=timedelta(days=40))
            stop, purged = threading.Event(), [0]

            def purge(stop=stop, store=store, purged=purged) -> None:
                while not stop.is_set():
                    batch = store.operator_moves.purge_finished(
                        older_than=utcnow() - timedelta(days=30)
                    )
                    purged[0] += batch
                    if batch < PURGE_BATCH:
                        return
                    time.sleep(0.02)  # the dispatcher purges once per pass

            purger = threading.Thread(target=purge) if label == "purging" else None
            if purger:
                purger.start()
            times.extend(claim_mark_times(store, 500))
            stop.set()
            if purger:
                purger.join()
                purged_during.append(purged[0])
            store.dispose()
            path.unlink()
    report(
        f"claim+mark p50 / p99 (ms) while {big:,} old orders are purged vs nothing purged",
        f"{pct(purging, 50) * 1000:.3f} / {pct(purging, 99) * 1000:.3f}",
        f"{pct(quiet, 50) * 1000:.3f} / {pct(quiet, 99) * 1000:.3f}",
        f"ratio p50 {pct(purging, 50) / pct(quiet, 50):.2f}; "
        f"{statistics.median(purged_during):,.0f} purged meanwhile, {PURGE_BATCH} per batch",
    )


def bench_growth(work: Path, big: int, repeats: int) -> None:
    small_costs, big_costs = [], []
    for label, rows, costs in (("small", 1_000, small_costs), ("big", big, big_costs)):
        store = QueueStore(f"sqlite:///{work}/growth-{label}.db", sealing=SEALING)
        store.schema.create()
        fill_finished(store, rows)
        for _ in range(repeats):
            costs.append(claim_mark_cost(store, 200))
        store.dispose()
    report(
        f"claim+mark (ms) with {big:,} finished rows vs 1,000",
        spread(big_costs),
        spread(small_costs),
        f"ratio {statistics.median(big_costs) / statistics.median(small_costs):.2f}",
    )


# --------------------------------------------------------------------------- 6. recovery


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bulk_pending(store: QueueStore, count: int) -> None:
    """``count`` pending orders in one transaction: one real enqueue, then copies of its
    row (same encrypted key) on 500 instruments."""
    from sqlalchemy import select

    from database.order_queue_db import orders

    first = store.intake.enqueue("placeorder", payload("R0", 1), now=utcnow(), max_age_seconds=3600)
    with store.engine.begin() as conn:
        row = dict(conn.execute(select(orders).where(orders.c.id == first)).mappings().one())
        row.pop("id")
        rows = [
            {
                **row,
                "symbol": f"R{i % 500}",
                "instrument": row["instrument"].replace("|R0|", f"|R{i % 500}|"),
                "payload": row["payload"].replace('"R0"', f'"R{i % 500}"'),
            }
            for i in range(1, count)
        ]
        conn.execute(orders.insert(), rows)


def bench_recovery(work: Path, pending: int, big_pending: int, repeats: int) -> None:
    results = {"restart": [], "memory-empty": [], "memory-full": []}
    for run in range(repeats):
        for label, count, in_doubt in (
            ("restart", pending, 100),
            ("memory-empty", 0, 0),
            ("memory-full", big_pending, 0),
        ):
            with FakeBroker() as broker:
                if label != "restart":
                    broker.refuse()  # memory only: nothing should be sent meanwhile
                folder = work / f"recovery-{label}-{run}"
                folder.mkdir()
                store = QueueStore(f"sqlite:///{folder}/order_queue.db", sealing=SEALING)
                store.schema.create()
                if count:
                    bulk_pending(store, count)
                if in_doubt:
                    with store.engine.begin() as conn:
                        # Through the lifecycle's own steps: the database refuses a jump.
                        for state in ("sending", "in_doubt"):
                            conn.exec_driver_sql(
                                f"UPDATE order_queue SET state='{state}', available_at=created_at "
                                f"WHERE id IN (SELECT id FROM order_queue ORDER BY id DESC "
                                f"LIMIT {in_doubt})"
                            )
                store.dispose()
                process = AppProcess(folder, broker.base_url, PEPPER, LOG_LEVEL="WARNING")
                started = time.monotonic()
                process.launch()
                try:
                    if label == "restart":
                        broker.wait_for(1, timeout=60)
                        results[label].append(time.monotonic() - started)
                    else:
                        deadline = time.monotonic() + 60
                        while time.monotonic() < deadline:
                            try:
                                if httpx.get(
                                    f"{process.base_url}/order-queue/api/health", timeout=2
                                ).status_code in (200, 503):
                                    break
                            except httpx.HTTPError:
                                time.sleep(0.1)
                        time.sleep(3)
                        results[label].append(rss_mb(process.process.pid))
                finally:
                    process.stop()
    report(
        f"restart with {pending:,} pending + 100 in doubt: first order at broker (s)",
        spread(results["restart"], "{:.2f}"),
        "-",
    )
    report(
        f"app RSS (MB) with {big_pending:,} pending vs empty",
        spread(results["memory-full"], "{:.0f}"),
        spread(results["memory-empty"], "{:.0f}"),
    )


# --------------------------------------------------------------------------- 7. Postgres


def bench_postgres(work: Path, count: int, repeats: int) -> None:
    """Dispatcher processes sharing one PostgreSQL queue, against a broker that takes
    50-200 ms per order (a retail broker's API), for 16 accounts within their own
    limits (10 per second each): what more processes add when the broker, not the
    queue, is the slow part."""
    url = os.getenv(
        "ORDER_QUEUE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    accounts = [f"{n:02d}" * 32 for n in range(16)]
    rates = {1: [], 4: []}
    for run in range(repeats):
        for workers in (1, 4):
            schema = f"bench_{os.getpid()}_{workers}"
            admin = QueueStore(url, sealing=SEALING)
            with admin.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            admin.dispose()
            schema_url = f"{url}?options=-csearch_path%3D{schema}"
            store = QueueStore(schema_url, sealing=SEALING)
            store.schema.create()
            for i in range(count):
                store.intake.enqueue(
                    "placeorder",
                    payload(f"P{i % 200}", i + 1, accounts[i % 16]),
                    now=utcnow(),
                    max_age_seconds=3600,
                )
            with FakeBroker(keep_alive=True) as broker:
                broker.default = Positions(delay=(0.05, 0.2))
                processes = []
                for n in range(workers):
                    folder = work / f"pg-{run}-{workers}-{n}"
                    folder.mkdir()
                    processes.append(
                        AppProcess(
                            folder,
                            broker.base_url,
                            PEPPER,
                            LOG_LEVEL="WARNING",
                            command=[
                                sys.executable,
                                "-m",
                                "flask",
                                "--app",
                                "app",
                                "order-queue",
                                "worker",
                            ],
                            ORDER_QUEUE_DATABASE_URL=schema_url,
                        )
                    )
                for process in processes:
                    process.launch()
                broker.wait_for(1, timeout=60)
                started = time.monotonic()
                broker.wait_for(count, timeout=600)
                rates[workers].append((count - 1) / (time.monotonic() - started))
                for process in processes:
                    process.stop()
            store.dispose()
    scaling = statistics.median(rates[4]) / statistics.median(rates[1])
    report(
        "PostgreSQL, 4 dispatcher processes vs 1, broker 50-200 ms, 16 accounts (orders/s)",
        spread(rates[4], "{:.0f}"),
        spread(rates[1], "{:.0f}"),
        f"scaling {scaling:.2f}x",
    )


# --------------------------------------------------------------------------- output


def machine() -> str:
    disk = shutil.disk_usage(ROOT)
    return (
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"disk {disk.total // 2**30} GiB ({ROOT})"
    )


def write_table(path: Path) -> None:
    lines = ["| figure | ours | baseline | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ROWS]
    path.write_text("\n".join(lines) + f"\n\nMachine: {machine()}\n")


def direct_placement_latencies(path: Path) -> None:
    """Add the calm alert-to-filed latencies of ``tools/openalgo_direct.py`` (its
    results.json): direct placement and the queue, inside the real OpenAlgo."""
    for server, results in json.loads(path.read_text()).items():
        name = "gunicorn + eventlet" if server == "gunicorn" else "dev server"
        for result in results:
            if result["scenario"] == "calm":
                road = "direct placement" if result["road"] == "direct" else "queue"
                LATENCIES[f"inside OpenAlgo, {road} ({name})"] = result["latencies_ms"]


def write_plot(path: Path) -> None:
    """Webhook-to-broker p50 and p99 per server and queue, ours beside the upstream model
    (and, given ``--direct``, alert to filed inside OpenAlgo, direct beside the queue)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install -r bench/requirements.txt)")
        return
    names = list(LATENCIES)
    figure, axis = plt.subplots(figsize=(9, 0.55 * len(names) + 1.2))
    rows = range(len(names))
    p50 = [pct(LATENCIES[name], 50) for name in names]
    p99 = [pct(LATENCIES[name], 99) for name in names]
    axis.barh([r + 0.2 for r in rows], p99, height=0.4, color="#b8c4d6", label="p99")
    axis.barh([r - 0.2 for r in rows], p50, height=0.4, color="#3a6ea5", label="p50")
    for r, (a, b) in enumerate(zip(p50, p99, strict=True)):
        axis.text(a, r - 0.2, f" {a:.0f}", va="center", fontsize=8)
        axis.text(b, r + 0.2, f" {b:.0f}", va="center", fontsize=8)
    axis.set_yticks(list(rows), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("alert → broker (ms), calm traffic")
    axis.set_title("Durable queue vs upstream's in-memory queue, per server")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--only",
        help="comma-separated figures to run (enqueue, latency, "
        "burst, lanes, flatten, growth, recovery, postgres); default all",
    )
    parser.add_argument(
        "--server",
        default="dev",
        help="servers for the end-to-end figures (latency, burst, lanes, "
        "flatten), comma-separated: dev (Werkzeug), gunicorn (gunicorn "
        "+ eventlet, one worker, as OpenAlgo's image); default dev",
    )
    parser.add_argument(
        "--direct",
        type=Path,
        default=None,
        help="results.json of tools/openalgo_direct.py: its calm latencies join the plot",
    )
    parser.add_argument(
        "--queue",
        default="sqlite",
        help="where our queue lives for those figures: sqlite, postgres, "
        "or both comma-separated; default sqlite",
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    servings = [
        (server, queue) for server in args.server.split(",") for queue in args.queue.split(",")
    ]
    for server, queue in servings:
        if server not in ("dev", "gunicorn") or queue not in ("sqlite", "postgres"):
            parser.error(f"unknown server or queue: {server}, {queue}")

    def wanted(figure: str) -> bool:
        return only is None or figure in only

    q = args.quick
    os.environ["API_KEY_PEPPER"] = PEPPER
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        work = Path(tmp)
        print(f"machine: {machine()}", flush=True)
        repeats = 1 if q else args.repeats
        if wanted("enqueue"):
            bench_enqueue(work, 200 if q else 5000, repeats)
        for number, (server, queue) in enumerate(servings):
            # The burst's drain (about four minutes) is measured on the first only.
            SERVING.update(
                server=server, queue=queue, label_rows=len(servings) > 1, drain=number == 0
            )
            pass_work = work / f"{server}-{queue}"
            pass_work.mkdir()
            if wanted("latency"):
                bench_latency(pass_work, 10 if q else 300, repeats)
            if wanted("burst"):
                bench_burst(pass_work, 40 if q else 2000, repeats)
            if wanted("lanes") and not q:
                bench_lanes(pass_work, repeats)
            if wanted("flatten"):
                bench_flatten(
                    pass_work, 5 if q else 30, repeats, "flatten 30 symbols of one account"
                )
                if not q:
                    bench_flatten(pass_work, 50, repeats, "squareoff of 50 open positions")
        SERVING.update(server="dev", queue="sqlite", label_rows=False)
        if wanted("growth"):
            bench_growth(work, 20_000 if q else 1_000_000, repeats)
            bench_size(work, 500 if q else 5_000)
            bench_purging(work, 20_000 if q else 200_000, repeats)
        if wanted("recovery"):
            bench_recovery(work, 200 if q else 10_000, 1_000 if q else 100_000, repeats)
        if wanted("postgres") and not args.skip_postgres:
            bench_postgres(work, 200 if q else 2000, repeats)
    name = "table-quick.md" if q else ("table.md" if only is None else "table-partial.md")
    write_table(args.out / name)
    if not q and wanted("latency"):
        if args.direct:
            direct_placement_latencies(args.direct)
        (args.out / "latencies.json").write_text(json.dumps(LATENCIES))
        write_plot(args.out / "latency.png")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
