"""Families of texts the eleventh blind round (tests/vignettes/blind11_*.yaml) found misread,
fixed as families and checked here in other words than the vignettes' own:

* signs: blood "coming up" with a cough or vomiting, a bump on the head, aching everywhere
  like the worst flu, wheezing since an infusion, "no words come out", saying the wrong
  words, a reddish-blue face, "some blood", a count of stools;
* look-alikes: a dream about not breathing, someone else's fit (the dog's), a question about
  fits in general, the room's temperature in degrees."""

from __future__ import annotations

import pytest
from test_blind_families import ENGINE, read


@pytest.mark.parametrize("text, concept", [
    ("coughing a lot and now theres blood coming up", "coughing_blood"),
    ("threw up and blood came up with it", "vomiting_blood"),
    ("she banged her head on the table this morning", "head_injury"),
    ("aching all over, worse than the worst flu ive had", "severe_muscle_pain"),
    ("wheezing since the transfusion started", "breathing"),
    ("he tries to talk but the words wont come out", "confusion"),
    ("shes using the wrong words for things", "speech_trouble"),
    ("his face has gone a purplish colour", "face_colour"),
    ("noticed blood in the bath", "bleeding"),
    ("6 poos since breakfast", "diarrhea"),
])
def test_signs_in_other_words(text: str, concept: str) -> None:
    assert read(text).get(concept) == "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, concept", [
    ("she had a nightmare about not being able to breathe, fine now", "breathing"),
    ("he dreamed he had a fit", "seizure"),
    ("our cat had a seizure this morning, hes fine", "seizure"),
    ("can chemo cause fits?", "seizure"),
    ("blood test results tomorrow", "bleeding"),
])
def test_and_their_look_alikes(text: str, concept: str) -> None:
    assert read(text).get(concept) != "now", ENGINE.read(text).findings


@pytest.mark.parametrize("text, value", [
    ("its 38 degrees in the house today, his temp is 36.8", 36.8),
    ("30 degrees outside and he feels fine", None),
    ("hes 38 degrees in his ear", 38.0),          # a body site is a reading
])
def test_the_weather_is_not_a_temperature(text: str, value: float | None) -> None:
    assert ENGINE.read(text).values.get("temperature") == value
