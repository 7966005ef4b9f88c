"""Logging set-up, at the same import path and name as OpenAlgo's ``utils.logging``.

Every handler gets a filter that masks API keys, so a payload or URL that slips into a
log line never writes a key to disk in plain text.
"""

import logging
import os
import re
import sys

_SECRET_PATTERNS = [
    # "apikey": "abc..." in JSON / repr(dict) form
    re.compile(r"""(["']?apikey["']?\s*[:=]\s*["']?)([A-Za-z0-9_\-]{6,})""", re.IGNORECASE),
    # apikey=abc in query strings
    re.compile(r"(apikey=)([^&\s]+)", re.IGNORECASE),
]


def mask_secret(value: str) -> str:
    """Return ``value`` with only its last 4 characters visible (``****abcd``)."""
    if not value:
        return ""
    return "****" + value[-4:] if len(value) > 4 else "****"


class RedactSecretsFilter(logging.Filter):
    """Rewrites the formatted message so API keys appear masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern in _SECRET_PATTERNS:
            redacted = pattern.sub(lambda m: m.group(1) + mask_secret(m.group(2)), redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_configured = False


def setup_logging() -> None:
    """Configure the root logger once: one stderr handler, level from ``LOG_LEVEL``."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    handler.addFilter(RedactSecretsFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.getenv("LOG_LEVEL", "INFO").upper())
    # Werkzeug's access log is noise next to the queue's own transition log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _configured = True


def get_logger(name: str) -> logging.Logger:
    """Return a named logger; handlers and redaction live on the root logger."""
    return logging.getLogger(name)
