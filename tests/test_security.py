"""Care-team security (issue 8, item 7): ProxyFix, sign-in limits a stranger cannot turn
against a nurse, server-side sessions that sign-out and a new password revoke, security
headers and no-store, HSTS over https, the request size cap before the signature check, and
next= validation. Flask test client on a real Redis; the size cap also under real gunicorn."""

from __future__ import annotations

import hashlib
import io
import re
import select
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from twilio.request_validator import RequestValidator

from bot import audit, create_app, users
from bot.dashboard import sessions, throttle
from bot.dashboard.security import safe_next
from conftest import API_TOKEN, BASE_URL, Phone, settings, sign
from servers import gunicorn

PASSWORD = "correct-horse-battery"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
# Small limits so the tests reach them quickly (the defaults are in throttle.Limits).
APP_SETTINGS = {"LOGIN_ADDRESS_MAX_FAILURES": 6, "LOGIN_SPRAY_MAX_USERNAMES": 4}


def r(app: Any) -> Any:
    return app.extensions["triage"].store.r


def csrf(client: Any, path: str = "/dashboard/login", **kw: Any) -> str:
    html = client.get(path, **kw).get_data(as_text=True)
    found = TOKEN_RE.search(html)
    assert found, html[:500]
    return found.group(1)


def login(client: Any, username: str, password: str = PASSWORD, addr: str = "10.0.0.1",
          headers: dict[str, str] | None = None, **form: str) -> Any:
    env = {"REMOTE_ADDR": addr}
    token = csrf(client, environ_base=env, headers=headers)
    return client.post("/dashboard/login", data={"username": username, "password": password,
                                                 "csrf_token": token, **form},
                       environ_base=env, headers=headers)


def logout(client: Any) -> Any:
    return client.post("/dashboard/logout", data={"csrf_token": csrf(client, "/dashboard/")})


def session_cookie(client: Any) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else None


@pytest.fixture
def nina(app: Any) -> Any:
    users.create(r(app), "nina", PASSWORD, "nurse")
    return app


# --------------------------------------------------------------------------- sign-in limits

def test_a_stranger_cannot_lock_a_nurse_out_of_her_workstation(nina: Any) -> None:
    desk = nina.test_client()
    assert login(desk, "nina", addr="10.0.0.7").status_code == 303  # she has signed in here
    logout(desk)
    stranger = nina.test_client()
    statuses = [login(stranger, "nina", "wrong-password!", addr=f"198.51.100.{i}").status_code
                for i in range(1, 12)]  # many addresses, as a botnet would
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
    # a fresh browser is slowed (exponential backoff, not a lock)...
    resp = login(nina.test_client(), "nina", addr="10.0.0.8")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) <= 300
    # ...her own workstation is not.
    assert login(desk, "nina", addr="10.0.0.7").status_code == 303
    assert desk.get("/dashboard/").status_code == 200


def test_username_backoff_doubles_and_is_capped(nina: Any) -> None:
    rr = r(nina)
    limits = throttle.Limits()
    attempt = throttle.Attempt("nina", "203.0.113.1")
    now = 1_000_000.0
    for _ in range(limits.user_free - 1):
        throttle.record_failure(rr, attempt, limits, now)
    assert throttle.refused(rr, attempt, limits, now) is None  # four failures: no delay
    throttle.record_failure(rr, attempt, limits, now)
    elsewhere = throttle.Attempt("nina", "203.0.113.2")  # backoff is per username
    assert throttle.refused(rr, elsewhere, limits, now + 1.9).seconds == 1
    assert throttle.refused(rr, elsewhere, limits, now + 2.01) is None
    throttle.record_failure(rr, elsewhere, limits, now + 3)
    assert throttle.refused(rr, attempt, limits, now + 3 + 3.9) is not None  # 4 s now
    assert throttle.refused(rr, attempt, limits, now + 3 + 4.01) is None
    assert [throttle.backoff_delay(n, limits) for n in (4, 5, 6, 7, 8, 20)] == [
        0, 2, 4, 8, 16, limits.user_cap]
    # a known device for nina is exempt; a device cookie for someone else is not
    device = throttle.Attempt("nina", "203.0.113.2", device="d1")
    throttle.record_failure(rr, attempt, limits, now + 10)
    assert throttle.refused(rr, device, limits, now + 10.5) is None
    assert throttle.refused(rr, attempt, limits, now + 10.5) is not None


def test_refused_attempts_are_not_counted_and_success_clears_the_backoff(nina: Any) -> None:
    for i in range(5):
        assert login(nina.test_client(), "nina", "nope-nope-nope", addr=f"192.0.2.{i}"
                     ).status_code == 401
    key = throttle.backoff_key("nina")
    assert r(nina).hget(key, "n") == "5"
    assert login(nina.test_client(), "nina", "nope-nope-nope", addr="192.0.2.50"
                 ).status_code == 429
    assert r(nina).hget(key, "n") == "5"  # the refused attempt was not checked or counted
    r(nina).hset(key, "at", time.time() - 3)  # the 2 s wait has passed
    assert login(nina.test_client(), "nina", addr="192.0.2.51").status_code == 303
    assert not r(nina).exists(key)


def test_per_address_limit_across_usernames(nina: Any) -> None:
    client = nina.test_client()
    for name in ("ann", "bob", "cy", "ann", "bob", "cy"):  # six failures, three names
        assert login(client, name, "wrong-password!", addr="10.9.9.9").status_code == 401
    resp = login(client, "nina", addr="10.9.9.9")  # even the right password
    assert resp.status_code == 429
    refusals = [e["detail"] for e in audit.entries(r(nina), action="login_failed")]
    assert refusals[0] == "refused: too many failures from this address"
    assert login(nina.test_client(), "nina", addr="10.9.9.10").status_code == 303


def test_password_spraying_across_usernames_is_limited(nina: Any) -> None:
    client = nina.test_client()
    for name in ("u1", "u2", "u3", "u4"):
        assert login(client, name, "Winter2026!!", addr="10.8.8.8").status_code == 401
    assert login(client, "nina", addr="10.8.8.8").status_code == 429  # a fifth name: refused
    assert login(client, "u1", "Winter2026!!", addr="10.8.8.8").status_code == 401  # not new
    assert login(nina.test_client(), "nina", addr="10.8.8.9").status_code == 303


def test_device_cookie_is_signed(nina: Any) -> None:
    secret = nina.secret_key
    good = throttle.remember(secret, None, "nina")
    assert throttle.device_for(secret, good, "nina")
    assert throttle.device_for(secret, good, "ada") is None
    assert throttle.device_for("another-secret", good, "nina") is None
    assert throttle.device_for(secret, good[:-2] + "xx", "nina") is None


# --------------------------------------------------------------------------- ProxyFix

def proxied_app(redis_url: str, tmp_path: Path, hops: int) -> Any:
    return create_app(settings(redis_url, tmp_path, PROXY_FIX_HOPS=hops))


def test_proxy_hops_give_the_real_client_address(nina: Any, redis_url: str,
                                                 tmp_path: Path) -> None:
    behind = proxied_app(redis_url, tmp_path, 1)
    stranger = behind.test_client()
    via = {"X-Forwarded-For": "203.0.113.5"}
    for _ in range(users.MAX_FAILURES):
        assert login(stranger, "nina", "wrong-password!", addr="127.0.0.1", headers=via
                     ).status_code == 401
    assert r(behind).exists(throttle.address_key("203.0.113.5"))
    assert not r(behind).exists(throttle.address_key("127.0.0.1"))
    # the stranger's address is locked for nina; a forged extra hop does not get round it
    forged = {"X-Forwarded-For": "1.2.3.4, 203.0.113.5"}
    r(behind).hset(throttle.backoff_key("nina"), "at", time.time() - 60)
    assert login(stranger, "nina", addr="127.0.0.1", headers=forged).status_code == 429
    # another client behind the same proxy is not
    other = {"X-Forwarded-For": "203.0.113.9"}
    assert login(behind.test_client(), "nina", addr="127.0.0.1", headers=other
                 ).status_code == 303


def test_behind_a_tls_proxy_twilio_signatures_match_without_public_base_url(
        redis_url: str, tmp_path: Path) -> None:
    """Twilio signs the https URL it called; the proxy forwards plain http. With the proxy
    counted, the webhook sees the https URL Twilio signed."""
    form = {"From": "+15550007777", "Body": "hello", "MessageSid": "SM" + uuid.uuid4().hex}
    signature = sign("https://localhost/sms", form)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "54.172.60.1"}
    for hops, expected in ((0, 403), (1, 200)):
        app = create_app(settings(redis_url, tmp_path, PUBLIC_BASE_URL="", PROXY_FIX_HOPS=hops))
        resp = app.test_client().post("/sms", data=form, headers=headers)
        assert resp.status_code == expected, hops


def test_without_configured_proxy_forwarded_headers_are_ignored(nina: Any) -> None:
    client = nina.test_client()
    via = {"X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https"}
    assert login(client, "nobody", "wrong-password!", addr="10.1.1.1", headers=via
                 ).status_code == 401
    assert r(nina).exists(throttle.address_key("10.1.1.1"))
    assert not r(nina).exists(throttle.address_key("203.0.113.77"))
    resp = client.get("/healthz", headers=via)
    assert "Strict-Transport-Security" not in resp.headers


def test_hsts_when_served_over_https(app: Any, redis_url: str, tmp_path: Path) -> None:
    assert "Strict-Transport-Security" not in app.test_client().get("/healthz").headers
    secure = app.test_client().get("/healthz", base_url="https://triage.example.org")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    behind = proxied_app(redis_url, tmp_path, 1)
    resp = behind.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")


# --------------------------------------------------------------------------- sessions

def test_the_cookie_holds_only_a_random_id_and_the_data_is_in_redis(nina: Any) -> None:
    client = nina.test_client()
    csrf(client)
    anonymous = session_cookie(client)
    # before sign-in: only the CSRF token, in a signed cookie; strangers write nothing to Redis
    assert anonymous and anonymous.startswith(sessions.ANONYMOUS_PREFIX)
    for _ in range(50):
        csrf(nina.test_client())
    assert not r(nina).keys("triage:websession:*")
    tampered = nina.test_client()
    tampered.set_cookie("session", anonymous[:-3] + "abc")
    html = tampered.get("/dashboard/login").get_data(as_text=True)
    assert TOKEN_RE.search(html)  # a fresh session, not an error
    assert login(client, "nina").status_code == 303
    sid = session_cookie(client)
    assert sid and sid != anonymous  # a new id at sign-in (no fixation)
    assert "nina" not in sid and len(sid) == 43
    key = sessions.session_key(sid)
    assert key == "triage:websession:" + hashlib.sha256(sid.encode()).hexdigest()
    assert "nina" in r(nina).get(key)
    assert 11.9 * 3600 < r(nina).ttl(key) <= 12 * 3600
    assert not r(nina).keys(f"*{sid}*")  # the id itself is nowhere in Redis


def test_a_copied_cookie_stops_working_after_logout(nina: Any) -> None:
    nurse = nina.test_client()
    assert login(nurse, "nina").status_code == 303
    sid = session_cookie(nurse)
    thief = nina.test_client()
    thief.set_cookie("session", sid)
    assert thief.get("/dashboard/").status_code == 200  # the copy works while signed in...
    assert logout(nurse).status_code == 303
    assert not r(nina).exists(sessions.session_key(sid))
    resp = thief.get("/dashboard/")  # ...and not after sign-out
    assert resp.status_code == 302 and "/dashboard/login" in resp.headers["Location"]
    assert thief.get("/dashboard/queue.json").status_code == 401


def test_a_new_password_ends_every_session_of_that_user(nina: Any) -> None:
    first, second = nina.test_client(), nina.test_client()
    assert login(first, "nina").status_code == 303
    assert login(second, "nina", addr="10.0.0.2").status_code == 303
    sid = session_cookie(first)
    result = nina.test_cli_runner().invoke(
        args=["create-user", "nina", "--role", "nurse", "--password-stdin", "--replace"],
        input="a-brand-new-password\n")
    assert result.exit_code == 0, result.output
    assert first.get("/dashboard/").status_code == 302
    assert second.get("/dashboard/").status_code == 302
    assert not r(nina).exists(sessions.session_key(sid))
    assert login(first, "nina", "a-brand-new-password").status_code == 303


def test_revoke_user_ends_all_sessions(nina: Any) -> None:
    a, b = nina.test_client(), nina.test_client()
    login(a, "nina")
    login(b, "nina", addr="10.0.0.3")
    assert sessions.revoke_user(r(nina), "nina") == 2
    assert a.get("/dashboard/").status_code == 302 and b.get("/dashboard/").status_code == 302


def test_a_forged_or_unknown_session_id_is_signed_out(nina: Any) -> None:
    client = nina.test_client()
    for value in ("A" * 43, "../../etc", "nina", ""):
        client.set_cookie("session", value)
        assert client.get("/dashboard/").status_code == 302


# --------------------------------------------------------------------------- headers

def test_security_headers_and_no_store_on_every_response(nina: Any, phone: Phone) -> None:
    nurse = nina.test_client()
    login(nurse, "nina")
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    rid = None
    phone.conversation("fever", "no", "38.6")
    rid = nina.extensions["triage"].store.records()[0]["id"]
    responses = {
        "sms": phone.post("hello"),
        "healthz": nurse.get("/healthz"),
        "api list": nurse.get("/api/escalations", headers=bearer),
        "api patient": nurse.get(f"/api/patients/{phone.number}", headers=bearer),
        "api 401": nurse.get("/api/escalations"),
        "queue": nurse.get("/dashboard/"),
        "queue.json": nurse.get("/dashboard/queue.json"),
        "alarm.json": nurse.get("/dashboard/alarm.json"),
        "detail": nurse.get(f"/dashboard/escalations/{rid}"),
        "patient": nurse.get(f"/dashboard/patients/{phone.number}"),
        "search": nurse.get("/dashboard/patients?q=ann"),
        "csv": nurse.get("/dashboard/export.csv"),
        "login page": nina.test_client().get("/dashboard/login"),
        "404": nurse.get("/nowhere"),
        "413": nurse.post("/sms", data=b"x" * (nina.config["MAX_CONTENT_LENGTH"] + 1),
                          content_type="application/x-www-form-urlencoded"),
    }
    assert responses["413"].status_code == 413 and responses["queue"].status_code == 200
    assert responses["api patient"].status_code in (200, 404)
    for name, resp in responses.items():
        h = resp.headers
        assert h["X-Content-Type-Options"] == "nosniff", name
        assert h["X-Frame-Options"] == "DENY", name
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"], name
        assert "script-src 'self'" in h["Content-Security-Policy"], name
        assert h["Referrer-Policy"] == "same-origin", name
        assert h["Cache-Control"] == "no-store", name
    static = nurse.get("/dashboard/static/dashboard.css")
    assert static.status_code == 200 and static.headers["X-Content-Type-Options"] == "nosniff"
    assert static.headers.get("Cache-Control") != "no-store"  # no patient data: cacheable


# --------------------------------------------------------------------------- size cap

class CountingStream(io.RawIOBase):
    """A huge request body that is made only if somebody reads it, and counts what was."""

    def __init__(self, size: int) -> None:
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.read_bytes)
        buf[:n] = b"a" * n
        self.read_bytes += n
        return n


def test_size_cap_is_enforced_before_the_signature_is_checked(
        app: Any, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real_validate = RequestValidator.validate

    def spy(self: Any, *args: Any, **kwargs: Any) -> bool:
        checked.append("validate")
        return real_validate(self, *args, **kwargs)

    monkeypatch.setattr(RequestValidator, "validate", spy)
    size = 150 * 1024 * 1024
    for path in ("/sms", "/dashboard/login", "/api/patients/+15550001111"):
        body = CountingStream(size)
        resp = client.open(path, method="PUT" if path.startswith("/api") else "POST",
                           content_type="application/x-www-form-urlencoded",
                           headers={"X-Twilio-Signature": "bogus"},
                           environ_overrides={"wsgi.input": body, "CONTENT_LENGTH": str(size)})
        assert resp.status_code == 413, path
        assert body.read_bytes == 0, path  # not a byte of it was read
    assert checked == []  # the signature work never started
    # a chunked body (no Content-Length) is cut at the cap as it is read: 413, not 500
    body = CountingStream(size)
    resp = client.post("/sms", content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": "bogus"},
                       environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True,
                                          "HTTP_TRANSFER_ENCODING": "chunked",
                                          "CONTENT_LENGTH": ""})
    assert resp.status_code == 413
    assert body.read_bytes <= app.config["MAX_CONTENT_LENGTH"] + 64 * 1024
    # an ordinary text still works
    assert Phone(client).send("hello")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def post_huge(port: int, head: bytes, piece: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then up to ``total`` bytes of body in ``piece``s, reading the answer as
    soon as there is one (the server may answer and close without reading the rest).
    Returns the status line and how much body was sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break  # answered
            try:
                s.sendall(piece)
            except OSError:
                break
            sent += len(piece)
        select.select([s], [], [], 10)
        try:
            answer = s.recv(200)
        except OSError as exc:
            answer = repr(exc).encode()
    return answer.split(b"\r\n", 1)[0], sent


def test_a_150_mb_post_does_not_grow_a_gunicorn_worker(tmp_path: Path, redis_url: str) -> None:
    redis_lib.Redis.from_url(redis_url).flushdb()
    with gunicorn(tmp_path, redis_url) as server:
        port = int(server.base.rsplit(":", 1)[1])
        [worker] = server.worker_pids()
        before = rss_kb(worker)
        size = 150 * 1024 * 1024
        form = {"From": "+15550001234", "Body": "x"}
        head = (f"POST /sms HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {sign(BASE_URL + '/sms', form)}\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode()
        status, sent = post_huge(port, head, b"a" * 65536, size)
        # the same without a Content-Length: chunked
        head = (f"POST /sms HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {sign(BASE_URL + '/sms', form)}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
        piece = b"a" * 65536
        chunked_status, sent_chunked = post_huge(
            port, head, f"{len(piece):x}\r\n".encode() + piece + b"\r\n", size)
        after = rss_kb(worker)
        print(f"worker RSS {before} KiB before, {after} KiB after two 150 MB POSTs "
              f"(sent {sent >> 20} MiB + {sent_chunked >> 20} MiB before the server closed)")
        assert status.startswith(b"HTTP/1.1 413"), status
        assert chunked_status.startswith(b"HTTP/1.1 413"), chunked_status
        assert after - before < 10 * 1024, (before, after)  # KiB: under 10 MB of growth
        assert server.worker_pids() == [worker]  # the same worker, alive
        # and it still answers a real, signed text
        form = {"From": "+1555" + str(uuid.uuid4().int)[:7], "Body": "hello",
                "MessageSid": "SM" + uuid.uuid4().hex}
        import urllib.parse
        import urllib.request

        req = urllib.request.Request(server.base + "/sms", data=urllib.parse.urlencode(
            form).encode(), headers={"X-Twilio-Signature": sign(server.base + "/sms", form)})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    log = "\n".join(server.lines())
    assert "over MAX_CONTENT_LENGTH" in log and "Traceback" not in log


# --------------------------------------------------------------------------- next=

BAD_NEXT = ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
            "/dashboard\nSet-Cookie: a=b", "/dashboard/\r\nX-Injected: 1", "/dashboard%0d%0aX: y",
            "javascript:alert(1)", "/dashboard/../../etc/passwd", "/dashboard/%2e%2e/%2e%2e/x",
            "/dashboard//evil.example", "/dashboardx", "http:/dashboard", " /dashboard/",
            "/dashboard/login", "/dashboard/logout", "\t/dashboard/", "/dashboard/\x00",
            "/dashboard/\u2028x", "/dashboard/%00", "x" * 3000, "/dashboard/?q=<script>"]


@pytest.mark.parametrize("target", BAD_NEXT)
def test_bad_next_is_ignored_never_500(target: str) -> None:
    assert safe_next(target) is None


def test_next_through_the_login_page_and_form(nina: Any) -> None:
    assert safe_next("/dashboard/patients?q=ann&status=active") == (
        "/dashboard/patients?q=ann&status=active")
    assert safe_next("/dashboard/escalations/1732300000000-0") == (
        "/dashboard/escalations/1732300000000-0")
    anon = nina.test_client()
    for target in BAD_NEXT:
        page = anon.get("/dashboard/login", query_string={"next": target})
        assert page.status_code == 200, target
        assert 'name="next" value=""' in page.get_data(as_text=True), target
        resp = login(nina.test_client(), "nina", next=target)
        assert resp.status_code == 303 and resp.headers["Location"] == "/dashboard/", target
    nurse = nina.test_client()
    login(nurse, "nina")
    for target in BAD_NEXT:
        resp = nurse.get("/dashboard/login", query_string={"next": target})
        assert resp.status_code == 302 and resp.headers["Location"] == "/dashboard/", target
    resp = login(nina.test_client(), "nina", next="/dashboard/patients?q=ann")
    assert resp.headers["Location"] == "/dashboard/patients?q=ann"


def test_security_headers_replace_what_a_view_set(nina: Any) -> None:
    """A header the view already set (any case) is replaced, never doubled; the others are
    added once."""
    from flask import Response

    from bot.dashboard.security import security_headers

    with nina.test_request_context("/api/escalations", base_url="https://x.test"):
        resp = Response("x", headers=[("cache-control", "public, max-age=60"),
                                      ("X-Frame-Options", "SAMEORIGIN"), ("X-Other", "1")])
        h = security_headers(resp).headers
        assert h.getlist("Cache-Control") == ["no-store"]
        assert h.getlist("X-Frame-Options") == ["DENY"]
        assert h.getlist("X-Content-Type-Options") == ["nosniff"]
        assert h.getlist("Strict-Transport-Security") == ["max-age=31536000"]
        assert h.getlist("Pragma") == ["no-cache"] and h["X-Other"] == "1"
    with nina.test_request_context("/dashboard/static/dashboard.css"):
        resp = Response("x", headers=[("Cache-Control", "public")])
        resp = security_headers(resp)
    assert resp.headers.getlist("Cache-Control") == ["public"]  # static: the view's own
