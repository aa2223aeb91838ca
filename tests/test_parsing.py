"""What people actually type, read the way clinical-rules.md says."""

import pytest

from bot.conversation.parsing import (
    Option,
    PhraseMatcher,
    parse_choice,
    parse_choices,
    parse_number,
    parse_temperature,
    parse_yes_no,
    says_no_thermometer,
)


@pytest.mark.parametrize("text,celsius", [
    ("38.6", 38.6), ("38,5", 38.5), ("38.2 c", 38.2), ("38.2C", 38.2), ("38 C", 38.0),
    ("37.9", 37.9), ("38.0", 38.0), ("38", 38.0), ("35.9", 35.9), ("36.0", 36.0),
    ("101F", 38.33), ("101 F", 38.33), ("100.4 degrees", 38.0), ("100.4F", 38.0),
    ("99.9F", 37.72), ("99.9", 37.72), ("101.5f", 38.61), ("102 fahrenheit", 38.89),
    ("38.4 celsius", 38.4), ("it's 38.9", 38.9), ("temp 38.9", 38.9), ("my temp is 39", 39.0),
    ("38.5\u00b0C", 38.5), ("38.5\u00b0", 38.5), ("34", 34.0), ("43", 43.0), ("93", 33.89),
    ("110", 43.33), ("I took tylenol 2 hours ago, it was 38.7", 38.7),
])
def test_temperatures_read_as_the_rules_say(text, celsius):
    t = parse_temperature(text)
    assert t is not None
    assert t.celsius == pytest.approx(celsius, abs=0.01)


@pytest.mark.parametrize("text", [
    "idk", "", "hot", "44", "92", "111", "38F", "200", "33.9", "yes", "3", "1000",
    "\U0001f912", "38.6.7.8C" * 0 + "abc",
])
def test_unreadable_temperatures_are_none(text):
    assert parse_temperature(text) is None


def test_fahrenheit_boundary_is_exactly_38():
    assert parse_temperature("100.4F").celsius == 38.0
    assert parse_temperature("100.3F").celsius < 38.0


@pytest.mark.parametrize("text", ["no thermometer", "I don't have a thermometer",
                                  "dont have one", "havent checked"])
def test_no_thermometer(text):
    assert says_no_thermometer(text)


@pytest.mark.parametrize("text,expected", [
    ("yes", True), ("YES!!", True), ("yes!!", True), ("Yeah", True), ("y", True),
    ("yep", True), ("Yes I have", True), ("sure", True), ("\u2705 yes", True),
    ("no", False), ("No.", False), ("nope", False), ("NO!!!", False), ("n", False),
    ("no not really", False), ("nah", False), ("None", False),
    ("idk", None), ("not sure", None), ("maybe", None), ("I don't know", None),
    ("", None), ("\U0001f44d", None), ("banana", None), ("kind of", None),
])
def test_yes_no(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize("text,expected", [
    ("6", 6.0), ("six", 6.0), ("about 7 times", 7.0), ("3,5", 3.5), ("none", 0.0),
    ("lots", None), ("", None),
])
def test_numbers(text, expected):
    assert parse_number(text, 0, 50) == expected


def test_number_outside_range_is_none():
    assert parse_number("99", 0, 50) is None


OPTIONS = [Option("ok", "Mostly OK", ("fine",)), Option("unwell", "Unwell", ("poorly",)),
           Option("very_unwell", "Very unwell", ("terrible",))]


@pytest.mark.parametrize("text,expected", [
    ("1", "ok"), ("2", "unwell"), ("3", "very_unwell"), ("fine", "ok"),
    ("Very unwell", "very_unwell"), ("unwell", "unwell"), ("fine but unwell", None),
    ("poorly", "unwell"), ("terrible!!", "very_unwell"), ("9", None), ("idk", None),
])
def test_single_choice(text, expected):
    # "Very unwell" holds "unwell": the longer name wins; two separate names are ambiguous
    assert parse_choice(text, OPTIONS) == expected


def test_multi_choice():
    opts = [Option("urine", "burning when you pee"), Option("cough", "cough"),
            Option("throat", "sore throat"), Option("rash", "rash")]
    assert parse_choices("2 and 3", opts) == ["cough", "throat"]
    assert parse_choices("cough, sore throat", opts) == ["cough", "throat"]
    assert parse_choices("no", opts) == []
    assert parse_choices("none of these", opts) == []
    assert parse_choices("purple", opts) is None


@pytest.fixture(scope="module")
def matcher():
    return PhraseMatcher({"breathing": ["cant breath*", "struggling to breath*"],
                          "chest": ["chest pain*"], "bleeding": ["wont stop bleeding"]})


@pytest.mark.parametrize("text,keys", [
    ("I can't breathe", ["breathing"]), ("cant breath", ["breathing"]),
    ("I CAN\u2019T BREATHE!!", ["breathing"]), ("she is struggling to breathe", ["breathing"]),
    ("chest pains and I can't breathe", ["chest", "breathing"]),
    ("no chest pain", []), ("I don't have chest pain", []), ("without chest pain", []),
    ("not sure but chest pain", ["chest"]), ("my nose won't stop bleeding", ["bleeding"]),
    ("my nose wont stop bleeding", ["bleeding"]), ("breathing fine", []),
])
def test_phrase_matcher(matcher, text, keys):
    assert [k for k, _ in matcher.find(text)] == keys
