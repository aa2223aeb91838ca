"""The vignette suite: short patient stories from tests/vignettes/*.yaml, each run through the
real signed webhook against a real Redis, each with the tier clinical-rules.md gives it.

A vignette passes when the service answers exactly the expected tier, or a higher one that the
vignette names as a documented over-triage (``over_triage_ok``: the flow-file comment that makes
it so). Under-triage always fails. The last test prints a table per checklist: vignettes, correct
tier, under-triaged (must be 0), over-triaged.

Vignette fields: id, checklist (the table it is counted in), expect (tier), why (the row of
clinical-rules.md), texts (what the patient or caregiver sends, in order), optional profile (the
care team's profile; a value ``today-7`` is the date 7 days ago), optional over_triage_ok,
optional reason (words one of the record's reasons must contain: the right rule fired).

A simulated patient (``answers``): after ``texts``, while the service still asks a question, the
runner answers it from ``answers[<question id>]``, or else the healthy way (``healthy()``), so a
vignette does not depend on the order of the questions. ``never_asked``: question ids the texts
already answered, which must not be asked again (rule 8).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import profile as profiles
from bot.conversation.flows import TIER_RANK, TIERS, Question
from conftest import CARE_TEAM, ONCOLOGY_LINE, Phone, records

HERE = Path(__file__).parent / "vignettes"
CHECKLISTS = ("fever", "bleeding", "svc", "crs", "neurotoxicity")
OPENINGS = {
    "EMERGENCY": "Call 911 now.",
    "URGENT": f"Call the 24-hour oncology line now at {ONCOLOGY_LINE}",
    "SOON": f"Call the care team today at {CARE_TEAM}",
    "ROUTINE": "You do not need to call right now",
}
_RELATIVE = re.compile(r"^today([+-]\d+)?$")


def load_vignettes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(HERE.glob("*.yaml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")):
            item["file"] = path.name
            out.append(item)
    return out


VIGNETTES = load_vignettes()
RESULTS: dict[str, str] = {}


def _profile_values(raw: dict[str, Any]) -> dict[str, str]:
    today = datetime.now(UTC).date()
    out = {}
    for key, value in raw.items():
        text = str(value)
        m = _RELATIVE.match(text)
        if m:
            text = (today + timedelta(days=int(m.group(1) or 0))).isoformat()
        out[key] = text
    return out


def healthy(q: Question) -> str:
    """How a well patient answers a question nobody scripted."""
    if q.score is not None:
        return "yes" if q.type == "yes_no" else f"{q.maximum:g}"
    if q.type == "yes_no":
        return "yes" if q.worse == "no" else "no"
    return {"temperature": "36.8", "choice": "1", "multi_choice": "no", "number": "none"}.get(
        q.type, "no")


def pending_question(app: Any, phone: str) -> Question | None:
    """The question the service is waiting on for this number, if any."""
    svc = app.extensions["triage"]
    pending = svc.engine.pending(svc.store.session(phone))
    found = svc.engine.question_at(pending or "")
    return found[1] if found else None


def run_vignette(app: Any, client: Any, v: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(tier answered, last reply, the record's reasons)."""
    phone = Phone(client)
    if v.get("profile"):
        profiles.save(app.extensions["triage"].store.r, phone.number,
                      _profile_values(v["profile"]))
    reply = ""
    for text in v["texts"]:
        reply = phone.send(text)
    answers = v.get("answers") or {}
    asked: list[str] = []
    for _ in range(30):
        q = pending_question(app, phone.number)
        if q is None:
            break
        asked.append(q.id)
        reply = phone.send(str(answers.get(q.id, healthy(q))))
    again = sorted(set(asked) & set(v.get("never_asked") or []))
    assert not again, f"{v['id']}: asked again what the texts already said: {again}"
    mine = [r for r in records(app, phone=phone.number)]
    assert mine, f"{v['id']}: no triage record; last reply: {reply}"
    return mine[0]["tier"], reply, mine[0]["reasons"]


def test_the_suite_is_big_and_broad_enough() -> None:
    ids = [v["id"] for v in VIGNETTES]
    assert len(ids) == len(set(ids)), "vignette ids must be unique"
    assert len(VIGNETTES) >= 60
    for v in VIGNETTES:
        assert v["checklist"] in CHECKLISTS, v["id"]
        assert v["expect"] in TIERS, v["id"]
        assert v.get("why"), f"{v['id']}: say which row of clinical-rules.md gives the tier"
        assert v["texts"] and all(isinstance(t, str) for t in v["texts"]), v["id"]
    for checklist in CHECKLISTS:
        tiers = {v["expect"] for v in VIGNETTES if v["checklist"] == checklist}
        assert len(tiers) >= 3, f"{checklist}: vignettes cover only {sorted(tiers)}"
    assert {v["expect"] for v in VIGNETTES} == set(TIERS)


@pytest.mark.parametrize("v", VIGNETTES, ids=[v["id"] for v in VIGNETTES])
def test_vignette(app: Any, client: Any, v: dict[str, Any]) -> None:
    tier, reply, reasons = run_vignette(app, client, v)
    RESULTS[v["id"]] = tier
    expected = v["expect"]
    assert TIER_RANK[tier] >= TIER_RANK[expected], (
        f"UNDER-TRIAGED {v['id']}: answered {tier}, clinical-rules.md says {expected} "
        f"({v['why']}); last reply: {reply}")
    assert reply.startswith(OPENINGS[tier]) or OPENINGS[tier] in reply, (
        f"{v['id']}: the last reply does not carry the {tier} instruction: {reply}")
    if v.get("reason"):
        assert any(v["reason"] in r for r in reasons), (v["id"], reasons)
    if tier != expected:
        assert v.get("over_triage_ok"), (
            f"OVER-TRIAGED {v['id']}: answered {tier}, expected {expected} ({v['why']}); if "
            f"this is a documented choice toward safety, say so in over_triage_ok")


def test_table_per_checklist(app: Any, client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs any vignette not yet run in this session, then prints the table."""
    for v in VIGNETTES:
        if v["id"] not in RESULTS:
            RESULTS[v["id"]] = run_vignette(app, client, v)[0]
    rows = []
    under_all = []
    for checklist in CHECKLISTS:
        mine = [v for v in VIGNETTES if v["checklist"] == checklist]
        correct = sum(RESULTS[v["id"]] == v["expect"] for v in mine)
        under = [v["id"] for v in mine if TIER_RANK[RESULTS[v["id"]]] < TIER_RANK[v["expect"]]]
        over = sum(TIER_RANK[RESULTS[v["id"]]] > TIER_RANK[v["expect"]] for v in mine)
        rows.append((checklist, len(mine), correct, len(under), over))
        under_all += under
    total = tuple(sum(r[i] for r in rows) for i in range(1, 5))
    lines = ["", "Vignettes per checklist (expected tiers from clinical-rules.md)",
             f"{'checklist':<15}{'vignettes':>10}{'correct':>9}{'under':>7}{'over':>6}"]
    for name, n, correct, under, over in [*rows, ("all", *total)]:
        lines.append(f"{name:<15}{n:>10}{correct:>9}{under:>7}{over:>6}")
    with capsys.disabled():
        print("\n".join(lines))
    assert not under_all, f"under-triaged: {under_all}"
