"""The care team's dashboard, through the Flask test client, on a real Redis, with CSRF on
(nothing here sets WTF_CSRF_ENABLED: a form without its token must be refused)."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot import audit, escalations, profile, users
from bot.dashboard import data
from bot.store import STATUS
from conftest import Phone

PASSWORD = "correct-horse-battery"
TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def r(app: Any) -> Any:
    return app.extensions["triage"].store.r


def token(client: Any, path: str = "/dashboard/login") -> str:
    html = client.get(path).get_data(as_text=True)
    found = TOKEN_RE.search(html)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(client: Any, username: str, password: str = PASSWORD, **kw: Any) -> Any:
    return client.post("/dashboard/login", data={
        "username": username, "password": password, "csrf_token": token(client)}, **kw)


@pytest.fixture
def nurse(app: Any, client: Any) -> Any:
    users.create(r(app), "nina", PASSWORD, "nurse")
    assert login(client, "nina").status_code == 303
    return client


@pytest.fixture
def admin(app: Any) -> Any:
    users.create(r(app), "ada", PASSWORD, "admin")
    c = app.test_client()
    assert login(c, "ada").status_code == 303
    return c


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add(app: Any, tier: str, age: float, *, phone: str = "+15550001111", flow: str = "fever",
        status: str = "open", reasons: list[str] | None = None, now: float | None = None,
        **extra: Any) -> str:
    """A triage record created ``age`` seconds ago (as the engine writes them); a conversation
    of its own unless ``conversation_id`` is given."""
    now = time.time() if now is None else now
    rec = {"phone": phone, "flow": flow, "flows": [flow] if flow != "red_flag" else [],
           "tier": tier, "reasons": reasons or [f"{tier.lower()} reason"], "all_reasons": [],
           "cites": [], "answers": {}, "kind": "completed",
           "conversation_id": "c-" + uuid.uuid4().hex[:12],
           "started_at": iso(now - age), "created_at": iso(now - age), "status": status,
           "unregistered": True, "risk_windows": [], **extra}
    return app.extensions["triage"].store.append_record(rec)


def queue_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="row[^"]*" data-id="([^"]+)"', html)


def audit_actions(app: Any) -> list[tuple[str, str, str]]:
    return [(e["who"], e["action"], e["target"]) for e in audit.entries(r(app), count=1000)]


# --------------------------------------------------------------------------- login, roles

def test_every_dashboard_page_requires_login(app: Any, client: Any) -> None:
    rid = add(app, "URGENT", 60)
    args = {"rid": rid, "phone": "+15550001111", "filename": "dashboard.css"}
    checked = 0
    csrf = token(client)
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("dashboard.") or rule.endpoint in (
                "dashboard.login", "dashboard.static"):
            continue
        url = rule.build({k: v for k, v in args.items() if k in rule.arguments})[1]
        for method in sorted(rule.methods & {"GET", "POST"}):
            resp = client.open(url, method=method, data={"csrf_token": csrf})
            if url.endswith(".json"):
                assert resp.status_code == 401, url
            else:
                assert resp.status_code == 302, (method, url)
                assert resp.headers["Location"].startswith("/dashboard/login"), url
            checked += 1
    assert checked >= 14
    assert client.get("/").headers["Location"] == "/dashboard/"
    # Nothing changed while signed out.
    assert escalations.status(r(app), rid) == "open"


def test_login_lands_on_the_queue_with_a_safe_cookie(app: Any, client: Any) -> None:
    users.create(r(app), "nina", PASSWORD, "nurse")
    resp = login(client, "NINA ")  # usernames are case- and space-insensitive
    assert resp.status_code == 303 and resp.headers["Location"] == "/dashboard/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" in cookie  # PUBLIC_BASE_URL is https in the tests
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "nina (nurse)" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert ("nina", "login", "nina") in audit_actions(app)


def test_login_follows_next_only_inside_the_dashboard(app: Any, client: Any) -> None:
    users.create(r(app), "nina", PASSWORD, "nurse")
    data_ = {"username": "nina", "password": PASSWORD, "next": "https://evil.example/x"}
    resp = client.post("/dashboard/login", data={**data_, "csrf_token": token(client)})
    assert resp.headers["Location"] == "/dashboard/"
    client.post("/dashboard/logout", data={"csrf_token": token(client, "/dashboard/")})
    data_["next"] = "/dashboard/patients"
    resp = client.post("/dashboard/login", data={**data_, "csrf_token": token(client)})
    assert resp.headers["Location"] == "/dashboard/patients"


def test_wrong_password_is_refused_and_repeated_failures_are_slowed(app: Any) -> None:
    users.create(r(app), "nina", PASSWORD, "nurse")
    # Nina has signed in at her own workstation before (it carries her device cookie).
    desk = app.test_client()
    assert login(desk, "nina", environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 303
    desk.post("/dashboard/logout", data={"csrf_token": token(desk, "/dashboard/")},
              environ_base={"REMOTE_ADDR": "10.0.0.7"})
    attacker = app.test_client()
    for _ in range(users.MAX_FAILURES):
        resp = login(attacker, "nina", "wrong-password!")
        assert resp.status_code == 401
        assert "Wrong username or password" in resp.get_data(as_text=True)
    assert login(attacker, "nobody", "whatever-it-is").status_code == 401
    # Locked for this client even with the right password...
    resp = login(attacker, "nina")
    assert resp.status_code == 429 and "Too many failed attempts" in resp.get_data(as_text=True)
    assert attacker.get("/dashboard/").status_code == 302
    # ...but not for the nurse at her own workstation (a browser new to her is slowed
    # for a while: tests/test_security.py).
    assert login(desk, "nina", environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 303
    failed = [a for a in audit_actions(app) if a[1] == "login_failed"]
    assert len(failed) == users.MAX_FAILURES + 2


def test_logout_ends_the_session(app: Any, nurse: Any) -> None:
    resp = nurse.post("/dashboard/logout", data={"csrf_token": token(nurse, "/dashboard/")})
    assert resp.status_code == 303
    assert nurse.get("/dashboard/").status_code == 302
    assert ("nina", "logout", "nina") in audit_actions(app)


def test_a_removed_user_is_signed_out_at_once(app: Any, nurse: Any) -> None:
    r(app).delete(users.user_key("nina"))
    assert nurse.get("/dashboard/").status_code == 302


def test_audit_page_is_for_admins_only(app: Any, nurse: Any, admin: Any) -> None:
    assert nurse.get("/dashboard/audit").status_code == 403
    resp = admin.get("/dashboard/audit")
    assert resp.status_code == 200
    assert "nina" in resp.get_data(as_text=True)  # nina's login is in the log
    # The log has no route that writes: no POST, PUT or DELETE anywhere under /dashboard/audit.
    for method in ("post", "put", "delete"):
        assert getattr(admin, method)("/dashboard/audit").status_code in (400, 405)
    assert not [rule for rule in app.url_map.iter_rules() if "audit" in rule.rule
                and rule.methods & {"POST", "PUT", "PATCH", "DELETE"}]


# --------------------------------------------------------------------------- CSRF

def test_forms_without_a_csrf_token_are_refused(app: Any, nurse: Any) -> None:
    rid = add(app, "EMERGENCY", 60)
    resp = nurse.post(f"/dashboard/escalations/{rid}/ack")
    assert resp.status_code == 400
    assert "security token" in resp.get_data(as_text=True)
    assert escalations.status(r(app), rid) == "open"
    resp = nurse.post(f"/dashboard/escalations/{rid}/ack", data={"csrf_token": "forged"})
    assert resp.status_code == 400 and escalations.status(r(app), rid) == "open"
    assert nurse.post("/dashboard/patients/new", data={"phone": "+15550002222"}
                      ).status_code == 400
    assert not profile.all_phones(r(app))
    anon = app.test_client()
    assert anon.post("/dashboard/login", data={"username": "nina", "password": PASSWORD}
                     ).status_code == 400
    # The webhook and the API are not forms: they keep working without a token.
    assert Phone(app.test_client()).send("hello")


# --------------------------------------------------------------------------- queue

def test_queue_order_emergency_first_then_oldest_first(app: Any, nurse: Any) -> None:
    soon_old = add(app, "SOON", 7200)
    urgent_new = add(app, "URGENT", 60)
    emergency_new = add(app, "EMERGENCY", 30)
    urgent_old = add(app, "URGENT", 3000)
    emergency_old = add(app, "EMERGENCY", 600)
    routine = add(app, "ROUTINE", 10)
    done = add(app, "EMERGENCY", 9000)
    escalations.resolve(r(app), done, "nina", "called")
    acked = add(app, "URGENT", 5000)
    escalations.acknowledge(r(app), acked, "nina")

    html = nurse.get("/dashboard/").get_data(as_text=True)
    expected = [emergency_old, emergency_new, urgent_old, urgent_new, acked, soon_old]
    assert queue_ids(html) == expected  # ROUTINE and resolved hidden by default
    assert "10 min ago" in html and "2 h ago" in html
    rows = nurse.get("/dashboard/queue.json").get_json()["rows"]
    assert [row["id"] for row in rows] == expected
    assert rows[0]["age"] == "10 min ago" and rows[0]["url"].endswith(emergency_old)

    html = nurse.get("/dashboard/?tier=ROUTINE&tier=EMERGENCY").get_data(as_text=True)
    assert queue_ids(html) == [emergency_old, emergency_new, routine]
    assert queue_ids(nurse.get("/dashboard/?status=resolved&tier=EMERGENCY")
                     .get_data(as_text=True)) == [done]


def test_queue_shows_name_checklist_reasons_and_paging(app: Any, nurse: Any) -> None:
    profile.save(r(app), "+15550003333", {"name": "Maya Lopez"})
    late = add(app, "URGENT", 20 * 60, phone="+15550003333", reasons=["temperature 38.6 C"])
    r(app).hset(escalations.esc_key(late), mapping={
        "page_status": "failed", "page_attempts": "3", "page_error": "Twilio 21610"})
    fresh = add(app, "URGENT", 60, phone="+15550004444", flow="red_flag")
    flagged = add(app, "EMERGENCY", 60)
    escalations.acknowledge(r(app), flagged, "nina")
    r(app).hset(escalations.esc_key(flagged), "overdue", "1")

    rows = {row["id"]: row for row in nurse.get("/dashboard/queue.json").get_json()["rows"]}
    assert rows[late]["patient"] == "Maya Lopez" and rows[late]["registered"]
    assert rows[late]["checklist"] == "Fever or infection"
    assert rows[late]["reasons"] == ["temperature 38.6 C"]
    assert rows[late]["overdue"] and rows[late]["page_status"] == "failed"
    assert rows[fresh]["patient"] == "+15550004444" and not rows[fresh]["registered"]
    assert rows[fresh]["checklist"] == "Red flag" and not rows[fresh]["overdue"]
    assert rows[flagged]["overdue"]  # the paging worker's flag is shown as it is
    html = nurse.get("/dashboard/").get_data(as_text=True)
    assert "Maya Lopez" in html and "page failed ×3" in html and "Twilio 21610" in html
    assert html.count(">OVERDUE<") == 1 and html.count(">was overdue<") == 1
    assert "2 EMERGENCY/URGENT open past" not in html and "1 EMERGENCY/URGENT open past" in html


def test_queue_filters_by_checklist_status_and_date(app: Any, nurse: Any) -> None:
    now = time.time()
    fever = add(app, "URGENT", 3 * 86400)
    flag = add(app, "URGENT", 600, flow="red_flag")
    zone = ZoneInfo(app.config["CLINIC_TIMEZONE"])  # the dates are the clinic's days
    today = datetime.fromtimestamp(now, zone).date().isoformat()
    assert queue_ids(nurse.get("/dashboard/?flow=red_flag").get_data(as_text=True)) == [flag]
    assert queue_ids(nurse.get(f"/dashboard/?from={today}").get_data(as_text=True)) == [flag]
    old_day = datetime.fromtimestamp(now - 3 * 86400, zone).date().isoformat()
    assert queue_ids(nurse.get(f"/dashboard/?to={old_day}").get_data(as_text=True)) == [fever]
    escalations.acknowledge(r(app), fever, "nina")
    assert queue_ids(nurse.get("/dashboard/?status=open").get_data(as_text=True)) == [flag]
    # A bad filter value is ignored out loud, never an empty queue.
    html = nurse.get("/dashboard/?from=yesterday&status=bogus").get_data(as_text=True)
    assert queue_ids(html) == [flag, fever]  # open before acknowledged
    assert "Filter from: must be a date" in html and "unknown status" in html


def test_emergency_banner_is_on_every_page_whatever_the_filter(app: Any, nurse: Any) -> None:
    assert "EMERGENCY waiting" not in nurse.get("/dashboard/").get_data(as_text=True)
    rid = add(app, "EMERGENCY", 120, phone="+15550005555")
    for page in ("/dashboard/?tier=SOON", "/dashboard/patients", "/dashboard/overview"):
        assert "1 EMERGENCY waiting, oldest 2 min" in nurse.get(page).get_data(as_text=True), page
    alarm = nurse.get("/dashboard/alarm.json").get_json()["alarm"]
    assert alarm["ids"] == [rid] and alarm["count"] == 1
    assert alarm["url"] == f"/dashboard/escalations/{rid}"  # one: straight to it
    escalations.acknowledge(r(app), rid, "nina")
    alarm = nurse.get("/dashboard/alarm.json").get_json()["alarm"]
    assert alarm["ids"] == [] and alarm["count"] == 0 and alarm["text"] == ""


# --------------------------------------------------------------------------- escaping

def test_patient_text_is_escaped_everywhere(app: Any, nurse: Any, phone: Any) -> None:
    payload = "<script>alert('x')</script>"
    phone.send(f"I can't breathe {payload}")
    profile.save(r(app), phone.number, {"name": '<img src=x onerror="alert(1)">'})
    rid = app.extensions["triage"].store.records()[0]["id"]
    pages = [f"/dashboard/escalations/{rid}", "/dashboard/",
             f"/dashboard/patients/{phone.number}", "/dashboard/patients"]
    for page in pages:
        html = nurse.get(page).get_data(as_text=True)
        assert payload not in html and "<img src=x" not in html, page
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html, page
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    assert "I can&#39;t breathe &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    js = app.test_client().get("/dashboard/static/dashboard.js").get_data(as_text=True)
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)
    assert "textContent" in js


# --------------------------------------------------------------------------- detail, actions

def test_detail_shows_record_answers_transcript_profile_and_history(
        app: Any, nurse: Any, phone: Any) -> None:
    profile.save(r(app), phone.number, {"name": "Sam Reed", "age_band": "adult"})
    phone.send("I have chest pain")  # an earlier conversation of the same episode (session)
    time.sleep(2.1)
    phone.conversation("fever", "no", "38.6")
    rid = app.extensions["triage"].store.records(phone=phone.number)[0]["id"]
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    assert "Sam Reed" in html and "<dt>Age band</dt><dd>adult</dd>" in html
    assert "temperature 38.6 C &gt;= 38.0" in html
    assert "clinical-rules.md &gt; Fever and infection" in html
    assert "What is your temperature?" in html  # the question beside the answer
    texts = re.findall(r'<p class="text">([^<]*)</p>', html)
    # one episode per session: the transcript starts with the episode's first text
    assert texts[0] == "I have chest pain" and "fever" in texts and "38.6" in texts
    assert texts[-1].startswith("Call ")  # the service's reply to the last answer
    whole = nurse.get(f"/dashboard/escalations/{rid}?transcript=all").get_data(as_text=True)
    assert "I have chest pain" in re.findall(r'<p class="text">([^<]*)</p>', whole)
    assert ("nina", "view_record", rid) in audit_actions(app)
    assert nurse.get("/dashboard/escalations/123-0").status_code == 404
    assert nurse.get("/dashboard/escalations/not-an-id").status_code == 404


def test_acknowledge_and_resolve_record_who_and_when(app: Any, nurse: Any) -> None:
    rid = add(app, "URGENT", 300)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    before = time.time()
    resp = nurse.post(f"/dashboard/escalations/{rid}/ack", data={"csrf_token": csrf})
    assert resp.status_code == 303
    esc = escalations.details(r(app), rid)
    assert esc["acknowledged_by"] == "nina"
    assert before - 1 <= float(esc["acknowledged_at"]) <= time.time() + 1
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    assert "Acknowledged by <strong>nina</strong>" in html

    resp = nurse.post(f"/dashboard/escalations/{rid}/resolve",
                      data={"csrf_token": csrf, "note": "   "})
    assert resp.status_code == 400 and "write a note" in resp.get_data(as_text=True)
    assert escalations.status(r(app), rid) == "acknowledged"
    resp = nurse.post(f"/dashboard/escalations/{rid}/resolve",
                      data={"csrf_token": csrf, "note": "Called back; going to ED <b>now</b>"})
    assert resp.status_code == 303
    esc = escalations.details(r(app), rid)
    assert esc["resolved_by"] == "nina" and esc["resolved_note"].startswith("Called back")
    assert [(e["action"], e["who"]) for e in escalations.events(r(app), rid)] == [
        ("acknowledged", "nina"), ("resolved", "nina")]
    html = nurse.get(f"/dashboard/escalations/{rid}").get_data(as_text=True)
    assert "Resolved by <strong>nina</strong>" in html and "&lt;b&gt;now&lt;/b&gt;" in html
    actions = audit_actions(app)
    assert ("nina", "ack", rid) in actions and ("nina", "resolve", rid) in actions


def test_invalid_transitions_are_refused(app: Any, nurse: Any) -> None:
    rid = add(app, "EMERGENCY", 60)
    csrf = token(nurse, f"/dashboard/escalations/{rid}")
    assert nurse.post(f"/dashboard/escalations/{rid}/ack", data={"csrf_token": csrf}
                      ).status_code == 303
    resp = nurse.post(f"/dashboard/escalations/{rid}/ack", data={"csrf_token": csrf})
    assert resp.status_code == 409
    assert "escalation is acknowledged, cannot become acknowledged" in resp.get_data(
        as_text=True)
    nurse.post(f"/dashboard/escalations/{rid}/resolve", data={"csrf_token": csrf, "note": "ok"})
    for action, form in (("ack", {}), ("resolve", {"note": "again"})):
        resp = nurse.post(f"/dashboard/escalations/{rid}/{action}",
                          data={"csrf_token": csrf, **form})
        assert resp.status_code == 409
    assert len(escalations.events(r(app), rid)) == 2
    assert r(app).hget(STATUS, rid) == "resolved"
    assert nurse.post("/dashboard/escalations/1-0/ack", data={"csrf_token": csrf}
                      ).status_code == 404


# --------------------------------------------------------------------------- CSV

def test_csv_export_honours_filters_and_defuses_formulas(app: Any, nurse: Any) -> None:
    profile.save(r(app), "+15550006666", {"name": "=HYPERLINK(\"http://x\",\"a\")"})
    urgent = add(app, "URGENT", 600, phone="+15550006666")
    add(app, "SOON", 600)
    escalations.resolve(r(app), urgent, "nina", "@SUM(A1) -called +back")
    resp = nurse.get("/dashboard/export.csv?tier=URGENT&status=all")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0] == list(data.CSV_COLUMNS)
    assert len(rows) == 2  # the SOON record is filtered out
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["id"] == urgent and row["tier"] == "URGENT" and row["status"] == "resolved"
    assert row["patient"] == "'=HYPERLINK(\"http://x\",\"a\")"
    assert row["resolved_note"] == "'@SUM(A1) -called +back"
    assert row["phone"] == "'+15550006666"
    assert row["resolved_by"] == "nina"
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@"))
    assert ("nina", "export", "escalations") in audit_actions(app)
    assert [data.csv_cell(v) for v in ("-2", "\tx", "ok", True, ["a", "b"])] == [
        "'-2", "'\tx", "ok", "yes", "a; b"]


# --------------------------------------------------------------------------- registry

def test_enroll_validates_and_shows_errors_next_to_the_field(app: Any, nurse: Any) -> None:
    csrf = token(nurse, "/dashboard/patients/new")
    resp = nurse.post("/dashboard/patients/new", data={
        "csrf_token": csrf, "phone": "555-1234", "name": "Ana", "last_chemo_date": "31/12/2026",
        "usual_ice_score": "11", "status": "active"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    for field, message in (("phone", "must be a phone number"),
                           ("last_chemo_date", "must be a date like"),
                           ("usual_ice_score", "must be between 0 and 10")):
        assert re.search(rf'id="f-{field}"[^>]*>\s*<p class="error" id="f-{field}-error">'
                         rf'[^<]*{message}', html), field
    assert 'value="Ana"' in html  # what was typed is kept
    assert not profile.all_phones(r(app))

    resp = nurse.post("/dashboard/patients/new", data={
        "csrf_token": csrf, "phone": "+1 (555) 000-7777", "name": "Ana Diaz",
        "treatment_phase": "induction", "low_neutrophils": "yes", "status": "active"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("+15550007777")
    saved = profile.get(r(app), "+15550007777")
    assert saved["name"] == "Ana Diaz" and saved["low_neutrophils"] == "yes"
    resp = nurse.post("/dashboard/patients/new", data={
        "csrf_token": csrf, "phone": "+15550007777", "name": "Someone else"})
    assert resp.status_code == 400 and "already enrolled" in resp.get_data(as_text=True)
    assert ("nina", "enroll", "+15550007777") in audit_actions(app)


def test_edit_pause_and_discharge(app: Any, nurse: Any) -> None:
    phone = "+15550008888"
    profile.save(r(app), phone, {"name": "Leo Park", "treatment_phase": "maintenance"})
    csrf = token(nurse, f"/dashboard/patients/{phone}/edit")
    form = {f.name: profile.get(r(app), phone).get(f.name, "") for f in profile.FIELDS}
    resp = nurse.post(f"/dashboard/patients/{phone}/edit",
                      data={**form, "csrf_token": csrf, "blinatumomab_cycle": "x"})
    assert resp.status_code == 400
    assert "Blinatumomab cycle must be a whole number" in resp.get_data(as_text=True)
    resp = nurse.post(f"/dashboard/patients/{phone}/edit",
                      data={**form, "csrf_token": csrf, "car_t_date": "2026-11-20",
                            "treatment_phase": ""})
    assert resp.status_code == 303
    saved = profile.get(r(app), phone)
    assert saved["car_t_date"] == "2026-11-20" and "treatment_phase" not in saved
    assert ("nina", "profile_update", phone) in audit_actions(app)

    assert nurse.post(f"/dashboard/patients/{phone}/status",
                      data={"csrf_token": csrf, "status": "paused"}).status_code == 303
    assert profile.get(r(app), phone)["status"] == "paused"
    nurse.post(f"/dashboard/patients/{phone}/status", data={"csrf_token": csrf, "status": ""})
    assert profile.get(r(app), phone)["status"] == "paused"  # nonsense changes nothing
    nurse.post(f"/dashboard/patients/{phone}/status",
               data={"csrf_token": csrf, "status": "discharged"})
    assert profile.get(r(app), phone)["status"] == "discharged"
    assert "Leo Park" not in nurse.get("/dashboard/patients").get_data(as_text=True)
    assert "Leo Park" in nurse.get("/dashboard/patients?status=discharged").get_data(
        as_text=True)
    page = nurse.get(f"/dashboard/patients/{phone}")
    assert page.status_code == 200 and "CAR T-cell infusion date" in page.get_data(as_text=True)
    assert ("nina", "view_patient", phone) in audit_actions(app)
    assert ("nina", "profile_status", phone) in audit_actions(app)
    assert nurse.get("/dashboard/patients/+15559999999").status_code == 404


# --------------------------------------------------------------------------- overview

def test_overview_numbers_on_known_data(app: Any, nurse: Any) -> None:
    now = time.time()
    red = r(app)

    def acked(tier: str, age: float, after: float, how: str = "ack") -> str:
        rid = add(app, tier, age, now=now)
        created = data.parse_iso(iso(now - age))
        if how == "ack":
            escalations.acknowledge(red, rid, "nina", now=created + after)
        else:
            escalations.resolve(red, rid, "nina", "done", now=created + after)
        return rid

    acked("EMERGENCY", 600, 60)
    acked("URGENT", 2 * 86400, 300)
    acked("URGENT", 3 * 86400, 1200)  # acknowledged late: overdue
    acked("SOON", 86400, 1800, how="resolve")  # resolved without an acknowledgement first
    add(app, "EMERGENCY", 3600, now=now)  # still open after an hour: overdue, open
    add(app, "ROUTINE", 5 * 86400, now=now)
    add(app, "URGENT", 40 * 86400, now=now)  # outside the 30 days

    o = data.overview(red, now, 15 * 60)
    assert o["totals"] == {"EMERGENCY": 2, "URGENT": 2, "SOON": 1, "ROUTINE": 1}
    overall = o["ack"][-1]
    assert overall["n"] == 4 and overall["waiting"] == 1
    assert overall["median"] == pytest.approx(750)  # of 60, 300, 1200, 1800
    assert overall["p90"] == pytest.approx(1800)  # nearest rank: the 4th of 4
    urgent = next(s for s in o["ack"] if s["label"] == "URGENT")
    assert urgent["median"] == pytest.approx(750) and urgent["n"] == 2
    assert o["overdue_total"] == 2 and o["overdue_open"] == 1
    assert len(o["days"]) == 30 and sum(d["total"] for d in o["days"]) == 6
    day = datetime.fromtimestamp(now - 3 * 86400, UTC).date()
    assert next(d for d in o["days"] if d["day"] == day)["counts"]["URGENT"] >= 1
    assert len(o["chart"]["bars"]) >= 5

    html = nurse.get("/dashboard/overview").get_data(as_text=True)
    assert '<p class="bignum" id="overdue-total">2</p>' in html
    assert "<td>all escalations</td><td>4</td><td>12 min 30 s</td><td>30 min 00 s</td>" in html
    local = data.overview(red, now, 15 * 60, tz=ZoneInfo(app.config["CLINIC_TIMEZONE"]))
    assert html.count('<rect class="bar bar-') == len(local["chart"]["bars"])  # clinic days
    assert "<svg" in html and "http" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]


def test_percentile_and_age_text() -> None:
    assert data.percentile([], 90) is None
    assert data.percentile(list(range(1, 11)), 90) == 9
    assert data.percentile([5], 90) == 5
    assert [data.age_text(s) for s in (5, 61, 12 * 60 + 59, 3 * 3600 + 300, 7200, 90000)] == [
        "just now", "1 min ago", "12 min ago", "3 h 5 min ago", "2 h ago", "1 day ago"]


# --------------------------------------------------------------------------- users

def test_create_user_command(app: Any) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "Ann", "--role", "admin"],
                           input="long-enough-pw\nlong-enough-pw\n")
    assert result.exit_code == 0, result.output
    stored = r(app).hgetall(users.user_key("ann"))
    assert stored["role"] == "admin" and stored["password"].startswith("$argon2id$")
    assert "long-enough-pw" not in str(stored) and stored["created_at"].endswith("Z")
    result = runner.invoke(args=["create-user", "ann", "--password-stdin"],
                           input="another-password\n")
    assert result.exit_code != 0 and "exists" in result.output
    result = runner.invoke(args=["create-user", "bob", "--password-stdin"], input="short\n")
    assert result.exit_code != 0 and "at least" in result.output
    result = runner.invoke(args=["create-user", "ann", "--role", "nurse", "--password-stdin",
                                 "--replace"], input="another-password\n")
    assert result.exit_code == 0
    assert users.authenticate(r(app), "ann", "another-password", "t").role == "nurse"
    assert users.authenticate(r(app), "ann", "long-enough-pw", "t") is None
    result = runner.invoke(args=["create-user", "cy", "--role", "doctor", "--password-stdin"],
                           input="long-enough-pw\n")
    assert result.exit_code != 0
