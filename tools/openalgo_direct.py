"""Placing orders directly vs through the durable queue, inside a real OpenAlgo.

    python tools/openalgo_direct.py /path/to/openalgo [--servers gunicorn,dev] [--calm 40]

OpenAlgo's maintainer, closing the issue about lost orders, advised placing orders
directly through ``/api/v1/placeorder``.  This puts both roads side by side in one run, in
a fresh copy of the checkout per server (analyzer mode, booted and seeded as
``tools/openalgo_matrix.py`` does, the plugin installed):

1. **Burst.**  A scanner fires 50 alerts within one second, each once (TradingView and
   Chartink do not resend): straight to ``/api/v1/placeorder`` with the API key, or to the
   strategy webhook and the queue.  OpenAlgo's own limiter admits 10 per second per client
   address on ``placeorder`` and answers 429 to the rest.
2. **Burst with a restart.**  The same, with the whole server SIGKILLed after the 25th
   alert and started again at once (as a container restart does); alerts sent while it is
   down find no listener.
3. **Calm.**  One alert at a time (``--calm`` of them, each after the last one is filed):
   alert to filed on both roads, the difference being what the queue adds.  Measured in
   semi_auto mode (a second checkout), where OpenAlgo files an order in its Action Center
   in milliseconds: the sandbox takes about a second to fill one, whose spread would hide
   a difference of a few milliseconds.  The filed count is polled every millisecond.

Figures per road: placed, refused (429 or no listener), lost (alerts sent that never
reached the orderbook), doubled (placed more than sent), seconds from the first alert to
the last order placed.  Only the standard library; run it with any Python 3.11+.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openalgo_matrix as matrix  # noqa: E402

BURST = 50
KILL_AFTER = 25


@dataclass
class RoadResult:
    """What one road did in one scenario."""

    road: str
    scenario: str
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    placed: int = 0
    refused: int = 0
    lost: int = 0
    doubled: int = 0
    last_placed_s: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)  # until the alert was answered


class Road:
    """How an alert reaches OpenAlgo: ``direct`` (the order API) or ``queue`` (webhook)."""

    def __init__(self, name: str, port: int, webhook_id: str, api_key: str):
        self.name, self.port = name, port
        self.webhook_id, self.api_key = webhook_id, api_key

    def request(self, symbol: str) -> tuple[str, bytes]:
        if self.name == "direct":
            body = {
                "apikey": self.api_key,
                "strategy": "Direct",
                "symbol": symbol,
                "exchange": "NSE",
                "action": "BUY",
                "product": matrix.PRODUCT,
                "pricetype": "MARKET",
                "quantity": "1",
            }
            return "/api/v1/placeorder", json.dumps(body).encode()
        return (
            f"/strategy/webhook/{self.webhook_id}",
            json.dumps({"symbol": symbol, "action": "BUY"}).encode(),
        )

    def send(self, symbol: str) -> str:
        """Post one alert; the answer's status, or what went wrong."""
        path, body = self.request(symbol)
        conn = http.client.HTTPConnection(matrix.HOST, self.port, timeout=120)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            return str(conn.getresponse().status)
        except ConnectionRefusedError:
            return "no listener"
        except (OSError, http.client.HTTPException):
            return "cut off"
        finally:
            conn.close()


def placed_symbols(checkout: Path) -> Counter:
    """Orders in OpenAlgo's sandbox orderbook, per symbol."""
    return Counter(
        {symbol: n for (symbol, _), n in matrix.read_filed(checkout, "analyzer").items()}
    )


def run_burst(
    road: Road,
    server: matrix.Server,
    checkout: Path,
    symbols: list[str],
    restart: bool,
    boot_timeout: float,
) -> RoadResult:
    """50 alerts in one second (one thread each, started 20 ms apart)."""
    result = RoadResult(road.name, "burst with a restart" if restart else "burst")
    before = placed_symbols(checkout)
    answers: dict[int, str] = {}
    started = time.time()

    def alert(index: int) -> None:
        answers[index] = road.send(symbols[index % len(symbols)])

    threads = []
    for index in range(BURST):
        if restart and index == KILL_AFTER:
            server.kill("sigkill")
            server.wait_exit(5)
            server.start()
        thread = threading.Thread(target=alert, args=(index,))
        thread.start()
        threads.append(thread)
        time.sleep(1.0 / BURST)
    for thread in threads:
        thread.join()
    if restart and not matrix.wait_answering(server.port, "/order-queue/api/health", boot_timeout):
        raise RuntimeError(f"server did not come back (see {server.log_path})")
    result.sent = BURST
    result.answers = dict(Counter(answers.values()))
    result.refused = sum(
        n for answer, n in result.answers.items() if answer in ("429", "no listener")
    )
    owed = Counter(symbols[i % len(symbols)] for i in range(BURST))
    last_count, last_change = -1, time.time()
    while time.time() - last_change < 15:  # settled: nothing new for 15 s
        now_placed = placed_symbols(checkout) - before
        count = sum(now_placed.values())
        if count != last_count:
            last_count, last_change = count, time.time()
        time.sleep(0.2)
    result.placed = last_count
    result.last_placed_s = (last_change - started) if last_count else None
    result.lost = sum(max(0, owed[s] - now_placed[s]) for s in owed)
    result.doubled = sum(max(0, now_placed[s] - owed[s]) for s in now_placed)
    return result


def run_calm(road: Road, checkout: Path, symbols: list[str], count: int) -> RoadResult:
    """One alert at a time, each once the last is filed (semi_auto: OpenAlgo's Action
    Center, whose filing takes milliseconds, so what the queue adds is not hidden under
    the sandbox's second of filling)."""
    result = RoadResult(road.name, "calm")
    for index in range(count):
        seen = matrix.filed_count(checkout, "semi_auto")
        started = time.perf_counter()
        answer = road.send(symbols[index % len(symbols)])
        result.answer_ms.append((time.perf_counter() - started) * 1000)
        result.answers[answer] = result.answers.get(answer, 0) + 1
        deadline = time.perf_counter() + 30
        while matrix.filed_count(checkout, "semi_auto") == seen and time.perf_counter() < deadline:
            time.sleep(0.001)
        if matrix.filed_count(checkout, "semi_auto") > seen:
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(1.1)  # OpenAlgo's limiter window, so no alert meets the last one's
    result.sent, result.placed = count, len(result.latencies_ms)
    return result


def booted(
    src: Path, kind: str, mode: str, args, out_dir: Path, plugin_root: Path, work: Path
) -> tuple[matrix.Server, Road, Road]:
    """A fresh checkout in ``mode`` with the plugin, its server up and dispatching."""
    label = f"{kind}-{mode}-direct"
    checkout = work / mode
    port, webhook_id, api_key = matrix.prepare_checkout(
        src, checkout, mode, True, args, plugin_root, label
    )
    server = matrix.Server(kind, checkout, port, args.oa_python, out_dir / f"{label}.log")
    server.start()
    if not matrix.wait_answering(port, "/order-queue/api/health", args.boot_timeout):
        server.force_kill()
        raise RuntimeError(f"server did not answer (see {server.log_path})")
    matrix.wait_dispatcher(port, 30)
    return (
        server,
        Road("direct", port, webhook_id, api_key),
        Road("queue", port, webhook_id, api_key),
    )


def run_server(src: Path, kind: str, args, out_dir: Path, plugin_root: Path) -> list[RoadResult]:
    work = Path(tempfile.mkdtemp(prefix=f"oa-direct-{kind}-"))
    results: list[RoadResult] = []
    try:
        server, *roads = booted(src, kind, "semi_auto", args, out_dir, plugin_root, work)
        try:
            for road in roads:
                results.append(run_calm(road, server.checkout, matrix.SYMBOLS, args.calm))
                matrix.log(
                    f"[{kind}] {road.name} calm: p50 "
                    f"{statistics.median(results[-1].latencies_ms):.1f} ms"
                )
        finally:
            server.force_kill()
        server, *roads = booted(src, kind, "analyzer", args, out_dir, plugin_root, work)
        try:
            for road in roads:
                for restart in (False, True):
                    time.sleep(2)  # a fresh limiter window
                    results.append(
                        run_burst(
                            road,
                            server,
                            server.checkout,
                            matrix.SYMBOLS,
                            restart,
                            args.boot_timeout,
                        )
                    )
                    matrix.log(
                        f"[{kind}] {road.name} {results[-1].scenario}: "
                        f"{json.dumps(asdict(results[-1]) | {'latencies_ms': None})}"
                    )
        finally:
            server.force_kill()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def table(rows: dict[str, list[RoadResult]]) -> str:
    lines = [
        "| server | scenario | road | sent | placed | refused | lost | doubled | "
        "last placed (s) | answers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, results in rows.items():
        for r in results:
            if r.scenario == "calm":
                continue
            last = f"{r.last_placed_s:.1f}" if r.last_placed_s is not None else "-"
            lines.append(
                f"| {kind} | {r.scenario} | {r.road} | {r.sent} | {r.placed} | "
                f"{r.refused} | {r.lost} | {r.doubled} | {last} | {r.answers} |"
            )
    lines += [
        "",
        "| server | alert → filed, calm (semi_auto) | direct p50 / p99 (ms) | "
        "queue p50 / p99 (ms) | added at p50 (ms) | webhook answered, p50 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, results in rows.items():
        calm = {r.road: r for r in results if r.scenario == "calm"}
        direct, queue = calm["direct"].latencies_ms, calm["queue"].latencies_ms
        lines.append(
            f"| {kind} | {len(direct)} alerts each | {pct(direct, 50):.1f} / "
            f"{pct(direct, 99):.1f} | {pct(queue, 50):.1f} / {pct(queue, 99):.1f} | "
            f"{pct(queue, 50) - pct(direct, 50):+.1f} | "
            f"{pct(calm['queue'].answer_ms, 50):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("openalgo", type=Path, help="a pristine OpenAlgo checkout")
    parser.add_argument("--servers", default="gunicorn,dev")
    parser.add_argument("--calm", type=int, default=40, help="alerts in the calm run")
    parser.add_argument("--boot-timeout", type=float, default=90)
    parser.add_argument("--oa-python", default=matrix.DEFAULT_OA_PYTHON)
    parser.add_argument("--installer-python", default=matrix.DEFAULT_INSTALLER_PYTHON)
    parser.add_argument(
        "--plugin-ref", default="HEAD", help="install the plugin from this git ref (default HEAD)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--queue-road",
        choices=("default", "http"),
        default="default",
        help="http: the queue posts to OpenAlgo's loopback port instead of in-process",
    )
    args = parser.parse_args(argv)
    args.queue_url = ""
    src = args.openalgo.resolve()
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="openalgo-direct-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    plugin_root = matrix.plugin_source(args.plugin_ref, out_dir / "plugin-src")
    rows = {
        kind: run_server(src, kind, args, out_dir, plugin_root) for kind in args.servers.split(",")
    }
    text = table(rows)
    (out_dir / "results.json").write_text(
        json.dumps({kind: [asdict(r) for r in results] for kind, results in rows.items()}, indent=1)
    )
    (out_dir / "table.md").write_text(text + "\n")
    print(text)
    matrix.log(f"results in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
