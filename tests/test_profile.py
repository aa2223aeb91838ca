"""The patient profile: set by the care team's command-line tool and by the JSON API
(``GET/PUT /api/patients/<phone>``, bearer token), and used by the triage at once."""

from __future__ import annotations

import time

from bot.config import ROOT
from bot.conversation.context import context_facts
from bot.conversation.flows import load_library
from conftest import API_TOKEN, records

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def days_ago(n: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - n * 86400))


# ----------------------------------------------------------------------------- CLI

def test_cli_set_then_show(app) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["profile", "set", "+15551234567", f"car_t_date={days_ago(3)}",
                                 "age_band=adult", "usual_ice_score=9"])
    assert result.exit_code == 0, result.output
    assert "CAR T-cell day 3" in result.output
    shown = runner.invoke(args=["profile", "show", "+15551234567"])
    assert "usual_ice_score" in shown.output and "9" in shown.output
    assert "ctx_car_t_window" in shown.output
    assert app.extensions["triage"].store.profile("+15551234567")["age_band"] == "adult"


def test_cli_refuses_bad_values_and_saves_nothing(app) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["profile", "set", "+15551234567", "car_t_date=yesterday",
                                 "age_band=baby"])
    assert result.exit_code != 0
    assert "car_t_date: must be a date" in result.output
    assert "age_band: must be one of child, teen, adult" in result.output
    assert app.extensions["triage"].store.profile("+15551234567") == {}


def test_cli_refuses_a_value_without_equals(app) -> None:
    result = app.test_cli_runner().invoke(args=["profile", "set", "+15551234567", "adult"])
    assert result.exit_code != 0 and "field=value" in result.output


def test_cli_show_unknown_number(app) -> None:
    result = app.test_cli_runner().invoke(args=["profile", "show", "+15550000000"])
    assert "no profile" in result.output and "unregistered" in result.output


# ----------------------------------------------------------------------------- API

def test_api_needs_the_token(client) -> None:
    assert client.get("/api/patients/+15551234567").status_code == 401
    assert client.put("/api/patients/+15551234567", json={"age_band": "adult"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/api/patients/+15551234567", headers=wrong).status_code == 401


def test_api_put_then_get(client) -> None:
    resp = client.put("/api/patients/+15551234567", headers=AUTH,
                      json={"treatment_phase": "maintenance", "low_platelets": "lt50",
                            "t_cell_or_mediastinal_mass": "yes"})
    assert resp.status_code == 200, resp.get_json()
    body = client.get("/api/patients/+15551234567", headers=AUTH).get_json()
    assert body["phone"] == "+15551234567"
    assert body["profile"]["low_platelets"] == "lt50"
    assert body["profile"]["t_cell_or_mediastinal_mass"] == "yes"
    assert body["risk_windows"] == ["on chemotherapy (maintenance)"]


def test_api_put_400_names_every_bad_field(client) -> None:
    resp = client.put("/api/patients/+15551234567", headers=AUTH,
                      json={"car_t_date": "20/11/2026", "usual_ice_score": 11, "colour": "red"})
    assert resp.status_code == 400
    errors = resp.get_json()["errors"]
    assert set(errors) == {"car_t_date", "usual_ice_score", "colour"}
    assert client.get("/api/patients/+15551234567", headers=AUTH).status_code == 404


def test_api_put_400_for_a_bad_phone_or_body(client) -> None:
    assert client.put("/api/patients/12345", headers=AUTH, json={"age_band": "adult"}
                      ).get_json()["errors"] == {
        "phone": "must be a phone number like +15551234567"}
    resp = client.put("/api/patients/+15551234567", headers=AUTH, data="not json",
                      content_type="application/json")
    assert resp.status_code == 400 and "body" in resp.get_json()["errors"]


def test_api_empty_value_clears_a_field(client) -> None:
    client.put("/api/patients/+15551234567", headers=AUTH, json={"blinatumomab_active": "yes"})
    client.put("/api/patients/+15551234567", headers=AUTH, json={"blinatumomab_active": ""})
    body = client.get("/api/patients/+15551234567", headers=AUTH).get_json()
    assert "blinatumomab_active" not in body["profile"] and body["risk_windows"] == []


# ----------------------------------------------------------------------------- used at once

def test_a_profile_set_through_the_api_changes_the_next_triage(app, client, phone) -> None:
    """Cough alone is SOON; the same answers after the team records chemotherapy 5 days ago
    are URGENT (rule 3), and the record is no longer unregistered."""
    answers = ["cough", "no", "36.8", "no", "no", "no", "1", "2"]
    phone.conversation(*answers)
    first = records(app)[0]
    assert first["tier"] == "SOON" and first["unregistered"] is True
    client.put(f"/api/patients/{phone.number}", headers=AUTH,
               json={"last_chemo_date": days_ago(5)})
    phone.conversation(*answers)
    second = records(app)[0]
    assert second["tier"] == "URGENT" and second["unregistered"] is False
    assert second["risk_windows"] == ["chemotherapy 5 days ago"]


W = load_library(ROOT / "flows").windows


def test_context_facts_from_a_profile() -> None:
    now = time.time()
    facts = context_facts({"car_t_date": days_ago(40), "age_band": "teen",
                           "low_platelets": "lt20", "blinatumomab_active": "yes",
                           "blinatumomab_cycle": "1", "blinatumomab_day": "3"}, now, ["x"], W)
    assert "ctx_car_t_window" not in facts and "ctx_car_t_neuro_window" in facts
    assert {"ctx_age_12_plus", "ctx_platelets_lt50", "ctx_platelets_lt20", "ctx_blinatumomab",
            "ctx_blinatumomab_early", "ctx_registered", "ctx_risk_window"} <= set(facts)
    assert context_facts({}, now, [], W) == ["ctx_unregistered"]
    # unknown platelets are never "ok"
    assert "ctx_platelets_ok" not in context_facts({"name": "A"}, now, [], W)
