"""What the installer changes in an OpenAlgo checkout: each edit, found by its anchor line,
and the text it adds (standard library only, like the installer).

``CORE_EDITS`` wire the queue into the app (its DB init, blueprint, start-up and
teardown); each ``QueuePath`` makes one of OpenAlgo's order queues durable where its
module has ``queue_order(endpoint, payload)``.  ``planned_contents`` applies them all in
memory, so the installer writes nothing unless every anchor is found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARK = "# order-queue-plugin"

ENV_BLOCK = f"""
{MARK}: durable order queue settings (see the plugin's README and .env.example)
# The queue's own database: SQLite file by default, or a PostgreSQL URL.
ORDER_QUEUE_DATABASE_URL='sqlite:///db/order_queue.db'
# Delivery attempts (first included) on 408/425/429, or a 5xx found not placed, before an
# order is dead-lettered.
ORDER_QUEUE_MAX_RETRIES='3'
# Pending orders older than this many seconds are dead-lettered as expired, not sent.
ORDER_QUEUE_MAX_AGE_SECONDS='300'
# Orders per second per broker account: by default OpenAlgo's own ORDER_RATE_LIMIT and
# SMART_ORDER_RATE_LIMIT above; set these only to send slower than those.
# ORDER_QUEUE_REGULAR_RATE='10'
# ORDER_QUEUE_SMART_RATE='10'
# Smart orders for the same instrument go out at least this many seconds apart.
ORDER_QUEUE_SMART_SETTLE_SECONDS='1'
# Requests in flight at once, and HTTP timeouts in seconds (connect / answer).
ORDER_QUEUE_WORKERS='4'
ORDER_QUEUE_CONNECT_TIMEOUT='3'
ORDER_QUEUE_READ_TIMEOUT='10'
# OpenAlgo's broker client waits up to this long; an in-doubt order is not resent before.
ORDER_QUEUE_UPSTREAM_TIMEOUT_SECONDS='120'
# Days after which sent, dismissed and cancelled orders are purged.
ORDER_QUEUE_RETENTION_DAYS='30'
"""

REBIND_BLOCK = f"""

{MARK}: orders go through the durable queue; the in-memory queue above stays unused.
from services.order_queue_service import queue_order  # noqa: E402,F401,F811
"""

# Appended to blueprints/strategy.py only: it reads that module's own ``Strategy`` model.
# OpenAlgo has one user, so a name identifies the strategy; should two share a name, the
# earlier squareoff wins (an entry sent after squareoff is worse than one not sent).
DEADLINE_BLOCK = f"""

{MARK}: an entry still queued at its strategy's squareoff is expired, not sent.
from services.order_queue_service import set_deadline_provider, squareoff_utc  # noqa: E402


def _order_queue_squareoff_deadline(payload, now_utc):
    squareoffs = [s.squareoff_time for s in Strategy.query.filter_by(
        name=payload.get("strategy"), is_intraday=True) if s.squareoff_time]
    return min((squareoff_utc(t, now_utc) for t in squareoffs), default=None)


set_deadline_provider(_order_queue_squareoff_deadline)
"""

# The same for blueprints/chartink.py, from its own ChartinkStrategy model.
CHARTINK_DEADLINE_BLOCK = f"""

{MARK}: a Chartink entry still queued at its strategy's squareoff is expired, not sent.
from services.order_queue_service import set_deadline_provider, squareoff_utc  # noqa: E402


def _order_queue_chartink_squareoff_deadline(payload, now_utc):
    squareoffs = [s.squareoff_time for s in ChartinkStrategy.query.filter_by(
        name=payload.get("strategy"), is_intraday=True) if s.squareoff_time]
    return min((squareoff_utc(t, now_utc) for t in squareoffs), default=None)


set_deadline_provider(_order_queue_chartink_squareoff_deadline, "chartink")
"""


def squareoff_block(source: str) -> str:
    """Appended to a blueprint with a squareoff scheduler: its squareoffs are registered
    again at start, one missed while the app was down runs once, none runs twice a day
    (services/order_queue/squareoffs.py).  The blueprint's own functions are handed over;
    its ``schedule_squareoff`` then schedules the returned ``squareoff_positions``."""
    return f"""

{MARK}: {source} squareoffs survive a restart and run at most once a day.
from services.order_queue_service import register_squareoffs  # noqa: E402

squareoff_positions = register_squareoffs(  # noqa: F811
    "{source}", all_strategies=get_all_strategies, get_strategy=get_strategy,
    mappings=get_symbol_mappings, schedule=schedule_squareoff, fire=squareoff_positions,
    release=db_session.remove)
"""


#: What a blueprint must have for ``squareoff_block``: the scheduler's two functions and
#: the names the block hands over (a missing one would fail the blueprint's import).
SQUAREOFF_NEEDS = (
    r"^def schedule_squareoff\(strategy_id\):",
    r"^def squareoff_positions\(strategy_id\):",
    r"^[ \t]+get_all_strategies,$",
    r"^[ \t]+get_strategy,$",
    r"^[ \t]+get_symbol_mappings,$",
    r"^[ \t]+db_session,$",
)
QUEUE_ORDER = r"^def queue_order\(endpoint, payload\):"


class InstallError(Exception):
    """The checkout does not look as expected; nothing was written."""


@dataclass(frozen=True)
class Edit:
    """Insert ``text`` after (or before) the first line matching ``anchor``, with the
    anchor line's indentation.  ``anchor`` None means: append at the end of the file."""

    path: str
    anchor: str | None
    text: str
    before: bool = False
    requires: tuple[str, ...] = ()  # lines that must exist (for append edits)

    def present(self, content: str) -> bool:
        """Whether ``content`` carries this edit (its first line is enough to tell)."""
        return self.text.strip().splitlines()[0].strip() in content

    def apply(self, content: str) -> str:
        if self.present(content):
            return content  # already there: idempotent
        if self.anchor is None:
            for needed in self.requires:
                if not re.search(needed, content, re.M):
                    raise InstallError(f"{self.path}: anchor not found: {needed!r}")
            return content.rstrip("\n") + "\n" + self.text
        match = re.search(self.anchor, content, re.M)
        if match is None:
            raise InstallError(f"{self.path}: anchor not found: {self.anchor!r}")
        line_start = content.rfind("\n", 0, match.start()) + 1
        line_end = content.find("\n", match.end())
        line_end = len(content) if line_end == -1 else line_end + 1
        indent_match = re.match(r"[ \t]*", content[line_start:])
        assert indent_match is not None  # [ \t]* matches any text, if only emptily
        indent = indent_match.group(0)
        block = "".join(f"{indent}{line}\n" for line in self.text.splitlines())
        at = line_start if self.before else line_end
        return content[:at] + block + content[at:]

    def revert(self, content: str) -> str:
        """``content`` without this edit's text; InstallError if it is not there intact."""
        if self.anchor is None:
            if content.count(self.text) != 1:
                raise InstallError(f"{self.path}: the plugin's block was changed or is missing")
            return content.replace(self.text, "", 1).rstrip("\n") + "\n"
        line = re.compile(rf"^[ \t]*{re.escape(self.text.strip())}\n", re.M)
        if len(line.findall(content)) != 1:
            raise InstallError(
                f"{self.path}: the plugin's line was changed or is missing: {self.text.strip()!r}"
            )
        return line.sub("", content, count=1)


#: Edits every install needs: the start-up list, the plugin's wiring, sessions, settings.
CORE_EDITS = [
    Edit(
        "app.py",
        r"^from database\.strategy_db import init_db as ensure_strategy_tables_exists",
        f"from database.order_queue_db import init_db as ensure_order_queue_tables_exists  {MARK}",
    ),
    Edit(
        "app.py",
        r"^from blueprints\.strategy import strategy_bp\b",
        f"from blueprints import order_queue as order_queue_plugin  {MARK}",
    ),
    Edit(
        "app.py",
        r'^[ \t]*\("Strategy DB", ensure_strategy_tables_exists\),',
        f'("Order Queue DB", ensure_order_queue_tables_exists),  {MARK}',
    ),
    Edit(
        "app.py",
        r"^[ \t]*app\.register_blueprint\(strategy_bp\)",
        f"order_queue_plugin.init_app(app)  {MARK}: admin page, API, CLI, settings",
    ),
    Edit(
        "app.py",
        r"^[ \t]*db_init_time = \(time\.time\(\) - db_init_start\) \* 1000",
        f"order_queue_plugin.start(app)  {MARK}: dispatcher starts once the DBs are ready",
        before=True,
    ),
    Edit(
        "app.py",
        r"^setup_environment\(app\)",
        f"order_queue_plugin.handle_signals()  {MARK}: graceful stop on SIGTERM / SIGINT",
    ),
    Edit(
        "utils/db_sessions.py",
        r'^[ \t]*\("database\.strategy_db", "db_session"\),',
        f'("database.order_queue_db", "db_session"),  {MARK}',
    ),
    Edit(".sample.env", None, ENV_BLOCK, requires=(r"^API_KEY_PEPPER\s*=",)),
]


@dataclass(frozen=True)
class QueuePath:
    """A blueprint that carries its own in-memory queue and ``queue_order``: made durable
    when that function is there.  OpenAlgo retired the legacy Strategy processor after
    August 2026 (its strategy.py lost ``queue_order``) while Chartink kept its queue, so
    each is patched on its own, and an install refuses only when neither is there."""

    name: str
    path: str
    edits: tuple[Edit, ...]

    def applies_to(self, target: Path) -> bool:
        file = target / self.path
        return (
            file.exists()
            and re.search(QUEUE_ORDER, file.read_text(encoding="utf-8"), re.M) is not None
        )


QUEUE_PATHS = (
    QueuePath(
        "Strategy webhooks (/strategy/webhook) and squareoffs",
        "blueprints/strategy.py",
        (
            Edit("blueprints/strategy.py", None, REBIND_BLOCK, requires=(QUEUE_ORDER,)),
            Edit(
                "blueprints/strategy.py",
                None,
                DEADLINE_BLOCK,
                requires=(r"^(from database\.strategy_db import .*\bStrategy\b|[ \t]+Strategy,$)",),
            ),
            Edit(
                "blueprints/strategy.py",
                None,
                squareoff_block("strategy"),
                requires=SQUAREOFF_NEEDS,
            ),
        ),
    ),
    QueuePath(
        "Chartink webhooks (/chartink/webhook) and squareoffs",
        "blueprints/chartink.py",
        (
            Edit("blueprints/chartink.py", None, REBIND_BLOCK, requires=(QUEUE_ORDER,)),
            Edit(
                "blueprints/chartink.py",
                None,
                CHARTINK_DEADLINE_BLOCK,
                requires=(
                    r"^(from database\.chartink_db import .*\bChartinkStrategy\b"
                    r"|[ \t]+ChartinkStrategy,$)",
                ),
            ),
            Edit(
                "blueprints/chartink.py",
                None,
                squareoff_block("chartink"),
                requires=SQUAREOFF_NEEDS,
            ),
        ),
    ),
)

#: Every edit the plugin may make (uninstall looks for each).
EDITS = CORE_EDITS + [edit for queue_path in QUEUE_PATHS for edit in queue_path.edits]


def durable_paths(target: Path) -> tuple[list[QueuePath], list[QueuePath]]:
    """(patched, left alone): which of the checkout's queue paths the install covers."""
    patched = [queue_path for queue_path in QUEUE_PATHS if queue_path.applies_to(target)]
    return patched, [queue_path for queue_path in QUEUE_PATHS if queue_path not in patched]


def coverage_report(target: Path) -> list[str]:
    """One line per queue path: durable, or why not."""
    patched, skipped = durable_paths(target)
    return [f"durable: {p.name}" for p in patched] + [
        f"NOT durable: {p.name}: {p.path} has no queue_order(endpoint, payload) "
        f"(this OpenAlgo does not queue orders there)"
        for p in skipped
    ]


def planned_contents(target: Path) -> dict[str, tuple[str, str]]:
    """{path: (original, patched)} for every edited file; raises InstallError."""
    if not target.is_dir():
        raise InstallError(
            f"{target} does not exist or is not a folder: give the path of an OpenAlgo checkout"
        )
    patched, _skipped = durable_paths(target)
    if not patched:
        raise InstallError(
            "no queue to make durable: neither blueprints/strategy.py nor "
            "blueprints/chartink.py has queue_order(endpoint, payload)"
        )
    plans: dict[str, list[str]] = {}
    for edit in CORE_EDITS + [edit for queue_path in patched for edit in queue_path.edits]:
        if edit.path not in plans:
            file = target / edit.path
            if not file.exists():
                raise InstallError(f"{edit.path}: file not found in {target}")
            original = file.read_text(encoding="utf-8")
            plans[edit.path] = [original, original]
        plans[edit.path][1] = edit.apply(plans[edit.path][1])
    return {path: (original, patched) for path, (original, patched) in plans.items()}
