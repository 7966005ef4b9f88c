"""Install the durable order queue into an OpenAlgo checkout (standard library only).

    python -m install.openalgo /path/to/openalgo              install (idempotent)
    python -m install.openalgo /path/to/openalgo --dry-run    show files and diffs, write nothing
    python -m install.openalgo /path/to/openalgo --check      exit 0 only if installed and current
    python -m install.openalgo /path/to/openalgo --uninstall  restore the original files exactly

What it changes, and nothing more: copies the plugin files (``install/manifest.py``);
adds the queue's DB init beside "Strategy DB" in app.py's start-up list; registers the
admin blueprint and starts the dispatcher once the DBs are ready, with a graceful stop
on SIGTERM / SIGINT installed from the main thread at import; adds the queue to
utils/db_sessions.py's teardown list; rebinds ``queue_order`` at the end of
blueprints/strategy.py and blueprints/chartink.py (their webhook and squareoff code is
untouched, and their in-memory worker thread, started only by their own queue_order,
never starts); gives the queue a squareoff deadline from blueprints/strategy.py's
Strategy model; appends the ORDER_QUEUE_* settings to .sample.env.

Every edit is found by an anchor line.  If any anchor is missing the installer names
the file and the anchor and writes nothing at all.  The original bytes of every edited
or replaced file are kept under ``.order_queue_plugin/`` for ``--uninstall``, which
keeps any change made to an edited file since the install (see ``uninstall``).  Installing
again takes fresh originals of files changed since the last install (an OpenAlgo update
pulled after the plugin's edits were discarded), so ``--uninstall`` never brings back
files older than the ones the install replaced.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from install import image_hook, venv_hook
from install.edits import (
    InstallError,
    coverage_report,
    planned_contents,
)
from install.manifest import PLUGIN_FILES
from install.record import (
    changed_since_install,
    digest,
    fresh_originals,
    keep_original,
    read_record,
    record_copy,
    state_folder,
    without_plugin_lines,
)

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def install(
    target: Path,
    *,
    dry_run: bool = False,
    out=sys.stdout,
    venv: Path | None = None,
    source_root: Path | None = None,
    hook: bool = True,
) -> int:
    """Install (or bring up to date) the plugin in ``target``.  ``venv``: OpenAlgo's
    virtual environment for the start-up hook (found if not given); ``source_root``:
    where the plugin files come from (this repository; the checkout itself when the
    hook re-applies edits)."""
    source_root = source_root or SOURCE_ROOT
    plans = planned_contents(target)  # all anchors checked before anything is written
    copies = [
        path
        for path in PLUGIN_FILES
        if not (target / path).exists()
        or (target / path).read_bytes() != (source_root / path).read_bytes()
    ]
    record = read_record(target)
    stale = _left_from_an_earlier_version(record)
    if dry_run:
        for path in stale:
            print(f"would remove (no longer part of the plugin): {path}", file=out)
        for path in copies:
            print(f"would {'replace' if (target / path).exists() else 'add'}: {path}", file=out)
        for path, (original, patched) in plans.items():
            out.writelines(
                difflib.unified_diff(
                    original.splitlines(True), patched.splitlines(True), f"a/{path}", f"b/{path}"
                )
            )
        if not copies and not stale and all(o == p for o, p in plans.values()):
            print("already installed and current: nothing to do", file=out)
        return 0
    state = state_folder(target)
    _remove_stale(target, record, stale, out)
    for path, content in fresh_originals(target, record, plans).items():
        keep_original(target, path, content)
    for path in copies:
        record_copy(target, record, path)
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_root / path, target / path)
    for path, (original, patched) in plans.items():
        if original != patched:
            (target / path).write_text(patched, encoding="utf-8")
    record["edited"] = sorted(set(record["edited"]) | {p for p, (o, n) in plans.items() if o != n})
    record["written"].update(
        {path: digest((target / path).read_bytes()) for path in record["edited"] + PLUGIN_FILES}
    )
    state.mkdir(exist_ok=True)
    if hook:
        _install_start_up_hook(target, venv, record, out)
    (state / "installed.json").write_text(json.dumps(record, indent=2))
    changed = len(stale) + len(copies) + sum(o != p for o, p in plans.values())
    print(
        f"installed into {target}: {changed} files changed"
        if changed
        else f"already installed in {target}: nothing changed",
        file=out,
    )
    for line in coverage_report(target):
        print(line, file=out)
    return 0


def _install_start_up_hook(target: Path, venv: Path | None, record: dict, out) -> None:
    """Keep a copy of this installer in the checkout and the hook in OpenAlgo's virtual
    environment, so an OpenAlgo update cannot switch the queue off (``venv_hook.py``)."""
    venv_hook.keep_installer(state_folder(target))
    refused = image_hook.write_config(target)
    if refused:
        print(f"WARNING: {refused}", file=out)
    else:
        print(
            f"{image_hook.CONFIG}: images built from this checkout re-apply the plugin at "
            f"start, after every update and rebuild",
            file=out,
        )
    found = venv_hook.find_venv(target, venv)
    if found is None:
        print(
            "WARNING: no virtual environment found (.venv or venv in the checkout, venv "
            "beside it; or give --venv): after an OpenAlgo update `python app.py` runs "
            "without the queue until this installer runs again (gunicorn started from "
            f"the checkout, as in the Docker image, re-applies it: {image_hook.CONFIG})",
            file=out,
        )
        return
    venv_hook.remove_hook([f for f in record.get("hook", []) if not f.startswith(str(found))])
    record["hook"] = venv_hook.install_hook(target, found)
    record["venv"] = str(found)
    print(f"start-up hook in {found}: the queue stays in force after an OpenAlgo update", file=out)
    missing = venv_hook.missing_postgres_driver(target, found)
    if missing:
        print(f"WARNING: {missing}", file=out)


def reapply(target: Path) -> list[str]:
    """Put back the edits an OpenAlgo update removed, from the plugin files already in
    the checkout; returns the files edited.  Raises ``InstallError`` (nothing written)
    when an anchor is gone.  Serialised with other processes starting at once."""
    with _lock(state_folder(target) / "reapply.lock"):
        plans = planned_contents(target)
        missing = [path for path, (original, patched) in plans.items() if original != patched]
        if missing:
            install(target, out=io.StringIO(), source_root=target, hook=False)
        return missing


@contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: one process starts OpenAlgo there
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _left_from_an_earlier_version(record: dict) -> list[str]:
    """Files an earlier install copied that are no longer part of the plugin (an
    upgrade that moved or split modules): left in place, they would be stale code."""
    return [path for path in record["added"] + record["replaced"] if path not in PLUGIN_FILES]


def _remove_stale(target: Path, record: dict, stale: list[str], out) -> None:
    """Undo an earlier install's copy of each ``stale`` file: an added one is removed, a
    replaced one gets the checkout's original back (unless changed since)."""
    for path in stale:
        file = target / path
        if path in record["added"]:
            file.unlink(missing_ok=True)
            _remove_empty_parents(target, file.parent)
            record["added"].remove(path)
        else:
            if file.exists() and changed_since_install(record, path, file.read_bytes()):
                print(f"{path} changed since install: left as it is", file=out)
            else:
                shutil.copy2(state_folder(target) / "original" / path, file)
            record["replaced"].remove(path)
        record["written"].pop(path, None)
        print(f"removed (no longer part of the plugin): {path}", file=out)


def plugin_version(root: Path) -> str:
    """The plugin's version as its files in ``root`` say (``services/order_queue``),
    read as text: the installer imports nothing of the plugin."""
    text = (root / "services/order_queue/__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    return found.group(1) if found else "unknown"


def check(target: Path, out=sys.stdout, *, verbose: bool = False) -> int:
    """Exit status 0 when the queue is in force in ``target``: installed, current, and
    every edit made, or missing only because an OpenAlgo update removed them and the
    start-up hook puts them back at the next start.  Says why not otherwise."""
    if not target.is_dir():
        print(f"{target} does not exist or is not a folder", file=out)
        return 1
    if not (state_folder(target) / "installed.json").exists():
        print(
            f"not installed in {target} (run: python -m install.openalgo {target}, from "
            f"the plugin's folder)",
            file=out,
        )
        if verbose:
            for path in PLUGIN_FILES:
                if not (target / path).exists():
                    print(f"missing: {path}", file=out)
        return 1
    record = read_record(target)
    problems = []
    for path in PLUGIN_FILES:
        if not (target / path).exists():
            problems.append(f"missing: {path}")
        elif (target / path).read_bytes() != (SOURCE_ROOT / path).read_bytes():
            problems.append(f"outdated: {path}")
    if any(problem.startswith("outdated") for problem in problems):
        problems.insert(
            0,
            f"installed version {plugin_version(target)}, this installer's "
            f"{plugin_version(SOURCE_ROOT)} (CHANGELOG.md says what changed): run it again",
        )
    missing_edits = []
    try:
        missing_edits = [
            path
            for path, (original, patched) in planned_contents(target).items()
            if original != patched
        ]
    except InstallError as exc:
        problems.append(f"NOT in force, and cannot be put back: {exc}")
    # Either start-up hook puts the edits back: the environment's, or gunicorn.conf.py
    # for gunicorn started from the checkout (the Docker image's start).
    hook_ok = venv_hook.hook_present(record.get("hook", [])) or image_hook.is_ours(target)
    venv = venv_hook.find_venv(target, Path(record["venv"]) if record.get("venv") else None)
    missing_driver = venv_hook.missing_postgres_driver(target, venv)
    if missing_driver:
        problems.append(missing_driver)
    if (target / "Dockerfile").exists():
        problems += [
            f"Docker: the next image will NOT carry the plugin: {p}"
            for p in image_hook.docker_report(target)
        ]
    if missing_edits and not (hook_ok and not problems):
        problems += [f"edit missing in {path}" for path in missing_edits]
    for problem in problems:
        print(problem, file=out)
    if problems:
        return 1
    if missing_edits:
        print(
            f"in force: the edits to {', '.join(missing_edits)} are missing (an OpenAlgo "
            f"update removed them) and the start-up hook puts them back when OpenAlgo "
            f"next starts; running the installer again puts them back now",
            file=out,
        )
    else:
        print(f"installed and current (version {plugin_version(SOURCE_ROOT)})", file=out)
    if (target / "Dockerfile").exists():
        print(
            f"Docker: images built from this checkout carry the plugin ({image_hook.CONFIG} "
            f"re-applies its edits at start)",
            file=out,
        )
    for line in coverage_report(target):
        print(line, file=out)
    if not hook_ok:
        print(
            "WARNING: no start-up hook: an OpenAlgo update switches the queue off until "
            "the installer runs again (install with --venv PATH)",
            file=out,
        )
    return 0


def uninstall(target: Path, out=sys.stdout) -> int:
    """Undo the install.  An edited file still as the installer wrote it gets its
    original bytes back; one changed since (an OpenAlgo update, a local fix) keeps those
    changes and loses only the plugin's lines it still has; if those lines were themselves
    changed, nothing at all is written.  A replaced file changed since is the checkout's
    again (its edits discarded, perhaps updated) and is left as it is."""
    state = state_folder(target)
    if not (state / "installed.json").exists():
        raise InstallError(f"nothing to uninstall: {state}/installed.json not found")
    record = read_record(target)
    restored = {}
    for path in record["edited"]:
        current = (target / path).read_bytes()
        if record["written"].get(path) == digest(current):
            restored[path] = (state / "original" / path).read_bytes()
        else:
            restored[path] = without_plugin_lines(path, current.decode("utf-8")).encode("utf-8")
            why = "changed since install" if path in record["written"] else "no install record"
            print(f"{path} {why}: removed only the plugin's lines", file=out)
    for path, data in restored.items():
        (target / path).write_bytes(data)
    for path in record["replaced"]:
        file = target / path
        if file.exists() and changed_since_install(record, path, file.read_bytes()):
            print(f"{path} changed since install: left as it is", file=out)
        else:
            shutil.copy2(state / "original" / path, file)
    for path in record["added"]:
        (target / path).unlink(missing_ok=True)
        _remove_empty_parents(target, (target / path).parent)
    venv_hook.remove_hook(record.get("hook", []))
    image_hook.remove_config(target)
    shutil.rmtree(state)
    print(f"uninstalled from {target}: originals restored", file=out)
    return 0


def _remove_empty_parents(root: Path, folder: Path) -> None:
    """Remove the plugin's folders once emptied; one left holding only Python's cache of
    the modules just removed (``__pycache__``) counts as empty."""
    while folder != root and folder.exists():
        entries = list(folder.iterdir())
        if any(entry.name != "__pycache__" for entry in entries):
            return
        for cache in entries:
            shutil.rmtree(cache)
        folder.rmdir()
        folder = folder.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m install.openalgo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("openalgo", type=Path, help="path to the OpenAlgo checkout")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show what would change")
    mode.add_argument("--check", action="store_true", help="exit 0 only if installed and current")
    mode.add_argument("--uninstall", action="store_true", help="restore the original files")
    parser.add_argument(
        "--venv",
        type=Path,
        help="OpenAlgo's virtual environment, for the start-up hook (default: "
        ".venv or venv in the checkout, or venv beside it)",
    )
    parser.add_argument("--verbose", action="store_true", help="--check: list every file")
    args = parser.parse_args(argv)
    target = args.openalgo.resolve()
    try:
        if args.check:
            return check(target, verbose=args.verbose)
        if args.uninstall:
            return uninstall(target)
        return install(target, dry_run=args.dry_run, venv=args.venv)
    except InstallError as exc:
        print(f"refusing: {exc}; nothing was written", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
