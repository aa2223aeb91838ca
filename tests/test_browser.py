"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
no browser is ever downloaded), against the real app served on a loopback port, with patients
texting through the real signed webhook.

Without /usr/bin/chromium these tests skip, unless REQUIRE_BROWSER=1 (CI): then they fail.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from bot import audit, create_app, escalations, profile, users
from bot.cli import signed_post
from conftest import AUTH_TOKEN, free_port, settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
PASSWORD = "night-shift-password"
XSS_TEXT = "I can't breathe <img src=x onerror=\"window.__xss=1;alert('img')\"><script>" \
           "window.__xss=2;alert('script')</script>"
XSS_NAME = "<img src=y onerror=\"window.__xss=3;alert('name')\">Dee"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and REQUIRE_BROWSER=1")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def live(redis_url: str, tmp_path: Any) -> Iterator[SimpleNamespace]:
    """The real app on a free loopback port, in a thread; the test Redis."""
    redis.Redis.from_url(redis_url).flushdb()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(settings(redis_url, tmp_path, PUBLIC_BASE_URL=base,
                              DASHBOARD_POLL_SECONDS=1))
    users.create(app.extensions["triage"].store.r, "nina", PASSWORD, "nurse")
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(app=app, base=base, r=app.extensions["triage"].store.r)
    finally:
        server.shutdown()
        thread.join(timeout=5)


def text(live: SimpleNamespace, phone: str, body: str) -> None:
    """A patient's SMS, as Twilio would POST it: form-encoded and signed."""
    form = {"From": phone, "To": "+15550009999", "Body": body, "AccountSid": "ACtest",
            "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"}
    status, reply = signed_post(f"{live.base}/sms", AUTH_TOKEN, form)
    assert status == 200, reply


@pytest.fixture
def page(browser: Any, live: SimpleNamespace) -> Iterator[Any]:
    # bypass_csp: the dashboard's Content-Security-Policy would block an injected inline script
    # on its own; switched off here, the tests prove that escaping alone keeps it inert.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        pg.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    context.close()


def sign_in(page: Any, live: SimpleNamespace) -> None:
    page.goto(f"{live.base}/dashboard/")
    assert "/dashboard/login" in page.url  # the queue needs a signed-in user
    page.fill("#username", "nina")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Escalations')")


def test_new_emergency_appears_live_then_acknowledge_and_resolve(
        page: Any, live: SimpleNamespace) -> None:
    # Count the oscillators the page starts: a beep is three.
    page.add_init_script("""(() => {
      window.__beeps = 0;
      const start = AudioContext.prototype.createOscillator;
      AudioContext.prototype.createOscillator = function () {
        window.__beeps += 1;
        return start.call(this);
      };
    })();""")
    sign_in(page, live)
    assert page.locator("#queue-rows tr").count() == 0
    page.click("#sound-toggle")  # the nurse switches sound on (a click lets audio start)
    page.wait_for_selector("#sound-toggle:has-text('Sound: on')")
    page.wait_for_function("() => window.__beeps === 3")  # the test beep
    page.evaluate("window.__sameDocument = 'yes'")
    page.wait_for_selector("#poll-status:has-text('Live')")

    phone = "+15550101010"
    profile.save(live.r, phone, {"name": XSS_NAME})
    text(live, phone, XSS_TEXT)

    # Appears WITHOUT a reload: the poll re-renders the table.
    page.wait_for_selector('#queue-rows tr[data-tier="EMERGENCY"]')
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.is_visible("#alarm")
    assert "NEW EMERGENCY" in page.text_content("#alarm-title")
    page.wait_for_function("document.title.indexOf('EMERGENCY') >= 0")
    page.wait_for_function("() => window.__beeps === 6")  # and it beeped...
    time.sleep(2.5)  # ...once: later polls see the same EMERGENCY, no new beep
    assert page.evaluate("window.__beeps") == 6
    # (the table is re-rendered every poll: locators, not element handles)
    link = page.locator('#queue-rows tr[data-tier="EMERGENCY"] a.patient')
    assert link.text_content() == XSS_NAME  # the name is shown as text
    assert page.locator("#queue-rows img").count() == 0 and page.locator("#alarm img").count() == 0

    link.click()
    page.wait_for_selector("#transcript")
    patient_texts = page.locator("#transcript .msg-in .text").all_text_contents()
    assert XSS_TEXT in patient_texts
    assert page.locator("#transcript .msg-out .text").first.text_content().startswith(
        "Call 911 now")
    assert page.locator("main img").count() == 0

    page.click("#ack-button")
    page.wait_for_selector("text=Acknowledged by")
    assert "nina" in page.text_content("section.card:has(h2:text('Actions'))")
    page.fill("#note", "Called the patient; ambulance on the way.")
    page.click("#resolve-button")
    page.wait_for_selector("text=Resolved by")
    history = page.text_content("ol.events")
    assert "acknowledged by nina" in history and "resolved by nina" in history

    rid = live.app.extensions["triage"].store.records(phone=phone)[0]["id"]
    esc = escalations.details(live.r, rid)
    assert esc["acknowledged_by"] == "nina" and esc["resolved_by"] == "nina"
    assert esc["resolved_note"] == "Called the patient; ambulance on the way."

    # Back on the queue: nothing open, the banner is gone; no script ever ran.
    page.goto(f"{live.base}/dashboard/")
    assert page.locator("#queue-rows tr").count() == 0
    assert not page.is_visible("#alarm")
    time.sleep(1.5)  # one more poll, with the record in the "all" view
    page.goto(f"{live.base}/dashboard/?status=all")
    page.wait_for_selector('#queue-rows tr[data-status="resolved"]')
    time.sleep(1.5)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_a_form_without_its_csrf_token_is_refused(page: Any, live: SimpleNamespace) -> None:
    sign_in(page, live)
    text(live, "+15550102020", "I have chest pain")
    page.wait_for_selector('#queue-rows tr[data-tier="EMERGENCY"] a.patient')
    page.locator('#queue-rows tr[data-tier="EMERGENCY"] a.patient').click()
    page.wait_for_selector("#ack-form")
    page.evaluate("document.querySelector('#ack-form input[name=csrf_token]').remove()")
    with page.expect_response(lambda resp: resp.url.endswith("/ack")) as answer:
        page.click("#ack-button")
    assert answer.value.status == 400
    page.wait_for_selector("h1:has-text('Form refused')")
    rid = live.app.extensions["triage"].store.records()[0]["id"]
    assert escalations.status(live.r, rid) == "open"

    # The same form with its token works.
    page.go_back()
    page.reload()
    page.click("#ack-button")
    page.wait_for_selector("text=Acknowledged by")
    assert escalations.status(live.r, rid) == "acknowledged"


def test_the_queue_says_so_when_it_stops_updating(page: Any, live: SimpleNamespace) -> None:
    sign_in(page, live)
    page.wait_for_selector("#poll-status:has-text('Live')")
    live.r.delete(users.user_key("nina"))  # the session ends under the open page
    page.wait_for_selector("#poll-status.stale:has-text('NOT updating')")
    assert "Signed out" in page.text_content("#poll-status")


# --------------------------------------------------------------------------- a nurse's shift

PHONE_VIEW = {"width": 390, "height": 844}
# The innermost elements reaching past the window's right edge: empty when nothing scrolls
# sideways (and, when something does, the assertion says what).
SIDEWAYS = """() => {
  const w = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= w) return [];
  const out = [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > w + 0.5)
    .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > w + 0.5))
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "." + e.className);
  const any = [...document.querySelectorAll("body *")]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === "visible"
            && e.clientWidth > 0)
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "." + e.className + " " +
         e.scrollWidth + ">" + e.clientWidth);
  return out.length ? out : ["(the page is wider than the window)", ...any.slice(-6)];
}"""


def store(live: SimpleNamespace) -> Any:
    return live.app.extensions["triage"].store


def same_episode(live: SimpleNamespace, rid: str, **changes: Any) -> str:
    """A second record of the conversation of ``rid`` (as the engine writes when a conversation
    finds more than one thing; the core's ``episode_id`` links conversations the same way)."""
    first = store(live).record(rid)
    assert first is not None
    rec = {k: v for k, v in first.items() if k not in ("id", "status")}
    rec.update(changes)
    return store(live).append_record(rec)


def test_call_backs_notes_and_hand_over(page: Any, live: SimpleNamespace) -> None:
    users.create(live.r, "omar", PASSWORD, "nurse")
    phone = "+15550103030"
    profile.save(live.r, phone, {"name": "Maya Lopez", "date_of_birth": "2018-04-12",
                                 "age_band": "child", "treatment_phase": "maintenance",
                                 "caregiver_name": "Ana Lopez",
                                 "caregiver_relationship": "parent",
                                 "caregiver_phone": "+15550103039", "mrn": "MRN-004512"})
    sign_in(page, live)
    text(live, phone, "fever")
    text(live, phone, "no")
    text(live, phone, "38.6")  # a fever on treatment: URGENT (rule 3 never makes a 911 alone)
    row = page.locator('#queue-rows tr[data-tier="URGENT"]')
    row.wait_for()
    assert row.locator(f'a.tel[href="tel:{phone}"]').count() == 1
    assert "Caregiver: Ana Lopez (parent)" in row.text_content()
    assert "child" in row.locator(".facts").text_content()
    assert "\u201c38.6\u201d" not in row.text_content()  # quotes come from CSS, not the text
    assert row.locator("q.words", has_text="38.6").count() == 1  # the patient's own words
    row.locator("a.patient").click()
    page.wait_for_selector("#call-form")
    assert page.get_attribute("#call-patient", "href") == f"tel:{phone}"
    assert page.get_attribute("#call-caregiver", "href") == "tel:+15550103039"

    # First attempt: no answer on the patient's number.
    page.check('#call-form input[name=outcome][value="no_answer"]')
    page.click("#log-call")
    page.wait_for_selector("#call-log td.outcome-no_answer")
    assert "Call logged: no answer" in page.text_content(".flashes")
    assert page.text_content("#assigned-to") == "nina"  # calling it: she has it...
    assert "acknowledged" in page.text_content(".detail-head")  # ...and is handling it
    # Second: the caregiver answers.
    page.check('#call-form input[name=called][value="caregiver"]')
    page.check('#call-form input[name=outcome][value="spoke_caregiver"]')
    page.fill("#call-note", XSS_TEXT)
    page.click("#log-call")
    page.wait_for_selector("#call-log td.outcome-spoke_caregiver")
    log = page.locator("#call-log tbody tr")
    assert log.count() == 2
    assert log.nth(1).locator("td").nth(1).text_content() == "nina"
    assert log.nth(1).locator("td").last.text_content() == XSS_TEXT  # shown as text
    assert re.search(r"\d\d:\d\d E[SD]T", log.nth(0).text_content())

    # Working notes: any number, each with its author, apart from the resolution.
    for note in ("Mum will take her temperature again at 9", "Temp 38.9 now: sent to ED"):
        page.fill("#working-note", note)
        page.click("#add-note")
        page.wait_for_selector(f"#note-list li:has-text('{note}')")
    assert page.locator("#note-list li").count() == 2
    assert page.locator("#resolve-form").is_visible()  # still unresolved

    # Hand over to omar, with a note; the history says so.
    page.select_option("#assign-to", "omar")
    page.fill("#handover-note", "end of my shift")
    page.click("#assign-button")
    page.wait_for_selector("#assigned-to:text('omar')")
    history = page.text_content("#history")
    assert "assigned to omar by nina: end of my shift" in history
    assert "call-back (the patient's number): no answer by nina" in history

    # The queue: one row, with omar, 2 calls; "Mine only" hides it from nina.
    page.goto(f"{live.base}/dashboard/")
    row = page.locator("#queue-rows tr").first
    row.wait_for()
    assert "with omar" in row.text_content() and "2 calls" in row.text_content()
    page.check("#mine")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#queue-empty:visible")
    assert page.locator("#queue-rows tr").count() == 0
    time.sleep(1.5)  # a poll later, the filter still holds (the poll URL carries it)
    assert page.locator("#queue-rows tr").count() == 0
    actions = [e["action"] for e in audit.entries(live.r, count=200)]
    assert actions.count("call") == 2 and actions.count("note") == 2 and "assign" in actions
    assert page.evaluate("window.__xss") is None and page.dialogs == []  # type: ignore[attr-defined]


def test_one_row_per_episode_and_a_late_finding_is_not_swept_along(
        page: Any, live: SimpleNamespace) -> None:
    phone = "+15550104040"
    sign_in(page, live)
    text(live, phone, "fever")
    text(live, phone, "no")
    text(live, phone, "38.6")
    first = store(live).records(phone=phone)[0]["id"]
    same_episode(live, first, tier="EMERGENCY", kind="red_flag",
                 reasons=["can't breathe or struggling to breathe ('cant breathe')"])
    page.wait_for_selector('#queue-rows tr[data-tier="EMERGENCY"]')
    assert page.locator("#queue-rows tr").count() == 1  # two records, one row
    row = page.locator("#queue-rows tr").first
    assert "2 findings" in row.text_content()
    assert "temperature 38.6" in row.text_content() and "cant breathe" in row.text_content()
    # The banner: one sentence, no phone numbers.
    page.wait_for_selector("#alarm-title:has-text('1 EMERGENCY waiting, oldest')")
    assert "+1555" not in page.text_content("#alarm")

    row.locator("a.patient").click()
    page.wait_for_selector("#episode")
    # While she reads, a third finding arrives in the same episode.
    same_episode(live, first, tier="EMERGENCY", kind="red_flag", reasons=["seizure ('fit')"])
    page.fill("#note", "Spoke to patient; going to ED")
    with page.expect_response(lambda resp: resp.url.endswith("/resolve")) as answer:
        page.click("#resolve-button")
    assert answer.value.status == 409
    page.wait_for_selector(".flash-error:has-text('a new finding arrived')")
    assert all(escalations.status(live.r, x["id"]) == "open"
               for x in store(live).records(phone=phone))
    # The refused page now shows all three: acknowledging takes every one of them.
    assert page.locator("#episode li").count() == 3
    page.click("#ack-button")
    page.wait_for_selector("text=Acknowledged by")
    assert [escalations.status(live.r, x["id"]) for x in store(live).records(phone=phone)] == [
        "acknowledged"] * 3
    page.goto(f"{live.base}/dashboard/")
    page.wait_for_selector("#poll-status:has-text('Live')")
    assert not page.is_visible("#alarm")


def test_the_queue_detail_and_patient_page_at_phone_width(
        browser: Any, live: SimpleNamespace) -> None:
    context = browser.new_context(viewport=PHONE_VIEW, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        long_name = "Maximiliana-Alexandrina Featherstonehaugh-Cholmondeley"
        phone = "+15550105050"
        profile.save(live.r, phone, {"name": long_name, "caregiver_name": "A" * 60,
                                     "caregiver_relationship": "grandparent",
                                     "caregiver_phone": "+15550105059",
                                     "treatment_phase": "delayed_intensification"})
        text(live, phone, "I can't breathe " + "x" * 150)  # one long unbroken word
        text(live, "+15550106060", "fever")
        text(live, "+15550106060", "no")
        text(live, "+15550106060", "101.3F")
        sign_in(page, live)
        page.wait_for_selector('#queue-rows tr[data-tier="URGENT"]')
        assert page.evaluate(SIDEWAYS) == [], "the queue scrolls sideways at 390 px"
        assert not page.is_visible("#queue thead")  # cards, not a squeezed table
        card = page.locator('#queue-rows tr[data-tier="EMERGENCY"]')
        box = card.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert card.locator(f'a.tel[href="tel:{phone}"]').is_visible()

        card.locator("a.patient").click()
        page.wait_for_selector("#call-form")
        assert page.evaluate(SIDEWAYS) == [], "the escalation scrolls sideways at 390 px"
        assert page.locator("#call-patient").is_visible()
        page.check('#call-form input[name=outcome][value="voicemail"]')
        page.click("#log-call")  # usable with a thumb: the call is logged
        page.wait_for_selector("#call-log td.outcome-voicemail")
        assert page.evaluate(SIDEWAYS) == []

        page.goto(f"{live.base}/dashboard/patients/{phone}")
        page.wait_for_selector("#history-rows tr")
        assert page.evaluate(SIDEWAYS) == [], "the patient page scrolls sideways at 390 px"
    finally:
        context.close()


HISTORY_CELLS = """() => [...document.querySelectorAll('#history-rows tr')].map(
    tr => [...tr.children].map(td => td.innerText.replace(/\\s+/g, ' ').trim()))"""


def test_patient_page_history_refreshes_itself(browser: Any, page: Any,
                                               live: SimpleNamespace) -> None:
    phone = "+15550107070"
    profile.save(live.r, phone, {"name": "Leo Park"})
    text(live, phone, "fever")
    text(live, phone, "no")
    text(live, phone, "38.6")
    sign_in(page, live)
    page.goto(f"{live.base}/dashboard/patients/{phone}")
    page.wait_for_selector("#history-rows tr")
    assert page.locator("#history-rows tr").count() == 1
    page.evaluate("window.__sameDocument = 'yes'")
    page.wait_for_selector("#poll-status:has-text('Live')")
    # minutes after the URGENT outcome: the same episode, raised to EMERGENCY, no reload
    text(live, phone, "I have chest pain <b>bad</b>")
    page.wait_for_selector('#history-rows tr[data-tier="EMERGENCY"]')
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.locator("#history-rows tr").count() == 1
    assert page.locator("#history-rows tr").first.get_attribute("data-tier") == "EMERGENCY"
    texts = page.locator("#patient-texts .msg-in .text").all_text_contents()
    assert "I have chest pain <b>bad</b>" in texts
    assert page.locator("#patient-texts b").count() == 0
    # What the script drew is what the server draws.
    drawn = page.evaluate(HISTORY_CELLS)
    static = browser.new_context(viewport={"width": 1280, "height": 900},
                                 java_script_enabled=False)
    try:
        server_page = static.new_page()
        sign_in(server_page, live)
        server_page.goto(f"{live.base}/dashboard/patients/{phone}")
        assert server_page.evaluate(HISTORY_CELLS) == drawn
    finally:
        static.close()


def test_the_script_draws_the_same_rows_as_the_server(
        browser: Any, page: Any, live: SimpleNamespace) -> None:
    """The queue is drawn by the server, then redrawn by the script every poll: both must say
    the same thing (patient facts, words, assumed window, calls, assignment, paging)."""
    users.create(live.r, "omar", PASSWORD, "nurse")
    phone = "+15550108080"
    profile.save(live.r, phone, {"name": "Ada <Moss>", "date_of_birth": "2012-01-02",
                                 "age_band": "teen", "treatment_phase": "car_t",
                                 "car_t_date": "2026-11-20", "caregiver_name": "Bo",
                                 "caregiver_relationship": "grandparent",
                                 "caregiver_phone": "+15550108089", "mrn": "004417"})
    text(live, phone, "fever")
    text(live, phone, "no")
    text(live, phone, "38.6")
    rid = store(live).records(phone=phone)[0]["id"]
    same_episode(live, rid, tier="EMERGENCY", kind="red_flag", reasons=["seizure ('fit')"],
                 quotes={"seizure ('fit')": "she had a fit <b>just now</b>"},
                 risk_window_assumed=True)
    text(live, "+15550109090", "fever")
    text(live, "+15550109090", "no")
    text(live, "+15550109090", "101.3F")
    episode = escalations.episode_of(store(live).record(rid) or {})
    escalations.assign(live.r, phone, episode, "omar", "omar")
    escalations.log_call(live.r, phone, episode, "omar", "voicemail", "patient")
    head = store(live).records(phone=phone)[0]["id"]  # the episode's EMERGENCY record
    live.r.hset(escalations.esc_key(head), mapping={"page_status": "failed",
                                                    "page_attempts": "3",
                                                    "page_error": "carrier refused"})

    def cells(pg: Any) -> list[list[str]]:
        return pg.evaluate("""() => [...document.querySelectorAll('#queue-rows tr')].map(
            tr => [...tr.children].map(td => td.innerText.replace(/\\s+/g, ' ').trim()))""")

    static = browser.new_context(viewport={"width": 1280, "height": 900},
                                 java_script_enabled=False)
    try:
        server_page = static.new_page()
        sign_in(server_page, live)
        server = cells(server_page)
    finally:
        static.close()
    sign_in(page, live)
    page.wait_for_selector("#poll-status:has-text('Live')")  # at least one redraw
    scripted = cells(page)
    assert len(server) == 2 and scripted == server
    first = " ".join(server[0])
    for expected in ("Ada <Moss>", "MRN 004417", "teen", "car t", "CAR-T day",
                     "Caregiver: Bo (grandparent)", "2 findings",
                     "she had a fit <b>just now</b>", "risk window assumed, not known",
                     "with omar", "1 call; last: left voicemail", "page failed ×3",
                     "carrier refused"):
        assert expected in first, expected
