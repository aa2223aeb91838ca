"""The reader: one pass over every inbound text, whatever question is pending.

``Reader.read(text)`` returns a ``Reading``: the concepts the text names (red flags, checklist
signs, treatment context), each with its ConText modifiers (negated, uncertain, historical,
hypothetical), the values it gives with units (temperature, SpO2, blood pressure, platelets,
neutrophils, durations, counts, ICE score, days since CAR-T or chemotherapy), and whether the
texter writes about someone they care for.

Everything a clinician may want to review is data, keyed by language, in ``flows/``:
the wordings of each concept (``flows/red_flags.yaml``, ``flows/concepts.yaml``) and the ConText
modifiers, clause terminators and caregiver words (``flows/language/<lang>.yaml``). This module is
the algorithm only:

* normalise (NFKC, lower case, straight apostrophes dropped: "can't" -> "cant"), split numbers
  from units ("101F" -> "101 f"), and mark clause boundaries: strong (. ! ? ; newline) and weak
  (comma, dash);
* correct misspellings toward the concept vocabulary with rapidfuzz (OSA distance 1, or 2 for
  long words; same first letter; never a word of the English guard list);
* match each concept's wordings (a small pattern language: ``a|b`` alternatives, ``x*`` any
  ending, ``~N`` a gap of up to N words inside one clause);
* ConText (Harkema et al. 2009, as in medspaCy): a modifier reaches only its own clause; a
  negation reaches a red flag only from at most 3 words before it and never across "and" or a
  comma (a checklist sign may be negated as part of a list: "no cough, rash or sore throat");
  pseudo-triggers ("no I", "not good") do not negate; history and hypothesis cancel a finding,
  uncertainty does not (the safer reading).

Pure: no I/O after construction; build one Reader at start-up.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import base64
import hashlib
import json
import os
import re
import sys
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from re import _compiler as _re_compiler  # type: ignore[attr-defined]
from re import _parser as _re_parser  # type: ignore[attr-defined]
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA

STRONG, WEAK = "#", "&"
FEVERISH_FROM = 37.5  # clinical-rules.md > Fever and infection > SOON row 1 (37.5-37.9 C)
_APOSTROPHES = "'\u2018\u2019\u201b\u2032`\u00b4"
_TOKEN_RE = re.compile(
    r"\d{1,3}(?:,\d{3})+(?![\d])"          # 20,000
    r"|\d+(?:[.,]\d+)?(?:/\d+)?"           # 38.5  38,5  85/50
    r"|[a-z]+"
    r"|\.{2,}|[.!?;:\n]|[,]|\s-\s|%"
)
_NUM_UNIT_RE = re.compile(r"(\d)([a-z%])")
_UNIT_NUM_RE = re.compile(r"([a-z]+)(\d)")
_GLUED = {"spo", "sp", "o", "mp"}  # spo2, o2, 6mp stay one word


@dataclass(frozen=True)
class Finding:
    concept: str
    kind: str                 # red_flag | sign | context
    words: str                # the patient's own words for it
    start: int                # token index
    end: int
    negated: bool = False
    uncertain: bool = False
    historical: bool = False
    hypothetical: bool = False

    @property
    def current(self) -> bool:
        """Affirmed and happening now (an uncertain finding counts: the safer reading)."""
        return not (self.negated or self.historical or self.hypothetical)


@dataclass
class Reading:
    text: str
    tokens: list[str]
    findings: list[Finding] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    value_words: dict[str, str] = field(default_factory=dict)
    caregiver: str | None = None   # "son", "daughter", "he", "she", "they"... or None (self)
    bare_number: float | None = None  # the whole text is one number ("38.9", "88")
    question: bool = False          # the text asks something ("what number?")
    recheck: bool = False           # the text says a reading was taken again ("rechecked")

    def current(self, kind: str | None = None) -> list[Finding]:
        return [f for f in self.findings if f.current and (kind is None or f.kind == kind)]

    def has(self, concept: str) -> bool:
        return any(f.concept == concept and f.current for f in self.findings)

    def concepts(self) -> set[str]:
        return {f.concept for f in self.findings if f.current}

    def words_for(self, concept: str) -> str:
        for f in self.findings:
            if f.concept == concept and f.current:
                return f.words
        return ""


@dataclass(frozen=True)
class Concept:
    id: str
    kind: str
    wordings: tuple[str, ...]
    not_wordings: tuple[str, ...] = ()  # look-alikes that are not it ("a fit of coughing")


@dataclass(frozen=True)
class Combination:
    """Current findings ``all`` (and values at least ``at_least``, below ``below``) add the
    finding ``then``. A value named in ``or_unknown`` also passes when the text gives none
    ("won't stop" with no duration counts as past 30 minutes)."""

    all: tuple[str, ...]
    then: str
    at_least: dict[str, float] = field(default_factory=dict)
    below: dict[str, float] = field(default_factory=dict)
    or_unknown: frozenset[str] = frozenset()
    unless: tuple[str, ...] = ()  # ``settled`` only: findings after the settling words that
                                  # keep the finding current ("then started again")

    def values_hold(self, values: Mapping[str, float]) -> bool:
        """The value tests: each ``at_least``/``below`` holds, a missing value passing only
        where ``or_unknown`` names it."""
        def value(k: str, missing: float) -> float:
            return values.get(k, -missing if k in self.or_unknown else missing)
        return all(value(k, float("-inf")) >= v for k, v in self.at_least.items()) and \
            all(value(k, float("inf")) < v for k, v in self.below.items())


# --------------------------------------------------------------------------- text preparation

_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9}
_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", **{k: str(v) for k, v in _UNITS.items()}}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
         "seventy": 70, "eighty": 80, "ninety": 90}
_SPELLED_RE = re.compile(
    r"\b(?:(?P<hundred>(?:a|one) hundred(?: and)?)\s*)?"
    r"(?P<tens>" + "|".join(_TENS) + r")(?:[ -](?P<unit>" + "|".join(_UNITS) + r"))?"
    r"(?:(?P<point> point)? (?P<frac>(?:(?:" + "|".join(_DIGIT_WORDS) + r"|\d)\s?){1,2}))?\b")


# Before a long-ago phrase, a word that makes it a start, not a past point: "since 2 weeks ago",
# "for the last month", "started months ago" (Reader._not_a_reading)
_ONGOING = frozenset({"since", "for", "from", "over", "all", "started", "start", "began",
                      "begun", "starting", "throughout"})
# The concept of a text that says the patient is well ("hes fine"; flows/concepts.yaml)
WELL_CONCEPT = "doing_well"
# "his sister has 38.5 and so does he"
_SO_DOES = frozenset({"does", "do", "did", "is", "are", "was", "has", "have", "had"})

# "can he ...", "do i need ...": a question even without a question mark
_AUXILIARIES = frozenset({"do", "does", "can", "could", "should", "is", "are", "will", "would",
                          "am", "may", "shall"})
_SUBJECTS = frozenset({"i", "we", "he", "she", "they", "you", "it", "my", "his", "her", "our",
                       "their", "this", "that", "the"})


def _spelled_numbers(text: str) -> str:
    """Numbers written as words, as a reading is: "thirty eight point five" -> "38.5",
    "a hundred and one" is left alone but "ninety nine point five" -> "99.5". A temperature
    said the way it is spoken, without "point" ("thirty eight five", "ninety nine five"), is
    read the same, only in the ranges a temperature can take (34-43, 93-110)."""
    def number(m: re.Match[str]) -> str:
        value = (100 if m.group("hundred") else 0) + _TENS[m.group("tens")] + \
            _UNITS.get(m.group("unit") or "", 0)
        words = (m.group("frac") or "").split()
        after = " " if m.group(0)[-1:].isspace() else ""  # the frac took the space after it
        if words and not m.group("point") and not (34 <= value <= 43 or 93 <= value <= 110):
            return f"{value} {' '.join(words)}{after}"
        frac = "".join(_DIGIT_WORDS.get(w, w) for w in words)
        return (f"{value}.{frac}" if frac else str(value)) + after
    return _SPELLED_RE.sub(number, text) if any(t in text for t in _TENS) else text


_CLOCK_RE = re.compile(r"(?<![\d.:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
# (a full stop or comma after it ends the sentence: "38 point 5, chemo last week")
_POINT_RE = re.compile(r"(?<!\d)(?<!\d[.,])(\d{2,3}) point (\d{1,2})(?!\d)(?![.,]\d)")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    for ch in _APOSTROPHES:
        text = text.replace(ch, "")
    text = _spelled_numbers(text)
    # "38 point 5" in digits is 38.5, as "thirty eight point five" is
    text = _POINT_RE.sub(r"\1.\2", text) if " point " in text else text
    # a clock time "7:30" as "7.30" (a colon would end the clause)
    text = _CLOCK_RE.sub(r"\1.\2", text) if ":" in text else text
    text = text.replace("\u00b0", " degrees ").replace("\u2013", " - ").replace("\u2014", " - ")
    text = _NUM_UNIT_RE.sub(r"\1 \2", text)
    text = _UNIT_NUM_RE.sub(lambda m: m.group(0) if m.group(1) in _GLUED
                            else f"{m.group(1)} {m.group(2)}", text)
    return text


def tokenize(text: str) -> list[str]:
    """Word and number tokens; clause boundaries as ``#`` (strong) and ``&`` (weak)."""
    out: list[str] = []
    for tok in _TOKEN_RE.findall(normalize(text)):
        tok = tok.strip()
        if tok in {",", "-"}:
            tok = WEAK
        elif tok in {".", "!", "?", ";", ":", ""} or tok.startswith(".."):
            tok = STRONG
        elif tok == "%":
            tok = "percent"
        if tok in (STRONG, WEAK) and (not out or out[-1] in (STRONG, WEAK)):
            if tok == STRONG and out:
                out[-1] = STRONG
            continue
        out.append(tok)
    while out and out[-1] in (STRONG, WEAK):
        out.pop()
    return out


def _alt_regex(alt: str) -> str:
    words = []
    for w in alt.split():
        words.append(re.escape(w[:-1]) + r"[a-z0-9]*" if w.endswith("*") else re.escape(w))
    return " ".join(words)


@lru_cache(maxsize=16)
def _gap_guard(no_gap_words: frozenset[str]) -> str:
    """The lookahead that keeps a gap off the no-gap words: the same for every wording of a
    language, so built once (it was rebuilt for each of ~800 wordings at start-up)."""
    banned = "|".join(re.escape(w) for w in sorted(no_gap_words))
    return rf"(?!(?:{banned}) )" if banned else ""


def compile_wording(wording: str, no_gap_words: Iterable[str] = ()) -> str:
    """A wording as a regex over space-joined tokens. ``~N`` (N words, default 3; ``~0``
    none) separates slots; inside a slot ``|`` separates alternatives, each one or more words
    (``cant|cannot ~0 breath*``, ``throat ~3 swollen|closing up``); ``word*`` allows any
    ending of letters or digits ("19*" is a year of the last century). A gap never holds a
    clause boundary, nor any of ``no_gap_words`` (negations and clause breaks: "cough, no
    blood" is not "cough ~3 blood"). A wording that starts with ``^`` matches only at the
    start of the text, one that ends with ``$`` only at its end (``^ fit $``: the whole text
    is "fit", a word too common in other senses to be a sign anywhere)."""
    guard = _gap_guard(frozenset(no_gap_words))
    text = wording.lower().replace("'", "").strip()
    at_start, at_end = text.startswith("^"), text.endswith("$")
    text = text.removeprefix("^").removesuffix("$").strip()
    out = ""
    for part in re.split(r"\s*(~\d*)\s*", text):
        if not part:
            continue
        m = re.fullmatch(r"~(\d*)", part)
        if m:
            n = int(m.group(1) or 3)
            if n:
                out += rf"(?: {guard}[^ {STRONG}{WEAK}]+){{0,{n}}}"
            continue
        alts = [a.strip() for a in part.split("|") if a.strip()]
        if not alts:
            raise ValueError(f"empty alternative in {wording!r}")
        out += (" " if out else "") + "(?:" + "|".join(_alt_regex(a) for a in alts) + ")"
    if not out:
        raise ValueError("empty wording")
    return ("(?<=^ )" if at_start else "") + out + ("(?= $)" if at_end else "")


def wording_words(wording: str) -> set[str]:
    """The literal words of a wording (prefix stems too), for the spelling vocabulary."""
    words = set()
    for tok in re.split(r"[\s|]+", wording.lower().replace("'", "")):
        if tok and not tok.startswith("~"):
            words.add(tok.rstrip("*"))
    return {w for w in words if w.isalpha()}


_SUFFIXES = ("", "s", "es", "ed", "d", "ing", "e", "y", "ly", "ness")


# --------------------------------------------------------------------------- compiled patterns
#
# Compiling the concepts' ~350 patterns (Python's regex parser and compiler are pure Python) was
# most of a process's start-up (issue 9). The compiled program is kept: in this process for
# every later Reader (tests, the vignette runner), and, when the app names a folder
# (``PATTERN_CACHE_DIR``, set by ``bot.create_app`` to the instance folder), in a file there
# for the next process. Only the build changes, never the matching: a cached pattern is the
# very program ``re.compile`` makes (the same sre code array, flags and groups, handed to the
# same ``_sre.compile``, which validates the code), used only if the file's SHA-256, the Python
# version, the sre engine's magic number and the pattern's own text all match; anything
# unexpected falls back to ``re.compile``.

PATTERN_CACHE_DIR: str | None = None
_compiled: dict[str, tuple[re.Pattern[str], list[Any] | None]] = {}


def _cache_path() -> Path | None:
    if not PATTERN_CACHE_DIR:
        return None
    tag = hashlib.sha256(f"{sys.version}|{_sre.MAGIC}|{_sre.CODESIZE}".encode()).hexdigest()
    return Path(PATTERN_CACHE_DIR) / f"reader-patterns-{tag[:12]}.json"


def _load_cached(path: Path | None) -> dict[str, list[Any]]:
    if path is None:
        return {}
    try:
        raw = path.read_bytes()
        digest, _, body = raw.partition(b"\n")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            return {}
        return {e[0]: e for e in json.loads(body)}
    except (OSError, ValueError, TypeError, IndexError):
        return {}


def _program(rx: str, flags: int = 0) -> list[Any]:
    """What ``re.compile(rx, flags)`` hands to ``_sre.compile`` (Python 3.11's re._compiler)."""
    parsed = _re_parser.parse(rx, flags)
    code = _re_compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    return [rx, flags | parsed.state.flags,
            base64.b64encode(array("I", code).tobytes()).decode(),
            parsed.state.groups - 1, groupindex, indexgroup]


def program_of(pattern: re.Pattern[str]) -> list[Any]:
    """A compiled pattern's program (from this process's build cache when it made it), to
    be handed to ``pattern_from_program`` in another process (``snapshot.py``)."""
    known = _compiled.get(pattern.pattern)
    if known is not None and known[0] is pattern and known[1] is not None:
        return known[1]
    return _program(pattern.pattern, pattern.flags)


def packed_program(pattern: re.Pattern[str]) -> tuple[Any, ...]:
    """``program_of`` with the code as raw bytes (no base64): what the engine snapshot keeps."""
    rx, flags, code, groups, groupindex, indexgroup = program_of(pattern)
    return rx, flags, base64.b64decode(code), groups, groupindex, tuple(indexgroup)


def pattern_from_program(rx: str, flags: int, code: bytes, groups: int,
                         groupindex: dict[str, int], indexgroup: tuple[str | None, ...]
                         ) -> re.Pattern[str]:
    """``packed_program``'s pattern again; if the program does not fit this Python, compiled
    from its text."""
    try:
        return _sre_pattern(rx, flags, code, groups, groupindex, indexgroup)
    except Exception:  # a program from another Python or sre engine: compiled instead
        return re.compile(rx, flags)


def _sre_pattern(rx: str, flags: int, code: bytes, groups: int, groupindex: dict[str, int],
                 indexgroup: tuple[str | None, ...]) -> re.Pattern[str]:
    """A program back to its pattern (``_sre.compile`` validates the code); ValueError when it
    is not the pattern of ``rx``."""
    pattern = _sre.compile(rx, flags, array("I", code).tolist(), groups, groupindex, indexgroup)
    if pattern.pattern != rx or pattern.groups != groups:
        raise ValueError("cached pattern does not match its text")
    return pattern


def _from_program(entry: list[Any]) -> re.Pattern[str]:
    rx, flags, code, groups, groupindex, indexgroup = entry
    return _sre_pattern(rx, flags, base64.b64decode(code), groups, groupindex,
                        tuple(indexgroup))


class _PatternBuild:
    """Compile a Reader's patterns, through the caches above."""

    def __init__(self) -> None:
        self.path = _cache_path()
        self.cached: dict[str, list[Any]] | None = None
        self.used: dict[str, list[Any]] = {}
        self.missed = False

    def compile(self, rx: str) -> re.Pattern[str]:
        known = _compiled.get(rx)
        if known is not None:
            if known[1] is not None:
                self.used[rx] = known[1]
            return known[0]
        if self.cached is None:
            self.cached = _load_cached(self.path)
        entry = self.cached.get(rx)
        try:
            if entry is None or entry[0] != rx:
                if self.path is None:
                    raise KeyError(rx)
                self.missed = True
                entry = _program(rx)  # compiled once, here, then kept in the file
            pattern = _from_program(entry)
        except Exception:  # no file, or anything unexpected: the normal way
            pattern = re.compile(rx)
            entry = None
        if entry is not None:
            self.used[rx] = entry
        _compiled[rx] = (pattern, entry)
        return pattern

    def save(self) -> None:
        """Write the file again if this build compiled anything itself (atomically)."""
        if not (self.missed and self.path is not None and self.used):
            return
        body = json.dumps(list(self.used.values()), separators=(",", ":")).encode()
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only folder: no cache, nothing else changes


# --------------------------------------------------------------------------- the reader

class Reader:
    def __init__(self, concepts: Iterable[Concept], language: Mapping[str, Any],
                 guard_words: Iterable[str] = (), combinations: Iterable[Combination] = (),
                 settled: Iterable[Combination] = ()):
        self.concepts = {c.id: c for c in concepts}
        self.combinations = tuple(combinations)
        self.settled = tuple(settled)
        # concept -> the combinations (indexes, in order) that need it: the conversation's
        # combining pass (answers.py) looks only at those its signs can reach
        self.combos_by: dict[str, list[int]] = {}
        for k, combo in enumerate(self.combinations):
            for concept in dict.fromkeys(combo.all):
                self.combos_by.setdefault(concept, []).append(k)
        lang = language
        self._patterns: list[tuple[Concept, re.Pattern[str], re.Pattern[str] | None]] = []
        vocab: set[str] = set()
        no_gap = {p for p in lang.get("negation_forward", []) if " " not in p} | (set(
            lang.get("clause_breaks", [])) - {"and"})
        build = _PatternBuild()
        for c in self.concepts.values():
            rx = "|".join(f"(?:{compile_wording(w, no_gap)})" for w in c.wordings)
            nx = "|".join(f"(?:{compile_wording(w)})" for w in c.not_wordings)
            self._patterns.append((c, build.compile(rf"(?<= )(?:{rx})(?= )"),
                                   build.compile(rf"(?<= )(?:{nx})(?= )") if nx else None))
            for w in c.wordings:
                for word in wording_words(w):
                    vocab.add(word)
                    if any(t.rstrip("*") == word and t.endswith("*") for t in
                           re.split(r"[\s|]+", w)):
                        vocab.update(word + s for s in _SUFFIXES)
        build.save()
        # Each concept's literal words and word* stems: a text with none of them cannot match
        # any of its wordings, so its patterns are not run (most texts name a few concepts).
        self._needs: list[tuple[frozenset[str], frozenset[str]] | None] = []
        for c in self.concepts.values():
            words: set[str] = set()
            stems: set[str] = set()
            for w in c.wordings:
                for tok in re.split(r"[\s|]+", w.lower().replace("'", "")):
                    if not tok or tok.startswith("~") or tok in ("^", "$"):
                        continue
                    (stems if tok.endswith("*") else words).add(tok.rstrip("*"))
            self._needs.append((frozenset(words), frozenset(stems)) if words or stems
                               else None)
        self._mods = {name: [tuple(p.split()) for p in lang.get(name, [])] for name in (
            "negation_forward", "negation_backward", "pseudo", "historical", "historical_after",
            "hypothetical", "hypothetical_after", "uncertain", "anaphora_current",
            "other_person", "long_ago", "recheck", "question_phrases")}
        self._terminators = set(lang.get("terminators", []))
        self._breaks = set(lang.get("clause_breaks", []))
        self._degree_after = frozenset(lang.get("degree_so_after", []))
        self._anaphora_next = frozenset(lang.get("anaphora_next", []))
        self._connectors = set(lang.get("list_connectors", []))
        self._caregiver_nouns: dict[str, str] = dict(lang.get("caregiver_nouns", {}))
        self._possessives = set(lang.get("possessives", ["my", "our"]))
        self._third_person = dict(lang.get("third_person", {}))
        self._self_words = set(lang.get("self_words", []))
        # Where another person's clause ends: the patient or the texter named again.
        self._subjects = frozenset(self._third_person) | self._self_words | self._possessives
        self._shared = frozenset(lang.get("shared_words", []))
        # "his little sister", "her older brother": a word between the possessive and the person
        fillers = lang.get("other_person_fillers", [])
        self._mods["other_person"] += [(*p[:-1], f, p[-1]) for p in self._mods["other_person"]
                                       if len(p) >= 2 for f in fillers]
        self._question_starts = set(lang.get("question_starts", []))
        self._rises = frozenset(lang.get("value_rises", []))
        stop = set(lang.get("stop_words", []))
        for name in self._mods:
            for p in self._mods[name]:
                stop.update(p)
        self._known = vocab | stop | self._terminators | set(guard_words) | set(
            lang.get("dictionary", ())) | set(lang.get("value_words", [])) | set(
            self._caregiver_nouns) | self._possessives | set(self._third_person)
        self._vocab = sorted(w for w in vocab if len(w) >= 3)
        self._by_initial: dict[str, list[str]] = {}
        for w in self._vocab:
            self._by_initial.setdefault(w[0], []).append(w)
        self._correct = lru_cache(maxsize=8192)(self._correct_uncached)
        self._value_patterns = prime()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_correct")  # an lru_cache of a bound method: made again on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._correct = lru_cache(maxsize=8192)(self._correct_uncached)
        for pattern, compiled in state.get("_value_patterns", {}).items():
            VALUE_PATTERNS.setdefault(pattern, compiled)

    # -- spelling
    def _correct_uncached(self, tok: str) -> str:
        if len(tok) < 4 or not tok.isalpha() or tok in self._known:
            return tok
        limit = 1 if len(tok) < 8 else 2
        choices = self._by_initial.get(tok[0], [])
        best = process.extractOne(tok, choices, scorer=OSA.distance, score_cutoff=limit)
        return best[0] if best else tok

    def spell(self, tokens: list[str]) -> list[str]:
        return [self._correct(t) for t in tokens]

    # -- the whole reading
    def read(self, text: str) -> Reading:
        raw_tokens = tokenize(text)
        tokens = self._degree_so(self.spell(raw_tokens))
        reading = Reading(text=text, tokens=tokens)
        if not tokens:
            return reading
        joined = " " + " ".join(tokens) + " "
        starts = _token_starts(tokens)
        matches: list[tuple[int, int, Concept]] = []
        present = frozenset(tokens)
        starts_of = {t[:i] for t in present for i in range(1, len(t) + 1)}
        for (concept, rx, not_rx), needs in zip(self._patterns, self._needs, strict=True):
            if needs is not None and needs[0].isdisjoint(present) and \
                    needs[1].isdisjoint(starts_of):
                continue
            found = [_span_to_tokens(starts, m.start(), m.end()) for m in rx.finditer(joined)]
            if found and not_rx is not None:
                unlike = [_span_to_tokens(starts, m.start(), m.end())
                          for m in not_rx.finditer(joined)]
                if unlike:
                    found = self._unlike_removed(rx, joined, starts, unlike)
            matches.extend((s, e, concept) for s, e in found)
        matches = _drop_contained(matches)
        spans = [(s, e) for s, e, _ in matches]
        pseudo = self._spans(tokens, "pseudo")
        for s, e, concept in matches:
            words = " ".join(raw_tokens[s:e])
            reading.findings.append(Finding(
                concept.id, concept.kind, words, s, e,
                negated=self._negated(tokens, s, e, concept.kind, spans, pseudo),
                uncertain=self._in_clause(tokens, s, e, "uncertain", weak=True),
                historical=self._in_clause(tokens, s, e, "historical", weak=True)
                or self._after_in_clause(tokens, e, "historical_after"),
                hypothetical=self._before_in_clause(tokens, s, "hypothetical", pseudo)
                or self._after_in_clause(tokens, e, "hypothetical_after")
                or (concept.kind != "red_flag" and self._other_person(tokens, s)),
            ))
        reading.findings.sort(key=lambda f: f.start)
        self._others_red_flags(tokens, reading)
        self._anaphora(tokens, raw_tokens, reading, spans, pseudo)
        read_values(reading, raw_tokens, skip_reading=lambda at: self._not_a_reading(
            tokens, at, pseudo))
        self._settle(reading)
        self._combine(reading)
        reading.caregiver = self._caregiver(tokens)
        reading.recheck = bool(reading.values) and bool(self._spans(tokens, "recheck"))
        reading.question = "?" in text or bool(self._spans(tokens, "question_phrases")) or (
            tokens[0] in self._question_starts and len(tokens) <= 8) or (
            any(t in _AUXILIARIES and nxt in _SUBJECTS and (i == 0 or tokens[i - 1] in (
                STRONG, WEAK)) for i, (t, nxt) in enumerate(pairwise(tokens))))
        return reading

    def _anaphora(self, tokens: list[str], raw_tokens: list[str], reading: Reading,
                  spans: list[tuple[int, int]], pseudo: list[tuple[int, int]]) -> None:
        """A sign the text denies or puts in the past, then takes up again with "one"
        ("never had a fit before but he just had one", "fainted last year and has just had
        another"): the language's ``anaphora_current`` phrases, after the finding and ending
        their clause (or followed by a time word), make it current. The phrase's own negation
        or hypothesis ("in case he has one") still counts."""
        phrases = self._spans(tokens, "anaphora_current")
        if not phrases:
            return
        for ts, te in phrases:
            before = [f for f in reading.findings if f.end <= ts and f.kind != "context"]
            if not before or before[-1].current:
                continue
            f = before[-1]
            after = tokens[te] if te < len(tokens) else None
            if after is not None and after not in (STRONG, WEAK) and \
                    after not in self._breaks and after not in self._anaphora_next:
                continue
            if any(g.concept == f.concept and g.current for g in reading.findings):
                continue
            if self._negated(tokens, ts, te, f.kind, spans, pseudo) or \
                    self._before_in_clause(tokens, ts, "hypothetical", pseudo):
                continue
            reading.findings.append(Finding(
                f.concept, f.kind, f"{f.words} ... {' '.join(raw_tokens[ts:te])}", ts, te))

    @staticmethod
    def _unlike_removed(rx: re.Pattern[str], joined: str, starts: list[int],
                        unlike: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The matches of ``rx`` that overlap no look-alike. A match that does is dropped
        and the search goes on from the word after its start, not after its end: in "had a
        chest infection and now it hurts in his chest", "chest infection and it hurts" is the
        look-alike's, and "hurts in his chest" is still found."""
        found: list[tuple[int, int]] = []
        pos = 0
        while (m := rx.search(joined, pos)) is not None:
            span = _span_to_tokens(starts, m.start(), m.end())
            if any(_overlaps(span, u) for u in unlike):
                nxt = joined.find(" ", m.start() + 1)
                if nxt < 0:
                    break
                pos = nxt
            else:
                found.append(span)
                pos = max(m.end(), m.start() + 1)
        return found

    def _settle(self, reading: Reading) -> None:
        """A finding the same text then says is over (the flow files' ``settled``): "nose was
        gushing blood, pinched it and it stopped after about 6 mins" is a bleed that stopped,
        not one that won't. Only a finding before the settling words, only when nothing of it
        or of its ``unless`` comes after them ("it stopped then started pouring again"
        stays), and only when the value test holds. The finding is kept, in the past."""
        for rule in self.settled:
            stops = [g.start for g in reading.findings if g.concept in rule.all and g.current]
            if not stops or not rule.values_hold(reading.values):
                continue
            back = [f.start for f in reading.findings if f.current and (
                f.concept == rule.then or f.concept in rule.unless)]
            for k, f in enumerate(reading.findings):
                if f.concept != rule.then or not f.current:
                    continue
                after = [s for s in stops if s >= f.end]
                if after and not any(b >= after[0] for b in back):
                    reading.findings[k] = replace(f, historical=True)

    def _other_person(self, tokens: list[str], at: int) -> bool:
        """The word at ``at`` is about someone who is not the patient: after one of the
        language's ``other_person`` words ("his sister has a cold and a temp of 38", "our dog
        had a fit") in the same sentence, with neither the patient nor the texter named in
        between ("his dad says he cant breathe" is the patient's) and no word that shares it
        ("his sister has 38.5 and so does he", "both", "too"). ConText's "experiencer: other".
        A red flag is another person's only when the text also says the patient is well
        (``_others_red_flags``)."""
        for ts, te in self._spans(tokens, "other_person"):
            if te > at or STRONG in tokens[te:at] or any(
                    t in self._subjects for t in tokens[te:at + 1]):
                continue
            lo, hi = ts, at
            while lo > 0 and tokens[lo - 1] != STRONG:
                lo -= 1
            while hi < len(tokens) and tokens[hi] != STRONG:
                hi += 1
            sentence = tokens[lo:hi]
            if any(t in self._shared for t in sentence) or any(
                    (a == "as" and b == "well") or (a == "so" and b in _SO_DOES)
                    for a, b in pairwise(sentence)):
                continue
            return True
        return False

    def _others_red_flags(self, tokens: list[str], reading: Reading) -> None:
        """A red flag in another person's words counts, unless the same text says the patient
        is well ("his brother had a massive nosebleed ... he's fine"; "his cousin had a fit at
        the party ... my husband is ok but his hands have a new tremor"): then it is theirs."""
        if not any(f.concept == WELL_CONCEPT and not self._other_person(tokens, f.start)
                   for f in reading.findings):
            return
        reading.findings = [replace(f, hypothetical=True) if f.kind == "red_flag" and f.current
                            and self._other_person(tokens, f.start) else f
                            for f in reading.findings]

    def _not_a_reading(self, tokens: list[str], at: int, pseudo: list[tuple[int, int]]
                       ) -> bool:
        """A temperature (or an oxygen saturation, a blood pressure) in the text that is not
        the patient's reading now: someone else's
        ("his sister has a temp of 38"), one long past ("he had 38.5 two weeks ago", the
        language's ``long_ago`` in its clause), or a threshold asked about ("if his temp goes
        to 38.5 what do i do": ``hypothetical`` before it in its clause and a word of change,
        ``value_rises``, just before the number). A reading earlier today or last night
        still counts (clinical-rules.md: any single reading >= 38.0)."""
        if not 0 <= at < len(tokens):
            return False
        if self._other_person(tokens, at):
            return True
        lo, hi = self._clause(tokens, at, at + 1, weak=True)
        if any(lo <= ts and te <= hi and not any(t in _ONGOING for t in tokens[max(lo, ts - 3):ts])
               for ts, te in self._spans(tokens, "long_ago")):
            return True
        lo, _ = self._clause(tokens, at, at + 1, weak=False)
        return self._before_in_clause(tokens, at, "hypothetical", pseudo) and any(
            t in self._rises for t in tokens[max(lo, at - 4):at])

    def _degree_so(self, tokens: list[str]) -> list[str]:
        """``so`` after a linking verb (the language's ``degree_so_after``) and not before a
        subject word is a degree word: read as ``really``, so that a wording's gap passes
        over it ("period ~4 heavy" in "my period is so heavy"); as a clause break elsewhere."""
        if "so" not in tokens:
            return tokens
        out = list(tokens)
        for i, tok in enumerate(tokens):
            if tok == "so" and 0 < i < len(tokens) - 1 and tokens[i - 1] in self._degree_after \
                    and tokens[i + 1] not in _SUBJECTS and tokens[i + 1] not in self._terminators:
                out[i] = "really"
        return out

    def _combine(self, reading: Reading) -> None:
        t = reading.values.get("temperature")
        if t is not None and t >= FEVERISH_FROM and not reading.has("feverish") and \
                "feverish" in self.concepts:
            # a raised reading is a fever finding, as words would be
            reading.findings.append(Finding("feverish", "sign",
                                            reading.value_words.get("temperature", ""), 0, 0))
        for combo in self.combinations:
            if reading.has(combo.then) or not all(reading.has(c) for c in combo.all):
                continue
            if not combo.values_hold(reading.values):
                continue
            parts = [f for f in reading.findings if f.current and f.concept in combo.all]
            concept = self.concepts[combo.then]
            words = " ... ".join(dict.fromkeys(f.words for f in parts))
            words += "".join(f" ({reading.value_words[k]})" for k in (*combo.at_least,
                                                                      *combo.below)
                             if k in reading.value_words)
            reading.findings.append(Finding(concept.id, concept.kind, words.strip(),
                                            min((f.start for f in parts), default=0),
                                            max((f.end for f in parts), default=0)))

    # -- ConText
    def _spans(self, tokens: list[str], name: str) -> list[tuple[int, int]]:
        out = []
        for phrase in self._mods[name]:
            n = len(phrase)
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i:i + n]) == phrase:
                    out.append((i, i + n))
        return out

    def _negated(self, tokens: list[str], s: int, e: int, kind: str,
                 concept_spans: list[tuple[int, int]], pseudo: list[tuple[int, int]]) -> bool:
        red = kind == "red_flag"
        for ts, te in self._spans(tokens, "negation_forward"):
            if te > s or _overlaps((ts, te), (s, e)) or any(
                    ps <= ts and te <= pe for ps, pe in pseudo):
                continue
            between = tokens[te:s]
            if STRONG in between or any(t in self._terminators for t in between):
                continue
            if red and (WEAK in between or "and" in between):
                continue
            inside_other = {i for cs, ce in concept_spans for i in range(cs, ce)
                            if te <= i < s}
            loose = [t for i, t in enumerate(between, start=te)
                     if i not in inside_other and t not in self._connectors and t != WEAK]
            if len(loose) <= 3:
                return True
        for ts, _te in self._spans(tokens, "negation_backward"):
            if ts < e or ts - e > 3:
                continue
            between = tokens[e:ts]
            if STRONG in between or WEAK in between or any(
                    t in self._terminators for t in between):
                continue
            return True
        return False

    def _clause(self, tokens: list[str], s: int, e: int, weak: bool) -> tuple[int, int]:
        stops = {STRONG, WEAK} if weak else {STRONG}
        lo = s
        while lo > 0 and tokens[lo - 1] not in stops and tokens[lo - 1] not in self._breaks:
            lo -= 1
        hi = e
        while hi < len(tokens) and tokens[hi] not in stops and tokens[hi] not in self._breaks:
            hi += 1
        return lo, hi

    def _in_clause(self, tokens: list[str], s: int, e: int, name: str, weak: bool) -> bool:
        """A modifier in the finding's clause, outside its words, or inside the gap of a
        wording that spans it ("a nosebleed last month that wouldnt stop": the words
        "nosebleed ... wouldnt stop" hold "last month")."""
        lo, hi = self._clause(tokens, s, e, weak)
        return any((lo <= ts and te <= hi and not _overlaps((ts, te), (s, e)))
                   or (s < ts and te < e) for ts, te in self._spans(tokens, name))

    def _before_in_clause(self, tokens: list[str], s: int, name: str,
                          pseudo: list[tuple[int, int]]) -> bool:
        lo, _ = self._clause(tokens, s, s, weak=False)
        return any(lo <= ts and te <= s and not any(ps <= ts and te <= pe for ps, pe in pseudo)
                   for ts, te in self._spans(tokens, name))

    def _after_in_clause(self, tokens: list[str], e: int, name: str) -> bool:
        _, hi = self._clause(tokens, e, e, weak=False)
        return any(e <= ts and te <= hi for ts, te in self._spans(tokens, name))

    def _caregiver(self, tokens: list[str]) -> str | None:
        for i, t in enumerate(tokens):
            if t in self._caregiver_nouns and i > 0 and tokens[i - 1] in self._possessives:
                return self._caregiver_nouns[t]
        if any(t in self._self_words for t in tokens):
            return None
        for t in tokens:
            if t in self._third_person:
                return self._third_person[t]
        return None


def _token_starts(tokens: list[str]) -> list[int]:
    starts, pos = [], 1
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    return starts


def _span_to_tokens(starts: list[int], a: int, b: int) -> tuple[int, int]:
    s = next(i for i, p in enumerate(starts) if p >= a)
    e = s
    while e < len(starts) and starts[e] < b:
        e += 1
    return s, e


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _drop_contained(matches: list[tuple[int, int, Concept]]) -> list[tuple[int, int, Concept]]:
    """One finding per concept per place."""
    out: list[tuple[int, int, Concept]] = []
    for s, e, c in sorted(matches, key=lambda m: (m[0], -(m[1] - m[0]))):
        if any(c2.id == c.id and _overlaps((s, e), (s2, e2)) for s2, e2, c2 in out):
            continue
        out.append((s, e, c))
    return out


# --------------------------------------------------------------------------- values

_NUM = r"(\d+(?:[.,]\d+)?)"
_T = r"(?:temp|temps|temperature|temperatures|fever|thermometer|reading|t|tempreture|temprature)"
_LINK = r"(?: (?:is|was|of|at|=|reads|read|says|said|shows|showed|showing|went|up|to|has|hit|" \
        r"around|about|nearly|almost|now|just|still|its|it|spiked|been|reached|high|a|over|" \
        r"&))*"
_C = r"(?: (?:c|degrees|degree|deg|celsius|centigrade|oc))"
_F = r"(?: (?:f|fahrenheit|farenheit|faranheit|degrees f|deg f))"
# (whole words only: "37.8 hmm", "38.5 maybe", "39.1 help" are readings)
_NOT_AFTER = (r"(?! (?:min|mins|minute|minutes|m|hour|hours|hr|hrs|h|kg|kgs|kilos|lb|lbs|pounds|"
              r"years|year|yrs|yr|days|day(?! \d)|weeks|week(?! \d)|months|month|times|x|"
              r"percent|bpm|ml|mg)(?= ))")


def _f(x: str) -> float:
    return float(x.replace(",", "."))


def temperature_from(value: float, unit: str = "") -> float | None:
    """Celsius, from a number and an optional unit (34-43 read as C, 93-110 as F)."""
    unit = unit[:1]
    if unit == "c" or (not unit and 34.0 <= value <= 43.0):
        return round(value, 2) if 34.0 <= value <= 43.0 else None
    if unit == "f" or (not unit and 93.0 <= value <= 110.0):
        return round((value - 32) * 5 / 9, 2) if 93.0 <= value <= 110.0 else None
    return None


_WORD_NUMBERS = {"once": 1, "twice": 2, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                 "twelve": 12, "a couple of": 2, "a few": 3, "several": 4, "half an": 0.5,
                 "an": 1, "a": 1}
_WN = r"(\d+(?:[.,]\d+)?|once|twice|one|two|three|four|five|six|seven|eight|nine|ten|eleven|" \
      r"twelve|a couple of|a few|several|half an|an|a)"


def _wn(x: str) -> float:
    return float(_WORD_NUMBERS[x]) if x in _WORD_NUMBERS else _f(x)


class _ValuePatterns:
    """``re.finditer``/``search``/``fullmatch`` for ``read_values``' patterns, each compiled
    once per process and kept in ``VALUE_PATTERNS``. A Reader carries them (its build runs
    ``read_values`` once, ``prime``; the engine snapshot pickles them as compiled programs and
    loading puts them back), so a gunicorn worker forked from the master has them all: without
    this each worker compiled about 30 of them on its first texts (2 to 5 ms each, the
    slowest replies of a fresh worker)."""

    @staticmethod
    def _get(pattern: str) -> re.Pattern[str]:
        found = VALUE_PATTERNS.get(pattern)
        if found is None:
            found = VALUE_PATTERNS[pattern] = re.compile(pattern)
        return found

    def finditer(self, pattern: str, text: str) -> Iterator[re.Match[str]]:
        return self._get(pattern).finditer(text)

    def search(self, pattern: str, text: str) -> re.Match[str] | None:
        return self._get(pattern).search(text)

    def fullmatch(self, pattern: str, text: str) -> re.Match[str] | None:
        return self._get(pattern).fullmatch(text)


VALUE_PATTERNS: dict[str, re.Pattern[str]] = {}
# words of other measures, and units, that end the search for an oxygen reading's number
_OTHER_MEASURE = (r"(?:temp|temps|temperature|fever|bp|pressure|pulse|heart|hr|rate|bpm|"
                  r"platelets|plts|plt|neuts|anc|ice|score|weight|weighs|age|aged|years|yrs|"
                  r"yo|months|weeks|days|hours|hrs|mins|minutes|times|x|am|pm|at|since|for)")
_UNIT_AFTER = (r"(?:bpm|beats|kg|kilos|lbs|pounds|c|f|degrees|years|yrs|yo|months|weeks|days|"
               r"hours|hrs|mins|minutes|times|am|pm)")
_re = _ValuePatterns()
# Texts that reach every pattern of read_values at least once (prime).
_PRIMERS = ("temp 38.5 c 101 f 38 degrees 38.5 fever sats 92 percent oxygen bp 90/60 "
            "platelets 20 neutrophils 0.4 ten mins two hours an hour and a half three times "
            "vomited twice four poos usually 10 ice 7 pain 5 5 out of 10 day 5 car-t day +3",
            "loose stools three times", "did the ice check and she got 7")


def prime() -> dict[str, re.Pattern[str]]:
    """Every pattern of ``read_values`` compiled now (a Reader keeps them)."""
    for text in _PRIMERS:
        tokens = text.split()
        read_values(Reading(text, tokens), tokens)
    return dict(VALUE_PATTERNS)


def read_values(reading: Reading, raw_tokens: list[str],
                skip_reading: Callable[[int], bool] | None = None) -> None:
    """Numbers that the words around them make into a value (a number alone is not a
    temperature: "shivering for 40 mins", "he is 39", "38 kg" are not readings).
    ``skip_reading(token index)``: a temperature, oxygen saturation or blood pressure there is
    not the patient's reading now (``Reader._not_a_reading``)."""
    s = " " + " ".join(reading.tokens) + " "
    v, w = reading.values, reading.value_words

    def reading_at(m: re.Match[str]) -> bool:
        """The reading matched by ``m`` (its first group's position) is the patient's now."""
        if skip_reading is None:
            return True
        return not skip_reading(s.count(" ", 0, m.start(1) + 1) - 1)

    def put(name: str, value: float | None, words: str) -> None:
        # Several temperatures in one text ("37.4 now but was 38.5 before"): the highest
        # counts (clinical-rules.md: any single reading >= 38.0 C).
        if value is not None and (name not in v or (name == "temperature" and value > v[name])):
            v[name] = value
            w[name] = words.strip()

    only = [t for t in reading.tokens if t not in (STRONG, WEAK)]
    number = bool(only) and _re.fullmatch(r"\d+(?:[.,]\d+)?", only[0]) is not None
    if number and (len(only) == 1 or (len(only) == 2 and only[1] in {
            "c", "f", "degrees", "percent"})):
        reading.bare_number = _f(only[0])

    # temperature: a temperature word before it, or a unit after it
    for m in _re.finditer(rf" {_T}{_LINK} {_NUM}((?:{_C}|{_F})?){_NOT_AFTER}", s):
        if not reading_at(m):
            continue
        unit = m.group(2).strip()
        put("temperature", temperature_from(_f(m.group(1)), "f" if unit.startswith("f") or
                                            unit.endswith("f") else unit), m.group(0))
    # not the weather or the room: "its like 38 degrees in our flat this heatwave"
    for m in _re.finditer(rf" {_NUM}(?: (c|f|celsius|centigrade|fahrenheit|farenheit)"
                         rf"| degrees(?: (c|f))?)(?= )(?! (?:in (?:the|our|my|this|his|her) "
                         rf"(?:flat|house|room|home|car|kitchen|garden|bedroom|lounge|sun|shade|"
                         rf"office|classroom)|outside|out there|out today|today outside)(?= ))",
                         s):
        if not reading_at(m):
            continue
        unit = m.group(2) or m.group(3) or ""
        put("temperature", temperature_from(_f(m.group(1)), unit), m.group(0))
    for m in _re.finditer(rf" {_NUM} (?:temp|temperature|fever)(?= )", s):
        if not reading_at(m):
            continue
        put("temperature", temperature_from(_f(m.group(1))), m.group(0))
    if reading.bare_number is not None and only[-1] in ("c", "f", "degrees"):
        put("temperature", temperature_from(reading.bare_number, only[-1]), " ".join(only))
    # A reading with decimals in the body-temperature range is a temperature ("38,5 this
    # morning"); a whole number alone is not ("he is 39", "38 kg").
    for m in _re.finditer(rf" (\d{{2,3}}[.,]\d){_NOT_AFTER}(?= )", s):
        value = _f(m.group(1))
        if (35.0 <= value <= 42.9 or 95.0 <= value <= 108.9) and reading_at(m):
            put("temperature", temperature_from(value), m.group(0))

    # oxygen saturation
    # (tokens split letters from digits: "o2" is "o 2", "SpO2" "spo 2", "sp02" "sp 02")
    ox = r"(?:sats|sat|saturation|saturations|spo2|sp02|spo 2|sp 02|sp o 2|o 2|sp|o2|oxygen|" \
         r"oxygen level|ox|oximeter|pulse ox|pulse oximeter|oxygen sats|oxygen saturation|" \
         r"levels)"
    for m in _re.finditer(rf" {ox}(?: (?:level|levels|is|was|at|of|reads|read|says|said|"
                         rf"shows|showing|showed|reading|dropped|down|to|only|about|around|"
                         rf"now|just|2|are|were|keeps|saying|thing|machine|monitor|meter|"
                         rf"probe|clip|reader|it|its|&))* (\d{{2,3}})(?: percent)?(?= )", s):
        if not reading_at(m):
            continue
        value = float(m.group(1))
        put("spo2", value if 50 <= value <= 100 else None, m.group(0))
    for m in _re.finditer(r" (\d{2,3}) percent (?:oxygen|sats|sat|o2|on the oximeter)(?= )", s):
        if not reading_at(m):
            continue
        value = float(m.group(1))
        put("spo2", value if 50 <= value <= 100 else None, m.group(0))
    if "spo2" not in v:
        # the reading a few words on, in the patient's own words ("checked his sats on the
        # finger thing and its 89"): at most 6 words between, none a number or another
        # measure's word, and no unit after the number ("sats fine, pulse 95" is no reading)
        for m in _re.finditer(rf" {ox}((?: (?!{_OTHER_MEASURE} )(?:[a-z']+|&)){{1,6}}) (\d{{2,3}})"
                             rf"(?: percent)?(?! {_UNIT_AFTER} )(?= )", s):
            value = float(m.group(2))
            if 70 <= value <= 100 and reading_at(m):
                put("spo2", value, m.group(0))
                break

    # how long, from two clock times: "bleeding since half past 7 and its now 8.15"
    if "duration_min" not in v:
        span = _clock_span(reading.tokens)
        if span is not None:
            put("duration_min", span[0], span[1])

    # heart rate ("just checked his pulse on my watch its 150", "heart rate 140", "130 bpm"):
    # not "pulse ox" (the oximeter)
    for m in _re.finditer(r" (?:pulse|heart rate|heartrate|heart beat|heartbeat|hr)(?! ox)"
                         r"(?: (?:is|was|at|of|reads|read|says|said|shows|showing|on|my|his|her|"
                         r"the|watch|phone|monitor|its|it|&|about|around|over|now|just|still|"
                         r"going|racing|up|to|like))* (\d{2,3})(?: bpm| beats)?(?= )", s):
        value = float(m.group(1))
        put("heart_rate", value if 30 <= value <= 250 else None, m.group(0))
    for m in _re.finditer(r" (\d{2,3}) (?:bpm|beats a minute|beats per minute|beats a min)(?= )",
                         s):
        value = float(m.group(1))
        put("heart_rate", value if 30 <= value <= 250 else None, m.group(0))

    # blood pressure (systolic)
    bp = r"(?:bp|blood pressure|pressure|top number|systolic)"
    for m in _re.finditer(rf" {bp}(?: (?:is|was|at|of|reads|says|shows|only|down|to|about|"
                         rf"now|just|machine|monitor|cuff|reading|said|showing))* (\d{{2,3}})"
                         rf"(?:/(\d{{2,3}})| over (\d{{2,3}}))?(?= )", s):
        if not reading_at(m):
            continue
        value = float(m.group(1))
        put("systolic_bp", value if 40 <= value <= 260 else None, m.group(0))
    for m in _re.finditer(r" (\d{2,3})/(\d{2,3})(?= )", s):
        a = float(m.group(1))
        if 40 <= a <= 260 and "systolic_bp" not in v and reading_at(m):
            put("systolic_bp", a, m.group(0))
    # "just did my bp, its 82 over 50": a reading said "over" anywhere in a text about the
    # blood pressure
    if "systolic_bp" not in v and _re.search(rf" {bp} ", s):
        for m in _re.finditer(r" (\d{2,3}) over (\d{2,3})(?= )", s):
            a = float(m.group(1))
            if 40 <= a <= 260 and float(m.group(2)) < a and reading_at(m):
                put("systolic_bp", a, m.group(0))
                break

    # platelets (x10^9/L) and neutrophils (x10^9/L)
    for m in _re.finditer(r" (?:platelets|platelet|plts|plt|platelet count)(?: (?:is|are|were|"
                         r"was|at|of|only|down|to|about|count|very|low|fine|ok|okay|normal|"
                         r"&))* (\d+(?:[.,]\d+)?|\d{1,3}"
                         r"(?:,\d{3})+)( k| thousand)?(?= )", s):
        raw = m.group(1)
        value = float(raw.replace(",", "")) if _re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw) \
            else _f(raw)
        if value >= 1000:
            value /= 1000
        put("platelets", value, m.group(0))
    for m in _re.finditer(r" (?:neutrophils|neutrophil|neuts|anc|neutrophil count)(?: (?:is|are|"
                         r"were|was|at|of|only|down|to|about|count))* (\d+(?:[.,]\d+)?)(?= )", s):
        value = _f(m.group(1))
        if value > 20:
            value /= 1000
        put("neutrophils", value, m.group(0))

    # durations
    for m in _re.finditer(rf" {_WN} (?:min|mins|minute|minutes|m)(?= )", s):
        put("duration_min", _wn(m.group(1)), m.group(0))
    for m in _re.finditer(rf" (?:over |more than |about |nearly |almost )?{_WN} (?:hour|hours|hr|"
                         rf"hrs|h)(?= )", s):
        put("duration_min", _wn(m.group(1)) * 60, m.group(0))
    m = _re.search(rf" (?:an|one|{_WN}) hour and a half ", s)
    if m:
        put("duration_min", (_wn(m.group(1)) if m.group(1) else 1.0) * 60 + 30, m.group(0))
    if " half an hour " in s or " half hour " in s:
        put("duration_min", 30.0, "half an hour")

    # counts of vomits and stools
    # "5 times", "5x", and "x5" (tokens "x 5")
    for m in _re.finditer(rf" (?:{_WN} (?:times|x|episodes)|x {_WN})(?= )", s):
        n = _wn(m.group(1) or m.group(2))
        lo = max(0, m.start() - 60)
        around = s[lo:m.end() + 40]
        if _re.search(r"vomit|sick|throw|threw|puk|spew", around):
            put("vomit_count", n, m.group(0))
        elif _re.search(r"diarr|poo|stool|runs|toilet|loose|bowel", around):
            put("stool_count", n, m.group(0))
    for m in _re.finditer(rf" (?:vomited|vomiting|vommed|been sick|thrown up|threw up|sick|puked)"
                         rf"(?: [a-z]+){{0,2}} {_WN}(?: times| x)?(?= )", s):
        if m.group(1) not in ("a", "an"):
            put("vomit_count", _wn(m.group(1)), m.group(0))
    # a running total of whatever the conversation counts: "oh and 2 more just now, thats 6"
    for m in _re.finditer(rf" (?:thats|that s|that|that makes|makes it|making it|total of|so far)"
                         rf"(?: now| up to)? {_WN}(?= )", s):
        n = _wn(m.group(1))
        if n >= 1:
            put("count_total", n, m.group(0))
    for m in _re.finditer(rf" {_WN} (?:vomits|sicks|vomiting episodes)(?= )", s):
        put("vomit_count", _wn(m.group(1)), m.group(0))
    for m in _re.finditer(rf" {_WN}(?: [a-z]+){{0,2}} (?:poos|poops|stools|bowel movements"
                         r"|dirty nappies|nappies|diarrhoeas|diarrheas)(?= )", s):
        put("stool_count", _wn(m.group(1)), m.group(0))

    # ICE score and the usual score
    def usual_before(m: re.Match[str]) -> bool:  # "usually gets 10": the usual, not today's
        return bool(_re.search(r"usually|normally|usual|baseline",
                               s[max(0, m.start() - 12):m.start() + 4]))

    for m in _re.finditer(r" (?:usually|normally|usual|baseline|normal)(?: (?:is|he|she|gets|"
                         r"scores|score|got|was|ice|a|his|her))* (\d{1,2})(?: out of 10| /10)?"
                         r"(?= )", s):
        value = float(m.group(1))
        put("usual_ice_score", value if 0 <= value <= 10 else None, m.group(0))
    for m in _re.finditer(r" (?:ice|ice score|ice test|scored|score|got)(?: (?:score|test|is|was|"
                         r"of|only|today|now|he|she|got))* (\d{1,2})(?: out of 10|/10)(?= )|"
                         r" ice(?: (?:score|test|check))?(?: (?:is|was|of|only|today|now))* "
                         r"(\d{1,2})(?= )", s):
        value = float(m.group(1) or m.group(2))
        if 0 <= value <= 10 and not usual_before(m):
            put("ice_score", value, m.group(0))
    if " ice " in s and "ice_score" not in reading.values:
        # a text about the ICE check: "she usually gets 10 but only got 7 today"
        for m in _re.finditer(r" (?:got|gets|get|scored|scores|managed|did)(?: (?:only|just|a|"
                             r"about|around))* (\d{1,2})(?: out of 10|/10)?"
                             r"(?= (?:[#&]|today|tonight|now|this|on|in|at|but|and|so|then|which|"
                             r"points|again) | $)", s):
            value = float(m.group(1))
            if 0 <= value <= 10 and not usual_before(m):
                put("ice_score", value, m.group(0))
                break

    # pain score
    for m in _re.finditer(r" pain(?: (?:score|level|is|was|at|of|about|now|scale|rating))* "
                         r"(\d{1,2})(?: out of 10|/10| out of ten)?(?= )", s):
        value = float(m.group(1))
        put("pain_score", value if 0 <= value <= 10 else None, m.group(0))
    for m in _re.finditer(r" (\d{1,2})(?: out of 10|/10| out of ten)(?= )", s):
        value = float(m.group(1))
        if 0 <= value <= 10 and _re.search(r"pain|hurt|sore|ache|aching|achy", s):
            put("pain_score", value, m.group(0))

    # days since CAR-T / chemotherapy
    when = rf"(?: (?:{_WN}) (day|days|week|weeks) ago| (yesterday|today|last week|this week|" \
           r"last month|on monday|on tuesday|on wednesday|on thursday|on friday|on saturday|" \
           r"on sunday)| on day (\d+))"
    for name, words in (("car_t_days", r"(?:car t|cart|car t cell|car t cells|car tcell|"
                         r"car tcells|cart cell|cart cells|kymriah|tisagenlecleucel|"
                         r"t cell therapy|cell therapy|infusion)"),
                        ("chemo_days", r"(?:chemo|chemotherapy|treatment|dose)")):
        for m in _re.finditer(rf" {words}(?: (?:was|infusion|on|had|given|done|cells|therapy|"
                             rf"dose|treatment))*{when}(?= )", s):
            put(name, _days(m), m.group(0))
        for m in _re.finditer(rf" day \+?(\d{{1,2}})(?: (?:after|post|since|of|from))? {words}"
                             r"(?= )", s):
            put(name, float(m.group(1)), m.group(0))
        if name == "car_t_days":
            for m in _re.finditer(rf" {words} day \+?(\d{{1,2}})(?= )", s):
                put(name, float(m.group(1)), m.group(0))
            for m in _re.finditer(r" day \+(\d{1,2})(?= )", s):
                put(name, float(m.group(1)), m.group(0))


_CLOCK_START = frozenset({"since", "from"})
_CLOCK_STARTED = frozenset({"started", "starting", "began", "begun"})
_CLOCK_NOW = frozenset({"now", "its", "till", "until", "to"})
_CLOCK_END = frozenset({STRONG, WEAK, "am", "pm", "now", "and", "oclock"})
_CLOCK_WORDS = {"half": 30, "quarter": 15, "twenty": 20, "ten": 10, "five": 5}


def _clock_at(tokens: list[str], i: int) -> tuple[int, int] | None:
    """The clock time starting at token ``i`` as (minutes after 12, tokens used): "7.30",
    "8", "9 pm", "half past 7", "quarter to 9", "10 past 8"."""
    past = 0
    j = i
    if j + 2 < len(tokens) and tokens[j + 1] in ("past", "to") and (
            tokens[j] in _CLOCK_WORDS or tokens[j].isdigit()):
        n = _CLOCK_WORDS.get(tokens[j]) or int(tokens[j])
        if not 0 < n < 60:
            return None
        past = n if tokens[j + 1] == "past" else -n
        j += 2
    m = re.fullmatch(r"(\d{1,2})(?:\.(\d{2}))?", tokens[j]) if j < len(tokens) else None
    if m is None:
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if not (1 <= hour <= 24 and minute < 60) or (past and m.group(2)):
        return None
    used = j + 1 - i
    if tokens[j + 1:j + 2] == ["pm"] and hour < 12:
        hour += 12
    return ((hour % 12) * 60 + minute + past + 720 * (hour >= 12)) % 1440, used


def _clock_span(tokens: list[str]) -> tuple[float, str] | None:
    """Minutes between two clock times of one sentence: "since half past 7 and its now 8.15"
    (45), "started at 9pm, now 9.40pm" (40). The second must end its phrase (not "now 3
    times"); across midnight or noon when no am/pm says otherwise; at most 10 hours."""
    for i, tok in enumerate(tokens):
        start = i + 1 if tok in _CLOCK_START or (
            tok == "at" and _CLOCK_STARTED & set(tokens[max(0, i - 2):i])) else None
        if start is None or start >= len(tokens):
            continue
        if tokens[start] in ("about", "around"):
            start += 1
        first = _clock_at(tokens, start) if start < len(tokens) else None
        if first is None:
            continue
        k = start + first[1]
        for j in range(k, min(len(tokens), k + 8)):
            if tokens[j] == STRONG:
                break
            if tokens[j] not in _CLOCK_NOW or j + 1 >= len(tokens):
                continue
            second = _clock_at(tokens, j + 1)
            if second is None:
                continue
            after = j + 1 + second[1]
            if after < len(tokens) and tokens[after] not in _CLOCK_END:
                continue
            minutes = (second[0] - first[0]) % 720  # "11.50" to "12.20" is 30, not -690
            if 0 < minutes <= 600:
                return float(minutes), " ".join(tokens[i:after])
    return None


def _days(m: re.Match[str]) -> float | None:
    if m.group(1):
        n = _wn(m.group(1))
        return n * 7 if m.group(2).startswith("week") else n
    word = m.group(3) or ""
    if m.group(4):
        return float(m.group(4))
    return {"yesterday": 1.0, "today": 0.0, "last week": 7.0, "this week": 3.0,
            "last month": 30.0}.get(word, 4.0 if word.startswith("on ") else None)
