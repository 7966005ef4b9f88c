"""Write docs/configuration.md from the settings declaration, so the page cannot drift.

    python tools/settings_doc.py > docs/configuration.md

Every setting is declared once, in ``services/order_queue/settings.py`` (``_variable``),
with the comment above it; this reads the declaration (never the environment) and prints
one row per variable.  ``tests/unit/test_configuration_doc.py`` fails when the page is not
what this prints.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "services" / "order_queue" / "settings.py"

HEADER = """# Configuration

Generated from `services/order_queue/settings.py` by `python tools/settings_doc.py >
docs/configuration.md`; a test fails when this page and the declaration differ. Set each in
OpenAlgo's `.env` (or this app's), or the environment; a bad value stops the start with a
message naming the variable. `.env.example` has every one with a line of advice. The host's
own rate limits (`ORDER_RATE_LIMIT`, `SMART_ORDER_RATE_LIMIT`, `WEBHOOK_RATE_LIMIT`) are
read too: a lane whose `ORDER_QUEUE_*_RATE` is not set takes the host's limit.

| variable | default | meaning |
|---|---|---|
"""

HOST_ONLY = """
The host app here (not the plugin) also reads `FLASK_HOST_IP`, `APP_KEY`, `DATABASE_URL`,
`SESSION_COOKIE_SECURE`, `REQUEST_BODY_TIMEOUT_SECONDS` (a webhook body not received within
it gets 408), `PAPER_BROKER_LATENCY_MS` (the paper broker's delay before booking) and
`PAPER_BROKER_REJECT_SYMBOLS` (symbols it accepts and then rejects, as a broker's risk checks
do); see `.env.example`.
"""


def rows(source: str) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) per declared setting, in declaration order: the
    variable and default from the declaration itself, the meaning from the ``#:``
    comment above it (a setting declared right under another shares its comment)."""
    from dataclasses import MISSING, fields

    from services.order_queue.settings import OrderQueueSettings

    lines = source.splitlines()
    [settings] = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "OrderQueueSettings"
    ]
    comments, previous = {}, ""
    for node in settings.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        comment, line = [], node.lineno - 2
        while line >= 0 and lines[line].strip().startswith("#:"):
            comment.insert(0, lines[line].strip()[2:].strip())
            line -= 1
        previous = " ".join(comment) or previous
        comments[node.target.id] = previous
    found = []
    for field in fields(OrderQueueSettings):
        if "variable" not in field.metadata:
            continue
        default = "" if field.default is MISSING else repr(field.default)
        meaning = comments.get(field.name, "").replace("|", "\\|")
        found.append((field.metadata["variable"], default, meaning))
    return found


def page() -> str:
    table = "".join(
        f"| `{variable}` | `{default}` | {meaning} |\n"
        for variable, default, meaning in rows(SETTINGS.read_text(encoding="utf-8"))
    )
    return HEADER + table + HOST_ONLY


if __name__ == "__main__":
    sys.stdout.write(page())
