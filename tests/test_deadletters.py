"""Issue 8, item 5 / brief item 3: dead letters visible. A record the worker cannot read is
set aside (``triage:deadletter``); ``GET /api/deadletters`` lists it, bearer token or a
signed-in dashboard user, with every phone number masked whatever its encoding, and the
dashboard banner links to it."""

from __future__ import annotations

import json
from typing import Any

from bot.paging import DEAD_LETTERS, mask_numbers
from bot.store import RECORDS
from bot.worker import tick
from conftest import API_TOKEN, WORKER_SETTINGS

APP_SETTINGS = WORKER_SETTINGS
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NUMBER = "+15558675309"
ENCODINGS = (NUMBER, "+1 (555) 867-5309", "%2B1%20555%20867%205309", "1-555-867-5309",
             "+1.555.867.5309")


def test_dead_letters_listed_masked_behind_the_token_and_linked_from_the_banner(
        app: Any, client: Any, sms: Any) -> None:
    from test_dashboard import PASSWORD, login

    from bot import users

    r = app.extensions["triage"].store.r
    corrupt = '{"phone": "' + '", "'.join(ENCODINGS) + '", "tier": EMERG'
    rid = r.xadd(RECORDS, {"data": corrupt})
    r.xadd(RECORDS, {"other": "no data field " + NUMBER})
    tick(app)
    assert r.llen(DEAD_LETTERS) == 2

    assert client.get("/api/deadletters").status_code == 401
    assert client.get("/api/deadletters", headers={"Authorization": "Bearer no"}
                      ).status_code == 401
    resp = client.get("/api/deadletters", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    assert body["count"] == 2 and len(body["dead_letters"]) == 2
    oldest = body["dead_letters"][-1]
    assert oldest["id"] == rid and "JSONDecodeError" in oldest["why"] and oldest["at"]
    assert "EMERG" in oldest["fields"]["data"]  # what is wrong stays readable
    text = resp.get_data(as_text=True)
    for digits in ("8675309", "867-5309", "867 5309", "867%205309", "867.5309", "5558675309"):
        assert digits not in text, digits
    assert "+1********09" in text
    assert client.get("/api/deadletters?limit=1", headers=AUTH).get_json()[
        "dead_letters"][0]["id"] != rid  # newest first
    assert client.get("/api/deadletters?limit=0", headers=AUTH).status_code == 400

    # the dashboard: the banner says so and links to the list, which a signed-in user opens
    users.create(r, "nina", PASSWORD, "nurse")
    assert login(client, "nina").status_code == 303
    html = client.get("/dashboard/").get_data(as_text=True)
    assert 'id="deadletters-link"' in html and 'href="/api/deadletters"' in html
    seen = client.get("/api/deadletters")
    assert seen.status_code == 200 and seen.get_json()["count"] == 2
    audit = [json.dumps(f) for _, f in r.xrange("triage:audit")]
    assert any('"view_deadletters"' in a and '"nina"' in a for a in audit)


def test_no_dead_letters_no_link(app: Any, client: Any) -> None:
    from test_dashboard import PASSWORD, login

    from bot import users

    r = app.extensions["triage"].store.r
    users.create(r, "nina", PASSWORD, "nurse")
    login(client, "nina")
    assert 'id="deadletters-link"' not in client.get("/dashboard/").get_data(as_text=True)
    assert client.get("/api/deadletters", headers=AUTH).get_json() == {
        "count": 0, "dead_letters": []}


def test_mask_numbers_every_encoding() -> None:
    for written in ENCODINGS:
        masked = mask_numbers(f"from {written}: help")
        assert "867" not in masked and "5309" not in masked, (written, masked)
    assert mask_numbers("tier EMERGENCY, 3 signs, 38.6 C") == "tier EMERGENCY, 3 signs, 38.6 C"
