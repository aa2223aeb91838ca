"""Screenshots of the dashboard for the README: docs/queue.png and docs/detail.png.

Starts a throwaway redis-server in a temporary folder, the real app on a loopback port, texts
it a few realistic conversations through the real signed webhook, runs the worker once (so the
paging column is real), signs in with Debian's headless Chromium (Playwright; no browser is
downloaded) and saves the two pictures.

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
from pathlib import Path

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

PATIENTS = {  # fictional people and numbers (555-01xx is reserved for fiction)
    "+15550100011": {"name": "Maya Lopez", "treatment_phase": "maintenance",
                     "age_band": "child", "t_cell_or_mediastinal_mass": "yes"},
    "+15550100022": {"name": "Sam Reed", "treatment_phase": "consolidation",
                     "last_chemo_date": ""},
    "+15550100033": {"name": "Priya Shah", "treatment_phase": "car_t", "age_band": "adult"},
    "+15550100044": {"name": "Tom Becker", "treatment_phase": "off_treatment",
                     "age_band": "adult"},
}
CONVERSATIONS = [
    ("+15550100044", ["I have a sore throat", "no", "37.1", "no", "no", "no", "1", "3"]),
    ("+15550100022", ["fever", "no", "38.6"]),
    ("+15550100077", ["fever", "no", "101.3F"]),  # an unregistered number
    ("+15550100033", ["temp", "no", "38.2"]),
    ("+15550100011", ["my daughter cant breathe properly and her lips look blue"]),
]


def text(base: str, phone: str, body: str) -> None:
    form = {"From": phone, "To": "+15550009999", "Body": body, "AccountSid": "ACdemo",
            "MessageSid": "SM" + uuid.uuid4().hex, "NumMedia": "0"}
    status, reply = signed_post(f"{base}/sms", TOKEN, form)
    if status != 200:
        raise SystemExit(f"webhook answered {status}: {reply[:200]}")


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
            escalations.acknowledge(r, sam[0]["id"], "omar")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 820})
            page.goto(f"{base}/dashboard/login")
            page.fill("#username", "nina")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("#queue-rows tr")
            page.wait_for_selector("#poll-status:has-text('Live')")
            page.screenshot(path=str(out / "queue.png"), full_page=True)
            page.click('#queue-rows tr[data-tier="EMERGENCY"] a.patient')
            page.wait_for_selector("#transcript")
            page.screenshot(path=str(out / "detail.png"), full_page=True)
            browser.close()
        print(f"saved {out / 'queue.png'} and {out / 'detail.png'}")
    finally:
        if server is not None:
            server.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
