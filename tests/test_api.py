"""GET /api/escalations: the contract in DESIGN.md, behind the bearer token."""

from __future__ import annotations

import re

import pytest

from conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def outcome(phone, *bodies):
    for b in bodies:
        phone.send(b)


@pytest.fixture
def seeded(new_phone):
    a, b, c = new_phone("+15551110001"), new_phone("+15551110002"), new_phone("+15551110003")
    outcome(a, "fever", "no", "38.6")  # URGENT
    outcome(b, "I can't breathe")  # EMERGENCY
    outcome(c, "fever", "no", "36.5", "no", "no", "no", "1", "no")  # ROUTINE
    return a, b, c


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": API_TOKEN},
                                     {"Authorization": f"Basic {API_TOKEN}"}])
def test_needs_the_bearer_token(client, headers):
    resp = client.get("/api/escalations", headers=headers)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"


def test_contract_shape_newest_first(client, seeded):
    resp = client.get("/api/escalations", headers=AUTH)
    assert resp.status_code == 200
    items = resp.get_json()["escalations"]
    assert [e["tier"] for e in items] == ["ROUTINE", "EMERGENCY", "URGENT"]
    urgent = items[2]
    for key in ("id", "phone", "flow", "tier", "reasons", "answers", "status", "created_at"):
        assert key in urgent
    assert re.fullmatch(r"\d+-\d+", urgent["id"])
    assert urgent["phone"] == "+15551110001" and urgent["flow"] == "fever"
    assert urgent["reasons"] == ["temperature 38.6 C >= 38.0"]
    assert urgent["answers"] == {"danger_signs": "no", "temperature": "38.6"}
    assert urgent["status"] == "open"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", urgent["created_at"])


def test_filters(client, seeded):
    def get(query):
        return client.get(f"/api/escalations?{query}", headers=AUTH).get_json()["escalations"]

    assert {e["tier"] for e in get("tier=URGENT&tier=EMERGENCY")} == {"URGENT", "EMERGENCY"}
    assert [e["tier"] for e in get("tier=routine")] == ["ROUTINE"]
    assert [e["phone"] for e in get("phone=%2B15551110002")] == ["+15551110002"]
    assert len(get("limit=1")) == 1
    assert len(get("status=open")) == 3
    assert get("status=resolved") == []


@pytest.mark.parametrize("query", ["tier=PANIC", "status=lost", "limit=0", "limit=abc",
                                   "limit=100000"])
def test_bad_queries_are_400(client, query):
    resp = client.get(f"/api/escalations?{query}", headers=AUTH)
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_status_changes_show(app, client, seeded):
    from bot import escalations

    rid = client.get("/api/escalations?tier=URGENT", headers=AUTH).get_json()[
        "escalations"][0]["id"]
    escalations.acknowledge(app.extensions["triage"].store.r, rid, "nurse.kim")
    items = client.get("/api/escalations?status=acknowledged", headers=AUTH).get_json()[
        "escalations"]
    assert [e["id"] for e in items] == [rid]


def test_many_records_paginate(app, client, new_phone):
    store = app.extensions["triage"].store
    for i in range(1200):
        store.append_record({"phone": f"+1555000{i:04d}", "flow": "fever", "tier": "ROUTINE",
                             "reasons": [], "answers": {}, "created_at": "2026-11-24T00:00:00Z"})
    store.append_record({"phone": "+15559999999", "flow": "fever", "tier": "URGENT",
                         "reasons": [], "answers": {}, "created_at": "2026-11-24T00:00:00Z"})
    items = client.get("/api/escalations?limit=1000", headers=AUTH).get_json()["escalations"]
    assert len(items) == 1000
    urgent = client.get("/api/escalations?tier=URGENT", headers=AUTH).get_json()["escalations"]
    assert len(urgent) == 1
    old = client.get("/api/escalations?phone=%2B15550000003", headers=AUTH).get_json()[
        "escalations"]
    assert len(old) == 1  # found past the first page of the stream
