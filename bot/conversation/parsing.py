"""Reading what people actually type: "yes!!", "idk", "38,5", "101F", "cant breathe".

Pure functions, no I/O; every parser returns ``None`` when it cannot understand the answer, so the
engine can ask again with an example (and, on a red-flag question, take the worse answer).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_APOSTROPHES = "\u2018\u2019\u201b\u2032`\u00b4"
_SPACE_RE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, straight apostrophes, single spaces; keeps digits, letters and punctuation."""
    if text and len(text) <= _KEPT_CHARS:
        return _normalized(text)
    return _normalize(text)


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")
    for ch in _APOSTROPHES:
        text = text.replace(ch, "'")
    text = text.replace("\u00b0", " degrees ")
    return _SPACE_RE.sub(" ", text).strip().lower()


# One message's text is normalised by each parser that looks at it (8 times for a "no"),
# and "no", "1" and "38.5" arrive all day: short texts are remembered (pure functions of the
# text; at most 4,096 of up to 60 characters each, under 1 MB a process).
_KEPT_CHARS = 60
_normalized = functools.lru_cache(maxsize=4096)(_normalize)
_WORD_RE = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Word tokens with apostrophes removed ("can't" -> "cant")."""
    if text and len(text) <= _KEPT_CHARS:
        return list(_words(text))
    return _split(normalize(text))


def _split(norm: str) -> list[str]:
    return _WORD_RE.findall(norm.replace("'", ""))


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(_split(normalize(text)))


# --------------------------------------------------------------------------- yes / no

_YES = {
    "y", "yes", "yess", "yea", "yeah", "yeh", "yep", "yup", "ya", "yah", "ye", "yas",
    "sure", "correct", "true", "affirmative", "definitely",
    "absolutely", "indeed", "si", "oui", "aye", "uh huh", "i do", "i have", "i am", "it is",
    "he is", "she is", "they are", "he has", "she has", "they have", "i did", "he did",
    "she did", "they did", "yes please",
}
_NO = {
    "n", "no", "nope", "nah", "na", "nay", "not", "none", "never", "negative", "false", "nothing",
    "no thanks", "not really", "i dont", "i havent", "i am not", "im not", "it isnt", "he isnt",
    "she isnt", "i didnt", "he didnt", "she didnt", "they didnt", "none of them", "none of these",
    "non", "nop", "nao", "nothing like that", "neither", "not at all", "no not at all",
}
# "definitely not": a word of certainty before a no is a no (and "definitely" alone a yes)
_SURELY = {"def", "deff", "defo", "deffo", "definitely", "definately", "defiantly", "defintely",
           "absolutely", "certainly", "totally", "really", "honestly", "deffinitely"}
_NOT_WORDS = {"not", "no", "nope", "nothing", "none", "never", "nah"}
# Answers that say "I don't know": unclear on purpose, so a red-flag question takes the worse
# answer after one more try (clinical-rules.md, combination rule 4).
_UNSURE = {"idk", "dunno", "not sure", "unsure", "maybe", "dont know", "i dont know", "no idea",
           "perhaps", "possibly", "kind of", "kinda", "sort of", "sorta", "a bit", "i think so",
           "not sure maybe", "hmm", "?", "dk", "cant tell", "i cant tell"}


def parse_yes_no(text: str) -> bool | None:
    toks = words(text)
    if not toks:
        return None
    phrase = " ".join(toks)
    if phrase in _UNSURE or any(u in phrase for u in ("not sure", "dont know", "no idea", "idk")):
        return None
    if toks[0] in _SURELY and len(toks) > 1 and toks[1] in _NOT_WORDS:
        return False  # "def not", "definitely not", "absolutely no"
    if phrase in _YES or toks[0] in _YES:
        return True
    if phrase in _NO or toks[0] in {"no", "nope", "nah", "n", "none", "never", "not", "nothing"}:
        return False
    # "ok", "right", "what number?": an acknowledgement or a question, never a yes (a parent who
    # typed "ok" to "any of these emergency signs?" must not be told to call 911).
    return None


# --------------------------------------------------------------------------- numbers

_NUMBER_WORDS = {
    "zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "once": 1,
    "twice": 2,
}
_NUM_RE = re.compile(r"(?<![\d.,])(\d{1,3}(?:[.,]\d{1,2})?)(?![\d])")


def parse_number(text: str, minimum: float | None = None, maximum: float | None = None
                 ) -> float | None:
    norm = normalize(text)
    candidates: list[float] = [float(m.replace(",", ".")) for m in _NUM_RE.findall(norm)]
    if not candidates:
        candidates = [float(_NUMBER_WORDS[w]) for w in words(norm) if w in _NUMBER_WORDS]
    for value in candidates:
        if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
            return value
    return None


# --------------------------------------------------------------------------- temperature

@dataclass(frozen=True)
class Temperature:
    celsius: float
    fahrenheit: float
    text: str  # how we read it back to the patient and the care team, e.g. "38.6 C"

    def __str__(self) -> str:
        return self.text


C_RANGE = (34.0, 43.0)
F_RANGE = (93.0, 110.0)
_TEMP_RE = re.compile(
    r"(?<![\d.,])(\d{2,3}(?:[.,]\d{1,2})?)(?![\d])\s*(?:degrees?|degs?|deg|o)?\s*"
    r"(celsius|centigrade|fahrenheit|farenheit|faranheit|c|f)?(?![a-z])"
)
NO_THERMOMETER_PHRASES = ("no thermometer", "dont have a thermometer", "havent got a thermometer",
                          "no thermometor", "no termometer", "cant measure", "can't measure",
                          "didnt check", "didnt take it", "havent checked", "not checked",
                          "dont have one", "no way to check", "havent taken it")


def _round(value: float) -> float:
    return round(value + 0.0, 2)


def parse_temperature(text: str) -> Temperature | None:
    """Rules from clinical-rules.md: 34-43 is read as C, 93-110 as F; "38,5", "101F", "38.2 c",
    "100.4 degrees". A unit that contradicts the range (e.g. "38F") is not guessed at."""
    norm = normalize(text)
    for number, unit in _TEMP_RE.findall(norm):
        value = float(number.replace(",", "."))
        unit = unit[:1] if unit else ""
        if unit == "c" or (not unit and C_RANGE[0] <= value <= C_RANGE[1]):
            if not C_RANGE[0] <= value <= C_RANGE[1]:
                continue
            c = _round(value)
            return Temperature(c, _round(c * 9 / 5 + 32), f"{value:g} C")
        if unit == "f" or (not unit and F_RANGE[0] <= value <= F_RANGE[1]):
            if not F_RANGE[0] <= value <= F_RANGE[1]:
                continue
            celsius = _round((value - 32) * 5 / 9)
            return Temperature(celsius, value, f"{value:g} F ({celsius:.1f} C)")
    return None


def says_no_thermometer(text: str) -> bool:
    norm = " ".join(words(text))
    return any(p.replace("'", "") in norm for p in NO_THERMOMETER_PHRASES)


# --------------------------------------------------------------------------- choices

@dataclass(frozen=True)
class Option:
    id: str
    label: str
    synonyms: tuple[str, ...] = ()
    concepts: tuple[str, ...] = ()  # reader concepts that pick this option (flows/concepts.yaml)


def parse_choice(text: str, options: Sequence[Option]) -> str | None:
    """One option, by its number ("2"), letter ("b") or words ("mostly ok")."""
    picked = parse_choices(text, options, allow_many=False)
    return picked[0] if picked else None


_ORDINALS = {w: i for i, w in enumerate(
    ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
     "tenth"))}


def parse_choices(text: str, options: Sequence[Option], allow_many: bool = True
                  ) -> list[str] | None:
    """Several options ("1 and 3", "cough, sore throat"); ``[]`` for an explicit none/no."""
    norm = normalize(text)
    toks = words(norm)
    if not toks:
        return None
    phrase = " ".join(toks)
    picked: list[str] = []
    # option numbers, not the parts of a reading ("no temp 36.8" is not options 36 and 8)
    numbers = re.findall(r"(?<![\d.,])(\d{1,2})(?!\d|[.,]\d)", norm)
    for n in numbers:
        i = int(n) - 1
        if 0 <= i < len(options) and options[i].id not in picked:
            picked.append(options[i].id)
    if len(toks) <= 4 and not numbers:  # "the second one", "third"
        for tok in toks:
            i = _ORDINALS.get(tok, -1)
            if 0 <= i < len(options) and options[i].id not in picked:
                picked.append(options[i].id)
    if len(toks) <= 3 and not numbers and not picked:
        for tok in toks:
            if len(tok) == 1 and "a" <= tok <= "z":
                i = ord(tok) - ord("a")
                if 0 <= i < len(options) and tok not in {"i", "a"} | ({"n", "y"}):
                    picked.append(options[i].id)
    # Options named in words: each option's longest name found in the text. An option whose
    # words lie inside another's ("unwell" inside "very unwell") is not also picked.
    spans: dict[str, tuple[int, int]] = {}
    for opt in options:
        for name in sorted([opt.label, *opt.synonyms], key=len, reverse=True):
            name_phrase = " ".join(words(name))
            found = re.search(rf"\b{re.escape(name_phrase)}\b", phrase) if name_phrase else None
            if found:
                spans[opt.id] = found.span()
                break
    for oid, (start, end) in spans.items():
        inside_another = any(o != oid and s0 <= start and end <= e0 and (s0, e0) != (start, end)
                             for o, (s0, e0) in spans.items())
        if not inside_another and oid not in picked:
            picked.append(oid)
    if not picked:
        if phrase in _NO or toks[0] in {"no", "none", "nope", "nah", "nothing", "neither", "n"}:
            return []
        return None
    if not allow_many and len(picked) > 1:
        return None
    return picked


# --------------------------------------------------------------------------- phrase matching

_NEGATIONS = ("no", "not", "without", "never", "denies", "dont have", "do not have",
              "doesnt have", "does not have", "havent had", "have not had", "no sign of",
              "no signs of", "isnt", "wasnt", "hasnt")


def _phrase_pattern(phrase: str) -> str:
    """A phrase from a flow file as a regex: words in order, flexible spacing and apostrophes;
    a trailing ``*`` allows any word ending ("breath*" matches breathe, breathing)."""
    parts = []
    for tok in phrase.lower().replace("'", "").split():
        if tok.endswith("*"):
            parts.append(re.escape(tok[:-1]) + r"[a-z]*")
        else:
            parts.append(re.escape(tok))
    return r"\b" + r"\s+".join(parts) + r"\b"


class PhraseMatcher:
    """Finds any of many phrases in free text, ignoring simple negation ("no chest pain").

    Negation is read only from the two words right before a phrase; "I can't breathe" is matched
    (the phrase itself contains the "can't"). Anything cleverer would risk missing a red flag.
    """

    def __init__(self, phrases: dict[str, Iterable[str]], negatable: bool = True):
        self._compiled: list[tuple[str, re.Pattern[str]]] = []
        for key, items in phrases.items():
            for phrase in items:
                self._compiled.append((key, re.compile(_phrase_pattern(phrase))))
        self._negatable = negatable

    @staticmethod
    def prepare(text: str) -> str:
        return " ".join(words(text))

    def find(self, text: str) -> list[tuple[str, str]]:
        """(key, matched words) for each key found, in order of first appearance."""
        prepared = self.prepare(text)
        hits: list[tuple[int, str, str]] = []
        seen: set[str] = set()
        for key, pattern in self._compiled:
            if key in seen:
                continue
            for m in pattern.finditer(prepared):
                if self._negatable and self._negated(prepared[: m.start()]):
                    continue
                hits.append((m.start(), key, m.group(0)))  # the words as typed
                seen.add(key)
                break
        return [(key, phrase) for _, key, phrase in sorted(hits)]

    @staticmethod
    def _negated(before: str) -> bool:
        tail = before.split()[-3:]
        tail_text = " ".join(tail)
        return any(re.search(rf"(^|\s){re.escape(neg)}(\s\w+)?$", tail_text) for neg in _NEGATIONS)
