"""Sign in and out; every other dashboard route requires a signed-in user.

The session cookie (Flask's signed cookie: HttpOnly, SameSite=Lax, Secure when the service is
served over https) holds the username and the sign-in time; the user is read again from Redis on
every request, so a removed user or a changed role takes effect at once.
"""

from __future__ import annotations

import time
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError

from .. import audit, users
from . import bp

PUBLIC_ENDPOINTS = {"dashboard.login", "dashboard.static"}
SESSION_HOURS = 12  # one night shift and a handover


def redis() -> Any:
    return current_app.extensions["triage"].store.r


@bp.record_once
def _cookie_settings(state: Any) -> None:
    config = state.app.config
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["SESSION_COOKIE_SECURE"] = str(config.get("PUBLIC_BASE_URL") or "").startswith(
        "https://")
    config.setdefault("DASHBOARD_SESSION_HOURS", SESSION_HOURS)
    # The CSRF token lives as long as the session: a queue left open all night keeps working.
    config.setdefault("WTF_CSRF_TIME_LIMIT", None)


def client_id() -> str:
    return request.remote_addr or "-"


@bp.before_request
def require_login() -> Any:
    g.user = None
    name = session.get("user")
    if name:
        hours = current_app.config["DASHBOARD_SESSION_HOURS"]
        user = users.get(redis(), name)
        if user is None or time.time() - float(session.get("since", 0)) > hours * 3600:
            session.clear()
        else:
            g.user = user
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.path.endswith(".json"):
            return jsonify({"error": "not signed in"}), 401
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def security_headers(resp: Response) -> Response:
    # Patient data: never cached, never framed; scripts and styles only from this service.
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return resp


def admin_required(view: Any) -> Any:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None or not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


def safe_next(target: str | None) -> str:
    """Only back into the dashboard, never to another site."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith("/dashboard"):
            return target
    return url_for("dashboard.queue")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if g.user is not None:
            return redirect(safe_next(request.args.get("next")))
        return render_template("dashboard/login.html", next=request.args.get("next", ""))
    r = redis()
    username = users.normalise(request.form.get("username", ""))[:64]
    password = request.form.get("password", "")
    nxt = request.form.get("next", "")
    wait = users.locked(r, username, client_id())
    if wait:
        audit.log(r, username, "login_failed", username, "refused: too many failed attempts")
        error = (f"Too many failed attempts. Try again in {max(1, wait // 60)} min, or ask "
                 "an admin to reset the password.")
        return render_template("dashboard/login.html", error=error, username=username,
                               next=nxt), 429
    user = users.authenticate(r, username, password, client_id())
    if user is None:
        audit.log(r, username, "login_failed", username, "wrong username or password")
        return render_template("dashboard/login.html", error="Wrong username or password.",
                               username=username, next=nxt), 401
    session.clear()  # no session fixation: a fresh session (and CSRF token) at sign-in
    session["user"] = user.username
    session["since"] = time.time()
    audit.log(r, user.username, "login", user.username, f"role={user.role}")
    return redirect(safe_next(nxt), code=303)


@bp.post("/logout")
def logout() -> Any:
    audit.log(redis(), g.user.username, "logout", g.user.username)
    session.clear()
    return redirect(url_for("dashboard.login"), code=303)


@bp.app_errorhandler(CSRFError)
def csrf_error(exc: CSRFError) -> Any:
    return render_template("dashboard/error.html", title="Form refused",
                           message="This form was refused because its security token is "
                           f"missing or wrong ({exc.description}). Reload the page and try "
                           "again."), 400
