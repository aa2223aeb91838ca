"""No patient data in logs, whatever the encoding (issue 8, item 8).

One number, +1 (617) 555-0143, is sent in every way it travels (E.164, %2B, %20, form '+'
spaces, dots, dashes, parentheses, %28/%29, double-encoded %252B) in paths and query strings,
with a dashboard name search (q=Zelda+Quixote) by a signed-in nurse, through the app under
Werkzeug's real server and through gunicorn with gunicorn.conf.py. Every captured log line is
then decoded and scanned: neither the number's digits nor the name may appear in any of them.
"""

from __future__ import annotations

import http.cookiejar
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from bot import MaskPhones, mask_text, users
from conftest import API_TOKEN
from servers import gunicorn

APP_SETTINGS = {"PUBLIC_BASE_URL": ""}  # plain http on loopback: cookies without Secure
PASSWORD = "correct-horse-battery"
SUBSCRIBER = "5550143"  # the part of the number that identifies the patient
NAME = ("zelda", "quixote")
ENCODINGS = [
    "+16175550143", "%2B16175550143", "+1%20617%20555%200143", "%2B1%20617%20555%200143",
    "+1+617+555+0143", "1.617.555.0143", "617.555.0143", "617-555-0143", "(617)%20555-0143",
    "%28617%29%20555-0143", "1-617-555-0143", "6175550143", "16175550143", "%252B16175550143",
    "%2B1%2E617%2E555%2E0143", "%2B1-617-555-0143", "+1 617 555 0143", "(617) 555-0143",
]


def leaks(line: str) -> list[str]:
    """What of the patient's data this log line still shows (decoded twice, as a reader or
    a log tool would)."""
    decoded = urllib.parse.unquote_plus(urllib.parse.unquote(line)).lower()
    digits = re.sub(r"\D", "", decoded)
    found = [w for w in NAME if w in decoded]
    if SUBSCRIBER in digits:
        found.append("phone number")
    return found


@pytest.mark.parametrize("encoded", ENCODINGS)
def test_every_encoding_is_masked_in_a_message_a_path_and_a_query(encoded: str) -> None:
    for line in (f"from {encoded}", f'"GET /dashboard/patients/{encoded} HTTP/1.1" 302',
                 f'"GET /api/escalations?phone={encoded}&limit=5 HTTP/1.1" 200',
                 f'"POST /sms?From={encoded} HTTP/1.1" 403'):
        assert not leaks(mask_text(line)), (line, mask_text(line))


def test_query_values_are_redacted_but_enumerations_kept() -> None:
    line = ('"GET /dashboard/patients?q=Zelda+Quixote&status=active HTTP/1.1" 200 '
            '"GET /dashboard/login?next=%2Fdashboard%2Fpatients%3Fq%3DZelda%2BQuixote"')
    masked = mask_text(line)
    assert not leaks(masked)
    assert "status=active" in masked and "q=***" in masked and "next=***" in masked
    assert mask_text("GET /dashboard/?tier=URGENT&flow=fever") == (
        "GET /dashboard/?tier=URGENT&flow=fever")


def test_tracebacks_and_unformattable_messages_are_masked(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    MaskPhones()  # installs the record factory (create_app does too)
    log = logging.getLogger("tests.privacy")
    try:
        raise ValueError("no profile for +1 (617) 555-0143")
    except ValueError:
        log.exception("lookup failed for %s", "617.555.0143")
    log.warning("broken %s %s", "+16175550143")  # wrong number of args
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "lookup failed" in text and "ValueError" in text
    assert not leaks(text), text


# --------------------------------------------------------------------------- real servers

class Captured(logging.Handler):
    """A plain handler with no filter of its own: whatever reaches it was masked when the
    record was made."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(self.format(record).splitlines())


def browse(base: str) -> dict[str, int]:
    """What a nurse, an API client and a stranger do, with the number in every encoding.
    Returns the status of each request (so the test knows the requests really ran)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    statuses: dict[str, int] = {}

    def go(path: str, data: bytes | None = None, headers: dict[str, str] | None = None,
           use: Any = opener) -> str:
        req = urllib.request.Request(base + path, data=data, headers=headers or {})
        try:
            with use.open(req, timeout=10) as resp:
                statuses[path] = resp.status
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            statuses[path] = exc.code
            return exc.read().decode(errors="replace")

    plain = urllib.request.build_opener()
    for enc in ENCODINGS:
        enc = enc.replace(" ", "%20").replace("(", "%28").replace(")", "%29") if " " in enc \
            else enc
        go(f"/dashboard/patients/{enc}", use=plain)  # signed out: redirected, next=...
        go(f"/api/patients/{enc}", headers={"Authorization": f"Bearer {API_TOKEN}"})
        go(f"/api/escalations?phone={enc}", headers={"Authorization": f"Bearer {API_TOKEN}"})
        go(f"/sms?From={enc}", data=b"From=" + enc.encode() + b"&Body=help")  # unsigned: 403
    html = go("/dashboard/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf, html
    form = urllib.parse.urlencode({"username": "nina", "password": PASSWORD,
                                   "csrf_token": csrf.group(1)}).encode()
    go("/dashboard/login", data=form)
    for q in ("Zelda+Quixote", "Zelda%20Quixote", "zelda", "%2B1%20617%20555%200143"):
        page = go(f"/dashboard/patients?q={q}")
        assert "Sign in" not in page  # the search ran signed in
    go("/dashboard/patients?q=Zelda+Quixote", use=plain)  # signed out: next= holds the search
    return statuses


def scan(lines: list[str], expect_requests: int) -> None:
    requests = [ln for ln in lines if re.search(r"(GET|POST) /", ln)]
    assert len(requests) >= expect_requests, "\n".join(lines)  # the access lines were written
    bad = [(ln, leaks(ln)) for ln in lines if leaks(ln)]
    assert not bad, bad


@pytest.fixture
def werkzeug_base(app: Any) -> Iterator[str]:
    users.create(app.extensions["triage"].store.r, "nina", PASSWORD, "nurse")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_app_logs_under_werkzeug_hold_no_number_and_no_name(
        app: Any, werkzeug_base: str, caplog: pytest.LogCaptureFixture) -> None:
    captured = Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    try:
        statuses = browse(werkzeug_base)
    finally:
        root.removeHandler(captured)
    assert statuses["/dashboard/patients?q=Zelda+Quixote"] == 200
    assert 403 in statuses.values() and 302 not in statuses.values()  # redirects followed
    scan(captured.lines, expect_requests=4 * len(ENCODINGS) + 6)
    scan([r.getMessage() for r in caplog.records], expect_requests=4 * len(ENCODINGS))


def test_gunicorn_logs_hold_no_number_and_no_name(tmp_path: Path, redis_url: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    users.create(r, "nina", PASSWORD, "nurse")
    with gunicorn(tmp_path, redis_url) as server:
        statuses = browse(server.base)
    assert statuses["/dashboard/patients?q=Zelda+Quixote"] == 200
    lines = server.lines()
    assert any("refused /sms" in ln for ln in lines)  # the app's own warnings are in there
    scan(lines, expect_requests=4 * len(ENCODINGS) + 6)
