"""Sign in and out; every other dashboard route requires a signed-in user.

Sessions are server-side (``sessions``): the cookie (HttpOnly, SameSite=Lax, Secure when the
service is served over https) holds only a random id; the data, the username and the
sign-in time, is in Redis, so signing out ends the session for every copy of the cookie. The
user is read again from Redis on every request: a removed user, a changed role or a new
password takes effect at once. Sign-in limits are in ``throttle``.
"""

from __future__ import annotations

import time
from functools import wraps
from typing import Any

from flask import (
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

from .. import audit, keys, users
from . import bp, sessions, throttle
from .security import safe_next as _safe_next

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
    state.app.session_interface = sessions.RedisSessionInterface()


def client_id() -> str:
    """The client's address (the real one behind the proxies counted by PROXY_FIX_HOPS)."""
    return request.remote_addr or "-"


def _end_session() -> None:
    if isinstance(session, sessions.RedisSession):
        session.end()
    else:  # pragma: no cover - the interface is always ours
        session.clear()


def signed_in_user() -> Any:
    """The dashboard user of this request's session, or None (a removed user, an expired
    session or a password changed since sign-in ends the session). Also for the few /api
    routes the dashboard links to."""
    name = session.get("user")
    if not name:
        return None
    hours = current_app.config.get("DASHBOARD_SESSION_HOURS", SESSION_HOURS)
    r = redis()
    user = users.get(r, name)
    stored = r.hget(keys.of(r).user_key(users.normalise(name)), "password")
    if (user is None or time.time() - float(session.get("since", 0)) > hours * 3600
            or session.get("pw") != sessions.password_fingerprint(stored)):
        _end_session()  # removed, expired, or the password changed since sign-in
        return None
    return user


@bp.before_request
def require_login() -> Any:
    g.user = signed_in_user()
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.path.endswith(".json"):
            return jsonify({"error": "not signed in"}), 401
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    return None


def admin_required(view: Any) -> Any:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None or not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


def safe_next(target: str | None) -> str:
    """Only back into the dashboard, never to another site (see ``security.safe_next``)."""
    return _safe_next(target) or url_for("dashboard.queue")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if g.user is not None:
            return redirect(safe_next(request.args.get("next")))
        return render_template("dashboard/login.html",
                               next=_safe_next(request.args.get("next")) or "")
    r = redis()
    username = users.normalise(request.form.get("username", ""))[:64]
    password = request.form.get("password", "")
    nxt = _safe_next(request.form.get("next")) or ""
    secret = current_app.secret_key or ""
    device_cookie = request.cookies.get(throttle.DEVICE_COOKIE)
    attempt = throttle.Attempt(username, client_id(),
                               throttle.device_for(secret, device_cookie, username))
    limits = throttle.Limits.from_config(current_app.config)
    now = time.time()
    refusal = throttle.refused(r, attempt, limits, now)
    if refusal:
        audit.log(r, username, "login_failed", username, f"refused: {refusal.reason}")
        wait = refusal.seconds
        when = f"{wait} s" if wait < 120 else f"{wait // 60} min"
        error = (f"Too many failed attempts. Try again in {when}, or ask an admin to reset "
                 "the password.")
        resp = current_app.make_response((render_template(
            "dashboard/login.html", error=error, username=username, next=nxt), 429))
        resp.headers["Retry-After"] = str(wait)
        return resp
    user = users.authenticate(r, username, password, attempt.client)
    if user is None:
        throttle.record_failure(r, attempt, limits, now)
        audit.log(r, username, "login_failed", username, "wrong username or password")
        return render_template("dashboard/login.html", error="Wrong username or password.",
                               username=username, next=nxt), 401
    throttle.record_success(r, attempt)
    # No session fixation: a new session id (and CSRF token) at sign-in, the old one deleted.
    session.clear()
    if isinstance(session, sessions.RedisSession):
        session.regenerate()
    session["user"] = user.username
    session["since"] = time.time()
    session["pw"] = sessions.password_fingerprint(r.hget(keys.of(r).user_key(user.username),
                                                         "password"))
    audit.log(r, user.username, "login", user.username, f"role={user.role}")
    resp = redirect(safe_next(nxt), code=303)
    resp.set_cookie(throttle.DEVICE_COOKIE, throttle.remember(secret, device_cookie,
                                                              user.username),
                    max_age=throttle.DEVICE_DAYS * 86400, path=url_for("dashboard.login"),
                    secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")
                                or request.is_secure),
                    httponly=True, samesite="Lax")
    return resp


@bp.post("/logout")
def logout() -> Any:
    audit.log(redis(), g.user.username, "logout", g.user.username)
    _end_session()
    return redirect(url_for("dashboard.login"), code=303)


@bp.app_errorhandler(CSRFError)
def csrf_error(exc: CSRFError) -> Any:
    return render_template("dashboard/error.html", title="Form refused",
                           message="This form was refused because its security token is "
                           f"missing or wrong ({exc.description}). Reload the page and try "
                           "again."), 400
