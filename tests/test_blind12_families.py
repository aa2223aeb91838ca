"""Families of texts the twelfth and thirteenth blind rounds (tests/vignettes/blind12_*.yaml,
blind13_*.yaml) found misread, fixed as families and checked here in other words than the
vignettes' own:

* a reading followed by a comma or a full stop ("38 point 5, chemo last week");
* a temperature that is not the patient's reading now: someone else's ("his sister has a
  temp of 38"), one long past ("38.5 two weeks ago"), a threshold asked about ("if his temp
  goes to 38.5"); and the cases that must still count;
* a reading taken again in the same conversation ("rechecked an hour later its 37.7");
* "def not", "definitely not" to a yes/no question;
* signs in other words: sleepier than normal, a heart pounding, writing that is off, a sore
  mouth, belly pain going through to the back, only one wee in 13 hours, not knowing the
  day, the right words that will not come, a daily ICE check, lying down flat;
* look-alikes: hands too shaky to hold a cup (a tremor, not a fit), lips purple from
  blackcurrant juice, "cant stop laughing", a fright that is over, a nightmare, chemo
  finished years ago."""

from __future__ import annotations

import pytest
from test_blind_families import ENGINE, read

from bot import profile as profiles
from bot.conversation.parsing import parse_yes_no
from bot.vignettes import pending_question, profile_values, run_vignette
from conftest import records


def tier(app, client, profile: dict, *texts: str, **answers: str) -> str | None:
    """The texts from a new number with this profile, every question then answered the
    healthy way (or from ``answers``), as the vignette runner does: the newest record's tier."""
    return run_vignette(app, client, {"id": "family", "checklist": "fever", "expect": "ROUTINE",
                                      "why": "a family test", "texts": list(texts),
                                      "profile": profile, "answers": answers}).tier


@pytest.mark.parametrize("text, value", [
    ("fever since this morning 39 point 1, on chemo", 39.1),
    ("temp 38 point 2. hes on chemo", 38.2),
    ("hes 38 point 5,", 38.5),
])
def test_a_reading_before_punctuation(text: str, value: float) -> None:
    assert ENGINE.read(text).values.get("temperature") == value


@pytest.mark.parametrize("text, value", [
    # someone else's
    ("her brother has a temp of 38.4 and a cough, she is ok", None),
    ("my other son has 38.9, this one seems fine", None),
    # ... unless the patient is named in between or shares it
    ("his dad says his temp is 38.5", 38.5),
    ("her sister had 38.2 and so did she", 38.2),
    ("his brother and him both have 38.6", 38.6),
    # long past, unless it started then
    ("she had 39.1 a few weeks ago, today 36.9", 36.9),
    ("temp 38.4 since 3 weeks ago", 38.4),
    ("38.5 last night, 37.2 now", 38.5),            # the last day still counts
    ("had 38.3 last week and still has it", 38.3),  # last week may still be going
    # a threshold asked about, not one taken
    ("what if her temp gets to 38 tonight", None),
    ("if i check and its 38.3 what do i do", 38.3),  # no word of change: a reading
])
def test_whose_temperature_and_when(text: str, value: float | None) -> None:
    assert ENGINE.read(text).values.get("temperature") == value


@pytest.mark.parametrize("text, concept", [
    ("his friend had a rash at school, he is fine", "rash"),
    ("her mum has a cough, she is ok", "cough"),
])
def test_another_persons_sign_is_not_the_patients(text: str, concept: str) -> None:
    assert read(text).get(concept) != "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    ("his brother says he cant breathe", "breathing"),   # a red flag always counts
    ("her sister noticed she has a rash", "rash"),        # the patient named again
    ("his dad thinks hes got a cough", "cough"),
])
def test_but_the_patients_own_signs_count(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


def test_a_reading_taken_again_in_the_same_conversation(app, client) -> None:
    """37.7, then "checked again after an hour, still 37.6" before the checklist ended:
    still 37.5 or more on re-check is URGENT (Fever SOON row 1), off treatment too."""
    assert tier(app, client, {"treatment_phase": "off_treatment"}, "his temp is 37.7",
                "checked again after an hour, still 37.6") == "URGENT"


@pytest.mark.parametrize("again, expected", [
    ("rechecked, still 37.8", "URGENT"),        # the same reading again is still raised
    ("took it again an hour later 37.0", "SOON"),  # lower: the first reading's SOON stands
])
def test_a_recheck_the_same_or_lower(app, client, again: str, expected: str) -> None:
    assert tier(app, client, {"treatment_phase": "off_treatment"}, "temp 37.8", again) == expected


def test_a_second_reading_without_a_recheck_is_only_a_reading(app, client) -> None:
    """37.6, then a correction "sorry 37.7": not a re-check (no word of one), so SOON."""
    assert tier(app, client, {"treatment_phase": "off_treatment"}, "his temp is 37.6",
                "sorry 37.7") == "SOON"


@pytest.mark.parametrize("text, answer", [
    ("def not", False), ("definitely not", False), ("defo not", False),
    ("absolutely not", False), ("definitely", True), ("really not sure", None),
])
def test_certainty_before_a_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer


@pytest.mark.parametrize("text, concept", [
    ("she is much sleepier than usual today", "very_drowsy"),
    ("pulse 130 and i can feel it racing", "fast_heartbeat"),
    ("her handwriting is all over the place", "handwriting_change"),
    ("painful mouth, a few ulcers on his tongue", "mouth_sores"),
    ("tummy pain at the top going thru to her back after the peg asparaginase",
     "belly_pain_to_back"),
    ("his wee is dark and he has only been once since breakfast", "low_urine"),
    ("she doesnt know what day it is", "mild_disorientation"),
    ("keeps asking what the date is", "mild_disorientation"),
    ("he couldnt get the right word for spoon", "speech_trouble"),
    ("cant lie down flat without gasping", "breathing"),
    ("my hands shake so much i cant hold my pen steady", "tremor"),
])
def test_signs_in_other_words(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    ("my hands shake so much i cant hold my pen steady", "seizure"),
    ("she cant get the right words out", "confusion"),
    ("she doesnt know what day it is", "confusion"),
    ("his lips are blue from the blueberries", "blue_lips"),
    ("she cant stop giggling at the cartoons", "not_stopping"),
    ("he slipped in the bath, it scared us but hes fine", "worried"),
    ("he had a bad dream that he had a fit", "seizure"),
    ("new rash, finished treatment 5 yrs ago", "on_chemo"),
])
def test_and_their_look_alikes(text: str, concept: str) -> None:
    assert read(text).get(concept) != "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    ("she doesnt know what year it is", "confusion"),   # month and year stay the red flag
    ("he doesnt know where he is", "confusion"),
    ("hands shaking and he cant hold his head up", "seizure"),  # not a hand tremor's object
])
def test_what_stays_a_red_flag(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


def test_a_daily_ice_check_starts_the_neurotoxicity_checklist(app, phone) -> None:
    """A caregiver doing the daily check after CAR-T: the ICE questions, and counting back
    answered "no he got stuck at 70" loses a point below the usual 10 (URGENT)."""
    profiles.save(app.extensions["triage"].store.r, phone.number, profile_values(
        {"car_t_date": "today-9", "age_band": "adult", "usual_ice_score": 10}))
    phone.send("doing her daily ice check now")
    asked = []
    for _ in range(15):
        q = pending_question(app, phone.number)
        if q is None:
            break
        asked.append(q)
        answer = {"neurotoxicity:ice_orientation": "4", "neurotoxicity:ice_naming": "3",
                  "neurotoxicity:ice_command": "yes", "neurotoxicity:ice_writing": "yes",
                  "neurotoxicity:ice_counting": "no he got stuck at 70"}.get(q, "no")
        phone.send(answer)
    assert "neurotoxicity:ice_counting" in asked
    assert records(app, phone=phone.number)[0]["tier"] == "URGENT"


# ---------------------------------------------------------------- rounds 14 and 15

@pytest.mark.parametrize("text, name, value", [
    ("nose bleeding since quarter past 6 and its now 7", "duration_min", 45.0),
    ("started bleeding at 10.40, its 11.20 now", "duration_min", 40.0),
    ("been pressing since 9:50 and its 10:25", "duration_min", 35.0),
    ("vomiting since 7 am, now 3 times", "duration_min", None),   # a count, not a time
    ("her pulse is 128 on the monitor", "heart_rate", 128.0),
    ("hr 95", "heart_rate", 95.0),
    ("pulse ox says 91", "heart_rate", None),                      # the oximeter
    ("put the finger sat thing on, it says 89", "spo2", 89.0),
    ("his bp was 80/50 a month ago, today 112/70", "systolic_bp", 112.0),
    ("her brothers sats are 87, hers are fine", "spo2", None),
])
def test_values_in_more_forms(text: str, name: str, value: float | None) -> None:
    assert ENGINE.read(text).values.get(name) == value


@pytest.mark.parametrize("text, concept", [
    ("resting heart rate 135 today", "fast_heartbeat"),      # over 100: the safer reading
    ("she thought it was sunday, its thursday", "mild_disorientation"),
    ("told me it was 1987", "confusion"),
    ("he said 1999 when i asked the year", "confusion"),
    ("much harder to wake up than usual today", "very_drowsy"),
    ("a new shake in his hands", "tremor"),
    ("his left hand wont grip his cup", "stroke_signs"),
    ("cant stand up, everything is spinning", "near_fainting"),
    ("i dont feel right", "unwell"),
    ("he is shaking like crazy after the line flush", "rigors"),
    ("there was blood all down her chin from her gums", "bleeding"),
    ("puffed out walking upstairs", "breathless_stairs"),
    ("cant remember the word for spoon", "speech_trouble"),
    ("awake every night till 3am since the blina", "trouble_sleeping"),
])
def test_more_signs_in_other_words(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    ("his older brother had a bad nosebleed at football, he is fine", "uncontrolled_bleeding"),
    ("a kid in the film had a seizure, she got scared but she is fine", "seizure"),
    ("she passed out in june, she is fine now, can she swim", "unresponsive"),
    ("he felt hot so i panicked and checked, 36.9", "worried"),
])
def test_more_look_alikes(text: str, concept: str) -> None:
    assert read(text).get(concept) != "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    # another person's red flag counts unless the text says the patient is well
    ("his brother had a fit, now hes shaking too", "seizure"),
    ("his sister says he cant breathe properly", "breathing"),
])
def test_red_flags_stay_unless_the_patient_is_well(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


def test_fever_then_cant_stand_after_the_outcome(app, client) -> None:
    """CAR-T day 9, 38.6, the screen answered no (URGENT), then "cant stand up, the room
    spins": the CRS EMERGENCY row (fever plus can't stand without dizziness)."""
    assert tier(app, client, {"car_t_date": "today-9"}, "she has 38.6", "no",
                "now she cant stand up, the room is spinning") == "EMERGENCY"


def test_a_question_in_words_with_nothing_wrong_is_routine(app, client) -> None:
    assert tier(app, client, {"treatment_phase": "maintenance"},
                "does the line in his chest mean he cant go swimming with school") == "ROUTINE"
