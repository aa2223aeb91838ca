"""Every rule of the fever table (clinical-rules.md) at its boundaries, through the signed
webhook and a real Redis."""

from __future__ import annotations

import time

import pytest

from bot import profile
from conftest import CARE_TEAM, ONCOLOGY_LINE, records

URGENT_START = f"Call the 24-hour oncology line now at {ONCOLOGY_LINE}"
SOON_START = f"Call the care team today at {CARE_TEAM}"

# Answers in checklist order after "fever": danger signs, temperature, fever medicine (only
# when the reading is under 38.0), rigors, line site, feeling (1 OK/2 unwell/3 very), signs.
CALM = {"danger": "no", "medicine": "no", "rigors": "no", "line": "no", "feeling": "1",
        "signs": "no"}


def walk(phone, temperature: str, **answers: str) -> str:
    """Run the fever checklist; answer whatever is asked; return the final reply."""
    a = {**CALM, **answers}
    reply = phone.send("fever")
    plan = [("ANY of these", a["danger"]), ("temperature?", temperature),
            ("fever medicine", None), ("paracetamol", a["medicine"]),
            ("shaking chills", a["rigors"]), ("central line", a["line"]),
            ("how are you feeling", a["feeling"]), ("Any of these that are new", a["signs"])]
    for _ in range(12):
        for marker, answer in plan:
            if marker in reply and answer is not None:
                reply = phone.send(answer)
                break
        else:
            return reply
    raise AssertionError(f"checklist did not end: {reply}")


def tier(app) -> str:
    return records(app)[0]["tier"]


@pytest.mark.parametrize("reading,expected", [
    ("38.0", "URGENT"), ("37.9", "SOON"), ("100.4F", "URGENT"), ("99.9F", "SOON"),
    ("37.5", "SOON"), ("37.4", "ROUTINE"), ("36.0", "ROUTINE"), ("35.9", "SOON"),
    ("38,5", "URGENT"), ("101F", "URGENT"), ("100.4 degrees", "URGENT"), ("36.9", "ROUTINE"),
    ("99.5F", "SOON"), ("99.4F", "ROUTINE"), ("96.7F", "SOON"), ("96.8F", "ROUTINE"),
])
def test_temperature_boundaries(app, phone, reading, expected):
    final = walk(phone, reading)
    assert tier(app) == expected
    starts = {"URGENT": URGENT_START, "SOON": SOON_START,
              "ROUTINE": "You do not need to call right now"}
    assert final.startswith(starts[expected])


def test_38_6_stops_asking_at_once(app, phone):
    """Rule 7: the URGENT answer comes straight after the reading."""
    assert "ANY of these" in phone.send("fever")
    reply = phone.send("no")
    assert "temperature" in reply
    reply = phone.send("38.6")
    assert reply.startswith(URGENT_START)
    assert "If there is fainting, confusion or trouble breathing, call 911" in reply
    rec = records(app)[0]
    assert rec["tier"] == "URGENT" and rec["reasons"] == ["temperature 38.6 C >= 38.0"]
    assert rec["answers"] == {"danger_signs": "no", "temperature": "38.6"}


def test_first_message_with_a_number_uses_it(app, phone):
    """Rule 7 (2026-11-25): a first text that already decides URGENT gets the checklist's
    EMERGENCY screen first (after the first-contact line), then the URGENT outcome; the reading
    is not asked again."""
    reply = phone.send("temp 38.9")
    assert reply.startswith("Hi,") and "Not for emergencies" in reply
    assert "ANY of these" in reply and not records(app)
    reply = phone.send("no")
    assert reply.startswith(URGENT_START) and "call 911" in reply
    assert records(app)[0]["reasons"] == ["temperature 38.9 C >= 38.0"]


def test_first_text_urgent_then_a_yes_to_the_screen_is_911(app, phone):
    """A febrile patient who has fainted is told to call 911, not the oncology line."""
    phone.send("temp 38.9")
    reply = phone.send("yes")
    assert reply.startswith("Call 911 now.")
    assert records(app)[0]["tier"] == "EMERGENCY"


def test_a_bare_reading_starts_the_fever_checklist(app, phone):
    phone.send("hello")
    reply = phone.send("37.7")
    assert "ANY of these" in reply


@pytest.mark.parametrize("reading", ["36.9", "38.6", "101.5F"])
def test_danger_sign_is_emergency_whatever_the_reading(app, phone, reading):
    phone.send("fever")
    reply = phone.send("yes")
    assert reply.startswith("Call 911 now.")
    assert tier(app) == "EMERGENCY"


def test_101_5f_with_fainting_typed_in_free_text_is_emergency(app, phone):
    reply = phone.send("101.5F and I fainted")
    assert reply.startswith("Call 911 now.")
    assert tier(app) == "EMERGENCY"


def test_low_temperature_and_unwell_is_urgent(app, phone):
    walk(phone, "35.9", feeling="2")
    assert tier(app) == "URGENT"
    assert "temperature 35.9 C < 36.0 and feeling unwell" in records(app)[0]["reasons"]


def test_36_0_and_unwell_is_not_the_low_temperature_rule(app, phone):
    walk(phone, "36.0", feeling="2")
    rec = records(app)[0]
    assert rec["tier"] == "SOON"
    assert not any("< 36.0" in r for r in rec["reasons"])


@pytest.mark.parametrize("answers,expected", [
    ({"rigors": "yes"}, "URGENT"), ({"line": "yes"}, "URGENT"), ({"feeling": "3"}, "URGENT"),
    ({"feeling": "very unwell, my mum is worried"}, "URGENT"), ({"signs": "2"}, "SOON"),
    ({"signs": "2 and 3"}, "URGENT"), ({"signs": "1"}, "SOON"), ({"feeling": "2"}, "SOON"),
    ({"feeling": "2", "signs": "4"}, "URGENT"), ({"medicine": "yes"}, "SOON"),
])
def test_other_fever_rows(app, phone, answers, expected):
    walk(phone, "36.8", **answers)
    assert tier(app) == expected


def test_borderline_with_another_symptom_is_urgent(app, phone):
    walk(phone, "37.6", signs="cough")  # rule 2: two SOON findings
    assert tier(app) == "URGENT"
    assert "two or more findings" in records(app)[0]["reasons"][0]


def test_borderline_after_fever_medicine_is_urgent(app, phone):
    walk(phone, "37.6", medicine="yes")
    assert tier(app) == "URGENT"


def test_no_thermometer_is_urgent(app, phone):
    phone.send("fever")
    phone.send("no")
    assert phone.send("no thermometer").startswith(URGENT_START)


def test_unclear_reading_is_asked_again_then_taken_as_fever(app, phone):
    phone.send("fever")
    phone.send("no")
    again = phone.send("idk")
    assert again.startswith("Sorry, we did not understand.") and "For example" in again
    final = phone.send("hmm")
    assert final.startswith(URGENT_START)
    assert "to be safe" in final
    assert records(app)[0]["tier"] == "URGENT"


def test_unclear_danger_answer_twice_is_emergency(app, phone):
    phone.send("fever")
    phone.send("idk")
    assert phone.send("maybe").startswith("Call 911 now.")


def test_one_unclear_answer_then_a_clear_one_goes_on(app, phone):
    phone.send("fever")
    phone.send("no")
    phone.send("idk")
    assert "paracetamol" in phone.send("36.9")


def test_recheck_still_raised_within_6_hours_is_urgent(app, phone):
    walk(phone, "37.6")
    assert tier(app) == "SOON"
    reply = phone.send("37.7")  # the re-check, texted an hour later
    # still >= 37.5 on re-check -> URGENT (fever SOON row 1), once the screen is asked (rule 7)
    assert "ANY of these" in reply
    reply = phone.send("no")
    assert reply.startswith(URGENT_START)
    assert tier(app) == "URGENT"
    assert any("still raised" in r for r in records(app)[0]["reasons"])


def test_recheck_after_6_hours_is_a_new_reading(app, phone):
    service = app.extensions["triage"]
    start = time.time() - 7 * 3600
    for i, text in enumerate(["fever", "no", "37.6", "no", "no", "no", "1", "no"]):
        service.handle_sms(phone.number, None, text, now=start + i)
    assert tier(app) == "SOON"
    walk(phone, "37.7")
    assert tier(app) == "SOON"


def test_risk_window_raises_infection_findings(app, phone):
    today = time.strftime("%Y-%m-%d", time.gmtime())
    profile.save(app.extensions["triage"].store.r, phone.number,
                 {"last_chemo_date": today, "treatment_phase": "maintenance"})
    walk(phone, "36.8", signs="2")  # a cough alone: SOON, URGENT in a risk window (rule 3)
    rec = records(app)[0]
    assert rec["tier"] == "URGENT"
    assert "risk window" in rec["reasons"][0]
    assert rec["unregistered"] is False


def test_outside_risk_window_cough_stays_soon(app, phone):
    profile.save(app.extensions["triage"].store.r, phone.number,
                 {"last_chemo_date": "2020-01-01", "treatment_phase": "off_treatment"})
    walk(phone, "36.8", signs="2")
    assert tier(app) == "SOON"


def test_emergency_is_never_downgraded_later(app, phone):
    assert phone.send("I can't breathe").startswith("Call 911 now.")
    final = walk(phone, "36.8")
    assert final.startswith("Call 911 now.")
    assert tier(app) == "EMERGENCY"


def test_every_outcome_is_recorded_routine_too(app, phone):
    walk(phone, "36.5")
    rec = records(app)[0]
    assert rec["tier"] == "ROUTINE" and rec["status"] == "open" and rec["flow"] == "fever"
    assert rec["kind"] == "completed"


def test_yes_to_any_of_these_asks_which(app, phone):
    for text in ("fever", "no", "36.8", "no", "no", "no", "1"):
        reply = phone.send(text)
    assert "Any of these that are new" in reply
    reply = phone.send("yes")
    assert reply.startswith("Which ones?") and "2 and 3, or NO" in reply
    assert phone.send("2 and 3").startswith("Call the 24-hour oncology line now")  # rule 2


def test_yes_twice_without_saying_which_is_one_sign_of_infection(app, phone):
    for text in ("fever", "no", "36.8", "no", "no", "no", "1", "yes"):
        phone.send(text)
    assert phone.send("yes I do").startswith("Call the care team today")
    rec = records(app)[0]
    assert rec["tier"] == "SOON"
    assert rec["reasons"] == ["new sign of infection without fever: unclear, taken as cough"]
