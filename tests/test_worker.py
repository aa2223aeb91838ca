"""The worker process: one tick does every job, the loop stops cleanly, ``python -m bot.worker``
pages through the console backend and exits on SIGTERM; the SMS backend is chosen from the
settings."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis

from bot import escalations
from bot.config import ROOT
from bot.notify import ConsoleBackend, SendError, TwilioBackend, make_backend
from bot.paging import record_time
from bot.worker import run_forever, tick
from conftest import (
    API_TOKEN,
    AUTH_TOKEN,
    BASE_URL,
    CARE_TEAM,
    CLUSTER_PASS,
    ON_CALL,
    ONCOLOGY_LINE,
    WORKER_SETTINGS,
    esc,
    records,
    soon,
    urgent,
)

APP_SETTINGS = WORKER_SETTINGS
MIN = 60.0


def test_one_tick_does_every_job(app, sms, new_phone):
    worried, borderline, silent = new_phone(), new_phone(), new_phone()
    urgent(worried)
    soon(borderline)
    silent.conversation("fever", "no", "37.8")  # then no reply
    t0 = time.time()
    done = tick(app, t0)
    assert done.pop("relayed", 0) == 0  # on a cluster: every message moved its own records
    assert done == {"replayed": 0, "abandoned": 0, "records": 2, "overdue": 0, "pages": 1,
                    "calls": 0, "follow_ups": 0}
    done = tick(app, t0 + 16 * MIN)
    done.pop("relayed", None)
    # the silent checklist is swept, read and paged in the same tick; the URGENT one is overdue
    assert done == {"replayed": 0, "abandoned": 1, "records": 1, "overdue": 1, "pages": 2,
                    "calls": 0, "follow_ups": 0}
    done = tick(app, t0 + 61 * MIN)
    assert done["follow_ups"] == 1
    assert len(sms.to(borderline.number)) == 1
    assert {n for n, _ in sms.sent} == {*ON_CALL, borderline.number}


def test_run_forever_ticks_and_stops_on_request(app, sms, phone):
    urgent(phone)
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(app, stop), daemon=True)
    thread.start()
    deadline = time.time() + 10
    while len(sms.sent) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(sms.sent) == 2
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_run_forever_says_ready_once_its_first_tick_wrote_the_heartbeat(app):
    """``serve`` waits for this before it answers: /healthz is "ok" from its first answer,
    never "worker_silent" for the moments before the worker's first turn."""
    from bot.worker import HEARTBEAT

    store = app.extensions["triage"].store
    store.r.delete(HEARTBEAT)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_forever, args=(app, stop), kwargs={"ready": ready},
                              daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        assert store.r.get(HEARTBEAT) is not None
    finally:
        stop.set()
        thread.join(timeout=5)


def test_python_m_bot_worker_pages_to_the_console_and_exits_on_sigterm(
        redis_url, tmp_path, client, phone):
    urgent(phone)
    rid = records(client.application)[0]["id"]
    env = {**os.environ, "REDIS_URL": redis_url, "INSTANCE_PATH": str(tmp_path / "w"),
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "CARE_TEAM_API_TOKEN": API_TOKEN,
           "SECRET_KEY": "test-secret-key", "PUBLIC_BASE_URL": BASE_URL,
           "ONCOLOGY_LINE_NUMBER": ONCOLOGY_LINE, "CARE_TEAM_NUMBER": CARE_TEAM,
           "ON_CALL_NUMBERS": ",".join(ON_CALL), "WORKER_TICK_SECONDS": "1",
           "TWILIO_ACCOUNT_SID": "", "TWILIO_FROM_NUMBER": "", "PYTHONUNBUFFERED": "1",
           "REDIS_CLUSTER": "1" if CLUSTER_PASS else ""}
    proc = subprocess.Popen([sys.executable, "-m", "bot.worker"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kind = redis.RedisCluster if CLUSTER_PASS else redis.Redis
        r = kind.from_url(redis_url, decode_responses=True)
        deadline = time.time() + 20
        while time.time() < deadline and escalations.details(r, rid).get(
                "page_status") != "sent":
            time.sleep(0.1)
        assert escalations.details(r, rid).get("page_status") == "sent"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "[sms to +1********11] URGENT, fever" in out
    assert "[sms to +1********22] URGENT, fever" in out
    assert f"{BASE_URL}/dashboard/escalations/{rid}" in out
    assert phone.number not in out + err
    assert ON_CALL[0] not in out
    assert "worker stopped" in err


def test_backend_is_twilio_only_with_sid_and_from_number():
    base = {"TWILIO_AUTH_TOKEN": "token", "TWILIO_ACCOUNT_SID": "", "TWILIO_FROM_NUMBER": ""}
    assert isinstance(make_backend(base), ConsoleBackend)
    assert isinstance(make_backend({**base, "TWILIO_ACCOUNT_SID": "AC1"}), ConsoleBackend)
    twilio = make_backend({**base, "TWILIO_ACCOUNT_SID": "AC1",
                           "TWILIO_FROM_NUMBER": "+15550009999"})
    assert isinstance(twilio, TwilioBackend) and twilio.from_number == "+15550009999"
    assert twilio.client.http_client.timeout == 15.0  # a stalled send cannot hang the worker


def test_console_backend_masks_the_number():
    out = io.StringIO()
    ConsoleBackend(out).send("+15551234567", "How is your temperature now?")
    assert out.getvalue() == "[sms to +1********67] How is your temperature now?\n"


def test_overdue_uses_the_record_time_not_the_read_time(app, sms, phone):
    # a worker that was down for 20 minutes: the page it sends late is already overdue
    urgent(phone)
    rec = records(app)[0]
    t0 = record_time(rec["id"], rec)
    done = tick(app, t0 + 20 * MIN)
    assert done["overdue"] == 1
    assert esc(app, rec["id"])["overdue"] == "1"
    assert len(sms.sent) == 2 and sms.sent[0][1].startswith("OVERDUE, not acknowledged: URGENT")


def test_a_burst_of_records_is_paged_in_one_tick(app, sms):
    store = app.extensions["triage"].store
    now = time.time()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    for i in range(250):
        store.append_record({"phone": f"+1555000{i:04d}", "flow": "fever", "flows": ["fever"],
                             "tier": "URGENT", "reasons": ["temperature 38.6 C >= 38.0"],
                             "kind": "completed", "conversation_id": f"c{i}",
                             "created_at": created})
    done = tick(app, now)
    assert done["records"] == 250 and done["pages"] == 250
    assert len(sms.sent) == 500


def test_twilio_backend_posts_the_message_to_the_rest_api():
    """The real twilio client against a local stand-in for api.twilio.com: the request it
    makes (path, basic auth, To/From/Body), the sid it returns, and an error answer."""
    import base64
    import json
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[dict[str, Any]] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            seen.append({"path": self.path, "auth": self.headers["Authorization"], **form})
            ok = form["To"] != "+15550000000"
            body = ({"sid": "SMabc123", "status": "queued"} if ok else
                    {"code": 21211, "message": f"The 'To' number {form['To']} is not valid",
                     "status": 400})
            data = json.dumps(body).encode()
            self.send_response(201 if ok else 400)
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
        assert backend.send("+15550001111", "URGENT, fever") == "SMabc123"
        with pytest.raises(SendError) as err:
            backend.send("+15550000000", "URGENT, fever")
    finally:
        server.shutdown()
    assert seen[0]["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
    assert seen[0]["auth"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
    assert (seen[0]["To"], seen[0]["From"], seen[0]["Body"]) == (
        "+15550001111", "+15550009999", "URGENT, fever")
    assert "not valid" in str(err.value) and "+15550000000" not in str(err.value)
