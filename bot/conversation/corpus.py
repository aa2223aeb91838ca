"""The reader's corpus report: ``python -m bot.conversation.corpus [tests/corpus]``.

Each corpus file (tests/corpus/*.yaml) lists texts with the concepts they must raise
(``expect``: every red flag present, current and affirmed; the signs clearly present), the
concepts they must not raise (``not``: near misses), and values that must (or, as null, must
not) be read. Prints recall and false positives per concept and overall. A false positive is a
red flag found that the text does not expect, or any concept a text lists under ``not``.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .reading import Reader


@dataclass
class Report:
    texts: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    false_pos: Counter[str] = field(default_factory=Counter)
    negatives: Counter[str] = field(default_factory=Counter)  # texts that must not raise it
    misses: list[tuple[str, str]] = field(default_factory=list)
    wrong: list[tuple[str, str]] = field(default_factory=list)
    value_total: int = 0
    value_ok: int = 0
    red_flags: set[str] = field(default_factory=set)

    def recall(self, concepts: set[str] | None = None) -> float:
        keys = [k for k in self.expected if concepts is None or k in concepts]
        exp = sum(self.expected[k] for k in keys)
        return sum(self.found[k] for k in keys) / exp if exp else 1.0

    def fp_rate(self, concepts: set[str] | None = None) -> float:
        """False positives over the texts that must not raise the concept(s)."""
        keys = [k for k in self.negatives if concepts is None or k in concepts]
        neg = sum(self.negatives[k] for k in keys)
        return sum(self.false_pos[k] for k in keys) / neg if neg else 0.0


def load(folder: Path) -> list[dict[str, Any]]:
    items = []
    for path in sorted(folder.glob("*.yaml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            item["file"] = path.name
            items.append(item)
    return items


def evaluate(reader: Reader, items: list[dict[str, Any]]) -> Report:
    rep = Report()
    red = {c.id for c in reader.concepts.values() if c.kind == "red_flag"}
    rep.red_flags = red
    for item in items:
        rep.texts += 1
        reading = reader.read(item["text"])
        got = reading.concepts()
        expect = set(item.get("expect") or [])
        must_not = set(item.get("not") or []) | (red - expect)
        for c in expect:
            rep.expected[c] += 1
            if c in got:
                rep.found[c] += 1
            else:
                rep.misses.append((c, item["text"]))
        for c in must_not:
            rep.negatives[c] += 1
            if c in got:
                rep.false_pos[c] += 1
                rep.wrong.append((c, item["text"]))
        for name, want in (item.get("values") or {}).items():
            rep.value_total += 1
            have = reading.values.get(name)
            if (want is None and have is None) or (
                    want is not None and have is not None and abs(have - float(want)) < 0.06):
                rep.value_ok += 1
            else:
                rep.wrong.append((f"value {name}={want} (read {have})", item["text"]))
    return rep


def render(rep: Report, verbose: bool = False) -> str:
    lines = [f"Reader corpus: {rep.texts} texts",
             f"{'concept':<24}{'kind':<10}{'expected':>9}{'found':>7}{'recall':>8}"
             f"{'must-not':>9}{'false+':>7}{'fp rate':>8}"]
    keys = sorted(set(rep.expected) | set(rep.false_pos) | {k for k in rep.negatives
                                                            if k not in rep.red_flags},
                  key=lambda k: (k not in rep.red_flags, k))
    for k in keys:
        exp, fnd = rep.expected[k], rep.found[k]
        neg, fp = rep.negatives[k], rep.false_pos[k]
        kind = "red flag" if k in rep.red_flags else "sign"
        lines.append(f"{k:<24}{kind:<10}{exp:>9}{fnd:>7}{(fnd / exp if exp else 1):>8.1%}"
                     f"{neg:>9}{fp:>7}{(fp / neg if neg else 0):>8.1%}")
    red_texts_fp = rep.false_pos and sum(rep.false_pos[k] for k in rep.red_flags)
    lines += [
        "",
        f"red flags: recall {rep.recall(rep.red_flags):.1%}, false positives "
        f"{rep.fp_rate(rep.red_flags):.2%} ({red_texts_fp or 0} over "
        f"{sum(rep.negatives[k] for k in rep.red_flags)} text-flag pairs)",
        f"all concepts: recall {rep.recall():.1%}, false positives {rep.fp_rate():.2%}",
        f"values: {rep.value_ok}/{rep.value_total} read right",
    ]
    if verbose:
        lines += ["", "Missed:"] + [f"  {c:<22} {t}" for c, t in rep.misses]
        lines += ["", "Wrong:"] + [f"  {c:<22} {t}" for c, t in rep.wrong]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .flows import load_library

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args
    args = [a for a in args if a != "-v"]
    root = Path(__file__).resolve().parents[2]
    folder = Path(args[0]) if args else root / "tests" / "corpus"
    flows = Path(args[1]) if len(args) > 1 else root / "flows"
    lib = load_library(flows)
    reader = reader_for(lib)
    rep = evaluate(reader, load(folder))
    print(render(rep, verbose))
    return 0 if rep.recall(rep.red_flags) == 1.0 and rep.fp_rate(rep.red_flags) <= 0.03 else 1


def reader_for(lib: Any, lang: str = "en") -> Reader:
    return Reader(lib.concepts, lib.languages[lang], combinations=lib.combinations,
                  settled=lib.settled)


if __name__ == "__main__":
    raise SystemExit(main())
