"""The start-up hook in OpenAlgo's virtual environment (``install/startup_hook.py`` says
what it does at start); this module puts it in place and takes it away.

Why a hook in the environment rather than the alternatives (docs/installing.md, "After an
OpenAlgo update" has the longer version):

- git hooks (post-merge, post-checkout) do not run for ``git stash`` or ``git reset
  --hard``, nor for a ``git pull`` that is already up to date: two of OpenAlgo's three
  update paths would still switch the queue off;
- an ``--update`` verb helps only those who remember to use it instead of OpenAlgo's
  own scripts;
- the environment survives every one of those paths (it is untracked and the update
  scripts reuse it), and its start-up runs on every path that starts OpenAlgo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HOOK_MODULE = "order_queue_plugin_hook.py"
HOOK_PTH = "order_queue_plugin.pth"
#: The installer's own files, kept in the checkout so the hook can re-apply the edits.
INSTALLER_FILES = (
    "__init__.py",
    "openalgo.py",
    "edits.py",
    "record.py",
    "manifest.py",
    "venv_hook.py",
    "image_hook.py",
    "startup_hook.py",
)
HERE = Path(__file__).resolve().parent


def find_venv(target: Path, explicit: Path | None) -> Path | None:
    """The virtual environment OpenAlgo runs from: ``explicit``, else ``.venv`` or
    ``venv`` in the checkout (uv's default, the Docker image's ``/app/.venv``) or
    ``venv`` beside it (``install/install.sh``'s server layout)."""
    candidates = (
        [explicit] if explicit else [target / ".venv", target / "venv", target.parent / "venv"]
    )
    for candidate in candidates:
        if candidate is not None and (candidate / "pyvenv.cfg").exists():
            return candidate.resolve()
    return None


def site_packages(venv: Path) -> list[Path]:
    """Every site-packages folder of ``venv`` (POSIX and Windows layouts)."""
    found = sorted(venv.glob("lib/python3*/site-packages")) + sorted(venv.glob("Lib/site-packages"))
    return [path for path in found if path.is_dir()]


def install_hook(target: Path, venv: Path) -> list[str]:
    """Write the hook into ``venv`` for the checkout ``target``; returns the files
    written (absolute paths, for uninstall)."""
    written = []
    module = (
        (HERE / "startup_hook.py")
        .read_text(encoding="utf-8")
        .replace('"@CHECKOUT@"', repr(str(target)))
    )
    for folder in site_packages(venv):
        (folder / HOOK_MODULE).write_text(module, encoding="utf-8")
        (folder / HOOK_PTH).write_text("import order_queue_plugin_hook\n", encoding="utf-8")
        written += [str(folder / HOOK_MODULE), str(folder / HOOK_PTH)]
    return written


def remove_hook(files: list[str]) -> None:
    for name in files:
        Path(name).unlink(missing_ok=True)


def hook_present(files: list[str]) -> bool:
    return bool(files) and all(Path(name).exists() for name in files)


def keep_installer(state: Path) -> None:
    """Copy the installer into the checkout's state folder, where the hook finds it."""
    folder = state / "installer" / "install"
    folder.mkdir(parents=True, exist_ok=True)
    for name in INSTALLER_FILES:
        shutil.copy2(HERE / name, folder / name)


def queue_database_url(target: Path) -> str:
    """``ORDER_QUEUE_DATABASE_URL`` as OpenAlgo will see it: its ``.env`` (where
    OpenAlgo's settings live), else the installer's environment, else the default (the
    name and default of ``database/order_queue/model.py``, repeated: the installer runs
    on the standard library alone, before anything of the plugin can be imported)."""
    env_file = target / ".env"
    if env_file.exists():
        for line in env_file.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "ORDER_QUEUE_DATABASE_URL" and value.strip():
                return value.strip().strip("'\"")
    return os.environ.get("ORDER_QUEUE_DATABASE_URL") or "sqlite:///db/order_queue.db"


def missing_postgres_driver(target: Path, venv: Path | None) -> str | None:
    """What to install, and where, when the queue is to live in PostgreSQL and OpenAlgo's
    environment lacks psycopg (not in OpenAlgo's requirements); None when nothing is
    missing or it cannot be told (no environment found)."""
    if not queue_database_url(target).startswith(("postgresql", "postgres:")) or venv is None:
        return None
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    found = subprocess.run([str(python), "-c", "import psycopg"], capture_output=True)
    if found.returncode == 0:
        return None
    return (
        f"ORDER_QUEUE_DATABASE_URL names PostgreSQL but psycopg is not installed in "
        f"{venv}: install it there with `{python} -m pip install 'psycopg[binary]"
        f"==3.2.13'` (uv: `uv pip install --python {python} 'psycopg[binary]==3.2.13'`;"
        f" Docker: add that line to the derived image), then restart OpenAlgo"
    )
