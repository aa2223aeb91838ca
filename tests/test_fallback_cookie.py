"""Issue 8, item 2: the fallback knows the pending question when Redis is stalled or down.

Every /sms reply sets a signed cookie naming the conversation's state (Twilio sends a
conversation's cookies back, up to 4 h). With redis-server SIGSTOPped (a real stall), a
signed "yes" to the fever checklist's emergency-signs question carrying that cookie is told
"Call 911 now.", spooled, and replayed into an EMERGENCY record once Redis answers. A
tampered, foreign or stale cookie is ignored (the general fallback)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.webhook import PENDING_COOKIE, PENDING_MAX_AGE
from conftest import Phone, free_port, redis_server_binary, settings

EMERGENCY_START = "Call 911 now."
GENERAL = "Our text line has a problem"


@pytest.fixture
def stallable(tmp_path: Path) -> Any:
    """A redis-server of this test's own, to SIGSTOP."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.025)
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=10)


def cookie(client: Any) -> str | None:
    found = client.get_cookie(PENDING_COOKIE, path="/sms")
    return found.value if found is not None else None


def set_cookie(client: Any, value: str) -> None:
    client.set_cookie(PENDING_COOKIE, value, path="/sms")


def stalled(proc: Any) -> Any:
    class Stall:
        def __enter__(self) -> None:
            os.kill(proc.pid, signal.SIGSTOP)

        def __exit__(self, *exc: Any) -> None:
            os.kill(proc.pid, signal.SIGCONT)

    return Stall()


def test_yes_to_the_emergency_signs_question_during_a_stall_is_told_to_call_911(
        stallable: Any, tmp_path: Path) -> None:
    from bot import create_app

    proc, url = stallable
    app = create_app(settings(url, tmp_path))
    svc = app.extensions["triage"]
    svc.breaker.cooldown = 0.5
    client = app.test_client()
    patient = Phone(client)
    ask = patient.send("fever")
    assert "Reply YES or NO" in ask  # the emergency-signs question is pending
    value = cookie(client)
    assert value and value.startswith("fever:danger_signs|")
    assert patient.number not in value and patient.number[1:] not in value  # no patient data

    with stalled(proc):
        reply = patient.send("yes")  # (reply times under a stall: kill_test.py redis-stall)
        assert reply.startswith(EMERGENCY_START), reply
        assert svc.spool.count() == 1
        # "no" to the same question: the general fallback (it may be nothing; it may not)
        assert patient.send("no").startswith(GENERAL)
        # tampered: another state, or the same state with another time: ignored
        state, issued, mac = value.rsplit("|", 2)
        for forged in (f"bleeding:heavy|{issued}|{mac}", f"{state}|{int(issued) + 1}|{mac}",
                       f"{state}|{issued}|{'0' * 32}", "fever:danger_signs", ""):
            set_cookie(client, forged)
            assert patient.send("yes").startswith(GENERAL), forged
        # another conversation's cookie (another number) does not verify for this one
        set_cookie(client, value)
        assert Phone(client).send("yes").startswith(GENERAL)
        # red flags are still read without any cookie
        client.delete_cookie(PENDING_COOKIE, path="/sms")
        assert patient.send("I cant breathe").startswith(EMERGENCY_START)
        assert svc.spool.count() == 9  # every text answered during the stall is kept

    # Redis answers again: the spooled "yes" is replayed through the engine into a record
    time.sleep(0.6)  # the breaker's cooldown: the next message is its probe
    deadline = time.monotonic() + 20
    while svc.spool.count() and time.monotonic() < deadline:
        # traffic after the outage: each text served by Redis starts the replay (a probe
        # that lands on a connection the stall broke is answered by the fallback and the
        # breaker waits its cooldown again, so one probe alone is not enough on a busy machine)
        Phone(client).send("hello")
        time.sleep(0.5)
    assert svc.spool.count() == 0
    mine = [r for r in svc.store.records(phone=patient.number) if r["tier"] == "EMERGENCY"]
    assert mine and all(r["received_during_outage"] is True for r in mine)
    assert any(r.get("flow") == "fever" and r.get("answers", {}).get("danger_signs") == "yes"
               for r in mine), mine


def test_the_cookie_follows_the_conversation_and_expires(app: Any, client: Any) -> None:
    from bot.webhook import pending_state

    patient = Phone(client)
    patient.send("fever")
    assert cookie(client).startswith("fever:danger_signs|")
    patient.send("no")
    assert cookie(client).startswith("fever:temperature|")
    value = cookie(client)
    issued = int(value.rsplit("|", 2)[1])
    with app.test_request_context("/sms", headers={"Cookie": f"{PENDING_COOKIE}={value}"}):
        assert pending_state(patient.number, now=issued + 60) == "fever:temperature"
        assert pending_state(patient.number, now=issued + PENDING_MAX_AGE + 1) is None
        assert pending_state("+15550000000", now=issued + 60) is None
    patient.send("38.6")  # an outcome: no question pending, the cookie is cleared
    assert cookie(client) is None


def test_the_cookie_header_is_what_werkzeug_writes(app: Any) -> None:
    """``pending_cookie_header`` writes by hand what ``Response.set_cookie`` writes, for every
    state a flow can leave pending, over http and https."""
    from flask import Response

    from bot.webhook import pending_cookie_header

    engine = app.extensions["triage"].engine
    states = [f"{flow.id}:{q.id}" for flow in engine.lib.flows.values()
              for q in flow.questions]
    assert len(states) > 20
    for state in states:
        for secure in (False, True):
            value = f"{state}|1764150000|{'0123456789abcdef' * 2}"
            now = time.time()
            by_hand = pending_cookie_header(value, secure, now=now)
            resp = Response()
            resp.set_cookie(PENDING_COOKIE, value, max_age=PENDING_MAX_AGE, path="/sms",
                            secure=secure, httponly=True, samesite="Lax")
            theirs = resp.headers["Set-Cookie"]
            if theirs != by_hand:  # the second may have turned between the two
                by_hand = pending_cookie_header(value, secure, now=time.time())
            assert by_hand == theirs


def test_a_yes_to_a_question_that_is_not_an_emergency_screen_is_not_911(
        stallable: Any, tmp_path: Path) -> None:
    from bot import create_app

    proc, url = stallable
    app = create_app(settings(url, tmp_path))
    client = app.test_client()
    patient = Phone(client)
    patient.send("fever")
    patient.send("no")
    patient.send("37.6")  # on to a question whose "yes" is no EMERGENCY on its own
    value = cookie(client)
    assert value and not value.startswith("fever:danger_signs|"), value
    with stalled(proc):
        assert patient.send("yes").startswith(GENERAL)


def test_every_checklists_emergency_screen_is_known_to_the_fallback(app: Any) -> None:
    """Read from the flow data, not listed by hand: each checklist's EMERGENCY screen (a
    yes/no question) makes an EMERGENCY rule true with "yes", and "no" or an unclear answer
    makes none."""
    from bot.webhook import emergency_rule

    svc = app.extensions["triage"]
    screens = [(fid, q) for fid, flow in svc.library.flows.items() for q in flow.questions
               if q.screen]
    assert len(screens) >= 5, screens
    for fid, q in screens:
        state = f"{fid}:{q.id}"
        if q.type == "yes_no":
            rule = emergency_rule(svc, state, "yes")
            assert rule is not None and rule.tier == "EMERGENCY", state
            assert emergency_rule(svc, state, "no") is None, state
            assert emergency_rule(svc, state, "not sure") is None, state
    # an answer that is URGENT at most: "very unwell" to the fever checklist's feeling question
    assert emergency_rule(svc, "fever:feeling", "3") is None
    assert emergency_rule(svc, "no-such:state", "yes") is None
