"""Follow-ups: a SOON outcome is re-checked by SMS after FOLLOW_UP_AFTER_MINUTES, and the
reply is re-triaged through the signed webhook with the earlier findings remembered. Real
Redis, a fake clock, the in-process SMS backend of test_paging."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from bot import create_app
from bot.config import ROOT
from bot.conversation.engine import Engine
from bot.conversation.flows import load_library
from bot.followup import FOLLOWUPS
from bot.paging import record_time
from bot.sms import MAX_SEGMENTS, is_gsm7, segments
from bot.store import INFLIGHT, profile_key
from bot.worker import runtime, tick
from conftest import (
    BASE_URL,
    ON_CALL,
    WORKER_SETTINGS,
    FakeBackend,
    actions,
    esc,
    records,
    settings,
    soon,
)

APP_SETTINGS = WORKER_SETTINGS
MIN = 60.0
FEVER_FOLLOW_UP = "How is your temperature now? Reply with the number, like 38.2 or 100.8F."


def soon_record(app: Any, phone: Any) -> tuple[str, float]:
    soon(phone)
    rec = records(app)[0]
    assert rec["tier"] == "SOON"
    return rec["id"], record_time(rec["id"], rec)


def session(app: Any, phone: Any) -> dict[str, Any]:
    return app.extensions["triage"].store.session(phone.number)


def transcript(app: Any, phone: Any) -> list[dict[str, Any]]:
    return app.extensions["triage"].store.transcript(phone.number)


def test_soon_is_rechecked_on_time_and_the_answer_re_triaged(app, sms, phone):
    rid, t0 = soon_record(app, phone)
    tick(app, t0 + 1)
    d = esc(app, rid)
    assert d["follow_up_status"] == "scheduled" and float(d["follow_up_due"]) == t0 + 60 * MIN
    assert actions(app, rid) == ["follow_up_scheduled"]

    tick(app, t0 + 59 * MIN)
    assert sms.to(phone.number) == []
    done = tick(app, t0 + 60 * MIN)
    assert done["follow_ups"] == 1
    [text] = sms.to(phone.number)
    assert FEVER_FOLLOW_UP in text and is_gsm7(text) and segments(text) <= MAX_SEGMENTS
    assert transcript(app, phone)[-1]["dir"] == "out"
    assert transcript(app, phone)[-1]["text"] == text
    s = session(app, phone)
    assert s["state"] == "follow_up" and s["at"] == "fever:temperature"
    assert "prior_borderline_temp" in s["conv"]["facts"]
    d = esc(app, rid)
    assert d["follow_up_status"] == "sent" and d["follow_up_conversation"] == s["conv"]["id"]
    assert actions(app, rid)[-1] == "follow_up_sent"
    assert app.extensions["triage"].store.r.zscore(FOLLOWUPS, rid) is None
    assert [n for n, _ in sms.sent] == [phone.number]  # a SOON outcome pages nobody

    # still raised on the re-check: URGENT, through the normal signed webhook
    reply = phone.send("38.1")
    assert "ANY of these" in reply  # rule 7: the EMERGENCY screen before an URGENT outcome
    reply = phone.send("no")
    assert reply.startswith("Call the 24-hour oncology line now")
    answer = records(app)[0]
    assert answer["tier"] == "URGENT" and answer["conversation_id"] == s["conv"]["id"]
    assert "temperature still raised on re-check: 38.1 C" in answer["reasons"]

    # the webhook wrote the answer with the real clock: the worker reads it at that time
    tick(app, record_time(answer["id"], answer) + 1)
    pages = [body for n, body in sms.sent if n in ON_CALL]
    assert len(pages) == 2 and pages[0].startswith("URGENT, fever")
    assert esc(app, rid)["follow_up_answer"] == answer["id"]
    assert actions(app, rid)[-1] == "follow_up_answered"
    # the answer to a follow-up does not schedule another one
    assert "follow_up_status" not in esc(app, answer["id"])


def test_borderline_again_on_recheck_is_urgent(app, sms, phone):
    _rid, t0 = soon_record(app, phone)
    tick(app, t0 + 60 * MIN)
    reply = phone.send("37.7")
    assert "ANY of these" in reply  # rule 7: the EMERGENCY screen before an URGENT outcome
    reply = phone.send("no")
    assert reply.startswith("Call the 24-hour oncology line now")
    assert any("still raised on re-check: 37.7 C" in r for r in records(app)[0]["reasons"])


def test_normal_recheck_goes_on_with_the_checklist(app, sms, phone):
    _rid, t0 = soon_record(app, phone)
    tick(app, t0 + 60 * MIN)
    reply = phone.send("37.0")
    assert "paracetamol" in reply  # the fever checklist continues after the reading
    assert session(app, phone)["at"] == "fever:fever_medicine"


def test_no_follow_up_to_an_opted_out_patient(app, sms, phone):
    rid, t0 = soon_record(app, phone)
    tick(app, t0 + 1)
    phone.send("STOP")
    tick(app, t0 + 60 * MIN)
    assert sms.to(phone.number) == []
    d = esc(app, rid)
    assert d["follow_up_status"] == "skipped" and "opted out" in d["follow_up_error"]
    assert actions(app, rid)[-1] == "follow_up_skipped"
    assert session(app, phone)["state"] == "opted_out"
    tick(app, t0 + 120 * MIN)
    assert sms.to(phone.number) == []


def test_no_follow_up_when_a_newer_conversation_started(app, sms, phone):
    rid, t0 = soon_record(app, phone)
    tick(app, t0 + 1)
    phone.send("fever")  # a new checklist, in progress
    before = session(app, phone)
    # only the follow-up job (a whole tick would also sweep the open checklist)
    assert runtime(app).follow_ups.send_due(t0 + 60 * MIN) == 0
    assert sms.to(phone.number) == []
    assert "newer conversation" in esc(app, rid)["follow_up_error"]
    assert session(app, phone) == before
    # the open checklist is still watched by the abandoned-checklist sweep
    assert app.extensions["triage"].store.r.zscore(INFLIGHT, phone.number) is not None


def test_no_follow_up_to_a_paused_patient(app, sms, phone):
    rid, t0 = soon_record(app, phone)
    app.extensions["triage"].store.r.hset(profile_key(phone.number), "status", "paused")
    tick(app, t0 + 60 * MIN)
    assert sms.to(phone.number) == []
    assert "paused" in esc(app, rid)["follow_up_error"]


def test_a_failed_follow_up_is_retried_and_sent_once(app, phone):
    flaky = FakeBackend(fail_calls=1)
    app.extensions["sms"] = flaky
    rid, t0 = soon_record(app, phone)
    entries = len(transcript(app, phone))
    tick(app, t0 + 60 * MIN)
    d = esc(app, rid)
    assert d["follow_up_status"] == "retrying" and "carrier refused" in d["follow_up_error"]
    assert len(transcript(app, phone)) == entries  # not sent: not in the transcript
    conv_id = session(app, phone)["conv"]["id"]
    tick(app, t0 + 60 * MIN + 30)
    [text] = flaky.to(phone.number)
    assert FEVER_FOLLOW_UP in text
    assert session(app, phone)["conv"]["id"] == conv_id  # the same re-check, not a new one
    assert esc(app, rid)["follow_up_status"] == "sent"
    assert [e["text"] for e in transcript(app, phone)].count(text) == 1
    assert actions(app, rid)[-2:] == ["follow_up_failed", "follow_up_sent"]


def test_unanswered_follow_up_alerts_the_care_team(app, sms, phone):
    rid, t0 = soon_record(app, phone)
    tick(app, t0 + 60 * MIN)
    tick(app, t0 + 74 * MIN)
    assert [n for n, _ in sms.sent] == [phone.number]
    done = tick(app, t0 + 76 * MIN)
    assert done["abandoned"] == 1
    pages = [body for n, body in sms.sent if n in ON_CALL]
    assert len(pages) == 2
    assert pages[0].startswith("SOON follow-up re-check not completed, fever: temperature 37.6")
    assert f"{BASE_URL}/dashboard/escalations/{rid}" in pages[0]
    assert {"follow_up_unanswered", "paged"} <= set(actions(app, rid))
    assert esc(app, rid)["page_kind"] == "no_follow_up_reply"


def test_flow_without_follow_up_question_restarts_its_checklist(redis_url, tmp_path, phone):
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    messages = yaml.safe_load((flows / "messages.yaml").read_text())
    messages.pop("follow_up")
    (flows / "messages.yaml").write_text(yaml.safe_dump(messages))
    redis.Redis.from_url(redis_url).flushdb()
    app = create_app(settings(redis_url, tmp_path, FLOWS_DIR=str(flows)))
    backend = FakeBackend()
    app.extensions["sms"] = backend
    phone.client = app.test_client()
    _rid, t0 = soon_record(app, phone)
    tick(app, t0 + 60 * MIN)
    [text] = backend.to(phone.number)
    assert text.startswith("This is your care team's symptom text line, checking on your fever")
    assert "First, do you have ANY of these now" in text
    assert session(app, phone)["at"] == "fever:danger_signs"
    assert phone.send("yes").startswith("Call 911 now.")


def test_every_follow_up_text_fits(tmp_path):
    lib = load_library(Path(ROOT / "flows"))
    engine = Engine(lib, oncology_line="+1 (555) 010-0100 x12")
    for flow_id in lib.flows:
        # a v0 session (before the typed session): migrated on read
        old = {"state": "idle", "conv": {"id": "c1", "done": True}, "prior": {}}
        text, conv_id, result = engine.follow_up(old, flow_id, now=time.time(),
                                                 after_conversation="c1")
        s = result.session
        assert text is not None and conv_id == s["conv"]["id"] != "c1"
        assert is_gsm7(text) and segments(text) <= MAX_SEGMENTS, (flow_id, text)
        assert s["v"] == 1 and s["state"] == "follow_up"
        assert engine.pending(s) == s["at"] and result.in_checklist
