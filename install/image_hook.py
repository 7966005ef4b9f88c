"""The start-up hook for images built from the checkout: an untracked ``gunicorn.conf.py``.

OpenAlgo's Docker image is built from the checkout (``COPY . .``, filtered by its
``.dockerignore``) with a fresh virtual environment, so the hook in the checkout's own
environment (``venv_hook.py``) never reaches it, and an update (``git stash`` or ``git
reset --hard``, then ``git pull`` and a rebuild) leaves the image without the plugin's
edits.  Why ``gunicorn.conf.py``, of the roads there are:

- gunicorn reads ``./gunicorn.conf.py`` when it is started without ``-c``, as the
  image's ``start.sh`` starts it from ``/app``; it runs in gunicorn's master before a
  worker imports ``app.py``, which is the moment the edits must be back;
- an untracked file survives every update path (stash and reset leave untracked files
  alone; a pull does not touch them), and ``COPY . .`` carries it into every image built
  after, with the plugin's files and its kept installer, with nothing to remember;
- a hook in a tracked file (``start.sh``, the ``Dockerfile``) is undone by the next
  update, and a compose override does not reach the builds of those who run the image
  another way.

The file is ``startup_hook.py`` with the checkout taken from its own place (``/app`` in
the image): edits missing are put back; an edit that cannot be made any more is an
ERROR, an alert and a drain of what the queue holds, and OpenAlgo still starts.
``docker_report`` says whether the next image built from a checkout will carry it.
"""

from __future__ import annotations

import re
from pathlib import Path

from install.manifest import PLUGIN_FILES

CONFIG = "gunicorn.conf.py"
MARKER = "# order-queue-plugin: the start-up hook for images built from this checkout"
HERE = Path(__file__).resolve().parent


def config_text() -> str:
    """``startup_hook.py`` as the checkout's ``gunicorn.conf.py``."""
    hook = (HERE / "startup_hook.py").read_text(encoding="utf-8")
    hook = hook.replace(
        'CHECKOUT = "@CHECKOUT@"', "CHECKOUT = os.path.dirname(os.path.realpath(__file__))"
    ).replace("AS_GUNICORN_CONFIG = False", "AS_GUNICORN_CONFIG = True")
    return (
        f"{MARKER}\n"
        "# Written by the durable order queue's installer (install/image_hook.py); untracked,\n"
        "# so OpenAlgo's updates keep it and every image built from this checkout has it.\n"
        f"{hook}"
    )


def is_ours(target: Path) -> bool:
    path = target / CONFIG
    return path.exists() and path.read_text(encoding="utf-8", errors="replace").startswith(MARKER)


def write_config(target: Path) -> str | None:
    """Write the hook; None, or why not (a ``gunicorn.conf.py`` of someone else's)."""
    path = target / CONFIG
    if path.exists() and not is_ours(target):
        return (
            f"{path} exists and is not the plugin's: images built from this checkout "
            f"will not re-apply the plugin's edits after an update"
        )
    if not path.exists() or path.read_text(encoding="utf-8") != config_text():
        path.write_text(config_text(), encoding="utf-8")
    return None


def remove_config(target: Path) -> None:
    if is_ours(target):
        (target / CONFIG).unlink()


def dockerignore_patterns(target: Path) -> list[tuple[bool, re.Pattern]]:
    """The checkout's ``.dockerignore`` as (negated, pattern) pairs, in order."""
    path = target / ".dockerignore"
    if not path.exists():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        if line:
            patterns.append((negated, _glob_regex(line)))
    return patterns


def _glob_regex(glob: str) -> re.Pattern:
    """Docker's patterns: ``**`` any number of folders, ``*`` and ``?`` within one."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def left_out(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the build context leaves ``path`` out: the last pattern matching it, or a
    folder above it, decides (a ``!`` pattern takes it back in)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


#: What an image must carry for the hook to re-apply the edits at start.
def _carried_files(target: Path) -> list[str]:
    kept = target / ".order_queue_plugin"
    installer = [str(p.relative_to(target)) for p in sorted(kept.glob("installer/install/*.py"))]
    return [CONFIG, ".order_queue_plugin/installed.json", *installer, *PLUGIN_FILES]


_GUNICORN_WITH_CONFIG = re.compile(r"gunicorn\b[^\n]*?\s(-c|--config)(\s|=)")


def docker_report(target: Path) -> list[str]:
    """Why the next image built from ``target`` would not carry the plugin (empty:
    it will).  Only for a checkout with a ``Dockerfile``."""
    problems = []
    if not is_ours(target):
        why = "missing" if not (target / CONFIG).exists() else "not the plugin's"
        problems.append(f"{CONFIG} is {why}: run the installer again")
    elif (target / CONFIG).read_text(encoding="utf-8") != config_text():
        problems.append(f"{CONFIG} is outdated: run the installer again")
    patterns = dockerignore_patterns(target)
    dropped = [path for path in _carried_files(target) if left_out(path, patterns)]
    if dropped:
        problems.append(f".dockerignore leaves out {', '.join(dropped[:5])}")
    start = target / "start.sh"
    if start.exists() and _GUNICORN_WITH_CONFIG.search(start.read_text(errors="replace")):
        problems.append(f"start.sh starts gunicorn with a config file of its own, not {CONFIG}")
    return problems
