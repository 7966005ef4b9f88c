"""Host stand-in: a minimal login, so the admin page is behind a session as in OpenAlgo.

OpenAlgo has its own login (and wants a broker session too); this exists only so the host
can demo and test pages guarded by ``check_session_validity``.
"""

from urllib.parse import urlsplit

import click
from flask import Blueprint, redirect, render_template, request, session, url_for
from flask.cli import AppGroup

from database.auth_db import DEFAULT_USER, authenticate_user, ensure_user

auth_bp = Blueprint("auth", __name__, url_prefix="/auth")


@auth_bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")
        if authenticate_user(username, request.form.get("password", "")):
            session.clear()
            session["logged_in"], session["user"] = True, username
            return redirect(_safe_next(request.args.get("next", "")))
        error = "Wrong username or password."
    return render_template("auth/login.html", error=error), 401 if error else 200


def _safe_next(target: str) -> str:
    """Only a path on this site.  Browsers strip tabs and newlines and read a backslash
    as a slash, so ``/\\evil.com`` or ``/%09/evil.com`` would leave the site: refuse
    those, and anything with a scheme or host, for the admin page."""
    if (not target.startswith("/") or target.startswith("//")
            or any(ord(c) < 32 or c == "\\" for c in target) or urlsplit(target).netloc):
        return url_for("order_queue_bp.index")
    return target


@auth_bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


user_cli = AppGroup("user", help="Users who may log in to the admin page.")


@user_cli.command("set-password")
@click.option("--username", default=DEFAULT_USER, show_default=True)
@click.password_option()
def set_password_command(username, password):
    """Create the user if needed and set its password."""
    ensure_user(username, password)
    click.echo(f"password set for {username}")
