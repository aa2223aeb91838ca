"""Every row of the checklist tables in clinical-rules.md is implemented: some rule (or the
self-care text) of a flow file cites it. Fails listing the rows nobody cites, and any citation
of a row that does not exist."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from bot.flows import CITE_RE, TIERS, load_library

ROOT = Path(__file__).resolve().parent.parent
RULES_MD = ROOT / "docs" / "clinical-rules.md"
CHECKED = ("Fever and infection", "Bleeding", "SVC / superior mediastinal syndrome", "CRS",
           "Neurotoxicity / ICANS")


def short(heading: str) -> str:
    """'CRS (after CAR T-cells, ...)' -> 'CRS': flow files cite a section by its name."""
    return re.sub(r"\s*\(.*\)\s*$", "", heading).strip()


def table_rows(text: str) -> dict[str, list[tuple[str, int]]]:
    """section -> [(tier, n)], n counting rows of that tier within the section."""
    sections: dict[str, list[tuple[str, int]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = short(line[3:])
            sections.setdefault(current, [])
            continue
        if current is None or not line.startswith("|"):
            continue
        first = line.strip("|").split("|")[0].strip()
        if first in TIERS:
            n = sum(1 for tier, _ in sections[current] if tier == first) + 1
            sections[current].append((first, n))
    return sections


def citations(flows: Path = ROOT / "flows") -> set[tuple[str, str, int | None]]:
    lib = load_library(flows)
    cites = set()
    for flow in lib.flows.values():
        for text in [r.cites for r in flow.rules] + [flow.self_care_cites]:
            m = CITE_RE.match(text)
            assert m, text
            if m.group("tier"):
                row = m.group("row")
                cites.add((m.group("section"), m.group("tier"), int(row) if row else None))
    return cites


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
        if section in ("Temperature",):
            continue  # prose section: cited by tier, it has no table
        if not have or (n is not None and n not in have) or (n is None and len(have) > 1):
            bad.append(f"{section} > {tier}" + (f" row {n}" if n else " (which row?)"))
    assert not bad, "citations of rows that do not exist or are ambiguous:\n" + "\n".join(bad)


def test_the_parser_reads_the_tables_as_written() -> None:
    """Guards the test itself: a known shape of the rules file."""
    rows = table_rows(RULES_MD.read_text(encoding="utf-8"))
    assert rows["CRS"] == [("EMERGENCY", 1), ("URGENT", 1), ("URGENT", 2), ("SOON", 1)]
    assert rows["Fever and infection"].count(("SOON", 2)) == 1
    assert ("SOON", 1) not in rows["SVC / superior mediastinal syndrome"]  # the "(no SOON)" row
