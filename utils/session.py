"""Session check, at the same import path and name as OpenAlgo's ``utils.session``.

OpenAlgo's version also wants a broker login; the host only has its own login, so a
session is valid when ``logged_in`` is set (by ``blueprints/auth.py``).
"""

import time
from functools import wraps

from flask import jsonify, redirect, request, session, url_for

#: A session ends this long after login whatever the activity (the idle limit is the
#: cookie's PERMANENT_SESSION_LIFETIME, refreshed on every request).
ABSOLUTE_SESSION_SECONDS = 12 * 3600


def is_session_valid() -> bool:
    login_time = session.get("login_time")
    return bool(
        session.get("logged_in")
        and session.get("user")
        and isinstance(login_time, (int, float))
        and time.time() - login_time < ABSOLUTE_SESSION_SECONDS
    )


def _wants_json() -> bool:
    return (
        request.is_json
        or request.headers.get("X-Requested-With") == "XMLHttpRequest"
        or request.headers.get("Accept", "").startswith("application/json")
    )


def check_session_validity(view):
    """Let the view run only for a logged-in user: 401 JSON for API calls, else a redirect."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not is_session_valid():
            if _wants_json():
                return jsonify(
                    {"status": "error", "error": "session_expired", "message": "Log in first."}
                ), 401
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped
