"""Keeps the order queue in force across OpenAlgo updates (standard library only).

The installer copies this file into the site-packages of OpenAlgo's virtual environment
as ``order_queue_plugin_hook.py``, with ``CHECKOUT`` set, beside a one-line
``order_queue_plugin.pth`` that imports it: Python runs it at interpreter start, as
zero-code instrumentation hooks an application from its own environment.  OpenAlgo's
update paths (``install/update.sh``: ``git stash`` + ``git pull``; the Docker SSL
installer: ``git reset --hard``) discard the plugin's edits to tracked files but keep
untracked files and the virtual environment, so this hook and the plugin's files
survive them.

When the interpreter is about to run OpenAlgo from ``CHECKOUT`` (``python app.py``,
``uv run app.py``, or gunicorn started there), before app.py is read:

- edits missing (an update removed them): the installer kept in
  ``.order_queue_plugin/installer`` puts them back, and the queue is in force as before;
- an edit that cannot be made any more (the update removed an anchor): the app starts
  without the queue, says so at ERROR on stderr, and ``python -m
  services.order_queue.drain`` is started beside it, which alerts through the
  configured channels and delivers what the queue still holds (or expires it by its
  own bounds, reported), so no acknowledged order is stranded.

Nothing here may stop OpenAlgo from starting: every failure is reported and swallowed.
"""

import os
import subprocess
import sys

CHECKOUT = "@CHECKOUT@"
#: True in the copy written as the checkout's ``gunicorn.conf.py`` (``image_hook.py``):
#: gunicorn reads that file only when it starts OpenAlgo from the checkout (a Docker
#: image's ``/app``), so there is nothing to tell apart.
AS_GUNICORN_CONFIG = False


def _runs_openalgo(argv, original_argv, cwd):
    """Whether this interpreter is about to start OpenAlgo from the checkout."""
    script = argv[0] if argv else ""
    if script and os.path.realpath(os.path.join(cwd, script)) == os.path.join(CHECKOUT, "app.py"):
        return True
    words = " ".join(original_argv)
    chdir = "--chdir" in original_argv and CHECKOUT in [os.path.realpath(w) for w in original_argv]
    return "gunicorn" in words and (cwd == CHECKOUT or chdir)


def _reapply():
    state = os.path.join(CHECKOUT, ".order_queue_plugin")
    if not os.path.exists(os.path.join(state, "installed.json")):
        return  # uninstalled: nothing to keep in force
    sys.path.insert(0, os.path.join(state, "installer"))
    try:
        from install import openalgo as installer  # the copy kept with the install

        try:
            changed = installer.reapply(installer.Path(CHECKOUT))
        except installer.InstallError as exc:
            _not_in_force(str(exc))
            return
        if changed:
            sys.stderr.write(
                f"order queue plugin: an update had removed its edits; "
                f"re-applied to {', '.join(changed)}\n"
            )
    finally:
        sys.path.remove(os.path.join(state, "installer"))
        for name in ("install.openalgo", "install.manifest", "install"):
            sys.modules.pop(name, None)  # OpenAlgo has an install/ folder of its own


def _not_in_force(reason):
    sys.stderr.write(
        f"ERROR order queue plugin NOT in force: {reason}. Webhooks use "
        f"OpenAlgo's in-memory queue; orders already queued are being "
        f"delivered. Run the plugin's installer against this OpenAlgo.\n"
    )
    subprocess.Popen(
        [sys.executable, "-m", "services.order_queue.drain", reason],
        cwd=CHECKOUT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def at_start():
    try:
        if AS_GUNICORN_CONFIG or _runs_openalgo(
            sys.argv, getattr(sys, "orig_argv", sys.argv), os.path.realpath(os.getcwd())
        ):
            _reapply()
    except Exception as exc:  # never keep OpenAlgo from starting
        sys.stderr.write(f"ERROR order queue plugin start-up hook failed: {exc!r}\n")


at_start()
