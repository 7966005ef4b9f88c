"""Which files make up the plugin, and what they may import (docs/design.md, "Layout").

The single list of plugin files: the installer copies exactly these into OpenAlgo, a
test checks each imports only what OpenAlgo also provides, and another that every
file under the plugin's folders (``database/order_queue/``, ``services/order_queue/``,
``templates/order_queue/``, ``static/order_queue/``) is listed here.
"""

PLUGIN_FILES = [
    # The public faces, at the names OpenAlgo's code and the installer's edits use.
    "database/order_queue_db.py",
    "services/order_queue_service.py",
    "blueprints/order_queue.py",
    # Everything behind them, in folders of their own.
    "database/order_queue/__init__.py",
    "database/order_queue/alert_keys.py",
    "database/order_queue/api_keys.py",
    "database/order_queue/backend_postgres.py",
    "database/order_queue/backend_rules.py",
    "database/order_queue/backend_sqlite.py",
    "database/order_queue/backends.py",
    "database/order_queue/claims.py",
    "database/order_queue/core.py",
    "database/order_queue/disk_reserve.py",
    "database/order_queue/dispatcher_registry.py",
    "database/order_queue/green.py",
    "database/order_queue/holds.py",
    "database/order_queue/intake.py",
    "database/order_queue/lifecycle.py",
    "database/order_queue/model.py",
    "database/order_queue/operator_moves.py",
    "database/order_queue/reads.py",
    "database/order_queue/receipts.py",
    "database/order_queue/recovery.py",
    "database/order_queue/samples.py",
    "database/order_queue/squareoff_log.py",
    "database/order_queue/store.py",
    "database/order_queue/values.py",
    "database/order_queue/verdicts.py",
    "services/order_queue/__init__.py",
    "services/order_queue/actions.py",
    "services/order_queue/alert_keys.py",
    "services/order_queue/alerts.py",
    "services/order_queue/api_road.py",
    "services/order_queue/charts.py",
    "services/order_queue/cli.py",
    "services/order_queue/clock.py",
    "services/order_queue/deadlines.py",
    "services/order_queue/dispatcher.py",
    "services/order_queue/door.py",
    "services/order_queue/door_probe.py",
    "services/order_queue/drain.py",
    "services/order_queue/events.py",
    "services/order_queue/ist.py",
    "services/order_queue/orderbook.py",
    "services/order_queue/outcome.py",
    "services/order_queue/pacing.py",
    "services/order_queue/reconciling.py",
    "services/order_queue/recording.py",
    "services/order_queue/reports.py",
    "services/order_queue/runtime.py",
    "services/order_queue/seed_names.py",
    "services/order_queue/sending.py",
    "services/order_queue/settings.py",
    "services/order_queue/squareoffs.py",
    "services/order_queue/verdicts.py",
    "templates/order_queue/layout.html",
    "templates/order_queue/index.html",
    "templates/order_queue/detail.html",
    "static/order_queue/admin.css",
    "static/order_queue/admin.js",
    "static/order_queue/admin-detail.js",
    "static/order_queue/admin-index.js",
    "static/order_queue/favicon.svg",
    "static/order_queue/theme.js",
    "static/order_queue/vendor/socket.io-4.8.4.min.js",
    "static/order_queue/vendor/socket.io-LICENSE.txt",
]

#: Third-party packages in OpenAlgo's requirements.txt that plugin code may import.
ALLOWED_PACKAGES = {
    "flask",
    "flask_socketio",
    "flask_wtf",
    "sqlalchemy",
    "apscheduler",
    "httpx",
    "cryptography",
    "dotenv",
    "pytz",
    "click",
    "werkzeug",
}

#: OpenAlgo modules the plugin may import; the host reproduces them under the same names
#: (names used: get_logger, check_session_validity, is_session_valid, socketio).
#: services.telegram_alert_service: OpenAlgo's own Telegram alerts, imported lazily and
#: only if present (services/order_queue/alerts.py), so a dead order reaches the trader's Telegram
#: the way OpenAlgo's order alerts do; the host has no such module and skips it.
ALLOWED_OPENALGO_MODULES = {
    "utils.logging",
    "utils.session",
    "extensions",
    "services.telegram_alert_service",
}
