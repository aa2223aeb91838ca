"""Web hardening for the whole app (webhook, API, dashboard), installed first by
``create_app``:

* ``ProxyFix`` when ``PROXY_FIX_HOPS`` > 0: the client address and the scheme come from the
  last ``PROXY_FIX_HOPS`` entries of X-Forwarded-For / X-Forwarded-Proto, which the reverse
  proxies in front must set. At 0 (the default) those headers are ignored, so nobody can
  choose the address the login limits see by sending a header.
* A request size cap, ``MAX_CONTENT_LENGTH`` bytes, checked on the Content-Length header
  before anything reads the body (Twilio's signature check and CSRF included): 413, and the
  body is never read. A chunked body (no Content-Length) is read up to the cap + 1 byte and
  refused with 413 the same way if it is longer.
* Security headers on every response; ``Cache-Control: no-store`` on every response except
  the dashboard's static files (the webhook's replies, the API's JSON and every dashboard page
  hold patient data); HSTS when the request came over https (after ProxyFix).
* ``safe_next``: where to go after signing in; only a path inside the dashboard.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, Response, abort, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HSTS = "max-age=31536000"
CACHEABLE_ENDPOINTS = frozenset({"dashboard.static"})

# A path inside the dashboard, optionally with a query: printable ASCII without spaces,
# backslashes, quotes or angle brackets.
_NEXT_RE = re.compile(r"^/dashboard(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?"
                      r"(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")
_NEXT_NEVER = ("/dashboard/login", "/dashboard/logout")


def install(app: Flask) -> None:
    hops = int(app.config.get("PROXY_FIX_HOPS") or 0)
    if hops < 0:
        raise RuntimeError(f"setting PROXY_FIX_HOPS must be 0 or more, got {hops}")
    limit = int(app.config.get("MAX_CONTENT_LENGTH") or 0)
    if limit <= 0:
        raise RuntimeError(f"setting MAX_CONTENT_LENGTH must be a positive size in bytes, got "
                           f"{limit}")
    app.wsgi_app = ChunkedBodyCap(app.wsgi_app, limit)  # type: ignore[method-assign]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(refuse_large_bodies)
    app.after_request(security_headers)


TOO_LARGE = "triage.body_too_large"


class ChunkedBodyCap:
    """WSGI middleware for bodies sent without a Content-Length (chunked): read at most
    ``limit`` + 1 bytes; over the cap, the request goes on with an empty body and a flag
    that ``refuse_large_bodies`` turns into 413; under it, the body is handed on with its
    length, like any other. (Werkzeug alone would silently cut such a body at the cap and
    parse what it got.)"""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        if chunked and environ.get("wsgi.input_terminated"):
            data = environ["wsgi.input"].read(self.limit + 1)
            if len(data) > self.limit:
                environ[TOO_LARGE] = True
                data = b""
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ.pop("wsgi.input_terminated", None)
        return self.app(environ, start_response)


def refuse_large_bodies() -> None:
    """Before anything else looks at the request: a declared body over the cap is refused
    without reading a byte of it."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.environ.get(TOO_LARGE):
        log.warning("refused %s %s: chunked body over MAX_CONTENT_LENGTH (%d)",
                    request.method, request.path, limit)
        abort(413)
    length = request.content_length
    if length is not None and length > limit:
        log.warning("refused %s %s: body of %d bytes is over MAX_CONTENT_LENGTH (%d)",
                    request.method, request.path, length, limit)
        abort(413)


_ALWAYS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
           ("Referrer-Policy", "same-origin"), ("Content-Security-Policy", CSP),
           ("Cross-Origin-Opener-Policy", "same-origin"))
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_HSTS = (("Strict-Transport-Security", HSTS),)


def security_headers(resp: Response) -> Response:
    """Set (replace) the security headers. A header the view did not set is appended, without
    ``Headers.set``'s scan of the list for each one (on every webhook reply, this cost more
    than building the TwiML)."""
    wanted = _ALWAYS
    if request.endpoint not in CACHEABLE_ENDPOINTS:
        wanted += _NO_STORE
    if request.is_secure:
        wanted += _HSTS
    headers = resp.headers
    present = set(headers.keys(lower=True))
    for name, value in wanted:
        if name.lower() in present:
            headers[name] = value
        else:
            headers.add(name, value)
    return resp


def safe_next(target: Any) -> str | None:
    """``target`` if it is a path inside the dashboard (not the sign-in or sign-out page),
    else None. Never raises: anything odd (another site, //host, a scheme, a backslash, a
    newline or other control character, dot segments, encoded or not) is refused."""
    if not isinstance(target, str) or not target or len(target) > 2000:
        return None
    if not _NEXT_RE.match(target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if (any(ord(c) < 0x20 or ord(c) == 0x7F for c in unquote(target)) or "\\" in path
            or "//" in path or "/../" in path + "/" or "/./" in path + "/"):
        return None
    if path.rstrip("/") in _NEXT_NEVER:
        return None
    return target
