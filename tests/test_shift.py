"""A nurse's shift from the dashboard (issue 10, item 1), through the data functions and the
Flask test client on a real Redis, CSRF on: one row per episode, call-backs, working notes,
assignment, the clinic's time zone, the patient's facts and words, the compact banner."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot import audit, create_app, escalations, profile, users
from bot.config import clinic_zone
from bot.dashboard import data
from bot.store import STATUS
from conftest import settings

PASSWORD = "correct-horse-battery"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
NY = ZoneInfo("America/New_York")


def r(app: Any) -> Any:
    return app.extensions["triage"].store.r


def token(client: Any, path: str = "/dashboard/login") -> str:
    found = TOKEN_RE.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(client: Any, username: str) -> Any:
    return client.post("/dashboard/login", data={
        "username": username, "password": PASSWORD, "csrf_token": token(client)})


@pytest.fixture
def nurse(app: Any, client: Any) -> Any:
    users.create(r(app), "nina", PASSWORD, "nurse")
    users.create(r(app), "omar", PASSWORD, "nurse")
    assert login(client, "nina").status_code == 303
    return client


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add(app: Any, tier: str, age: float, *, phone: str = "+15550001111", conv: str = "",
        reasons: list[str] | None = None, answers: dict[str, str] | None = None,
        **extra: Any) -> str:
    now = time.time()
    rec = {"phone": phone, "flow": "fever", "flows": ["fever"], "tier": tier,
           "reasons": reasons or [f"{tier.lower()} reason"], "all_reasons": [], "cites": [],
           "answers": answers or {}, "kind": "completed",
           "conversation_id": conv or "c-" + uuid.uuid4().hex[:12],
           "started_at": iso(now - age), "created_at": iso(now - age), "status": "open",
           "unregistered": True, "risk_windows": [], **extra}
    return app.extensions["triage"].store.append_record(rec)


def queue(client: Any, query: str = "") -> list[dict[str, Any]]:
    return client.get(f"/dashboard/queue.json{query}").get_json()["rows"]


def audit_actions(app: Any) -> list[tuple[str, str, str, str]]:
    return [(e["who"], e["action"], e["target"], e["detail"])
            for e in audit.entries(r(app), count=1000)]


# --------------------------------------------------------------------------- data functions

def test_records_of_one_conversation_are_one_row_with_the_highest_tier(app: Any) -> None:
    soon = add(app, "SOON", 900, conv="conv-a", reasons=["mild cough"],
               answers={"cough": "a bit <b>dry</b>"})
    emergency = add(app, "EMERGENCY", 300, conv="conv-a",
                    reasons=["can't breathe", "mild cough"],
                    quotes={"can't breathe": "my chest is so tight i cant breathe"})
    other = add(app, "URGENT", 600, conv="conv-b")
    # The core's episode_id wins over conversation_id: two conversations, one episode.
    first = add(app, "SOON", 800, conv="conv-c", episode_id="ep-1", reasons=["sore mouth"])
    second = add(app, "URGENT", 100, conv="conv-d", episode_id="ep-1", reasons=["38.2 C"],
                 risk_window_assumed=True)
    escalations.acknowledge(r(app), soon, "nina")
    recs = app.extensions["triage"].store.records()
    rows = data.rows(r(app), recs, time.time(), 900, {"fever": "Fever"}, NY)

    assert [x["tier"] for x in rows] == ["EMERGENCY", "URGENT", "URGENT"]
    ep = rows[0]
    assert ep["id"] == emergency and ep["ids"] == sorted([soon, emergency])
    assert ep["reasons"] == ["can't breathe", "mild cough"]  # merged, each once
    assert ep["status"] == "open"  # one record still open: the episode is open
    assert ep["age"] == "15 min ago"  # waiting since its first record
    assert ep["quoted"] == [{"reason": "can't breathe",
                             "words": "my chest is so tight i cant breathe"},
                            {"reason": "mild cough", "words": ""}]
    assert ep["answers"] == {"cough": "a bit <b>dry</b>"}
    assert not ep["risk_window_assumed"]
    joined = next(x for x in rows if x["id"] == second)
    assert joined["ids"] == [first, second] and joined["reasons"] == ["38.2 C", "sore mouth"]
    assert joined["risk_window_assumed"] and joined["episode"] == "ep-1"
    assert next(x for x in rows if x["id"] == other)["ids"] == [other]
    # Queue order over episodes: the older URGENT episode (ep-1 began 800 s ago) first.
    assert [x["id"] for x in rows[1:]] == [second, other]


def test_patient_facts_from_the_profile() -> None:
    today = date(2026, 11, 26)
    facts = data.patient_facts({
        "date_of_birth": "2018-11-27", "age_band": "child", "treatment_phase": "car_t",
        "last_chemo_date": "2026-11-20", "car_t_date": "2026-11-26",
        "blinatumomab_start_date": "2026-12-01", "caregiver_name": "Ana Lopez",
        "caregiver_relationship": "parent", "caregiver_phone": "+15550100099",
        "mrn": "MRN-0045"}, today)
    assert facts["age_years"] == 7  # the birthday is tomorrow
    assert facts["patient_age"] == "7 y, child" and facts["phase"] == "car t"
    assert [x["text"] for x in facts["since"]] == [
        "chemo day 6", "CAR-T day 0", "blinatumomab start in 5 days"]
    tomorrow = data.patient_facts({"car_t_date": "2026-11-27"}, today)["since"][0]["text"]
    assert tomorrow == "CAR-T in 1 day"
    assert facts["caregiver"] == "Ana Lopez (parent)" and facts["mrn"] == "MRN-0045"
    empty = data.patient_facts({}, today)
    assert empty["patient_age"] == "" and empty["since"] == [] and empty["caregiver"] == ""
    assert data.patient_facts({"caregiver_relationship": "spouse_or_partner"}, today)[
        "caregiver"] == "(spouse or partner, name not recorded)"


def test_banner_is_one_sentence_with_each_number_once() -> None:
    def row(rid: str, tier: str, age: int, status: str = "open", overdue: bool = False
            ) -> dict[str, Any]:
        return {"id": rid, "ids": [rid], "tier": tier, "status": status, "age_seconds": age,
                "patient": "+15550001111", "overdue": overdue}

    b = data.banner([row("1-0", "EMERGENCY", 125), row("2-0", "EMERGENCY", 370, overdue=True),
                     row("3-0", "URGENT", 2000, overdue=True), row("4-0", "EMERGENCY", 50)])
    assert b["text"] == "3 EMERGENCY waiting, oldest 6 min"
    assert b["count"] == 3 and b["oldest_id"] == "2-0" and b["overdue"] == 2
    assert "+1555" not in b["text"]  # no wall of phone numbers
    assert data.banner([])["text"] == "" and data.banner([])["count"] == 0
    assert data.banner([row("5-0", "EMERGENCY", 20)])["text"] == (
        "1 EMERGENCY waiting, oldest under 1 min")


def test_times_are_in_the_clinic_zone_with_the_zone_shown() -> None:
    winter = datetime(2026, 1, 15, 14, 30, tzinfo=UTC).timestamp()
    summer = datetime(2026, 7, 15, 14, 30, tzinfo=UTC).timestamp()
    assert data.clinic_time(winter, NY) == "2026-01-15 09:30 EST"
    assert data.clinic_time(summer, NY) == "2026-07-15 10:30 EDT"
    assert data.clinic_time(summer, ZoneInfo("Europe/London"), seconds=True) == (
        "2026-07-15 15:30:00 BST")
    # 03:00 UTC is still the previous day in New York: the clinic's day counts.
    late = datetime(2026, 3, 2, 3, 0, tzinfo=UTC).timestamp()
    assert data.clinic_today(late, NY) == date(2026, 3, 1)


def test_an_unknown_clinic_zone_stops_the_service(redis_url: str, tmp_path: Any) -> None:
    with pytest.raises(RuntimeError, match="CLINIC_TIMEZONE"):
        clinic_zone("Mars/Olympus_Mons")
    with pytest.raises(RuntimeError, match="CLINIC_TIMEZONE"):
        create_app(settings(redis_url, tmp_path, CLINIC_TIMEZONE="EST5EDT-not-a-zone"))
    app = create_app(settings(redis_url, tmp_path, CLINIC_TIMEZONE="Europe/London"))
    assert app.config["CLINIC_TZ"].key == "Europe/London"


def test_enrolment_fields_are_validated() -> None:
    with pytest.raises(profile.ProfileError) as exc:
        profile.clean({"date_of_birth": "2999-01-01", "mrn": "12", "caregiver_phone": "555",
                       "caregiver_relationship": "neighbour"})
    assert set(exc.value.errors) == {"date_of_birth", "mrn", "caregiver_phone",
                                     "caregiver_relationship"}
    assert "past date" in exc.value.errors["date_of_birth"]
    assert "MRN-004512" in exc.value.errors["mrn"]
    with pytest.raises(profile.ProfileError):
        profile.clean({"date_of_birth": "1850-05-05"})
    with pytest.raises(profile.ProfileError):
        profile.clean({"mrn": "MRN 12; DROP"})
    ok = profile.clean({"date_of_birth": "2015-03-04", "mrn": "MRN-004512",
                        "caregiver_name": "Ana Lopez", "caregiver_relationship": "parent",
                        "caregiver_phone": "+1 (555) 010-0199",
                        "blinatumomab_start_date": "2026-11-01"})
    assert ok["caregiver_phone"] == "+15550100199" and ok["mrn"] == "MRN-004512"


# --------------------------------------------------------------------------- through the app

def test_acknowledge_and_resolve_act_on_the_whole_episode(app: Any, nurse: Any) -> None:
    a = add(app, "URGENT", 600, conv="c-1")
    b = add(app, "EMERGENCY", 300, conv="c-1")
    alone = add(app, "URGENT", 200)
    rows = queue(nurse)
    assert [x["ids"] for x in rows] == [[a, b], [alone]]
    page = nurse.get(f"/dashboard/escalations/{a}").get_data(as_text=True)
    assert "2 findings in this conversation" in page
    assert f'name="seen" value="{a},{b}"' in page
    csrf = token(nurse, f"/dashboard/escalations/{a}")
    resp = nurse.post(f"/dashboard/escalations/{a}/ack",
                      data={"csrf_token": csrf, "seen": f"{a},{b}"})
    assert resp.status_code == 303
    assert [escalations.status(r(app), x) for x in (a, b, alone)] == [
        "acknowledged", "acknowledged", "open"]
    # Whoever acknowledges an episode nobody had takes it.
    assert escalations.episode_state(r(app), "+15550001111", "c-1")["assigned_to"] == "nina"
    resp = nurse.post(f"/dashboard/escalations/{b}/resolve",
                      data={"csrf_token": csrf, "seen": f"{a},{b}", "note": "ED, family told"})
    assert resp.status_code == 303
    assert [escalations.status(r(app), x) for x in (a, b)] == ["resolved", "resolved"]
    assert escalations.details(r(app), a)["resolved_note"] == "ED, family told"
    assert [x["ids"] for x in queue(nurse)] == [[alone]]
    assert any(act[1] == "resolve" and b in act[3] for act in audit_actions(app))


def test_a_finding_that_arrived_after_the_page_was_drawn_is_not_swept_along(
        app: Any, nurse: Any) -> None:
    a = add(app, "URGENT", 600, conv="c-2")
    csrf = token(nurse, f"/dashboard/escalations/{a}")  # the page shows only a
    late = add(app, "EMERGENCY", 1, conv="c-2", reasons=["seizure"])
    resp = nurse.post(f"/dashboard/escalations/{a}/resolve",
                      data={"csrf_token": csrf, "seen": a, "note": "called, fine"})
    assert resp.status_code == 409
    assert "a new finding arrived" in resp.get_data(as_text=True)
    assert escalations.status(r(app), a) == "open" and escalations.status(r(app), late) == "open"
    resp = nurse.post(f"/dashboard/escalations/{a}/ack", data={"csrf_token": csrf, "seen": a})
    assert resp.status_code == 409 and escalations.status(r(app), late) == "open"
    # Having seen it, she can.
    resp = nurse.post(f"/dashboard/escalations/{a}/ack",
                      data={"csrf_token": csrf, "seen": f"{a},{late}"})
    assert resp.status_code == 303 and escalations.status(r(app), late) == "acknowledged"


def test_call_back_attempts_are_logged_with_who_when_and_outcome(app: Any, nurse: Any) -> None:
    phone = "+15550002222"
    profile.save(r(app), phone, {"name": "Maya", "caregiver_name": "Ana",
                                 "caregiver_relationship": "parent",
                                 "caregiver_phone": "+15550002299"})
    rid = add(app, "URGENT", 600, phone=phone)
    page = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    assert f'href="tel:{phone}"' in page and 'href="tel:+15550002299"' in page
    assert f'href="tel:{phone}"' in nurse.get("/dashboard/").get_data(as_text=True)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    url = f"/dashboard/escalations/{rid}/calls"
    assert nurse.post(url, data={"outcome": "no_answer", "called": "patient"}).status_code == 400
    bad = nurse.post(url, data={"csrf_token": csrf, "outcome": "hung up", "called": "patient"})
    assert bad.status_code == 400 and "Call not logged" in bad.get_data(as_text=True)
    assert escalations.status(r(app), rid) == "open"  # a refused call changes nothing

    before = time.time()
    resp = nurse.post(url, data={"csrf_token": csrf, "outcome": "no_answer",
                                 "called": "patient", "seen": rid})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("#callback")
    # Calling is handling it: acknowledged, and nina has it.
    assert escalations.status(r(app), rid) == "acknowledged"
    users.create(r(app), "ada", PASSWORD, "admin")
    other = app.test_client()
    login(other, "omar")
    csrf2 = token(other, f"/dashboard/escalations/{rid}")
    other.post(url, data={"csrf_token": csrf2, "outcome": "spoke_caregiver",
                          "called": "caregiver", "call_note": "mum says <b>better</b>"})
    calls = [e for e in escalations.episode_events(r(app), phone, escalations.episode_of(
        {"id": rid, "conversation_id": app.extensions["triage"].store.record(rid)[
            "conversation_id"]})) if e["action"] == "call"]
    assert [(c["who"], c["outcome"], c["called"]) for c in calls] == [
        ("nina", "no_answer", "patient"), ("omar", "spoke_caregiver", "caregiver")]
    assert before - 1 <= calls[0]["ts"] <= time.time() + 1
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    log = html.split('id="call-log"', 1)[1].split("</table>", 1)[0]
    assert "no answer" in log and "spoke to caregiver" in log and "omar" in log
    assert "mum says &lt;b&gt;better&lt;/b&gt;" in log
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d E[SD]T", log)  # clinic time, zone shown
    assert "call-back (the caregiver&#39;s number): spoke to caregiver" in html  # history
    row = queue(nurse)[0]
    assert row["calls"] == 2 and row["last_call"].startswith("spoke to caregiver")
    assert row["assigned_to"] == "nina"  # omar's call did not take it from her
    assert ("nina", "call", rid, "no answer (patient)") in audit_actions(app)
    admin = app.test_client()
    login(admin, "ada")
    audit_page = admin.get("/dashboard/audit?action=call").get_data(as_text=True)
    assert "spoke to caregiver (caregiver)" in audit_page and "no answer (patient)" in audit_page


def test_working_notes_are_kept_apart_from_the_resolution_note(app: Any, nurse: Any) -> None:
    rid = add(app, "SOON", 600)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    url = f"/dashboard/escalations/{rid}/notes"
    assert nurse.post(url, data={"working_note": "x"}).status_code == 400  # no token
    resp = nurse.post(url, data={"csrf_token": csrf, "working_note": "   "})
    assert resp.status_code == 400 and "Note not saved" in resp.get_data(as_text=True)
    for text in ("Left a message with dad", "Dad called back: <i>temp 37.9</i>"):
        assert nurse.post(url, data={"csrf_token": csrf, "working_note": text}
                          ).status_code == 303
    assert escalations.status(r(app), rid) == "open"  # a note acknowledges nothing
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    notes = html.split('id="note-list"', 1)[1].split("</ol>", 1)[0]
    assert notes.index("Left a message") < notes.index("Dad called back")
    assert "&lt;i&gt;temp 37.9&lt;/i&gt;" in notes and notes.count("nina") == 2
    assert 'id="resolution-note"' not in html  # not resolved: no resolution note
    assert queue(nurse)[0]["notes"] == 2
    assert ("nina", "note", rid, "23 characters") in audit_actions(app)
    assert "Dad called back" not in str(audit_actions(app))  # patient details stay out


def test_assign_hand_over_and_the_mine_filter(app: Any, nurse: Any) -> None:
    mine = add(app, "URGENT", 600)
    theirs = add(app, "URGENT", 500)
    nobody = add(app, "SOON", 400)
    csrf = token(nurse, f"/dashboard/escalations/{mine}")
    page = nurse.get(f"/dashboard/escalations/{mine}").get_data(as_text=True)
    assert '<option value="omar">omar</option>' in page and "nina (me)" in page
    assert nurse.post(f"/dashboard/escalations/{mine}/assign",
                      data={"csrf_token": csrf, "take": "1"}).status_code == 303
    assert nurse.post(f"/dashboard/escalations/{theirs}/assign",
                      data={"csrf_token": csrf, "to": "nina"}).status_code == 303
    resp = nurse.post(f"/dashboard/escalations/{theirs}/assign",
                      data={"csrf_token": csrf, "to": "omar",
                            "handover_note": "end of my shift"})
    assert resp.status_code == 303
    resp = nurse.post(f"/dashboard/escalations/{nobody}/assign",
                      data={"csrf_token": csrf, "to": "mallory"})
    assert resp.status_code == 400 and "no user" in resp.get_data(as_text=True)
    assert nurse.post(f"/dashboard/escalations/{nobody}/assign", data={"to": "nina"}
                      ).status_code == 400  # no CSRF token
    assert [x["id"] for x in queue(nurse, "?mine=1")] == [mine]
    assert {x["id"]: x["assigned_to"] for x in queue(nurse)} == {
        mine: "nina", theirs: "omar", nobody: ""}
    html = nurse.get("/dashboard/?mine=1").get_data(as_text=True)
    assert f'data-id="{mine}"' in html and f'data-id="{theirs}"' not in html
    assert 'name="mine" value="1" id="mine" checked' in html
    history = nurse.get(f"/dashboard/escalations/{theirs}").get_data(as_text=True)
    assert "assigned to omar</strong> by nina: <span class=\"note\">end of my shift" in history
    assert ("nina", "assign", theirs, "to omar") in audit_actions(app)
    # Giving it back: nobody has it.
    nurse.post(f"/dashboard/escalations/{mine}/assign", data={"csrf_token": csrf, "to": ""})
    assert queue(nurse, "?mine=1") == []


def test_queue_row_shows_facts_words_and_assumed_window(app: Any, nurse: Any) -> None:
    phone = "+15550003333"
    profile.save(r(app), phone, {
        "name": "Sam <Reed>", "date_of_birth": "2010-02-03", "age_band": "teen",
        "treatment_phase": "maintenance",
        "last_chemo_date": datetime.now(UTC).date().isoformat(),  # the risk windows' day
        "caregiver_name": "Jo <script>x</script>", "caregiver_relationship": "parent",
        "mrn": "004417"})
    add(app, "URGENT", 120, phone=phone, reasons=["temperature 38.4 C"],
        answers={"temperature": "38.4 <img src=x>", "danger_signs": "no"},
        risk_window_assumed=True)
    html = nurse.get("/dashboard/").get_data(as_text=True)
    assert "Sam &lt;Reed&gt;" in html and "MRN 004417" in html
    assert re.search(r"1[56] y, teen · maintenance · chemo day 0<", html)
    assert "Caregiver: Jo &lt;script&gt;x&lt;/script&gt; (parent)" in html
    assert '<q class="words">38.4 &lt;img src=x&gt;</q>' in html  # their words, escaped
    assert "risk window assumed, not known" in html
    assert "<img src=x>" not in html and "<script>x" not in html
    detail = nurse.get(f"/dashboard/escalations/{queue(nurse)[0]['id']}").get_data(as_text=True)
    words = detail.split('id="their-words"', 1)[1].split("</p>", 1)[0]
    assert '<q class="words">38.4 &lt;img src=x&gt;</q>' in words
    assert "risk window assumed, not known" in detail


def test_quotes_win_over_answers_when_the_record_has_them(app: Any, nurse: Any) -> None:
    add(app, "URGENT", 60, reasons=["temperature 38.6 C >= 38.0"],
        answers={"temperature": "38.6"},
        quotes={"temperature 38.6 C >= 38.0": "she is 38.6 and shivering"})
    row = queue(nurse)[0]
    assert row["quoted"][0]["words"] == "she is 38.6 and shivering"
    html = nurse.get("/dashboard/").get_data(as_text=True)
    assert '<q class="words">she is 38.6 and shivering</q>' in html
    assert "Their words:" not in html  # the answers are the fallback only
    detail = nurse.get(f"/dashboard/escalations/{row['id']}").get_data(as_text=True)
    assert "she is 38.6 and shivering" in detail and 'id="their-words"' not in detail


def test_patient_page_history_is_served_for_live_refresh(app: Any, nurse: Any) -> None:
    phone = "+15550004444"
    profile.save(r(app), phone, {"name": "Leo"})
    page = nurse.get(f"/dashboard/patients/{phone}").get_data(as_text=True)
    assert 'id="patient-live" data-poll-url="/dashboard/patients/+15550004444/history.json"' \
        in page
    assert nurse.get(f"/dashboard/patients/{phone}/history.json").get_json()["rows"] == []
    a = add(app, "SOON", 600, phone=phone, conv="c-9")
    add(app, "URGENT", 60, phone=phone, conv="c-9")
    got = nurse.get(f"/dashboard/patients/{phone}/history.json").get_json()
    assert len(got["rows"]) == 1 and got["rows"][0]["tier"] == "URGENT"
    assert got["rows"][0]["url"] == f"/dashboard/escalations/{got['rows'][0]['id']}"
    assert got["rows"][0]["when"].endswith(("EST", "EDT")) and "updated" in got
    assert a in got["rows"][0]["ids"]
    # Polling is not a view: the audit log has the page view only, once.
    views = [x for x in audit_actions(app) if x[1] == "view_patient"]
    assert len(views) == 1
    assert nurse.get("/dashboard/patients/nonsense/history.json").status_code == 404


def test_enrol_with_caregiver_date_of_birth_and_mrn(app: Any, nurse: Any) -> None:
    csrf = token(nurse, "/dashboard/patients/new")
    form = {"csrf_token": csrf, "phone": "+15550005555", "name": "Ana Diaz", "status": "active",
            "date_of_birth": "2999-01-01", "mrn": "x", "caregiver_name": "Luis Diaz",
            "caregiver_relationship": "parent", "caregiver_phone": "+15550005599"}
    resp = nurse.post("/dashboard/patients/new", data=form)
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "Date of birth must be a past date" in html
    assert "Medical record number (MRN) must be 3-20 letters" in html
    assert not profile.all_phones(r(app))
    resp = nurse.post("/dashboard/patients/new",
                      data={**form, "date_of_birth": "2012-06-01", "mrn": "MRN-2231"})
    assert resp.status_code == 303
    saved = profile.get(r(app), "+15550005555")
    assert (saved["caregiver_name"], saved["caregiver_relationship"], saved["mrn"],
            saved["date_of_birth"]) == ("Luis Diaz", "parent", "MRN-2231", "2012-06-01")
    page = nurse.get("/dashboard/patients/+15550005555").get_data(as_text=True)
    assert "Caregiver: Luis Diaz (parent)" in page and 'href="tel:+15550005599"' in page
    assert "Ana Diaz" in nurse.get("/dashboard/patients?q=mrn-2231").get_data(as_text=True)


def test_status_hash_is_untouched_by_calls_notes_and_assignment(app: Any, nurse: Any) -> None:
    """Working on an episode never resolves it and never writes the records themselves."""
    rid = add(app, "URGENT", 60)
    before = app.extensions["triage"].store.record(rid)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    nurse.post(f"/dashboard/escalations/{rid}/notes",
               data={"csrf_token": csrf, "working_note": "n"})
    nurse.post(f"/dashboard/escalations/{rid}/assign", data={"csrf_token": csrf, "to": "omar"})
    assert r(app).hget(STATUS, rid) == "open"
    after = app.extensions["triage"].store.record(rid)
    assert after == before


def test_episode_records_reads_only_the_recent_stream(app: Any) -> None:
    """The escalation page finds the episode's records without reading the whole history."""
    a = add(app, "SOON", 600, conv="c-e")
    b = add(app, "URGENT", 60, conv="c-e")
    add(app, "URGENT", 60, conv="c-other")
    add(app, "URGENT", 60, conv="c-e", phone="+15550009999")  # same id, another patient
    escalations.acknowledge(r(app), a, "nina")
    rec = app.extensions["triage"].store.record(b)
    found = data.episode_records(r(app), rec)
    assert [(x["id"], x["status"]) for x in found] == [(a, "acknowledged"), (b, "open")]
    # A record older than the look-back is not read (the stream is not scanned from its start).
    old = dict(rec, started_at=iso(time.time() + 3 * 86400))
    assert [x["id"] for x in data.episode_records(r(app), old)] == [b]


def test_overview_counts_the_clinic_days(app: Any) -> None:
    """A record at 02:00 UTC belongs to the previous day in New York."""
    now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC).timestamp()
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC).timestamp()
    rec = {"phone": "+15550001111", "flow": "fever", "flows": ["fever"], "tier": "URGENT",
           "reasons": ["r"], "kind": "completed", "conversation_id": "c-o",
           "started_at": iso(at), "created_at": iso(at), "status": "open"}
    r(app).xadd("triage:records", {"data": json.dumps(rec)},
                id=f"{int(at * 1000)}-0")
    r(app).hset(STATUS, f"{int(at * 1000)}-0", "open")
    ny = data.overview(r(app), now, 900, tz=NY)
    utc = data.overview(r(app), now, 900)
    count = {d["day"]: d["counts"]["URGENT"] for d in ny["days"] if d["counts"]["URGENT"]}
    assert count == {date(2026, 11, 19): 1}
    assert {d["day"] for d in utc["days"] if d["counts"]["URGENT"]} == {date(2026, 11, 20)}
