"""Issue 8, item 4: one open escalation per patient conversation, raised in place.

An URGENT episode that becomes EMERGENCY raises the SAME escalation (its tier shown as
EMERGENCY, the URGENT history kept in its events), paged again once at the new tier; a page
goes at most once per on-call number per escalation per tier, even when a worker dies
mid-page or a raise lands while a round is being sent. Real Redis, the real worker tick, a fake
clock and the in-process SMS backend (conftest)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bot import escalations, indexes
from bot.paging import DEADLINES, DUE, EMERGENCY_LEASE_SECONDS, ledger_key
from bot.voice import VOICE_DUE
from bot.worker import runtime, tick
from conftest import API_TOKEN, ON_CALL, WORKER_SETTINGS, actions, esc

APP_SETTINGS = WORKER_SETTINGS
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PATIENT = "+15557770001"


def r(app: Any) -> Any:
    return app.extensions["triage"].store.r


def record(app: Any, tier: str, episode: str = "ep1", *, phone: str = PATIENT,
           flow: str = "fever", reason: str = "", kind: str = "completed") -> str:
    """A record as the engine writes it (same conversation: same episode id)."""
    now = time.time()
    return app.extensions["triage"].store.append_record({
        "phone": phone, "flow": flow, "flows": [flow], "tier": tier, "kind": kind,
        "reasons": [reason or f"{tier.lower()} finding"], "answers": {},
        "episode_id": episode, "conversation_id": episode,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))})


def pages(sms: Any, number: str, tier: str) -> list[str]:
    return [b for b in sms.to(number) if b.split(",")[0].split(" ")[0] == tier]


def test_urgent_then_emergency_raises_the_same_escalation_paged_once_at_each_tier(
        app: Any, client: Any, sms: Any) -> None:
    t0 = time.time()
    urgent = record(app, "URGENT", reason="temperature 38.6 C >= 38.0")
    tick(app, t0)
    assert [len(pages(sms, n, "URGENT")) for n in ON_CALL] == [1, 1]

    emergency = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe",
                       kind="red_flag")
    done = tick(app, t0 + 60)
    assert done["pages"] == 1
    # the same escalation, raised: its tier EMERGENCY, the URGENT history in its events
    d = esc(app, urgent)
    assert d["escalation_tier"] == "EMERGENCY" and d["raised_from"] == "URGENT"
    assert d["raised_by"] == emergency and d["page_status"] == "sent"
    assert actions(app, urgent)[:2] == ["paged", "raised"] and actions(app, urgent)[-1] == \
        "paged"
    assert esc(app, emergency)["merged_into"] == urgent
    assert esc(app, emergency)["page_status"] == "merged"
    # re-paged once at the new tier, to each number, about the escalation (its link)
    for n in ON_CALL:
        (body,) = pages(sms, n, "EMERGENCY")
        assert body.startswith("EMERGENCY (was URGENT), red flag: can't breathe")
        assert f"/dashboard/escalations/{urgent}" in body
    assert len(sms.sent) == 4
    # the EMERGENCY voice watch and acknowledgement deadline are the escalation's
    assert r(app).zscore(VOICE_DUE, urgent) is not None
    assert r(app).zscore(VOICE_DUE, emergency) is None
    assert r(app).zscore(DEADLINES, urgent) is not None
    assert r(app).zscore(DEADLINES, emergency) is None

    # more of the same (or lower) tier: merged, no page
    again = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    lower = record(app, "URGENT")
    tick(app, t0 + 120)
    assert len(sms.sent) == 4
    assert {esc(app, x)["merged_into"] for x in (again, lower)} == {urgent}

    # /api: the escalation once, with the higher tier and its merged records
    items = client.get("/api/escalations", headers=AUTH).get_json()["escalations"]
    assert [(e["id"], e["tier"], e["record_tier"], e["raised_from"]) for e in items] == [
        (urgent, "EMERGENCY", "URGENT", "URGENT")]
    assert items[0]["merged"] == sorted([emergency, again, lower])
    assert [e["id"] for e in client.get("/api/escalations?tier=EMERGENCY",
                                        headers=AUTH).get_json()["escalations"]] == [urgent]
    assert client.get("/api/escalations?tier=URGENT",
                      headers=AUTH).get_json()["escalations"] == []

    # acknowledging the escalation (a voice key press acts on its id) moves its records
    escalations.acknowledge(r(app), urgent, "voice +1********11", t0 + 130)
    statuses = r(app).hmget("triage:status", [urgent, emergency, again, lower])
    assert statuses == ["acknowledged"] * 4
    escalations.resolve(r(app), emergency, "nina", "called 911 with the family", t0 + 200)
    assert r(app).hmget("triage:status", [urgent, emergency, again, lower]) == ["resolved"] * 4
    # the care-read indexes follow: nothing of it left in the open queue
    indexes.catch_up(r(app), t0 + 201)
    for tier in indexes.OPEN_TIERS:
        assert r(app).zrange(indexes.open_key(tier), 0, -1) == []


def test_dashboard_shows_the_raised_escalation_once_with_the_higher_tier(
        app: Any, client: Any, sms: Any) -> None:
    from test_dashboard import PASSWORD, login

    from bot import users

    urgent = record(app, "URGENT")
    tick(app, time.time())
    record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    tick(app, time.time())
    users.create(r(app), "nina", PASSWORD, "nurse")
    assert login(client, "nina").status_code == 303
    rows = client.get("/dashboard/queue.json").get_json()["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["tier"] == "EMERGENCY" and row["escalation"] == urgent
    assert row["raised_from"] == "URGENT" and row["page_status"] == "sent"
    html = client.get(f"/dashboard/escalations/{row['id']}").get_data(as_text=True)
    assert 'id="raised"' in html and "from URGENT to EMERGENCY" in html


def test_raised_before_the_urgent_page_went_out_pages_only_emergency(app: Any,
                                                                     sms: Any) -> None:
    urgent = record(app, "URGENT")
    record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    tick(app, time.time())  # both routed in one tick, then the pages
    assert [len(pages(sms, n, "EMERGENCY")) for n in ON_CALL] == [1, 1]
    assert [len(pages(sms, n, "URGENT")) for n in ON_CALL] == [0, 0]
    assert esc(app, urgent)["page_status"] == "sent"


def test_a_raise_while_a_round_is_being_sent_is_not_lost_and_repeats_no_page(
        app: Any, sms: Any) -> None:
    """The raise lands between the URGENT text to the first number and the end of that
    round: the round's outcome must not overwrite the new round (nor drop its due time)."""
    urgent = record(app, "URGENT")
    rt = runtime(app)
    rt.pager.on_record(urgent, app.extensions["triage"].store.record(urgent), time.time())
    emergency = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe",
                       kind="red_flag")
    real_send = sms.send

    def raise_meanwhile(to: str, body: str, status_callback: str | None = None) -> str:
        if to == ON_CALL[0] and not esc(app, urgent).get("raised_by"):
            rt.pager.on_record(emergency, app.extensions["triage"].store.record(emergency),
                               time.time())
        return real_send(to, body, status_callback)

    sms.send = raise_meanwhile
    t0 = time.time()
    rt.pager.send_due(t0)
    assert "page_round_superseded" in actions(app, urgent)
    assert r(app).zscore(DUE, urgent) is not None  # the EMERGENCY round is still owed
    sms.send = real_send
    rt.pager.send_due(t0 + 1)
    for n in ON_CALL:
        assert len(pages(sms, n, "EMERGENCY")) == 1
        assert len(pages(sms, n, "URGENT")) <= 1
    rt.pager.send_due(t0 + 100)
    assert len(sms.sent) <= 4 and all(len(pages(sms, n, "EMERGENCY")) == 1 for n in ON_CALL)


def test_worker_killed_mid_raise_page_texts_no_number_twice_per_tier(app: Any,
                                                                     sms: Any) -> None:
    urgent = record(app, "URGENT")
    t0 = time.time()
    tick(app, t0)
    record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    real_send = sms.send

    def die_on_second(to: str, body: str, status_callback: str | None = None) -> str:
        if to == ON_CALL[1] and body.startswith("EMERGENCY"):
            raise SystemExit("worker killed mid-page")
        return real_send(to, body, status_callback)

    sms.send = die_on_second
    with pytest.raises(SystemExit):
        tick(app, t0 + 30)
    assert r(app).zscore(DUE, urgent) == pytest.approx(t0 + 30 + EMERGENCY_LEASE_SECONDS)
    sms.send = real_send
    tick(app, t0 + 30 + EMERGENCY_LEASE_SECONDS + 1)  # taken over after the short lease
    tick(app, t0 + 300)
    counts = {(n, t): len(pages(sms, n, t)) for n in ON_CALL for t in ("URGENT", "EMERGENCY")}
    assert set(counts.values()) == {1}, counts
    ledger = r(app).hgetall(ledger_key(urgent))
    assert {k for k in ledger if k.startswith("t:")} == {
        f"t:{t}:{n}" for n in ON_CALL for t in ("URGENT", "EMERGENCY")}
    # it died inside the send to the second number: that text is owned up to, not hidden
    assert "page_resent" in actions(app, urgent)


def test_killed_after_the_provider_accepted_the_text_it_is_never_sent_again(
        app: Any, sms: Any, monkeypatch: Any) -> None:
    """The ledger is written the moment the provider accepts a text, before the delivery
    bookkeeping: a worker killed in that bookkeeping does not text the number again."""
    rid = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    rt = runtime(app)
    real = rt.pager.outbox.receipts.sent

    def die(*a: Any, **kw: Any) -> None:
        raise SystemExit("worker killed after Twilio accepted the text")

    monkeypatch.setattr(rt.pager.outbox.receipts, "sent", die)
    t0 = time.time()
    with pytest.raises(SystemExit):
        tick(app, t0)
    monkeypatch.setattr(rt.pager.outbox.receipts, "sent", real)
    tick(app, t0 + EMERGENCY_LEASE_SECONDS + 1)
    assert [len(sms.to(n)) for n in ON_CALL] == [1, 1]
    assert "page_resent" not in actions(app, rid)
    assert esc(app, rid)["page_status"] == "sent"


def test_an_acknowledged_escalation_is_not_raised_a_new_one_pages(app: Any, sms: Any) -> None:
    urgent = record(app, "URGENT")
    t0 = time.time()
    tick(app, t0)
    escalations.acknowledge(r(app), urgent, "nina", t0 + 10)
    emergency = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe",
                       kind="red_flag")
    tick(app, t0 + 20)
    assert "merged_into" not in esc(app, emergency)
    assert esc(app, urgent).get("escalation_tier") == "URGENT"
    assert [len(pages(sms, n, "EMERGENCY")) for n in ON_CALL] == [1, 1]
    assert r(app).hget("triage:status", urgent) == "acknowledged"


def test_other_conversations_and_patients_are_not_merged(app: Any, sms: Any) -> None:
    record(app, "URGENT", "ep1")
    record(app, "EMERGENCY", "ep2", flow="red_flag", kind="red_flag")
    record(app, "EMERGENCY", "ep1", phone="+15557770002", flow="red_flag", kind="red_flag")
    tick(app, time.time())
    assert len(sms.sent) == 6  # three escalations, two numbers each


def test_a_checklist_abandoned_in_an_open_escalations_conversation_is_merged(
        app: Any, sms: Any) -> None:
    """A red flag, then the checklist that follows it (same episode) left unfinished after a
    worrying answer: the care team is already paged for this conversation; no second page."""
    holder = record(app, "EMERGENCY", flow="red_flag", reason="can't breathe", kind="red_flag")
    t0 = time.time()
    tick(app, t0)
    abandoned = record(app, "URGENT", kind="abandoned",
                       reason="no reply for 15 min: checklist abandoned")
    tick(app, t0 + 60)
    assert esc(app, abandoned)["merged_into"] == holder
    assert esc(app, abandoned)["page_kind"] == "incomplete"
    assert [len(sms.to(n)) for n in ON_CALL] == [1, 1]
    # nobody has it yet: an abandoned checklist alone still pages ("incomplete triage")
    alone = record(app, "SOON", "ep9", kind="abandoned")
    tick(app, t0 + 120)
    assert esc(app, alone)["page_status"] == "sent"
    assert "incomplete triage" in sms.to(ON_CALL[0])[-1]


def test_a_red_flag_minutes_after_an_urgent_outcome_is_the_same_episode(app: Any) -> None:
    """The core keeps the episode after an URGENT outcome (within the hour), so the worker
    can raise the open escalation in place instead of paging a second one."""
    engine = app.extensions["triage"].engine
    t0 = 1_800_000_000.0
    s = None
    records = []
    for i, text in enumerate(["fever", "no", "38.6"]):
        r = engine.handle(s, text, phone="+15550007777", now=t0 + i)
        s, records = r.session, records + r.records
    assert records[-1]["tier"] == "URGENT"
    r = engine.handle(s, "now he cant breathe", phone="+15550007777", now=t0 + 300)
    assert r.records[-1]["tier"] == "EMERGENCY"
    assert r.records[-1]["episode_id"] == records[-1]["episode_id"]
    # three hours later a new symptom is a new episode
    fresh = engine.handle(r.session, "my nose is bleeding", phone="+15550007777",
                          now=t0 + 3 * 3600)
    assert fresh.session["conv"]["episode_id"] != records[-1]["episode_id"]
