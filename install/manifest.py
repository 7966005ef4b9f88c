"""Which files make up the plugin, and what they may import (design §2, §8).

The installer copies exactly these files into OpenAlgo; a test checks each imports
only what OpenAlgo also provides.
"""

PLUGIN_FILES = [
    "database/order_queue_db.py",
    "database/order_queue_green.py",
    "database/order_queue_secrets.py",
    "services/order_queue_actions.py",
    "services/order_queue_alerts.py",
    "services/order_queue_charts.py",
    "services/order_queue_dispatcher.py",
    "services/order_queue_events.py",
    "services/order_queue_fence.py",
    "services/order_queue_lifecycle.py",
    "services/order_queue_outcome.py",
    "services/order_queue_reconciler.py",
    "services/order_queue_service.py",
    "services/order_queue_settings.py",
    "blueprints/order_queue.py",
    "templates/order_queue/layout.html",
    "templates/order_queue/index.html",
    "templates/order_queue/detail.html",
    "static/order_queue/admin.css",
    "static/order_queue/admin.js",
    "static/order_queue/favicon.svg",
    "static/order_queue/vendor/socket.io-4.8.4.min.js",
    "static/order_queue/vendor/socket.io-LICENSE.txt",
]

#: Third-party packages in OpenAlgo's requirements.txt that plugin code may import.
ALLOWED_PACKAGES = {
    "flask", "flask_socketio", "flask_wtf", "sqlalchemy", "apscheduler", "httpx",
    "cryptography", "dotenv", "pytz", "click", "werkzeug",
}

#: OpenAlgo modules the plugin may import; the host reproduces them under the same names
#: (names used: get_logger, check_session_validity, is_session_valid, socketio).
#: services.telegram_alert_service: OpenAlgo's own Telegram alerts, imported lazily and
#: only if present (order_queue_alerts), so a dead order reaches the trader's Telegram
#: the way OpenAlgo's order alerts do; the host has no such module and skips it.
ALLOWED_OPENALGO_MODULES = {"utils.logging", "utils.session", "extensions",
                            "services.telegram_alert_service"}
