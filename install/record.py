"""What the installer keeps in a checkout's ``.order_queue_plugin/`` (standard library
only): the record of what it copied, replaced and edited, with a digest of each file as it
wrote it, and the originals ``--uninstall`` restores.  A file changed since the install (an
OpenAlgo update) is told apart by its digest, so its newer bytes become the original.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from install.edits import EDITS

STATE_DIR = ".order_queue_plugin"


def state_folder(target: Path) -> Path:
    return target / STATE_DIR


def read_record(target: Path) -> dict:
    path = state_folder(target) / "installed.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    for key in ("added", "replaced", "edited"):
        record.setdefault(key, [])
    record.setdefault("written", {})
    return record


def fresh_originals(target: Path, record: dict, plans: dict) -> dict[str, str | None]:
    """{path: original} for each edited file to back up now: one about to be edited for
    the first time, or one changed since the last install (an OpenAlgo update, the
    plugin's edits discarded), whose older backup would undo that change on --uninstall.
    The original is the file less the plugin's lines; None when it has none (the bytes
    are kept as they are).  Computed before anything is written: it may refuse."""
    originals = {}
    for path, (current, patched) in plans.items():
        first = current != patched and not (state_folder(target) / "original" / path).exists()
        if first or changed_since_install(record, path, (target / path).read_bytes()):
            original = without_plugin_lines(path, current)
            originals[path] = None if original == current else original
    return originals


def without_plugin_lines(path: str, content: str) -> str:
    """``content`` less whichever of the plugin's edits it carries (an update may have been
    merged around them, or they were discarded); InstallError if one was changed."""
    for edit in reversed([e for e in EDITS if e.path == path]):
        if edit.present(content):
            content = edit.revert(content)
    return content


def record_copy(target: Path, record: dict, path: str) -> None:
    """Note what copying the plugin's ``path`` does.  A file the checkout has, not the last
    install's copy (new, or changed since: an OpenAlgo update), is kept for --uninstall;
    one an install added stays added, whatever became of it."""
    file = target / path
    ours = (
        path in record["replaced"]
        and file.exists()
        and not changed_since_install(record, path, file.read_bytes())
    )
    if path in record["added"] or ours:
        return
    if path in record["replaced"]:
        record["replaced"].remove(path)
    if file.exists():
        keep_original(target, path)
        record["replaced"].append(path)
    else:
        record["added"].append(path)  # gone from the checkout: nothing to restore


def changed_since_install(record: dict, path: str, data: bytes) -> bool:
    """Whether ``data`` is not what the last install wrote at ``path``.  An install by an
    older installer recorded no digest for it: trusted unchanged, as it was then."""
    written = record["written"].get(path)
    return written is not None and written != digest(data)


def keep_original(target: Path, path: str, content: str | None = None) -> None:
    """Keep ``path`` byte for byte (or ``content``, when given) under the state folder,
    for ``--uninstall``."""
    backup = state_folder(target) / "original" / path
    backup.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        shutil.copy2(target / path, backup)
    else:
        backup.write_text(content, encoding="utf-8")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
