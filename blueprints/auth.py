"""Host stand-in: a minimal login, so the admin page is behind a session as in OpenAlgo.

OpenAlgo has its own login (and wants a broker session too); this exists only so the host
can demo and test pages guarded by ``check_session_validity``.
"""

import threading
import time
from urllib.parse import urlsplit

import click
from flask import Blueprint, redirect, render_template, request, session, url_for
from flask.cli import AppGroup

from database.auth_db import DEFAULT_USER, authenticate_user, ensure_api_key, ensure_user

auth_bp = Blueprint("auth", __name__, url_prefix="/auth")


class LoginThrottle:
    """After a few wrong passwords for a username or from an address, the next try must
    wait: 1 s, doubling to 5 minutes, until a success.  In memory (one process)."""

    FREE_TRIES, FIRST_PAUSE, LONGEST_PAUSE = 3, 1.0, 300.0

    def __init__(self):
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, keys: list[str], now: float) -> float:
        with self._lock:
            waits = [
                last + self._pause(count) - now
                for count, last in (self._failures.get(k, (0, 0.0)) for k in keys)
            ]
        return max([0.0, *waits])

    def failed(self, keys: list[str], now: float) -> None:
        with self._lock:
            for key in keys:
                count, _ = self._failures.get(key, (0, 0.0))
                self._failures[key] = (count + 1, now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _pause(self, failures: int) -> float:
        if failures < self.FREE_TRIES:
            return 0.0
        return min(self.FIRST_PAUSE * 2 ** (failures - self.FREE_TRIES), self.LONGEST_PAUSE)


throttle = LoginThrottle()


@auth_bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")
        keys, now = [f"user:{username}", f"addr:{request.remote_addr}"], time.monotonic()
        wait = throttle.wait_seconds(keys, now)
        if wait > 0:
            response = render_template(
                "auth/login.html", error=f"Too many tries: wait {wait:.0f} s."
            )
            return response, 429, {"Retry-After": str(int(wait) + 1)}
        if authenticate_user(username, request.form.get("password", "")):
            throttle.succeeded(keys)
            session.clear()
            session.permanent = True  # idle expiry: PERMANENT_SESSION_LIFETIME
            session["logged_in"], session["user"] = True, username
            session["login_time"] = time.time()
            return redirect(_safe_next(request.args.get("next", "")))
        throttle.failed(keys, now)
        error = "Wrong username or password."
    return render_template("auth/login.html", error=error), 401 if error else 200


def _safe_next(target: str) -> str:
    """Only a path on this site.  Browsers strip tabs and newlines and read a backslash
    as a slash, so ``/\\evil.com`` or ``/%09/evil.com`` would leave the site: refuse
    those, and anything with a scheme or host, for the admin page."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or any(ord(c) < 32 or c == "\\" for c in target)
        or urlsplit(target).netloc
    ):
        return url_for("order_queue_bp.index")
    return target


@auth_bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


user_cli = AppGroup("user", help="Users who may log in to the admin page.")


#: As OpenAlgo's own password rules ask: long enough that guessing it online is hopeless.
MIN_PASSWORD_LENGTH = 8


def _long_enough(_ctx, _param, password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.BadParameter(f"must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


@user_cli.command("set-password")
@click.option("--username", default=DEFAULT_USER, show_default=True)
@click.password_option(
    callback=_long_enough, help=f"At least {MIN_PASSWORD_LENGTH} characters (asked if not given)."
)
def set_password_command(username, password):
    """Create the user if needed and set its password."""
    ensure_user(username, password)
    click.echo(f"password set for {username}")


@user_cli.command("api-key")
@click.option("--username", default=DEFAULT_USER, show_default=True)
def api_key_command(username):
    """Print the user's API key (creating one if it has none), for calls to /api/v1.
    Shown here on request only: never logged, never in a page."""
    click.echo(ensure_api_key(username))
