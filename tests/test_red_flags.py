"""Red flags answer EMERGENCY from any state, even mid-question (clinical-rules.md)."""

from __future__ import annotations

import pytest

from bot.config import ROOT
from bot.conversation.flows import load_library
from bot.conversation.reading import compile_wording
from conftest import records

LIB = load_library(ROOT / "flows")

# One way a frightened person might type each red flag, misspellings and missing apostrophes.
SAMPLES = {
    "breathing": ["I cant breathe", "she's struggling to breath", "he is choking"],
    "blue_lips": ["his lips are blue", "grey lips", "lips turning blue"],
    "chest_pain": ["chest pain", "my chest hurts", "bad pain in my chest"],
    "seizure": ["he's having a seizure", "siezure", "she had a fit"],
    "unresponsive": ["I passed out", "she fainted", "cant wake him"],
    "confusion": ["he's confused", "she cant speak properly", "not making sense"],
    "stroke_signs": ["her face is drooping", "sudden weakness in my arm", "cant move my leg"],
    "uncontrolled_bleeding": ["my nose won't stop bleeding", "blood everywhere",
                              "nosebleed for 40 minutes"],
    "vomiting_blood": ["vomiting blood", "threw up coffee grounds", "blood in his sick"],
    "coughing_blood": ["coughing up blood", "coughed up loads of blood", "hacking up blood"],
    "allergic_reaction": ["my throat is swelling", "tongue is swollen", "anaphylaxis"],
    "worst_headache": ["worst headache ever", "sudden severe headache",
                       "worst headache of her life"],
    "back_pain_leg_weakness": ["bad back pain and my legs are numb",
                               "back hurts and her legs are weak", "back pain, legs gave way"],
}


def test_every_red_flag_has_samples():
    assert set(SAMPLES) == {rf.id for rf in LIB.red_flags}


def into_state(phone, state: str) -> None:
    if state in ("menu", "mid-question", "after an outcome"):
        phone.send("hello")
    if state in ("mid-question", "after an outcome"):
        phone.send("fever")
        phone.send("no")
    if state == "after an outcome":
        phone.send("38.5")


STATES = ["first contact", "menu", "mid-question", "after an outcome"]


@pytest.mark.parametrize("flag_id", sorted(SAMPLES))
@pytest.mark.parametrize("state", STATES)
def test_red_flag_from_every_state(app, new_phone, flag_id, state):
    for text in SAMPLES[flag_id]:
        phone = new_phone()
        into_state(phone, state)
        reply = phone.send(text)
        assert reply.startswith("Call 911 now."), (state, text, reply)
        rec = records(app, phone=phone.number)[0]
        assert rec["tier"] == "EMERGENCY" and rec["kind"] == "red_flag", (state, text)


def test_red_flag_inside_an_answer_is_not_missed(app, phone):
    phone.send("fever")
    phone.send("no")
    reply = phone.send("38.2 and now he had a seizure")
    assert reply.startswith("Call 911 now.")


def test_after_a_red_flag_the_conversation_can_go_on(app, phone):
    phone.send("I passed out")
    assert "ANY of these" in phone.send("fever")


def test_negated_red_flag_does_not_escalate(phone):
    phone.send("fever")
    reply = phone.send("no chest pain")
    assert not reply.startswith("Call 911 now.")


@pytest.mark.parametrize("rf", LIB.red_flags, ids=lambda rf: rf.id)
def test_every_wording_is_a_valid_pattern_with_english_words(rf):
    """Wordings are data a clinician edits: each compiles, and each names its red flag in
    English (the language the reader reads today)."""
    assert rf.wordings["en"]
    for wording in (*rf.wordings["en"], *rf.not_wordings.get("en", ())):
        assert compile_wording(wording), wording
