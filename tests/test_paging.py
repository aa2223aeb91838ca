"""Paging the on-call team: which records page, what a page says, retries with backoff, the
acknowledgement deadline and the consumer group. Real Redis, a fake clock (``now=``), and an
in-process SMS backend that can be told to fail (the store is never faked)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from twilio.base.exceptions import TwilioRestException

from bot import create_app, escalations
from bot.notify import SendError, TwilioBackend
from bot.paging import DEADLINES, DUE, GROUP, ack, page_text, read_new
from bot.sms import is_gsm7, segments
from bot.store import RECORDS
from bot.worker import runtime, tick
from conftest import (
    BASE_URL,
    ON_CALL,
    WORKER_SETTINGS,
    FakeBackend,
    actions,
    esc,
    make_app,
    records,
    routine,
    settings,
    soon,
    urgent,
)

APP_SETTINGS = WORKER_SETTINGS
MIN = 60.0


# --------------------------------------------------------------------------- what pages

def test_urgent_pages_every_on_call_number_without_the_patient_number(app, sms, phone):
    urgent(phone)
    rid = records(app)[0]["id"]
    now = time.time()
    done = tick(app, now)
    assert done["records"] == 1 and done["pages"] == 1
    assert [n for n, _ in sms.sent] == list(ON_CALL)
    body = sms.sent[0][1]
    assert body.startswith(f"URGENT, fever: {records(app)[0]['reasons'][0]}")
    assert "38.6 C" in body
    assert f"{BASE_URL}/dashboard/escalations/{rid}" in body
    assert phone.number not in body and phone.number[-7:] not in body
    assert is_gsm7(body) and segments(body) == 1
    d = esc(app, rid)
    assert d["page_status"] == "sent" and d["page_attempts"] == "1"
    assert float(d["paged_at"]) == now and float(d["last_paged_at"]) == now
    assert actions(app, rid) == ["paged"]
    # the same tick again: nothing new
    assert tick(app, now + 1)["pages"] == 0 and len(sms.sent) == 2


def test_red_flag_emergency_pages(app, sms, phone):
    phone.send("my son cant breathe")
    rec = records(app)[0]
    assert rec["tier"] == "EMERGENCY"
    tick(app, time.time())
    assert len(sms.sent) == 2
    assert sms.sent[0][1].startswith("EMERGENCY, red flag: can't breathe")


@pytest.mark.parametrize("finish", [soon, routine])
def test_completed_soon_or_routine_does_not_page(app, sms, phone, finish):
    finish(phone)
    rid = records(app)[0]["id"]
    assert tick(app, time.time())["records"] == 1
    assert sms.sent == []
    assert "page_status" not in esc(app, rid)
    assert "paged" not in actions(app, rid)


def test_checklist_abandoned_after_worrying_answer_pages_incomplete_triage(app, sms, phone):
    phone.conversation("fever", "no", "37.6")  # borderline: SOON so far, then silence
    t0 = time.time()
    assert tick(app, t0 + 14 * MIN)["abandoned"] == 0
    assert sms.sent == []
    done = tick(app, t0 + 16 * MIN)
    assert done["abandoned"] == 1 and done["pages"] == 1
    rec = records(app)[0]
    assert (rec["kind"], rec["tier"]) == ("abandoned", "SOON")
    body = sms.sent[0][1]
    assert body.startswith("SOON incomplete triage (no reply), fever: temperature 37.6 C")
    assert esc(app, rec["id"])["page_kind"] == "incomplete"
    # SOON is not under the 15-minute acknowledgement deadline (that is EMERGENCY/URGENT)
    assert app.extensions["triage"].store.r.zscore(DEADLINES, rec["id"]) is None


def test_checklist_abandoned_without_worrying_answer_does_not_page(app, sms, phone):
    phone.conversation("fever", "no", "37.0")
    tick(app, time.time() + 16 * MIN)
    rec = records(app)[0]
    assert (rec["kind"], rec["tier"]) == ("abandoned", "ROUTINE")
    assert sms.sent == []


def test_no_on_call_numbers_is_not_paged_visibly(redis_url, tmp_path, phone, caplog):
    redis.Redis.from_url(redis_url).flushdb()
    bare = create_app(settings(redis_url, tmp_path))
    backend = FakeBackend()
    bare.extensions["sms"] = backend
    client = bare.test_client()
    phone.client = client
    urgent(phone)
    rid = records(bare)[0]["id"]
    with caplog.at_level("WARNING"):
        tick(bare, time.time())
    assert backend.sent == []
    d = esc(bare, rid)
    assert d["page_status"] == "not_paged"
    assert "ON_CALL_NUMBERS" in d["page_error"]
    assert actions(bare, rid) == ["not_paged"]
    assert any("ON_CALL_NUMBERS" in r.getMessage() for r in caplog.records)
    # the deadline still marks it overdue, with an event saying nobody was paged
    tick(bare, time.time() + 16 * MIN)
    assert esc(bare, rid)["overdue"] == "1"
    assert actions(bare, rid) == ["not_paged", "overdue"]


# --------------------------------------------------------------------------- retries

def test_retries_back_off_and_survive_a_restart(app, redis_url, tmp_path, phone):
    # 2 numbers; calls 1-3 fail: attempt 1 reaches nobody, attempt 2 reaches the second number,
    # attempt 3 reaches the first. Nobody is paged twice.
    flaky = FakeBackend(fail_calls=3)
    app.extensions["sms"] = flaky
    urgent(phone)
    rid = records(app)[0]["id"]
    r = app.extensions["triage"].store.r
    t0 = time.time()
    tick(app, t0)
    d = esc(app, rid)
    assert d["page_status"] == "retrying" and d["page_attempts"] == "1"
    assert "carrier refused" in d["page_error"] and "+1********11" in d["page_error"]
    assert float(d["page_next_at"]) == t0 + 30
    assert r.zscore(DUE, rid) == t0 + 30
    tick(app, t0 + 29)
    assert flaky.calls == 2  # not due yet

    # a restarted worker (a new app, same Redis) picks up where the last one stopped
    restarted = make_app(redis_url, tmp_path)
    restarted.extensions["sms"] = flaky
    tick(restarted, t0 + 30)
    d = esc(restarted, rid)
    assert d["page_status"] == "retrying" and d["page_attempts"] == "2"
    assert json.loads(d["page_delivered"]) == [ON_CALL[1]]
    assert float(d["page_next_at"]) == t0 + 30 + 60  # backoff doubled
    tick(restarted, t0 + 89)
    assert flaky.calls == 4
    tick(restarted, t0 + 90)
    d = esc(restarted, rid)
    assert d["page_status"] == "sent" and d["page_attempts"] == "3" and d["page_error"] == ""
    assert float(d["paged_at"]) == t0 + 90
    assert len(flaky.to(ON_CALL[0])) == 1 and len(flaky.to(ON_CALL[1])) == 1
    assert actions(restarted, rid) == ["page_failed", "page_failed", "paged"]
    assert r.zscore(DUE, rid) is None


def test_permanent_failure_stays_visible_as_failed(redis_url, tmp_path, phone):
    redis.Redis.from_url(redis_url).flushdb()
    app = make_app(redis_url, tmp_path, PAGE_MAX_ATTEMPTS=3, PAGE_RETRY_SECONDS=10)
    dead = FakeBackend(fail_calls=None)
    app.extensions["sms"] = dead
    phone.client = app.test_client()
    urgent(phone)
    rid = records(app)[0]["id"]
    t0 = time.time()
    for at in (t0, t0 + 10, t0 + 30):  # backoff 10 s, then 20 s
        tick(app, at)
    d = esc(app, rid)
    assert d["page_status"] == "failed" and d["page_attempts"] == "3"
    assert "carrier refused" in d["page_error"]
    events = escalations.events(app.extensions["triage"].store.r, rid)
    assert [e["action"] for e in events] == ["page_failed"] * 3
    assert "gave up after 3 attempts" in events[-1]["note"]
    calls = dead.calls
    tick(app, t0 + 600)
    assert dead.calls == calls and esc(app, rid)["page_status"] == "failed"


def test_twilio_errors_never_carry_a_whole_number():
    class Messages:
        def create(self, **kwargs: Any) -> Any:
            raise TwilioRestException(400, "/Messages.json",
                                      msg=f"The 'To' number {kwargs['to']} is not valid")

    class Client:
        messages = Messages()

    backend = TwilioBackend("ACx", "token", "+15550009999", client=Client())
    with pytest.raises(SendError) as err:
        backend.send("+15557654321", "hello")
    assert "+15557654321" not in str(err.value) and "+1********21" in str(err.value)


# --------------------------------------------------------------------------- the deadline

def test_unacknowledged_escalation_is_repaged_every_deadline_and_marked_overdue(app, sms, phone):
    urgent(phone)
    rec = records(app)[0]
    rid = rec["id"]
    from bot.paging import record_time

    t0 = record_time(rid, rec)
    tick(app, t0 + 1)
    assert len(sms.sent) == 2
    tick(app, t0 + 15 * MIN - 1)
    assert len(sms.sent) == 2 and "overdue" not in esc(app, rid)

    done = tick(app, t0 + 15 * MIN)
    assert done["overdue"] == 1 and len(sms.sent) == 4
    assert all(body.startswith("OVERDUE, not acknowledged: URGENT, fever")
               for _, body in sms.sent[2:])
    d = esc(app, rid)
    assert d["overdue"] == "1" and d["page_round"] == "2" and d["page_status"] == "sent"
    assert float(d["last_paged_at"]) == t0 + 15 * MIN and float(d["paged_at"]) == t0 + 1
    assert actions(app, rid) == ["paged", "overdue_repaged", "paged"]

    tick(app, t0 + 29 * MIN)
    assert len(sms.sent) == 4
    tick(app, t0 + 30 * MIN)
    assert len(sms.sent) == 6 and esc(app, rid)["page_round"] == "3"

    r = app.extensions["triage"].store.r
    escalations.acknowledge(r, rid, "nurse.kim", now=t0 + 31 * MIN)
    for minutes in (45, 60, 90):
        tick(app, t0 + minutes * MIN)
    assert len(sms.sent) == 6
    assert r.zscore(DEADLINES, rid) is None
    assert actions(app, rid)[-1] == "acknowledged"


def test_acknowledged_in_time_is_never_overdue(app, sms, phone):
    urgent(phone)
    rid = records(app)[0]["id"]
    t0 = time.time()
    tick(app, t0)
    escalations.acknowledge(app.extensions["triage"].store.r, rid, "nurse.kim", now=t0 + 60)
    tick(app, t0 + 16 * MIN)
    tick(app, t0 + 32 * MIN)
    assert len(sms.sent) == 2
    assert "overdue" not in esc(app, rid)


def test_retry_stops_once_acknowledged(app, phone):
    flaky = FakeBackend(fail_calls=None)
    app.extensions["sms"] = flaky
    urgent(phone)
    rid = records(app)[0]["id"]
    t0 = time.time()
    tick(app, t0)
    escalations.acknowledge(app.extensions["triage"].store.r, rid, "nurse.kim", now=t0 + 5)
    tick(app, t0 + 30)
    assert flaky.calls == 2  # the retry was cancelled, not sent
    assert esc(app, rid)["page_status"] == "not_paged"
    assert actions(app, rid)[-1] == "page_cancelled"


# --------------------------------------------------------------------------- consumer group

def test_entries_of_a_crashed_worker_are_reclaimed(app, sms, phone):
    urgent(phone)
    rid = records(app)[0]["id"]
    r = app.extensions["triage"].store.r
    # a worker reads the record and dies before acknowledging it
    assert [e[0] for e in read_new(r, "crashed-worker")] == [rid]
    rt = runtime(app)
    tick(app, time.time())
    assert sms.sent == []  # not idle long enough: still the crashed worker's
    assert r.xpending(RECORDS, GROUP)["pending"] == 1
    rt.claim_idle_ms = 50
    time.sleep(0.1)
    done = tick(app, time.time())
    assert done["records"] == 1 and len(sms.sent) == 2
    assert r.xpending(RECORDS, GROUP)["pending"] == 0


def test_a_record_routed_twice_pages_once(app, sms, phone):
    urgent(phone)
    rid = records(app)[0]["id"]
    r = app.extensions["triage"].store.r
    rt = runtime(app)
    from bot.worker import route

    now = time.time()
    # a worker routed it, then crashed before XACK: another worker routes it again
    read_new(r, "crashed-worker")
    route(rt, rid, records(app)[0], now)
    rt.claim_idle_ms = 0
    tick(app, now)
    assert len(sms.sent) == 2
    assert actions(app, rid) == ["paged"]
    ack(r, rid)


def test_page_text_is_short_even_for_a_long_reason():
    rec = {"tier": "EMERGENCY", "flow": "fever", "unregistered": True,
           "reasons": ["emergency sign during a fever check: " + "very long answer " * 20
                       + "call me on +1 555 123 4567"]}
    text = page_text("1732300000000-0", rec, BASE_URL)
    assert segments(text) == 1 and is_gsm7(text)
    assert text.endswith(f"{BASE_URL}/dashboard/escalations/1732300000000-0")
    assert "Unregistered number." in text and "4567" not in text
