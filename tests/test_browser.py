"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
no browser is ever downloaded), against the real app served on a loopback port, with patients
texting through the real signed webhook.

Without /usr/bin/chromium these tests skip, unless REQUIRE_BROWSER=1 (CI): then they fail.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from bot import create_app, escalations, profile, users
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
