"""Every message the service can send is GSM-7 only and at most 3 SMS segments.

Walks all wording in flows/ (every checklist, red flag and message) and every combination the
engine can put into one reply, with long phone numbers filled in.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import ROOT
from bot.conversation.engine import Engine
from bot.conversation.flows import TIERS, load_library, raise_tier
from bot.sms import GSM7_BASIC, GSM7_EXTENDED, MAX_SEGMENTS, is_gsm7, non_gsm7, segments, septets

LONG_NUMBER = "+1 (555) 010-0100 x12"  # longer than any real number we expect

LIB = load_library(ROOT / "flows")
ENGINE = Engine(LIB, oncology_line=LONG_NUMBER, care_team=LONG_NUMBER)
M = LIB.messages
QUESTIONS = [(f.id, q) for f in LIB.flows.values() for q in f.questions]


def fits(text: str) -> None:
    assert is_gsm7(text), f"not GSM-7: {non_gsm7(text)!r} in {text!r}"
    assert segments(text) <= MAX_SEGMENTS, f"{segments(text)} segments: {text!r}"


def every_text() -> list[tuple[str, str]]:
    texts: list[tuple[str, str]] = []
    for key, value in M.items():
        if isinstance(value, str):
            texts.append((f"messages.{key}", value))
    for tier in TIERS:
        texts.append((f"messages.tier.{tier}", ENGINE.fill(M["tier"][tier])))
    for flow in LIB.flows.values():
        texts += [(f"{flow.id}.title", flow.title), (f"{flow.id}.menu_label", flow.menu_label),
                  (f"{flow.id}.self_care", flow.self_care)]
        for q in flow.questions:
            texts += [(f"{flow.id}.{q.id}.ask", q.ask), (f"{flow.id}.{q.id}.example", q.example)]
            texts += [(f"{flow.id}.{q.id}.option", o.label) for o in q.options]
        texts += [(f"{flow.id}.{r.id}.advice", r.advice) for r in flow.rules]
    for rf in LIB.red_flags:
        texts.append((f"red_flags.{rf.id}.advice", rf.advice))
    return texts


@pytest.mark.parametrize("where,text", every_text())
def test_every_text_is_gsm7_and_short(where, text):
    fits(text)


@pytest.mark.parametrize("flow_id,q", QUESTIONS, ids=[f"{f}.{q.id}" for f, q in QUESTIONS])
def test_every_question_fits_in_every_reply_it_can_be_in(flow_id, q):
    fits(ENGINE.compose(M["greeting_short"], q.ask))  # first contact that starts a checklist
    fits(ENGINE.reask(q))  # asked again with an example
    if q.type == "multi_choice":  # "yes" to "any of these?"
        fits(M["reask_which"].format(question=q.ask, example=q.example))
    fits(ENGINE.compose(M["help"], q.ask))
    fits(ENGINE.compose(M["photo"], q.ask))
    fits(ENGINE.compose(M["empty"], q.ask))
    fits(ENGINE.compose(M["already_opted_out"], q.ask))


@pytest.mark.parametrize("tier", TIERS)
def test_every_outcome_fits_with_the_first_contact_line(tier):
    """The mandatory parts of an outcome: the first-contact line (when the first text already
    decides) and the tier's words. Advice and self-care are optional and dropped past 3."""
    fits(ENGINE.compose(M["greeting_short"], ENGINE.fill(M["tier"][tier])))


@pytest.mark.parametrize("tier", TIERS)
def test_every_rule_advice_fits_with_its_tier(tier):
    """The first advice line of a rule must fit beside its tier's words, so it is never the
    one dropped."""
    for flow in LIB.flows.values():
        for rule in flow.rules:
            if rule.tier == tier or (rule.infection and raise_tier(rule.tier) == tier):
                fits(ENGINE.compose(ENGINE.fill(M["tier"][tier]), rule.advice))


def test_every_red_flag_reply_fits():
    """Each red flag's advice fits beside the 911 line (a second flag's advice is optional)."""
    for rf in LIB.red_flags:
        fits(ENGINE.compose(ENGINE.fill(M["red_flag"]), rf.advice))


def test_menu_replies_fit():
    menu = ENGINE.menu_text()
    fits(ENGINE.compose(M["greeting"], menu))
    fits(ENGINE.compose(M["greeting"], M["photo"], menu))
    fits(ENGINE.compose(M["not_understood_menu"], menu))
    fits(ENGINE.compose(M["restart"], menu))
    fits(ENGINE.compose(M["started"], menu))
    fits(ENGINE.fill(M["store_down"]))
    fits(M["stopped"])


def test_compose_drops_optional_parts_not_mandatory_ones():
    from bot.conversation.engine import Opt

    long = "word " * 120
    text = ENGINE.compose("Call 911 now.", Opt(long), Opt("Short tip."))
    assert text == "Call 911 now. Short tip."


def test_segment_counting():
    assert segments("a" * 160) == 1 and segments("a" * 161) == 2
    assert segments("a" * 459) == 3 and segments("a" * 460) == 4
    assert segments("\u2019" + "a" * 69) == 1 and segments("\u2019" + "a" * 70) == 2
    assert segments("[" * 80) == 1 and segments("[" * 81) == 2  # extension chars cost two


def _septets_by_definition(text: str) -> int:
    return sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)


_ALPHABET = [*sorted(GSM7_BASIC | GSM7_EXTENDED), "\u2019", "\u00e7", "\U0001f600", "\u00a0"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(_ALPHABET)))
def test_counting_agrees_with_the_definition(text: str) -> None:
    """``is_gsm7`` and ``septets`` (written for speed) say what 3GPP TS 23.038 says: every
    character in the basic or extension table; one septet each, two for the extension's."""
    assert is_gsm7(text) == all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)
    if is_gsm7(text):
        assert septets(text) == _septets_by_definition(text)
    assert septets("{[]}") == 8 and septets("a^b") == 4 and septets("") == 0
