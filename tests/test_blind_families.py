"""Families of texts the fifth blind round (tests/vignettes/blind5_*.yaml) found misread, fixed
as families and checked here in other words than the vignettes' own:

* rule 7 across checklists: an URGENT row of another checklist than the one walked has its
  own EMERGENCY screen asked before the outcome ("a bit sleepy" on day 8 after CAR-T: the
  nervous-system screen, a seizure or not waking, not only the CRS one);
* "so" after a linking verb is a degree word, not a clause break ("my period is so heavy");
* a face gone one-sided in everyday words ("her smile has gone lopsided") is the red flag;
* lifelong is not new ("a wonky smile since birth"), and a time phrase inside the words of a
  sign is its time ("a nosebleed last month that wouldnt stop" is past and over);
* an oxygen reading a few words after "sats" ("checked his sats on the finger thing, its 89");
* and, found probing around these: a fit in a parent's words, noisy breathing a few words on.
"""

from __future__ import annotations

import time

import pytest

from bot import profile
from bot.config import ROOT
from bot.conversation.engine import Engine
from bot.conversation.flows import load_library
from conftest import records

ENGINE = Engine(load_library(ROOT / "flows"))


def read(text: str) -> dict[str, str]:
    """concept -> "now" or "past" (negated and hypothetical findings left out)."""
    out: dict[str, str] = {}
    for f in ENGINE.read(text).findings:
        if f.negated or f.hypothetical:
            continue
        out[f.concept] = "now" if f.current or out.get(f.concept) == "now" else "past"
    return out


def days_ago(n: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - n * 86400))


@pytest.mark.parametrize("text", [
    "my period is so heavy",
    "her periods been so heavy this month",
    "periods are so heavy since the chemo",
    "going through a pad every half hour",
    "getting through pads every 40 minutes",
    "changing tampons every 45 mins",
])
def test_a_heavy_period_in_other_words(text: str) -> None:
    assert read(text).get("heavy_period") == "now", ENGINE.read(text).tokens


@pytest.mark.parametrize("text, concept", [
    ("he is so sleepy", "very_drowsy"),
    ("she feels so hot", "feverish"),
])
def test_so_after_a_linking_verb_is_a_degree_word(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now"


def test_so_before_a_subject_is_still_a_clause_break() -> None:
    tokens = ENGINE.read("it was late so he went to bed").tokens
    assert "so" in tokens and "really" not in tokens
    # a negation still stops at it: "no fever so i" does not reach past it
    assert read("no fever so i called, now she cant breathe").get("breathing") == "now"


@pytest.mark.parametrize("text", [
    "her smile has gone lopsided",
    "his smile looks crooked all of a sudden",
    "mouth is droopy on the left",
    "shes dribbling out one side of her mouth",
    "wonky smile since this morning",
])
def test_a_face_gone_one_sided_is_the_red_flag(text: str) -> None:
    assert read(text).get("stroke_signs") == "now"


@pytest.mark.parametrize("text", [
    "he has had a wonky smile since birth",
    "shes always had a crooked smile",
    "born with a lopsided smile",
])
def test_lifelong_is_not_new(text: str) -> None:
    assert read(text).get("stroke_signs") == "past"


def test_a_time_phrase_inside_a_signs_words_is_its_time() -> None:
    assert read("she had a nosebleed last month that wouldnt stop").get(
        "uncontrolled_bleeding") is None
    assert "uncontrolled_bleeding" not in read("a nosebleed years ago that wouldnt stop")
    # the present is still the present
    assert read("nosebleed for 40 min and it wont stop").get("uncontrolled_bleeding") == "now"
    assert read("nosebleed today that wont stop").get("uncontrolled_bleeding") == "now"


@pytest.mark.parametrize("text, value", [
    ("just checked his sats on the finger thing and its 89", 89.0),
    ("sats on the machine are saying 92 percent", 92.0),
    ("sats fine, pulse 95", None),
    ("sats ok, he is 12", None),
    ("sats look ok but temp 99", None),
    ("o2 good, hr 88", None),
])
def test_an_oxygen_reading_a_few_words_on(text: str, value: float | None) -> None:
    assert ENGINE.read(text).values.get("spo2") == value


def test_an_urgent_row_of_another_checklist_asks_its_own_screen(app, new_phone) -> None:
    """Day 8 after CAR-T, "a bit sleepy": the CRS checklist's screen, then the nervous-system
    screen (a seizure, not waking) before "call the 24-hour line"; a yes is 911."""
    store = app.extensions["triage"].store
    for last, tier in (("no", "URGENT"), ("yes", "EMERGENCY"),
                       ("no wait he just had a fit, its stopped now", "EMERGENCY")):
        phone = new_phone()
        profile.save(store.r, phone.number, {"car_t_date": days_ago(8)})
        first = phone.send("car t day 8 hes a bit sleepy today")
        assert "fainted" in first and "can't be woken" not in first  # the CRS screen
        second = phone.send("no")
        assert "seizure" in second and "can't be woken" in second, second
        assert not records(app, phone=phone.number)
        reply = phone.send(last)
        assert reply.startswith("Call 911 now." if tier == "EMERGENCY" else "Call the 24-hour")
        assert records(app, phone=phone.number)[0]["tier"] == tier


def test_the_owed_screen_is_asked_as_it_is_not_filled_from_earlier_words(app, phone) -> None:
    """"Really sleepy ... no fever" in the CAR-T window: the nervous-system screen is asked
    (and answered no); the fever checklist is not started, so "sleepy" never fills its
    EMERGENCY screen ("very drowsy" is an emergency only with a fever): URGENT, not 911."""
    profile.save(app.extensions["triage"].store.r, phone.number, {"car_t_date": days_ago(5)})
    first = phone.send("really sleepy, slept most of today which is so not like him, wakes up "
                       "fine when i call him, no fever")
    assert "can't be woken" in first
    reply = phone.send("no")
    assert reply.startswith("Call the 24-hour"), reply
    assert records(app, phone=phone.number)[0]["tier"] == "URGENT"


@pytest.mark.parametrize("text, flag", [
    ("he keeps zoning out and twitching", "seizure"),
    ("spaced out and jerking his arm", "seizure"),
    ("hes breathing really fast and noisy", "breathing"),
    ("her breathing got quick and rattly", "breathing"),
])
def test_found_probing_around_them(text: str, flag: str) -> None:
    """Two more families found while probing around the round's (not from its vignettes): a
    fit in a parent's words (gone blank and twitching), and noisy breathing a few words on."""
    assert read(text).get(flag) == "now"


@pytest.mark.parametrize("text, flag", [
    ("no twitching or zoning out", "seizure"),
    ("he zoned out watching tv", "seizure"),
    ("her breathing is fast but not noisy", "breathing"),
])
def test_and_not_where_they_are_not(text: str, flag: str) -> None:
    assert read(text).get(flag) is None


@pytest.mark.parametrize("text", [
    "pooing black sticky stuff and dizzy",
    "hes pooped black twice and feels faint",
])
def test_black_stool_with_dizziness_in_verbs(text: str) -> None:
    """The Bleeding EMERGENCY row (black or bloody stool with dizziness or fainting) when the
    stool is a verb ("pooing", "pooped"): found probing, the reader knew only "poo"."""
    assert read(text).get("stool_blood_dizzy") == "now"
    assert read("pooped blood this morning").get("blood_in_stool") == "now"
    assert "blood_in_stool" not in read("pooping normally")


@pytest.mark.parametrize("text, value", [
    ("o2 is 88", 88.0), ("spo2 88", 88.0), ("sp02 is 91", 91.0), ("SpO2 93%", 93.0),
    ("his o2 is 88", 88.0), ("took 2 paracetamol at 10", None),
])
def test_oxygen_abbreviations(text: str, value: float | None) -> None:
    """"o2", "SpO2", "sp02": the tokens split letters from digits ("o 2"), so none was a
    reading and "o2 is 88" (a CRS EMERGENCY row) got the greeting. Found probing."""
    assert ENGINE.read(text).values.get("spo2") == value


def test_an_oxygen_abbreviation_alone_is_911(phone) -> None:
    assert phone.send("o2 is 88").startswith("Call 911 now.")


@pytest.mark.parametrize("text", [
    "i dont think hes breathing properly",
    "i do not think she breathes normally",
    "i dont think hes breathing",
])
def test_a_negation_raised_to_think_is_the_red_flag(text: str) -> None:
    """"I don't think he's breathing properly" says he is not: the red flag, not a negated
    one (it was SOON). Found probing."""
    assert read(text).get("breathing") == "now"
    assert "breathing" not in read("she is breathing fine, i dont think theres a problem")


@pytest.mark.parametrize("text, flag, absent", [
    ("she looks really pale and sweaty and wont answer me", "unresponsive",
     "she isnt answering her phone"),
    ("hes not answering us", "unresponsive", "not responding to antibiotics"),
    ("he is struggling to swallow his spit", "cant_swallow_saliva", "its hard to swallow pills"),
])
def test_no_answer_when_spoken_to_and_spit_that_will_not_go_down(text: str, flag: str,
                                                                 absent: str) -> None:
    """"Won't answer me" is the red flag of a patient who cannot be roused (it was SOON); a
    child struggling to swallow their own spit is the mouth-sores EMERGENCY row (it was SOON,
    unmatched). Found probing."""
    assert read(text).get(flag) == "now"
    assert flag not in read(absent)


def test_gone_white_and_floppy_is_the_red_flag() -> None:
    """"He went white and floppy for a minute then came round": a collapse, with words
    between "went" and "floppy" (it went to the neurotoxicity screen). Found probing."""
    assert read("he went white and floppy for a minute then came round").get(
        "unresponsive") == "now"
    assert read("she went all pale and limp").get("unresponsive") == "now"
    assert "unresponsive" not in read("went to bed, not floppy")
