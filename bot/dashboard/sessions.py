"""Server-side dashboard sessions, in Redis.

The cookie holds only a random session id (256 bits); the session's data lives in Redis under
``triage:websession:<sha256 of the id>`` (a Redis dump or ``KEYS`` does not reveal a usable
cookie). So a session can be ended on the server:

* signing out deletes it: a copied cookie stops working at once;
* signing in starts a new id (no session fixation) and deletes the old one;
* a password change ends every session of that user: each session keeps a fingerprint of the
  password hash it signed in with, and ``auth.require_login`` ends a session whose user's
  hash has changed (``flask create-user NAME --replace``), deleting it;
* a signed-in session expires ``DASHBOARD_SESSION_HOURS`` after sign-in (absolute, not
  sliding).

Before sign-in the session holds only the sign-in form's CSRF token; that is kept in the
cookie itself (signed with SECRET_KEY, ``a.`` prefix, 12 hours at most), so traffic from
strangers never writes to Redis.

``triage:websession:user:<username>`` (a set of the session keys of that user) lets
``revoke_user`` end them all at once. Everything is under the one prefix
``triage:websession:``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from typing import Any

import redis
from flask import Flask, Request, Response, current_app
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.datastructures import CallbackDict

from ..keys import WEBSESSION_PREFIX as PREFIX
from ..keys import websession_key as session_key

log = logging.getLogger(__name__)

USER_INDEX = PREFIX + "user:"
ANONYMOUS_SECONDS = 12 * 3600  # the sign-in page's CSRF token: a page left open all night
ANONYMOUS_PREFIX = "a."
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def user_index(username: str) -> str:
    return USER_INDEX + username


def password_fingerprint(stored_hash: str | None) -> str:
    return hashlib.sha256((stored_hash or "").encode()).hexdigest()[:32]


class RedisSession(CallbackDict, SessionMixin):  # type: ignore[misc]
    def __init__(self, initial: dict[str, Any] | None = None, sid: str | None = None) -> None:
        def on_update(_self: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.modified = False
        self.new = sid is None
        self.rotate = False
        self.ended = False
        self.signed_out_user: str | None = None
        self.had_cookie = False

    def regenerate(self) -> None:
        """Start a new id at the next save (sign-in); the old one is deleted."""
        self.rotate = True
        self.modified = True

    def end(self) -> None:
        """Sign-out: delete the session on the server and the cookie in the browser."""
        self.signed_out_user = self.get("user")
        self.clear()
        self.ended = True
        self.modified = True


def _redis() -> redis.Redis:
    return current_app.extensions["triage"].store.r


class RedisSessionInterface(SessionInterface):
    serializer = TaggedJSONSerializer()

    def _signer(self, app: Flask) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(app.secret_key or "", salt="triage-anonymous-session",
                                      serializer=self.serializer)

    def open_session(self, app: Flask, request: Request) -> RedisSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if sid and sid.startswith(ANONYMOUS_PREFIX):
            try:
                data = self._signer(app).loads(sid[len(ANONYMOUS_PREFIX):],
                                               max_age=ANONYMOUS_SECONDS)
            except BadSignature:
                return RedisSession()
            if not isinstance(data, dict) or data.get("user"):
                return RedisSession()  # a signed-in session is never client-side
            session = RedisSession(data)
            session.had_cookie = True
            return session
        if not sid or not _SID_RE.match(sid):
            return RedisSession()
        try:
            raw = _redis().get(session_key(sid))
        except (redis.RedisError, OSError):
            log.warning("dashboard session store unreachable; treating the request as signed out")
            return RedisSession()
        if raw is None:
            return RedisSession()  # ended, expired or never existed: a fresh (anonymous) one
        try:
            data = self.serializer.loads(raw)
        except ValueError:
            return RedisSession()
        return RedisSession(data if isinstance(data, dict) else {}, sid)

    def _ttl(self, app: Flask, session: RedisSession) -> int:
        if not session.get("user"):
            return ANONYMOUS_SECONDS
        hours = float(app.config.get("DASHBOARD_SESSION_HOURS", 12))
        since = float(session.get("since") or time.time())
        return max(1, int(since + hours * 3600 - time.time()))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, RedisSession):
            return
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        from flask import request

        secure = self.get_cookie_secure(app) or request.is_secure
        if not session.modified:
            return
        r = _redis()
        old_key = session_key(session.sid) if session.sid else None
        if session.ended or (not session and session.sid):
            if old_key:
                pipe = r.pipeline()
                pipe.delete(old_key)
                for who in {session.get("user"), session.signed_out_user}:
                    if who:
                        pipe.srem(user_index(who), old_key)
                pipe.execute()
            response.delete_cookie(name, domain=domain, path=path, secure=secure,
                                   httponly=True, samesite=self.get_cookie_samesite(app))
            return
        if not session.get("user"):
            # Not signed in: nothing in Redis; the little there is (the CSRF token) goes in a
            # signed cookie. A server-side id that lost its user is deleted.
            if old_key:
                r.delete(old_key)
            if not session:
                if session.had_cookie or session.sid:
                    response.delete_cookie(name, domain=domain, path=path, secure=secure,
                                           httponly=True,
                                           samesite=self.get_cookie_samesite(app))
                return
            value = ANONYMOUS_PREFIX + self._signer(app).dumps(dict(session))
            response.set_cookie(name, value, domain=domain, path=path, secure=secure,
                                httponly=True, samesite=self.get_cookie_samesite(app))
            response.vary.add("Cookie")
            session.sid = None
            return
        sid = session.sid
        if sid is None or session.rotate:
            sid = secrets.token_urlsafe(32)
        key = session_key(sid)
        ttl = self._ttl(app, session)
        pipe = r.pipeline()
        if old_key and old_key != key:
            pipe.delete(old_key)
        pipe.set(key, self.serializer.dumps(dict(session)), ex=ttl)
        user = session.get("user")
        if user:
            pipe.sadd(user_index(user), key)
            pipe.expire(user_index(user), int(float(app.config.get(
                "DASHBOARD_SESSION_HOURS", 12)) * 3600) + 60)
        pipe.execute()
        if sid != session.sid:
            session.sid, session.rotate = sid, False
            response.set_cookie(name, sid, domain=domain, path=path, secure=secure,
                                httponly=True, samesite=self.get_cookie_samesite(app))
            response.vary.add("Cookie")


def revoke(r: redis.Redis, key: str, username: str | None = None) -> None:
    pipe = r.pipeline()
    pipe.delete(key)
    if username:
        pipe.srem(user_index(username), key)
    pipe.execute()


def revoke_user(r: redis.Redis, username: str) -> int:
    """End every dashboard session of ``username`` (password reset, user removed)."""
    keys = list(r.smembers(user_index(username)))
    if keys:
        r.delete(*keys)
    r.delete(user_index(username))
    return len(keys)
