"""The admin page's pictures, drawn on the server as small SVG line charts.

Why SVG from the server and no charting library: the pictures are a few lines over
time, which take less code to draw than a library takes to configure; nothing has to be
vendored, audited and kept up to date; OpenAlgo's CSP (no CDN, no inline script) is met
as is; the page inserts the markup and colours it from its own stylesheet, so the dark
and light themes apply.  Every text in the markup is escaped.

Pure functions: facts in (from ``QueueStore.samples.chart_facts``), markup out.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 420, 210
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 44, 22
#: Series with at most this many points also get a dot per point (one point is no line).
DOTS_UP_TO = 60
DEPTH_HOURS = 6
RATE_MINUTES = 5
LATENCY_MINUTES = 60


@dataclass(frozen=True)
class Series:
    label: str
    css: str  # class of the line, coloured by the page's stylesheet
    points: list[tuple[float, float]]  # (seconds before now, value)


def depth_chart(samples: list[dict], now: datetime, current: dict[str, int]) -> str:
    """Pending, in doubt and dead over the last hours, ending with the depth now."""
    span = DEPTH_HOURS * 3600
    series = []
    for state, label in (("pending", "pending"), ("in_doubt", "in doubt"), ("dead", "dead")):
        points = [(_ago(now, row["at"]), row[state]) for row in samples]
        points.append((0.0, current.get(state, 0)))
        series.append(Series(label, f"s-{state}", points))
    return _line_chart(
        "Queue depth, last 6 hours",
        series,
        span,
        "orders",
        [(span, "-6h"), (span * 2 / 3, "-4h"), (span / 3, "-2h"), (0, "now")],
    )


def rate_chart(
    sends: list[tuple[datetime, str]],
    now: datetime,
    limits: dict[str, int],
    windows: dict[str, float | None] | None = None,
) -> str:
    """Orders per second for the busiest account of each lane, beside the lane's limit:
    a line for a per-second limit; a per-minute one (``windows``: 60) is named only, as
    a per-second picture cannot show it."""
    windows = windows or {}
    span = RATE_MINUTES * 60
    per_second: dict[str, Counter] = defaultdict(Counter)
    for at, lane_key in sends:
        ago = _ago(now, at)
        if 0 <= ago < span:
            per_second[lane_key.split(":", 1)[0]][(int(ago), lane_key)] += 1
    series = []
    for lane in ("smart", "regular"):
        busiest: Counter = Counter()
        for (second, _lane_key), count in per_second[lane].items():
            busiest[second] = max(busiest[second], count)
        points = [(float(second), float(busiest.get(second, 0))) for second in range(span)]
        series.append(
            Series(f"{lane} (limit {_limit(limits[lane], windows.get(lane))})", f"s-{lane}", points)
        )
    ceiling = [
        (f"limit {limit}/s", float(limit))
        for limit in sorted({limits[lane] for lane in limits if not windows.get(lane)})
    ]
    return _line_chart(
        "Orders/s, busiest account per lane, last 5 min",
        series,
        span,
        "per s",
        [(span, "-5m"), (span * 3 / 5, "-3m"), (span / 5, "-1m"), (0, "now")],
        limits=ceiling,
    )


def _limit(count: int, window: float | None) -> str:
    return (
        f"{count}/min" if window == 60 else f"{count}/s" if not window else f"{count}/{window:g}s"
    )


def latency_chart(accepted: list[tuple[datetime, datetime]], now: datetime) -> str:
    """Webhook to broker (queued to accepted), p50 and p99 per minute, in milliseconds."""
    span = LATENCY_MINUTES * 60
    by_minute: dict[int, list[float]] = defaultdict(list)
    for sent_at, queued_at in accepted:
        ago = _ago(now, sent_at)
        if 0 <= ago < span:
            by_minute[int(ago // 60)].append((sent_at - queued_at).total_seconds() * 1000)
    p50, p99 = [], []
    for minute in sorted(by_minute):
        values = sorted(by_minute[minute])
        x = minute * 60 + 30.0
        p50.append((x, percentile(values, 50)))
        p99.append((x, percentile(values, 99)))
    return _line_chart(
        "Webhook to broker, last hour",
        [Series("p50", "s-p50", p50), Series("p99", "s-p99", p99)],
        span,
        "ms",
        [(span, "-60m"), (span * 2 / 3, "-40m"), (span / 3, "-20m"), (0, "now")],
    )


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _ago(now: datetime, at: datetime) -> float:
    return (now - at) / timedelta(seconds=1)


def _line_chart(
    title: str,
    series: list[Series],
    span: float,
    unit: str,
    ticks: list[tuple[float, str]],
    limits: Sequence[tuple[str, float]] = (),
) -> str:
    """One chart: time runs left to right up to now; y from 0 to the largest value."""
    values = [y for s in series for _, y in s.points] + [y for _, y in limits]
    top = _nice_ceiling(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(ago: float) -> float:
        return LEFT + plot_w * (1 - min(max(ago, 0.0), span) / span)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    # The unit goes with the title: beside the axis it sat on the top tick's label.
    title = f"{title} ({unit})"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title, {chr(34): "&quot;"})}">',
        f'<text class="chart-title" x="{LEFT}" y="14">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = y_of(top * fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(top * fraction)}</text>"
        )
    for ago, label in ticks:
        parts.append(
            f'<text class="axis" x="{x_of(ago):.1f}" y="{HEIGHT - 6}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    for label, value in limits:
        y = y_of(value)
        parts.append(
            f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}"><title>{escape(label)}</title></line>'
        )
    legend_x: float = LEFT
    for s in series:
        parts.append(f'<text class="legend {s.css}" x="{legend_x}" y="30">{escape(s.label)}</text>')
        legend_x += 6.5 * len(s.label) + 14
        points = sorted(s.points, key=lambda point: -point[0])
        if points:
            coordinates = " ".join(f"{x_of(ago):.1f},{y_of(y):.1f}" for ago, y in points)
            parts.append(
                f'<polyline class="series {s.css}" points="{coordinates}">'
                f"<title>{escape(s.label)}</title></polyline>"
            )
        if len(points) <= DOTS_UP_TO:
            parts.extend(
                f'<circle class="dot {s.css}" cx="{x_of(ago):.1f}" cy="{y_of(y):.1f}" r="2.5"/>'
                for ago, y in points
            )
    if not any(s.points for s in series):
        parts.append(
            f'<text class="axis" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
            f'text-anchor="middle">no data yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above ``value`` (at least 1)."""
    step = 1.0
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _number(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"
