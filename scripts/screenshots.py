"""Screenshots of the dashboard for the README and docs/dashboard.md, at desktop (1280 px) and
phone (390 px) widths: the queue, an escalation with its call-back log, and a patient page
(docs/queue.png, docs/queue-phone.png, docs/detail.png, docs/detail-phone.png,
docs/patient.png, docs/patient-phone.png).

Starts a throwaway redis-server in a temporary folder, the real app on a loopback port, texts
it a few realistic conversations through the real signed webhook, runs the worker once (so the
paging column is real), signs in with Debian's headless Chromium (Playwright; no browser is
downloaded), logs two call-back attempts, a working note and a hand-over through the pages
themselves, and saves the pictures. It stops with an error if a page scrolls sideways at
390 px.

    python scripts/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bot import create_app, escalations, profile, users  # noqa: E402
from bot.cli import signed_post  # noqa: E402
from conftest import free_port, start_redis_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
TOKEN = "screenshot-twilio-token"
PASSWORD = "screenshot-password"

def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).isoformat()


PATIENTS = {  # fictional people and numbers (555-01xx is reserved for fiction)
    "+15550100011": {"name": "Maya Lopez", "treatment_phase": "maintenance",
                     "age_band": "child", "t_cell_or_mediastinal_mass": "yes",
                     "date_of_birth": "2018-04-12", "mrn": "MRN-004512",
                     "last_chemo_date": days_ago(9), "caregiver_name": "Ana Lopez",
                     "caregiver_relationship": "parent", "caregiver_phone": "+15550100019"},
    "+15550100022": {"name": "Sam Reed", "treatment_phase": "consolidation",
                     "age_band": "teen", "date_of_birth": "2010-09-30", "mrn": "MRN-003318",
                     "last_chemo_date": days_ago(4), "caregiver_name": "Jo Reed",
                     "caregiver_relationship": "parent", "caregiver_phone": "+15550100029"},
    "+15550100033": {"name": "Priya Shah", "treatment_phase": "car_t", "age_band": "adult",
                     "date_of_birth": "1991-02-17", "mrn": "MRN-001207",
                     "car_t_date": days_ago(6), "caregiver_name": "Dev Shah",
                     "caregiver_relationship": "spouse_or_partner"},
    "+15550100044": {"name": "Tom Becker", "treatment_phase": "off_treatment",
                     "age_band": "adult", "date_of_birth": "1979-07-02"},
}
CONVERSATIONS = [
    ("+15550100044", ["I have a sore throat", "no", "37.1", "no", "no", "no", "1", "3"]),
    ("+15550100022", ["fever", "no", "38.6"]),
    ("+15550100077", ["fever", "no", "101.3F"]),  # an unregistered number
    ("+15550100033", ["temp", "no", "38.2"]),
    # Maya: a sore throat earlier, then a red flag in the middle of the fever checklist.
    ("+15550100011", ["I have a sore throat", "no", "37.1", "no", "no", "no", "1", "3"]),
    ("+15550100011", ["fever", "no", "my daughter cant breathe properly and her lips look blue"]),
]


def text(base: str, phone: str, body: str) -> None:
    form = {"From": phone, "To": "+15550009999", "Body": body, "AccountSid": "ACdemo",
            "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"}
    status, reply = signed_post(f"{base}/sms", TOKEN, form)
    if status != 200:
        raise SystemExit(f"webhook answered {status}: {reply[:200]}")


# The innermost elements that reach past the window's right edge (to say what overflows).
WIDER_THAN_WINDOW = """() => {
  const w = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > w + 0.5)
    .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > w + 0.5))
    .slice(0, 8)
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
         (e.className && typeof e.className === "string" ? "." + e.className.split(" ")[0] : "")
         + " " + Math.round(e.getBoundingClientRect().right));
}"""


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.fill("#username", "nina")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#queue-rows tr")


def log_call(page: Any, called: str, outcome: str, note: str) -> None:
    """Through the call-back panel, as the nurse would."""
    page.check(f'#call-form input[name=called][value="{called}"]')
    page.check(f'#call-form input[name=outcome][value="{outcome}"]')
    page.fill("#call-note", note)
    page.click("#log-call")
    page.wait_for_selector(f'#call-log td.outcome-{outcome}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    folder = Path(tempfile.mkdtemp(prefix="triage-shots-"))
    port = free_port()
    proc, url = start_redis_server(folder)
    server = None
    try:
        base = f"http://127.0.0.1:{port}"
        app = create_app({
            "REDIS_URL": url, "INSTANCE_PATH": str(folder / "instance"),
            "TWILIO_AUTH_TOKEN": TOKEN, "CARE_TEAM_API_TOKEN": "screenshot-api-token",
            "SECRET_KEY": uuid.uuid4().hex, "PUBLIC_BASE_URL": base,
            "ONCOLOGY_LINE_NUMBER": "+1 555 010 0100", "CARE_TEAM_NUMBER": "+1 555 010 0200",
            "ON_CALL_NUMBERS": "+15550100900", "TWILIO_ACCOUNT_SID": "",
        })
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        r = app.extensions["triage"].store.r
        users.create(r, "nina", PASSWORD, "nurse")
        users.create(r, "omar", PASSWORD, "nurse")
        for phone, values in PATIENTS.items():
            profile.save(r, phone, values)
        server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        for phone, bodies in CONVERSATIONS:
            for body in bodies:
                text(base, phone, body)
        try:  # the worker pages the care team (console backend: no Twilio account here)
            from bot.worker import tick

            tick(app)
        except Exception as exc:  # the pictures are still worth taking
            print(f"(worker tick failed: {exc}; the paging column stays empty)")
        store = app.extensions["triage"].store
        sam = store.records(phone="+15550100022")
        if sam:
            episode = escalations.episode_of(sam[0])
            escalations.assign(r, "+15550100022", episode, "omar", "omar",
                               "on the phone with the family")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            desk = browser.new_page(viewport={"width": 1280, "height": 800})
            sign_in(desk, base)
            # Maya's EMERGENCY: the nurse tries the patient's number, then the caregiver.
            desk.click('#queue-rows tr[data-tier="EMERGENCY"] a.patient')
            desk.wait_for_selector("#call-form")
            detail_url = desk.url
            log_call(desk, "patient", "no_answer", "")
            log_call(desk, "caregiver", "spoke_caregiver", "Mum calling 911 now; lips blue")
            desk.fill("#working-note", "Told the ED we are sending her; oncology fellow aware.")
            desk.click("#add-note")
            desk.wait_for_selector("#note-list li:not(.empty)")

            phone = browser.new_page(viewport={"width": 390, "height": 844},
                                     device_scale_factor=2, is_mobile=True, has_touch=True)
            sign_in(phone, base)
            shots = [("queue", f"{base}/dashboard/", "#queue-rows tr"),
                     ("detail", detail_url, "#call-log"),
                     ("patient", f"{base}/dashboard/patients/+15550100011", "#history-rows tr")]
            for name, url, ready in shots:
                for page, suffix in ((desk, ""), (phone, "-phone")):
                    page.goto(url)
                    page.wait_for_selector(ready)
                    page.wait_for_selector("#poll-status:has-text('Live')")
                    wide = page.evaluate("document.documentElement.scrollWidth")
                    seen = page.evaluate("document.documentElement.clientWidth")
                    if wide > seen:
                        culprits = page.evaluate(WIDER_THAN_WINDOW)
                        raise SystemExit(f"{name}{suffix}: the page is {wide} px wide in a "
                                         f"{seen} px window (sideways scroll): {culprits}")
                    path = out / f"{name}{suffix}.png"
                    page.screenshot(path=str(path), full_page=True)
                    print(f"saved {path}")
            browser.close()
    finally:
        if server is not None:
            server.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
