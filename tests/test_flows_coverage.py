"""Every row of the checklist tables in clinical-rules.md is implemented: some rule (or the
self-care text) of a flow file cites it. Fails listing the rows nobody cites, and any citation
of a row that does not exist. The rules file itself keeps its sections, and every row of every
table names its source."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from bot.conversation.flows import CITE_RE, TIERS, load_library

ROOT = Path(__file__).resolve().parent.parent
RULES_MD = ROOT / "docs" / "clinical-rules.md"
CHECKED = ("Fever and infection", "Bleeding", "SVC / superior mediastinal syndrome", "CRS",
           "Neurotoxicity / ICANS")
# The section headings of the care team's triage rules, exactly and in order: flow files and the
# engine cite sections by the part before " (" or ",".
HEADINGS = (
    "The four tiers",
    'How answers combine (modelled on the UKONS 24-hour triage tool: "red, or two or more ambers")',
    "Red flags that interrupt any conversation, at any point -> EMERGENCY",
    "Temperature",
    "Fever and infection",
    "Bleeding (low platelets)",
    "SVC / superior mediastinal syndrome (T-cell ALL with an enlarged thymus or mediastinal mass)",
    "CRS (after CAR T-cells, day 0-30; during blinatumomab, highest risk in the first 2 weeks of "
    "cycle 1)",
    "Neurotoxicity / ICANS (same windows; up to 8 weeks after CAR T-cells)",
    "Other symptoms that matter in ALL (beyond the four required checklists)",
    "What the care team records on a patient's profile",
    "Sources",
)
CODE_CITE_RE = re.compile(r"[\"'](clinical-rules\.md > [^\"'\n]+)[\"']")


def short(heading: str) -> str:
    """'CRS (after CAR T-cells, ...)' -> 'CRS', 'Red flags that ..., at any point -> EMERGENCY'
    -> 'Red flags that ...': flow files cite a section by its name."""
    return re.sub(r"\s*(\(.*\)|,.*)$", "", heading).strip()


def table_rows(text: str) -> dict[str, list[tuple[str, int]]]:
    """section -> [(tier, n)], n counting rows of that tier within the section."""
    sections: dict[str, list[tuple[str, int]]] = {}
    current = None
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            current = short(line[3:])
            sections.setdefault(current, [])
            header = []
            continue
        if current is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = cells[0]
        if first in TIERS:
            n = sum(1 for tier, _ in sections[current] if tier == first) + 1
            sections[current].append((first, n))
        elif first == "symptom":  # a symptom-first table: tiers are its columns
            header = cells
        elif header and not set(first) <= {"-", " "}:
            # each non-empty tier cell is that tier's next row ("URGENT row 2": the second
            # symptom with an URGENT cell)
            for col, cell in zip(header, cells, strict=False):
                if col in TIERS and cell:
                    n = sum(1 for tier, _ in sections[current] if tier == col) + 1
                    sections[current].append((col, n))
    return sections


def cite_texts(flows: Path = ROOT / "flows") -> list[str]:
    """Every citation in the flow files: checklist rules, self-care texts, red flags."""
    lib = load_library(flows)
    texts = [r.cites for r in lib.red_flags]
    for flow in lib.flows.values():
        texts += [r.cites for r in flow.rules] + [flow.self_care_cites]
    return texts


def citations(flows: Path = ROOT / "flows") -> set[tuple[str, str, int | None]]:
    cites = set()
    for text in cite_texts(flows):
        m = CITE_RE.match(text)
        assert m, text
        if m.group("tier"):
            row = m.group("row")
            cites.add((m.group("section"), m.group("tier"), int(row) if row else None))
    return cites


def combination_rules(text: str) -> set[int]:
    """The numbers of the numbered rules under '## How answers combine ...'."""
    numbers: set[int] = set()
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = short(line[3:]) == "How answers combine"
        elif inside and (m := re.match(r"(\d+)\. \S", line)):
            numbers.add(int(m.group(1)))
    return numbers


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(section, header cells, data rows as cells) for every Markdown table in the file."""
    found: list[tuple[str, list[str], list[list[str]]]] = []
    section, block = "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            found.append((section, block[0], block[2:]))
            block = []
        if line.startswith("## "):
            section = short(line[3:])
    return found


def test_the_rules_file_has_the_tables() -> None:
    rows = table_rows(RULES_MD.read_text(encoding="utf-8"))
    for section in CHECKED:
        assert rows.get(section), f"no table rows found under {section!r} in clinical-rules.md"


def uncited(flows: Path = ROOT / "flows") -> list[str]:
    rows = table_rows(RULES_MD.read_text(encoding="utf-8"))
    cites = citations(flows)
    missing = []
    for section in CHECKED:
        for tier, n in rows[section]:
            single = sum(1 for t, _ in rows[section] if t == tier) == 1
            if (section, tier, n) in cites or (single and (section, tier, None) in cites):
                continue
            missing.append(f"{section} > {tier} row {n}")
    return missing


def test_every_row_is_cited() -> None:
    missing = uncited()
    assert not missing, "rows of clinical-rules.md no flow rule cites:\n" + "\n".join(missing)


def test_a_removed_rule_shows_up_as_an_uncited_row(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    data = yaml.safe_load((flows / "crs.yaml").read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "pump_problem"]
    (flows / "crs.yaml").write_text(yaml.safe_dump(data))
    assert uncited(flows) == ["CRS > URGENT row 2"]


def test_every_citation_names_a_real_row() -> None:
    rows = table_rows(RULES_MD.read_text(encoding="utf-8"))
    bad = []
    for section, tier, n in citations():
        if section not in rows:
            bad.append(f"{section} (no such section)")
            continue
        have = [k for t, k in rows[section] if t == tier]
        if not have or (n is not None and n not in have) or (n is None and len(have) > 1):
            bad.append(f"{section} > {tier}" + (f" row {n}" if n else " (which row?)"))
    assert not bad, "citations of rows that do not exist or are ambiguous:\n" + "\n".join(bad)


def test_the_parser_reads_the_tables_as_written() -> None:
    """Guards the test itself: a known shape of the rules file."""
    rows = table_rows(RULES_MD.read_text(encoding="utf-8"))
    assert rows["CRS"] == [("EMERGENCY", 1), ("URGENT", 1), ("URGENT", 2), ("SOON", 1)]
    assert rows["Fever and infection"].count(("SOON", 2)) == 1
    assert ("SOON", 1) not in rows["SVC / superior mediastinal syndrome"]  # the "(no SOON)" row


def test_the_rules_file_keeps_the_sections_of_the_triage_rules() -> None:
    text = RULES_MD.read_text(encoding="utf-8")
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(HEADINGS), "sections of clinical-rules.md differ from the rules"
    preface = text.split("\n## ", 1)[0]
    assert re.search(r"Rules version: \d{4}-\d{2}-\d{2}", preface), "preface names no rules version"


def test_every_row_names_its_source() -> None:
    found = tables(RULES_MD.read_text(encoding="utf-8"))
    assert {section for section, _, _ in found} >= set(CHECKED)
    bad = []
    for section, header, body in found:
        if "source" not in header:
            bad.append(f"{section}: table without a source column")
            continue
        at = header.index("source")
        assert body, f"{section}: table without rows"
        for cells in body:
            if len(cells) != len(header):
                bad.append(f"{section}: {cells[0]!r} has {len(cells)} cells, not {len(header)}")
            elif not cells[at] or set(cells[at]) <= set("-: "):
                bad.append(f"{section}: {cells[0]!r} names no source")
    assert not bad, "rows of clinical-rules.md without a source:\n" + "\n".join(bad)


def test_the_source_check_finds_a_row_without_one() -> None:
    """Guards the test above: a row with an empty source cell, and a row with a cell missing."""
    text = ("## Bleeding (low platelets)\n| tier | rule | source |\n|---|---|---|\n"
            "| SOON | new bruises |  |\n| ROUTINE | precautions |\n")
    (_, header, body), = tables(text)
    at = header.index("source")
    assert body[0][at] == "" and len(body[1]) == 2


def test_every_combination_rule_cited_exists() -> None:
    """'... > How answers combine > rule N' in flows/ and in the engine's code names a rule."""
    text = RULES_MD.read_text(encoding="utf-8")
    have = combination_rules(text)
    assert have == set(range(1, len(have) + 1)) and len(have) >= 8, sorted(have)
    sections = {short(line[3:]) for line in text.splitlines() if line.startswith("## ")}
    texts = cite_texts()
    for path in sorted((ROOT / "bot").rglob("*.py")):
        # string literals that read as a citation (not the format shown in error messages)
        texts += [c for c in CODE_CITE_RE.findall(path.read_text(encoding="utf-8"))
                  if CITE_RE.match(c)]
    bad = []
    for cite in texts:
        m = CITE_RE.match(cite)
        if not m:
            bad.append(f"{cite} (not a citation)")
        elif m.group("section") not in sections:
            bad.append(f"{cite} (no such section)")
        elif m.group("rule") and (m.group("section") != "How answers combine"
                                  or int(m.group("rule")) not in have):
            bad.append(f"{cite} (no such rule)")
    assert not bad, "citations of clinical-rules.md that name nothing:\n" + "\n".join(bad)
