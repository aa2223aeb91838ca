"""Delivery receipts: every page and follow-up carries a StatusCallback that names the record
and the recipient (never the number); Twilio's callbacks, signed with the real
RequestValidator, move each recipient's status forward only; the record shows it (escalation
hash, API JSON). Real Redis, the console backend (or the in-process one), a fake clock."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from bot import escalations, notify
from bot.notify import ConsoleBackend, Receipts, TwilioBackend, make_backend
from bot.paging import record_time
from bot.worker import runtime, tick
from conftest import (
    API_TOKEN,
    AUTH_TOKEN,
    BASE_URL,
    ON_CALL,
    WORKER_SETTINGS,
    actions,
    esc,
    records,
    sign,
    soon,
    urgent,
)

APP_SETTINGS = WORKER_SETTINGS
MIN = 60.0
STATUS_URL_RE = re.compile(rf"^{re.escape(BASE_URL)}/twilio/status/(\d+-\d+)/([0-9a-f]{{12}})$")


class Console(ConsoleBackend):
    """The real console backend (prints, masked), remembering each send's callback URL and
    the message id it returned, so the test can play Twilio's callbacks."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.sent: list[dict[str, Any]] = []

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        sid = super().send(to, body, status_callback)
        self.sent.append({"to": to, "body": body, "url": status_callback, "sid": sid})
        return sid

    @property
    def printed(self) -> str:
        assert isinstance(self.stream, io.StringIO)
        return self.stream.getvalue()


@pytest.fixture
def console(app: Any) -> Console:
    backend = Console()
    app.extensions["sms"] = backend
    return backend


def callback(client: Any, url: str, sid: str, status: str, token: str = AUTH_TOKEN,
             **extra: str) -> Any:
    """What Twilio posts to a StatusCallback, signed as Twilio signs it."""
    form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": "ACtest", "From": "+15550009999", **extra}
    return client.post(url[len(BASE_URL):], data=form,
                       headers={"X-Twilio-Signature": sign(url, form, token)})


def delivery(app: Any, rid: str) -> dict[str, dict[str, Any]]:
    """The record's ``delivery`` field (what the dashboard reads), by masked number."""
    return {e["to"]: e for e in notify.delivery_field(esc(app, rid))}


def paged_urgent(app: Any, phone: Any, console: Console) -> tuple[str, float]:
    urgent(phone)
    rec = records(app)[0]
    t0 = record_time(rec["id"], rec)
    tick(app, t0 + 1)
    assert len(console.sent) == len(ON_CALL)
    return rec["id"], t0


A, B = "+1********11", "+1********22"  # ON_CALL, masked


def test_every_page_carries_a_status_callback_without_the_number(app, console, phone):
    rid, _ = paged_urgent(app, phone, console)
    ids = set()
    for sent in console.sent:
        found = STATUS_URL_RE.match(sent["url"])
        assert found, sent["url"]
        assert found.group(1) == rid
        ids.add(found.group(2))
        assert sent["to"] not in sent["url"] and sent["to"][-4:] not in sent["url"]
        assert phone.number[-4:] not in sent["url"]
    assert len(ids) == 2  # one id per recipient
    d = delivery(app, rid)
    assert set(d) == {A, B}
    assert all(e["status"] == "queued" and e["role"] == "on_call" for e in d.values())
    # the console printed the texts, masked, and never a whole number
    assert f"[sms to {A}] URGENT, fever" in console.printed
    assert ON_CALL[0] not in console.printed


def test_callbacks_move_each_recipient_forward(app, console, phone, client):
    rid, _ = paged_urgent(app, phone, console)
    first, second = console.sent
    assert callback(client, first["url"], first["sid"], "sent").status_code == 204
    assert callback(client, first["url"], first["sid"], "delivered").status_code == 204
    assert callback(client, second["url"], second["sid"], "sending").status_code == 204
    assert callback(client, second["url"], second["sid"], "undelivered",
                    ErrorCode="30003").status_code == 204
    d = delivery(app, rid)
    assert d[A]["status"] == "delivered" and d[A]["delivered_at"]
    assert d[B]["status"] == "undelivered" and d[B]["error"] == "error 30003"
    assert d[B]["delivered_at"] == ""
    assert actions(app, rid)[-2:] == ["sms_delivered", "sms_not_delivered"]
    notes = [e["note"] for e in escalations.events(app.extensions["triage"].store.r, rid)]
    assert f"page to {A}: delivered" in notes
    assert f"page to {B}: undelivered (error 30003)" in notes


def test_out_of_order_and_repeated_callbacks_never_move_back(app, console, phone, client):
    rid, _ = paged_urgent(app, phone, console)
    first, second = console.sent
    # Twilio's callbacks can arrive in any order: delivered first, then the older ones
    for status in ("delivered", "sent", "queued", "undelivered", "failed", "delivered"):
        assert callback(client, first["url"], first["sid"], status).status_code == 204
    assert delivery(app, rid)[A]["status"] == "delivered"
    for status in ("failed", "delivered", "sent"):
        callback(client, second["url"], second["sid"], status, ErrorCode="30008")
    assert delivery(app, rid)[B]["status"] == "failed"  # the first final status stays
    assert actions(app, rid).count("sms_delivered") == 1
    assert actions(app, rid).count("sms_not_delivered") == 1
    # the message's own history keeps every callback, in arrival order
    r = app.extensions["triage"].store.r
    msg = json.loads(r.hget(notify.delivery_key(rid), f"m:{first['sid']}"))
    assert [h[0] for h in msg["history"]][1:] == [
        "delivered", "sent", "queued", "undelivered", "failed", "delivered"]
    # a status that says nothing about delivery changes nothing
    callback(client, second["url"], second["sid"], "receiving")
    assert delivery(app, rid)[B]["status"] == "failed"


def test_a_callback_before_the_worker_noted_the_send_is_kept(app):
    r = app.extensions["triage"].store.r
    rid = app.extensions["triage"].store.append_record({"tier": "URGENT", "phone": "+1555"})
    receipts = Receipts(r, BASE_URL, "k")
    rcpt = receipts.recipient(ON_CALL[0])
    # Twilio answered so fast that "delivered" came in before the worker wrote "queued"
    assert receipts.update(rid, rcpt, "SMfast", "delivered", "", 100.0)["changed"]
    receipts.sent(rid, ON_CALL[0], "on_call", "SMfast", 99.0)
    [entry] = receipts.summary(rid)
    assert entry["status"] == "delivered" and entry["to"] == A
    # a message id of one recipient cannot be used with another recipient's URL
    assert receipts.update(rid, receipts.recipient(ON_CALL[1]), "SMfast", "failed", "",
                           101.0) is None
    assert receipts.summary(rid)[0]["status"] == "delivered"


def test_concurrent_callbacks_lose_nothing(app):
    r = app.extensions["triage"].store.r
    rid = app.extensions["triage"].store.append_record({"tier": "URGENT", "phone": "+1555"})
    receipts = Receipts(r, BASE_URL, "k")
    numbers = [f"+1555000{i:04d}" for i in range(20)]
    for i, n in enumerate(numbers):
        receipts.sent(rid, n, "on_call", f"SM{i}", 1.0)

    def play(i: int, n: str) -> None:
        for status in ("sent", "delivered"):
            receipts.update(rid, receipts.recipient(n), f"SM{i}", status, "", 2.0)

    threads = [threading.Thread(target=play, args=(i, n)) for i, n in enumerate(numbers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = receipts.summary(rid)
    assert len(summary) == 20 and {e["status"] for e in summary} == {"delivered"}
    assert json.loads(esc(app, rid)["delivery"]) == summary


@pytest.mark.parametrize("how", ["unsigned", "wrong token", "tampered", "other url"])
def test_unsigned_or_forged_callbacks_are_refused(app, console, phone, client, how):
    rid, _ = paged_urgent(app, phone, console)
    first, second = console.sent
    form = {"MessageSid": first["sid"], "MessageStatus": "delivered"}
    path = first["url"][len(BASE_URL):]
    headers = {"X-Twilio-Signature": sign(first["url"], form)}
    if how == "unsigned":
        headers = {}
    elif how == "wrong token":
        headers = {"X-Twilio-Signature": sign(first["url"], form, "another-token")}
    elif how == "tampered":
        form = {**form, "MessageStatus": "failed"}
    else:  # signed for the other recipient's URL
        path = second["url"][len(BASE_URL):]
    assert client.post(path, data=form, headers=headers).status_code == 403
    assert {e["status"] for e in delivery(app, rid).values()} == {"queued"}
    assert "sms_delivered" not in actions(app, rid)


def test_signed_callbacks_for_unknown_records_or_recipients_are_404(app, console, phone,
                                                                   client):
    rid, _ = paged_urgent(app, phone, console)
    first, second = console.sent
    unknown = first["url"].replace(rid, "1-0")
    assert callback(client, unknown, first["sid"], "delivered").status_code == 404
    other = f"{BASE_URL}/twilio/status/{rid}/0123456789ab"
    assert callback(client, other, first["sid"], "delivered").status_code == 404
    # the other recipient's message id on this recipient's URL
    assert callback(client, first["url"], second["sid"], "delivered").status_code == 404
    assert {e["status"] for e in delivery(app, rid).values()} == {"queued"}


def test_a_failed_send_shows_failed_and_the_retry_is_tracked_again(app, phone, client):
    class Flaky(Console):
        fails = 1

        def send(self, to: str, body: str, status_callback: str | None = None) -> str:
            if self.fails:
                self.fails -= 1
                raise notify.SendError("twilio: HTTP 503")
            return super().send(to, body, status_callback)

    backend = Flaky()
    app.extensions["sms"] = backend
    urgent(phone)
    rec = records(app)[0]
    t0 = record_time(rec["id"], rec)
    tick(app, t0)
    d = delivery(app, rec["id"])
    assert d[A]["status"] == "failed" and "not sent: twilio: HTTP 503" in d[A]["error"]
    assert d[B]["status"] == "queued"
    tick(app, t0 + 30)  # the retry, to the number that did not get the page
    d = delivery(app, rec["id"])
    assert d[A]["status"] == "queued" and d[A]["messages"] == 2
    retry = backend.sent[-1]
    callback(client, retry["url"], retry["sid"], "delivered")
    assert delivery(app, rec["id"])[A]["status"] == "delivered"


def test_follow_up_to_the_patient_is_tracked_on_its_record(app, console, phone, client):
    soon(phone)
    rec = records(app)[0]
    t0 = record_time(rec["id"], rec)
    tick(app, t0 + 1)
    tick(app, t0 + 60 * MIN)
    [sent] = console.sent
    assert sent["to"] == phone.number
    found = STATUS_URL_RE.match(sent["url"])
    assert found and found.group(1) == rec["id"] and phone.number[-4:] not in sent["url"]
    [entry] = delivery(app, rec["id"]).values()
    assert entry["role"] == "patient" and entry["status"] == "queued"
    assert entry["to"] == phone.number[:2] + "*" * (len(phone.number) - 4) + phone.number[-2:]
    callback(client, sent["url"], sent["sid"], "undelivered", ErrorCode="30005")
    [entry] = delivery(app, rec["id"]).values()
    assert entry["status"] == "undelivered"
    assert actions(app, rec["id"])[-1] == "sms_not_delivered"
    assert "follow-up text to +1" in escalations.events(
        app.extensions["triage"].store.r, rec["id"])[-1]["note"]


def test_the_api_shows_delivery_per_recipient(app, console, phone, client):
    rid, _ = paged_urgent(app, phone, console)
    first, _second = console.sent
    callback(client, first["url"], first["sid"], "delivered")
    url = f"/api/escalations/{rid}/delivery"
    assert client.get(url).status_code == 401
    resp = client.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["id"] == rid
    assert {e["to"]: e["status"] for e in body["delivery"]} == {A: "delivered", B: "queued"}
    assert body["voice"]["status"] == "" and body["voice"]["calls"] == []  # URGENT: no calls
    text = resp.get_data(as_text=True)
    assert ON_CALL[0] not in text and phone.number not in text
    missing = client.get("/api/escalations/1-0/delivery",
                         headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert missing.status_code == 404


def test_without_public_base_url_no_callback_is_asked_for(redis_url, tmp_path, phone):
    from conftest import make_app

    urgent(phone)  # through the app of the other tests (its webhook URL is signed)
    app = make_app(redis_url, tmp_path, PUBLIC_BASE_URL="")  # a worker without the setting
    backend = Console()
    app.extensions["sms"] = backend
    tick(app, record_time(records(app)[0]["id"], records(app)[0]))
    assert [s["url"] for s in backend.sent] == [None, None]
    assert {e["status"] for e in delivery(app, records(app)[0]["id"]).values()} == {"queued"}


def test_runtime_tracks_through_one_outbox(app, console):
    rt = runtime(app)
    assert rt.pager.outbox is rt.follow_ups.backend is rt.voice.outbox
    assert rt.pager.outbox.backend is console


def test_twilio_backend_asks_for_the_status_callback_and_places_calls():
    """The real twilio client against a local stand-in for api.twilio.com."""
    seen: list[dict[str, Any]] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            seen.append({"path": self.path, "auth": self.headers["Authorization"],
                         **{k: v if len(v) > 1 else v[0] for k, v in form.items()}})
            body = {"sid": "CA1" if "Calls" in self.path else "SM1", "status": "queued"}
            data = json.dumps(body).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = make_backend({"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "tok",
                                "TWILIO_FROM_NUMBER": "+15550009999"})
        assert isinstance(backend, TwilioBackend)
        backend.client.api.base_url = f"http://127.0.0.1:{server.server_port}"
        status_url = f"{BASE_URL}/twilio/status/1-0/0123456789ab"
        assert backend.send("+15550001111", "EMERGENCY", status_url) == "SM1"
        twiml = '<Response><Say>hello</Say></Response>'
        call_url = f"{BASE_URL}/twilio/voice/1-0/1/status"
        assert backend.call("+15550001111", twiml, call_url, 25) == "CA1"
    finally:
        server.shutdown()
    message, call = seen
    assert message["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
    assert message["StatusCallback"] == status_url
    assert call["path"] == "/2010-04-01/Accounts/AC123/Calls.json"
    assert call["auth"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
    assert (call["To"], call["From"], call["Twiml"]) == ("+15550001111", "+15550009999", twiml)
    assert call["StatusCallback"] == call_url and call["StatusCallbackMethod"] == "POST"
    assert call["StatusCallbackEvent"] == "completed" and call["Timeout"] == "25"
