"""The alerter remembers each alert key only for its repeat window (``alerts.py``)."""

import time

from services.order_queue.alerts import Alerter
from services.order_queue.settings import OrderQueueSettings


def test_keys_past_their_repeat_window_are_forgotten():
    alerter = Alerter(
        OrderQueueSettings(alert_webhook_url="http://127.0.0.1:9/alerts", alert_repeat_seconds=0.05)
    )
    for order_id in range(150):  # one alert per dead order
        assert alerter.raise_alert("dead", str(order_id), f"order {order_id} dead")
    assert not alerter.raise_alert("dead", "149", "again, within the window")
    time.sleep(0.1)
    assert alerter.raise_alert("dead", "150", "a later one")
    assert len(alerter._last_by_key) == 1
