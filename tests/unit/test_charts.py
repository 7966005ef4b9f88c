"""The admin page's pictures: pure functions from stored facts to escaped SVG."""

import re
from datetime import datetime, timedelta
from xml.etree import ElementTree

from services.order_queue import charts

NOW = datetime(2026, 11, 28, 6, 0, 0)
SVG = "{http://www.w3.org/2000/svg}"


def polylines(markup: str) -> dict[str, list[tuple[float, float]]]:
    """Each drawn line's points, by its class (parsing also proves the markup is XML)."""
    root = ElementTree.fromstring(markup)
    lines = {}
    for line in root.iter(f"{SVG}polyline"):
        css = line.get("class").split()[1]
        lines[css] = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    return lines


def test_depth_chart_draws_each_state_from_the_samples_and_ends_with_now():
    samples = [
        {"at": NOW - timedelta(hours=h), "pending": 10 * h, "sending": 0, "in_doubt": 1, "dead": 0}
        for h in (5, 3, 1)
    ]
    lines = polylines(charts.depth_chart(samples, NOW, {"pending": 7, "in_doubt": 0, "dead": 2}))
    assert set(lines) == {"s-pending", "s-in_doubt", "s-dead"}
    pending = lines["s-pending"]
    assert len(pending) == 4
    assert [x for x, _ in pending] == sorted(x for x, _ in pending)  # time runs left to right
    tops = [y for _, y in pending]
    assert tops[0] < tops[1] < tops[2]  # 50, 30, 10 orders: higher values sit higher up
    assert pending[-1][0] == charts.WIDTH - charts.RIGHT  # the last point is now


def test_rate_chart_counts_the_busiest_account_of_each_lane_per_second():
    sends = [
        (NOW - timedelta(seconds=10, milliseconds=ms), "regular:a") for ms in range(0, 800, 100)
    ]
    sends += [
        (NOW - timedelta(seconds=10, milliseconds=ms), "regular:b") for ms in range(0, 300, 100)
    ]
    sends += [(NOW - timedelta(seconds=20), "smart:a")]
    markup = charts.rate_chart(sends, NOW, {"smart": 10, "regular": 10})
    lines = polylines(markup)
    assert len(lines["s-regular"]) == charts.RATE_MINUTES * 60
    y_of = dict(lines["s-regular"])
    base = y_of[charts.WIDTH - charts.RIGHT]  # nothing sent in the last second: zero
    peak = min(y for _, y in lines["s-regular"])
    # 8 in one second for account a (b's 3 do not add to it), against a scale of 10
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    assert round((base - peak) / plot * 10) == 8
    assert "limit 10/s" in markup and 'class="limit"' in markup


def test_latency_chart_shows_p50_and_p99_per_minute():
    accepted = [
        (NOW - timedelta(minutes=2), NOW - timedelta(minutes=2, milliseconds=ms))
        for ms in [10] * 98 + [500, 900]
    ]
    lines = polylines(charts.latency_chart(accepted, NOW))
    assert len(lines["s-p50"]) == len(lines["s-p99"]) == 1
    assert lines["s-p99"][0][1] < lines["s-p50"][0][1]  # p99 higher on the chart
    assert charts.percentile(sorted([10.0] * 98 + [500.0, 900.0]), 99) == 500.0


def test_no_data_says_so_and_text_is_escaped():
    markup = charts.latency_chart([], NOW)
    assert "no data yet" in markup
    assert "<script" not in charts._line_chart("<script>", [], 60, "<b>", [(0, "&")])
    assert re.search(r"&lt;script&gt;", charts._line_chart("<script>", [], 60, "ms", []))
    assert charts._nice_ceiling(0) == 1 and charts._nice_ceiling(11) == 20
    assert charts._nice_ceiling(400) == 500


def test_the_unit_is_in_the_title_not_on_the_top_tick():
    svg = charts._line_chart(
        "Webhook to broker", [charts.Series("p50", "s-p50", [(0, 80.0)])], 60, "ms", []
    )
    texts = re.findall(r'<text class="([^"]+)" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)<', svg)
    assert ("chart-title", "Webhook to broker (ms)") in [(c, t) for c, _, _, t in texts]
    axis = [(float(x), float(y), t) for c, x, y, t in texts if c == "axis"]
    top_tick = min(axis, key=lambda label: label[1])
    assert top_tick[2] == "100"  # the highest label on the y axis is a number, alone
    assert all(t != "ms" for _, _, t in axis)


def test_a_per_minute_limit_is_named_per_minute_and_drawn_as_no_per_second_line():
    markup = charts.rate_chart([], NOW, {"smart": 10, "regular": 100}, {"regular": 60.0})
    assert "regular (limit 100/min)" in markup and "100/s" not in markup
    assert "smart (limit 10/s)" in markup and "limit 10/s" in markup
