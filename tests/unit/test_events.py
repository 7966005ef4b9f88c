"""Publishing state changes: a dead order is also an alert; nothing breaks without a
Socket.IO server."""

from services.order_queue import events
from services.order_queue.alerts import Alerter


class Recording(Alerter):
    """A real alerter that keeps what it was asked to raise instead of delivering it."""

    def __init__(self):
        super().__init__()
        self.raised = []

    def raise_alert(self, kind, key, text, **details):
        self.raised.append((kind, key, text))
        return True


def test_a_dead_order_is_raised_as_an_alert_and_other_states_are_not():
    alerts = Recording()
    events.publish(alerts, 7, "sent", symbol="SBIN", orderid="B7")
    events.publish(
        alerts, 8, "dead", symbol="TCS", strategy="Trend", reason="rejected", error="RMS"
    )
    assert alerts.raised == [("dead", "8", "order #8 TCS (Trend) dead-lettered: rejected: RMS")]


def test_events_go_to_the_admin_namespace_only_when_a_server_runs(monkeypatch):
    emitted = []
    alerts = Recording()
    monkeypatch.setattr(
        events.socketio,
        "emit",
        lambda name, data, namespace: emitted.append((name, data["id"], namespace)),
    )
    monkeypatch.setattr(events.socketio, "server", None)
    events.publish(alerts, 9, "pending")
    assert emitted == []  # the CLI, a worker, a test: nobody to tell
    monkeypatch.setattr(events.socketio, "server", object())
    events.publish(alerts, 10, "dead", reason="expired")
    assert emitted == [
        (events.ORDER_EVENT, 10, events.NAMESPACE),
        (events.DEAD_EVENT, 10, events.NAMESPACE),
    ]


def test_a_broken_socket_never_stops_an_order(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError("socket gone")

    alerts = Recording()
    monkeypatch.setattr(events.socketio, "server", object())
    monkeypatch.setattr(events.socketio, "emit", broken)
    events.publish(alerts, 11, "sent")  # returns: the caller (a sender, a webhook) carries on
    assert "could not publish order-queue event for order 11" in caplog.text
    events.publish(alerts, 12, "dead", reason="rejected")  # the alert still goes out
    assert [key for _, key, _ in alerts.raised] == ["12"]
