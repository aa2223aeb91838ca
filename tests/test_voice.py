"""Voice escalation of an EMERGENCY page: not delivered within 2 minutes or not acknowledged
within 5 -> a call to the rota's first number (TwiML <Say> + <Gather numDigits=1>), 1 pressed
acknowledges (audited, masked), anything else -> the next number, cycling up to a bound; a
killed worker never places the same step twice. The console backend, simulated Twilio
callbacks signed with the real RequestValidator, real Redis, a fake clock (no sleeps)."""

from __future__ import annotations

import io
import json
import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from bot import audit, escalations
from bot.notify import ConsoleBackend, SendError
from bot.paging import record_time
from bot.voice import VOICE_DUE, voice_key
from bot.worker import runtime, tick
from conftest import (
    AUTH_TOKEN,
    BASE_URL,
    ON_CALL,
    WORKER_SETTINGS,
    actions,
    esc,
    make_app,
    records,
    sign,
    urgent,
)

THIRD = "+15550003333"
APP_SETTINGS = {**WORKER_SETTINGS, "ON_CALL_ROTA": f"{ON_CALL[0]},{ON_CALL[1]},{THIRD}",
                "VOICE_MAX_CALLS": 4}
MIN = 60.0
A, B, C = "+1********11", "+1********22", "+1********33"
STEP = 180.0  # VOICE_STEP_TIMEOUT_SECONDS


class Console(ConsoleBackend):
    """The real console backend, remembering what it was asked to send and to call."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.sent: list[dict[str, Any]] = []
        self.dialed: list[dict[str, Any]] = []

    def send(self, to: str, body: str, status_callback: str | None = None) -> str:
        sid = super().send(to, body, status_callback)
        self.sent.append({"to": to, "url": status_callback, "sid": sid})
        return sid

    def call(self, to: str, twiml: str, status_callback: str | None = None,
             ring_seconds: int = 30) -> str:
        sid = super().call(to, twiml, status_callback, ring_seconds)
        self.dialed.append({"to": to, "twiml": twiml, "url": status_callback, "sid": sid,
                            "ring": ring_seconds})
        return sid

    @property
    def printed(self) -> str:
        assert isinstance(self.stream, io.StringIO)
        return self.stream.getvalue()

    def numbers(self) -> list[str]:
        return [d["to"] for d in self.dialed]


@pytest.fixture
def console(app: Any) -> Console:
    backend = Console()
    app.extensions["sms"] = backend
    return backend


def twilio_post(client: Any, url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> Any:
    form = {"AccountSid": "ACtest", **form}
    return client.post(url[len(BASE_URL):], data=form,
                       headers={"X-Twilio-Signature": sign(url, form, token)})


def gather_url(twiml: str) -> str:
    [first, *_] = ET.fromstring(twiml).iter("Gather")
    return first.get("action") or ""


def press(client: Any, call: dict[str, Any], digits: str) -> Any:
    return twilio_post(client, gather_url(call["twiml"]),
                       {"CallSid": call["sid"], "Digits": digits})


def call_status(client: Any, call: dict[str, Any], status: str) -> Any:
    return twilio_post(client, call["url"], {"CallSid": call["sid"], "CallStatus": status})


def delivered(client: Any, sent: dict[str, Any]) -> None:
    form = {"MessageSid": sent["sid"], "MessageStatus": "delivered"}
    assert twilio_post(client, sent["url"], form).status_code == 204


def emergency(app: Any, phone: Any) -> tuple[str, float]:
    phone.send("my son cant breathe")
    rec = records(app)[0]
    assert rec["tier"] == "EMERGENCY"
    return rec["id"], record_time(rec["id"], rec)


def calls(app: Any, rid: str) -> list[dict[str, Any]]:
    from bot import voice

    return voice.summary(app.extensions["triage"].store.r, rid)["calls"]


def r(app: Any) -> Any:
    return app.extensions["triage"].store.r


# --------------------------------------------------------------------------- when it calls

def test_page_not_delivered_within_2_minutes_calls_the_first_number(app, console, phone):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    assert len(console.sent) == 2 and console.dialed == []
    assert esc(app, rid)["voice_status"] == "watching"
    tick(app, t0 + 2 * MIN - 1)
    assert console.dialed == []
    done = tick(app, t0 + 2 * MIN)
    assert done["calls"] == 1
    [call] = console.dialed
    assert call["to"] == ON_CALL[0]
    assert call["url"] == f"{BASE_URL}/twilio/voice/{rid}/1/status"
    assert call["ring"] == 30
    # what is said: the tier, the checklist, the escalation id read out, press 1
    root = ET.fromstring(call["twiml"])
    gathers = list(root.iter("Gather"))
    assert gathers and all(g.get("numDigits") == "1" and g.get("method") == "POST"
                           for g in gathers)
    assert gathers[0].get("action") == f"{BASE_URL}/twilio/voice/{rid}/1/gather"
    said = " ".join(s.text or "" for s in gathers[0].iter("Say"))
    assert "Emergency escalation" in said
    assert " ".join("dash" if ch == "-" else ch for ch in rid) in said
    assert "Press 1 to acknowledge" in said
    assert phone.number[-4:] not in call["twiml"] and "breathe" not in call["twiml"]
    d = esc(app, rid)
    assert d["voice_status"] == "calling" and d["voice_step"] == "1"
    assert d["voice_reason"] == "page not delivered within 2 min"
    assert actions(app, rid)[-1] == "voice_call"
    # the console printed what the call says, with the number masked
    assert f"[call to {A}] This is the symptom triage service. Emergency escalation" \
        in console.printed
    assert "[waits for 1 key]" in console.printed and ON_CALL[0] not in console.printed
    # the same moment again, or a second tick: no second call
    assert tick(app, t0 + 2 * MIN)["calls"] == 0 and len(console.dialed) == 1


def test_delivered_but_not_acknowledged_calls_at_5_minutes(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    delivered(client, console.sent[1])  # the second on-call number got it
    tick(app, t0 + 2 * MIN)
    tick(app, t0 + 5 * MIN - 1)
    assert console.dialed == []
    assert float(esc(app, rid)["voice_next_at"]) == t0 + 5 * MIN
    tick(app, t0 + 5 * MIN)
    assert console.numbers() == [ON_CALL[0]]
    assert esc(app, rid)["voice_reason"] == "not acknowledged within 5 min"


def test_page_failed_to_every_number_calls_at_once(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    for sent in console.sent:
        form = {"MessageSid": sent["sid"], "MessageStatus": "undelivered", "ErrorCode": "30003"}
        assert twilio_post(client, sent["url"], form).status_code == 204
    tick(app, t0 + 20)  # the next tick, long before 2 minutes
    assert console.numbers() == [ON_CALL[0]]
    assert esc(app, rid)["voice_reason"] == "page failed or undelivered to every on-call number"


def test_acknowledged_on_the_dashboard_in_time_never_calls(app, console, phone):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    escalations.acknowledge(r(app), rid, "nurse.kim", now=t0 + 60)
    for minutes in (2, 5, 10, 20):
        tick(app, t0 + minutes * MIN)
    assert console.dialed == []
    assert esc(app, rid)["voice_status"] == "not_needed"
    assert r(app).zscore(VOICE_DUE, rid) is None


def test_urgent_is_never_called(app, console, phone):
    urgent(phone)
    rec = records(app)[0]
    t0 = record_time(rec["id"], rec)
    for minutes in (0, 2, 5, 16):
        tick(app, t0 + minutes * MIN)
    assert console.dialed == [] and "voice_status" not in esc(app, rec["id"])


# --------------------------------------------------------------------------- the call's answer

def test_pressing_1_acknowledges_by_voice_and_stops_the_ladder(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    [call] = console.dialed
    resp = press(client, call, "1")
    assert resp.status_code == 200 and resp.mimetype == "text/xml"
    assert "Acknowledged" in resp.get_data(as_text=True)
    assert escalations.status(r(app), rid) == "acknowledged"
    d = esc(app, rid)
    assert d["acknowledged_by"] == f"voice {A}" and d["voice_status"] == "acknowledged"
    [entry] = audit.entries(r(app), action="ack")
    assert (entry["who"], entry["target"]) == (f"voice {A}", rid)
    assert "pressed 1" in entry["detail"]
    assert ON_CALL[0] not in json.dumps(entry)
    assert actions(app, rid)[-2:] == ["acknowledged", "voice_result"]
    # the hang-up that follows changes nothing; no further calls
    assert call_status(client, call, "completed").status_code == 204
    for minutes in (3, 6, 10, 30):
        tick(app, t0 + minutes * MIN)
    assert len(console.dialed) == 1
    assert calls(app, rid)[0]["outcome"] == "acknowledged"
    assert r(app).zscore(VOICE_DUE, rid) is None


@pytest.mark.parametrize(("answer", "detail"), [
    (("press", "9"), "pressed 9: not acknowledged"),
    (("status", "no-answer"), "no answer"),
    (("status", "busy"), "line busy"),
    (("status", "completed"), "answered, 1 not pressed"),
])
def test_anything_but_1_calls_the_next_number(app, console, phone, client, answer, detail):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    [call] = console.dialed
    kind, value = answer
    if kind == "press":
        resp = press(client, call, value)
        assert "next person on the rota" in resp.get_data(as_text=True)
        call_status(client, call, "completed")  # the hang-up after the key: still one result
    else:
        assert call_status(client, call, value).status_code == 204
    assert escalations.status(r(app), rid) == "open"
    tick(app, t0 + 2 * MIN + 15)  # the next tick
    assert console.numbers() == [ON_CALL[0], ON_CALL[1]]
    steps = calls(app, rid)
    assert [s["to"] for s in steps] == [A, B]
    assert steps[0]["detail"] == detail and steps[1]["reason"] == "call 1 not acknowledged"
    assert actions(app, rid).count("voice_result") == 1
    assert esc(app, rid)["voice_step"] == "2"


def test_no_result_at_all_times_out_to_the_next_number(app, console, phone):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    tick(app, t0 + 2 * MIN + STEP - 1)
    assert len(console.dialed) == 1
    tick(app, t0 + 2 * MIN + STEP)
    assert console.numbers() == [ON_CALL[0], ON_CALL[1]]
    assert calls(app, rid)[0]["outcome"] == "timeout"
    assert "no result from the call within 180 s" in calls(app, rid)[0]["detail"]


def test_a_late_1_from_an_earlier_call_still_acknowledges(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    tick(app, t0 + 2 * MIN + STEP)  # call 1 timed out: call 2 rings B
    assert console.numbers() == [ON_CALL[0], ON_CALL[1]]
    resp = press(client, console.dialed[0], "1")  # A's key press arrives after all
    assert "Acknowledged" in resp.get_data(as_text=True)
    assert esc(app, rid)["acknowledged_by"] == f"voice {A}"
    call_status(client, console.dialed[1], "no-answer")
    tick(app, t0 + 2 * MIN + STEP + 15)
    assert len(console.dialed) == 2 and esc(app, rid)["voice_status"] == "acknowledged"
    assert calls(app, rid)[0]["outcome"] == "timeout"  # the first outcome of a step stays


def test_the_rota_cycles_and_stops_at_the_bound(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    at = t0 + 2 * MIN
    tick(app, at)
    while True:
        call = console.dialed[-1]
        call_status(client, call, "no-answer")
        at += 15
        if tick(app, at)["calls"] == 0:
            break
    # ON_CALL_ROTA order, cycling, VOICE_MAX_CALLS = 4
    assert console.numbers() == [ON_CALL[0], ON_CALL[1], THIRD, ON_CALL[0]]
    assert [s["rota_index"] for s in calls(app, rid)] == [1, 2, 3, 1]
    assert esc(app, rid)["voice_status"] == "exhausted"
    assert actions(app, rid).count("voice_call") == 4
    assert actions(app, rid)[-1] == "voice_exhausted"
    for minutes in (20, 40):
        tick(app, t0 + minutes * MIN)
    assert len(console.dialed) == 4  # the SMS re-pages go on; no more calls
    assert len(console.sent) > 2


def test_acknowledged_on_the_dashboard_during_the_ladder_stops_it(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    escalations.acknowledge(r(app), rid, "nurse.kim", now=t0 + 2 * MIN + 20)
    call_status(client, console.dialed[0], "no-answer")
    tick(app, t0 + 2 * MIN + 30)
    assert len(console.dialed) == 1
    assert esc(app, rid)["voice_status"] == "stopped"
    [stopped] = [e for e in escalations.events(r(app), rid) if e["action"] == "voice_stopped"]
    assert stopped["note"] == "escalation acknowledged by nurse.kim: no further calls"
    # a 1 pressed late says who has it, and changes nothing
    resp = press(client, console.dialed[0], "1")
    assert "already acknowledged by nurse.kim" in resp.get_data(as_text=True)
    assert esc(app, rid)["acknowledged_by"] == "nurse.kim"


def test_two_escalations_never_ring_the_same_phone_at_once(app, console, new_phone, client):
    first, second = new_phone(), new_phone()
    rid1, t0 = emergency(app, first)
    second.send("she had a seizure")
    rid2 = records(app)[0]["id"]
    assert rid2 != rid1
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    # the first rota phone is on the first escalation's call: the second rings the next one
    by_rid = {d["url"].split("/")[-3]: d for d in console.dialed}
    assert {rid: d["to"] for rid, d in by_rid.items()} == {rid1: ON_CALL[0], rid2: ON_CALL[1]}
    [note] = [e["note"] for e in escalations.events(r(app), rid2) if e["action"] == "voice_call"]
    assert f"{A} on another escalation call" in note
    # A presses 1 for the first; B does not answer the second: the next free phone is C
    press(client, by_rid[rid1], "1")
    call_status(client, by_rid[rid2], "no-answer")
    tick(app, t0 + 2 * MIN + 15)
    assert [s["to"] for s in calls(app, rid2)] == [B, C]


def test_with_one_rota_phone_the_second_escalation_waits_for_the_line(redis_url, tmp_path, app,
                                                                       new_phone, client):
    first, second = new_phone(), new_phone()
    rid1, t0 = emergency(app, first)
    second.send("she had a seizure")
    rid2 = records(app)[0]["id"]
    worker = make_app(redis_url, tmp_path, ON_CALL_ROTA=ON_CALL[0])
    backend = Console()
    worker.extensions["sms"] = backend
    tick(worker, t0 + 1)
    tick(worker, t0 + 2 * MIN)
    assert backend.numbers() == [ON_CALL[0]]
    waiting = rid2 if backend.dialed[0]["url"].split("/")[-3] == rid1 else rid1
    assert calls(worker, waiting) == []  # no step used up while it waits
    tick(worker, t0 + 2 * MIN + 30)
    assert len(backend.dialed) == 1  # the line is still busy
    call_status(client, backend.dialed[0], "completed")  # that call ends: the line is free
    tick(worker, t0 + 2 * MIN + 60)
    assert backend.numbers() == [ON_CALL[0], ON_CALL[0]]
    assert backend.dialed[1]["url"].split("/")[-3] == waiting
    assert [s["step"] for s in calls(worker, waiting)] == [1]


def test_voice_callbacks_must_be_signed(app, console, phone, client):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    [call] = console.dialed
    url = gather_url(call["twiml"])
    form = {"CallSid": call["sid"], "Digits": "1"}
    path = url[len(BASE_URL):]
    assert client.post(path, data=form).status_code == 403
    bad = {"X-Twilio-Signature": sign(url, form, "not-the-token")}
    assert client.post(path, data=form, headers=bad).status_code == 403
    other = {"X-Twilio-Signature": sign(url, {**form, "Digits": "9"})}  # signed for 9
    assert client.post(path, data=form, headers=other).status_code == 403
    status_path = call["url"][len(BASE_URL):]
    assert client.post(status_path, data={"CallStatus": "no-answer"}).status_code == 403
    assert escalations.status(r(app), rid) == "open" and calls(app, rid)[0]["outcome"] == ""
    # signed, but for a step that was never placed
    unknown = url.replace("/1/gather", "/7/gather")
    assert twilio_post(client, unknown, form).status_code == 404


def test_a_call_that_cannot_be_placed_moves_on_after_a_pause(app, phone, client):
    class NoVoice(Console):
        def call(self, *args: Any, **kwargs: Any) -> str:
            if not self.dialed:
                self.dialed.append({"to": args[0], "failed": True})
                raise SendError("twilio: HTTP 503")
            return super().call(*args, **kwargs)

    backend = NoVoice()
    app.extensions["sms"] = backend
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    tick(app, t0 + 2 * MIN)
    steps = calls(app, rid)
    assert steps[0]["state"] == "not_placed" and "HTTP 503" in steps[0]["error"]
    assert "voice_call_failed" in actions(app, rid)
    tick(app, t0 + 2 * MIN + 29)
    assert len(backend.dialed) == 1
    tick(app, t0 + 2 * MIN + 30)  # PAGE_RETRY_SECONDS later: the next number
    assert [d["to"] for d in backend.dialed] == [ON_CALL[0], ON_CALL[1]]


def test_a_rota_without_sms_paging_still_calls(redis_url, tmp_path, app, phone):
    rid, t0 = emergency(app, phone)
    worker = make_app(redis_url, tmp_path, ON_CALL_NUMBERS="", ON_CALL_ROTA=THIRD)
    backend = Console()
    worker.extensions["sms"] = backend
    tick(worker, t0 + 1)
    assert backend.sent == [] and esc(worker, rid)["page_status"] == "not_paged"
    tick(worker, t0 + 2 * MIN)
    assert backend.numbers() == [THIRD]


def test_without_a_rota_the_record_says_no_call_is_possible(redis_url, tmp_path, phone):
    from conftest import FakeBackend

    bare = make_app(redis_url, tmp_path, ON_CALL_NUMBERS="", ON_CALL_ROTA="")
    bare.extensions["sms"] = FakeBackend()
    rid, t0 = emergency(bare, phone)
    tick(bare, t0 + 10 * MIN)
    assert esc(bare, rid)["voice_status"] == "not_possible"
    assert "voice_not_possible" in actions(bare, rid)
    assert bare.extensions["sms"].dialed == []


def test_without_public_base_url_the_call_says_use_the_dashboard(redis_url, tmp_path, app,
                                                                 phone):
    _rid, t0 = emergency(app, phone)
    worker = make_app(redis_url, tmp_path, PUBLIC_BASE_URL="")
    backend = Console()
    worker.extensions["sms"] = backend
    tick(worker, t0 + 1)
    tick(worker, t0 + 2 * MIN)
    [call] = backend.dialed
    assert call["url"] is None and "<Gather" not in call["twiml"]
    assert "Open the dashboard to acknowledge it." in call["twiml"]


# --------------------------------------------------------------------------- restarts

class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, no except clause."""


@pytest.mark.parametrize("when", ["after the call was placed", "before the call was placed"])
def test_a_killed_worker_never_places_the_same_step_twice(app, redis_url, tmp_path, phone,
                                                          when):
    class Dying(Console):
        def call(self, *args: Any, **kwargs: Any) -> str:
            if when == "after the call was placed":
                super().call(*args, **kwargs)
            raise Killed

    dying = Dying()
    app.extensions["sms"] = dying
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    with pytest.raises(Killed):
        tick(app, t0 + 2 * MIN)

    restarted = make_app(redis_url, tmp_path, ON_CALL_ROTA=APP_SETTINGS["ON_CALL_ROTA"])
    alive = Console()
    restarted.extensions["sms"] = alive
    for seconds in (2 * MIN + 15, 2 * MIN + 135, 2 * MIN + STEP - 1):  # incl. past the lease
        tick(restarted, t0 + seconds)
    assert alive.dialed == []  # step 1 is never placed again, by anyone
    tick(restarted, t0 + 2 * MIN + STEP)  # step 1 timed out: the next number
    assert alive.numbers() == [ON_CALL[1]]
    steps = calls(restarted, rid)
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[0]["state"] == "placing" and steps[0]["outcome"] == "timeout"
    assert "not confirmed as placed" in steps[0]["detail"]
    placed = len(dying.dialed)
    assert placed == (1 if when == "after the call was placed" else 0)


def test_two_workers_at_the_same_moment_place_one_call(app, redis_url, tmp_path, phone,
                                                       console):
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    others = []
    for i in range(3):
        other = make_app(redis_url, tmp_path / str(i), WORKER_NAME=f"w{i}",
                         ON_CALL_ROTA=APP_SETTINGS["ON_CALL_ROTA"])
        other.extensions["sms"] = console
        runtime(other)
        others.append(other)
    barrier = threading.Barrier(len(others))

    def run(a: Any) -> None:
        barrier.wait()
        tick(a, t0 + 2 * MIN)

    threads = [threading.Thread(target=run, args=(a,)) for a in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert console.numbers() == [ON_CALL[0]]
    assert actions(app, rid).count("voice_call") == 1
    assert r(app).hlen(voice_key(rid)) == 1


def test_a_step_claimed_by_a_worker_killed_at_once_is_not_placed_again(app, console, phone):
    # The worker claimed step 1 (HSETNX) and was killed before it wrote anything else.
    rid, t0 = emergency(app, phone)
    tick(app, t0 + 1)
    at = t0 + 2 * MIN
    claim = {"n": 1, "to": A, "rota_index": 1, "state": "placing", "at": at,
             "reason": "page not delivered within 2 min"}
    r(app).hset(voice_key(rid), "1", json.dumps(claim))
    tick(app, at)
    tick(app, at + STEP - 1)
    assert console.dialed == []
    assert esc(app, rid)["voice_step"] == "1"
    tick(app, at + STEP)
    assert console.numbers() == [ON_CALL[1]]


def test_python_m_bot_worker_killed_and_restarted_calls_once(redis_url, tmp_path, app, phone):
    """The real worker process with the console backend: it pages and calls (printed,
    masked); SIGKILLed and started again, it does not call again for the same step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from bot.config import ROOT
    from conftest import API_TOKEN

    rid, _t0 = emergency(app, phone)
    env = {**os.environ, "REDIS_URL": redis_url, "INSTANCE_PATH": str(tmp_path / "w"),
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "CARE_TEAM_API_TOKEN": API_TOKEN,
           "SECRET_KEY": "test-secret-key", "PUBLIC_BASE_URL": BASE_URL,
           "ON_CALL_NUMBERS": ",".join(ON_CALL), "WORKER_TICK_SECONDS": "1",
           "VOICE_IF_UNDELIVERED_MINUTES": "0", "TWILIO_ACCOUNT_SID": "",
           "TWILIO_FROM_NUMBER": "", "PYTHONUNBUFFERED": "1", "APP_ENV": "local"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "bot.worker"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and esc(app, rid).get("voice_status") != "calling":
            time.sleep(0.1)
        assert esc(app, rid).get("voice_status") == "calling"
        first.send_signal(signal.SIGKILL)
        out1, _ = first.communicate(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    second = start()
    try:
        time.sleep(3.5)  # three ticks of the restarted worker
        second.send_signal(signal.SIGTERM)
        out2, err2 = second.communicate(timeout=15)
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    assert second.returncode == 0, err2
    assert out1.count("[call to ") == 1 and "[call to " not in out2
    assert f"[call to {A}] This is the symptom triage service. Emergency escalation" in out1
    assert f"[sms to {A}] EMERGENCY" in out1
    assert ON_CALL[0] not in out1 + out2 and phone.number not in out1 + out2 + err2
    assert [s["step"] for s in calls(app, rid)] == [1]


def test_a_burst_of_emergencies_is_looked_at_in_one_tick(app, console):
    from bot.voice import VOICE_WAITING

    store = app.extensions["triage"].store
    t0 = float(int(__import__("time").time()))
    created = __import__("time").strftime("%Y-%m-%dT%H:%M:%SZ", __import__("time").gmtime(t0))
    for i in range(150):
        store.append_record({"phone": f"+1555000{i:04d}", "flow": "red_flag",
                             "tier": "EMERGENCY", "reasons": ["can't breathe"],
                             "kind": "red_flag", "conversation_id": f"c{i}",
                             "created_at": created})
    assert tick(app, t0)["pages"] == 150
    assert tick(app, t0 + 2 * MIN)["calls"] == 3  # one call per rota phone, at once
    assert len({d["to"] for d in console.dialed}) == 3
    # every other ladder was looked at in the same tick and waits for a free phone
    assert r(app).zcard(VOICE_WAITING) == 147
    assert r(app).zcount(VOICE_DUE, "-inf", t0 + 2 * MIN) == 0
