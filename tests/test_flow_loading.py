"""Flow files are validated at load, with an error that names the file and the field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from bot.config import ROOT
from bot.conversation.flows import FlowError, load_library


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    target = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", target)
    return target


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_shipped_flows_load():
    lib = load_library(ROOT / "flows")
    assert "fever" in lib.flows and lib.red_flags


@pytest.mark.parametrize("change,message", [
    (lambda d: d["questions"][1].update(type="colour"),
     "fever.yaml: questions[1].type: must be one of"),
    (lambda d: d["questions"][0].pop("ask"), "fever.yaml: questions[0].ask: is required"),
    (lambda d: d["rules"][0].update(tier="CRITICAL"), "fever.yaml: rules[0].tier: must be one"),
    (lambda d: d["rules"][0].update(cites="somewhere"), "fever.yaml: rules[0].cites: must read"),
    (lambda d: d["rules"][1].update(reason="temp {nope}"),
     "fever.yaml: rules[1].reason: unknown placeholder {nope}"),
    (lambda d: d["questions"][0].pop("worse"), "fever.yaml: questions[0].worse: a red_flag"),
    (lambda d: d["questions"][1]["sets"][0]["when"].update(at_least="high"),
     "fever.yaml: questions[1].sets[0].when.at_least: must be"),
    (lambda d: d["questions"][5]["sets"][0]["when"].update(any_of=["nope"]),
     "fever.yaml: questions[5].sets[0].when.any_of: unknown option id(s) nope"),
    (lambda d: d.update(colour="blue"), "fever.yaml: top level: unknown field(s) colour"),
    (lambda d: d.update(id="other"), "fever.yaml: id: must match the file name"),
    (lambda d: d["questions"].append(dict(d["questions"][0])),
     "duplicate question id 'danger_signs'"),
])
def test_errors_name_file_and_field(flows_dir, change, message):
    edit(flows_dir / "fever.yaml", change)
    with pytest.raises(FlowError) as err:
        load_library(flows_dir)
    assert message in str(err.value)


def test_broken_yaml(flows_dir):
    (flows_dir / "fever.yaml").write_text("id: fever\nquestions: [\n")
    with pytest.raises(FlowError, match=re.escape("fever.yaml: top level: not valid YAML")):
        load_library(flows_dir)


def test_missing_tier_wording(flows_dir):
    edit(flows_dir / "messages.yaml", lambda d: d["tier"].pop("SOON"))
    with pytest.raises(FlowError, match=re.escape("messages.yaml: tier.SOON: is required")):
        load_library(flows_dir)


def test_adding_a_checklist_is_adding_a_file(flows_dir):
    (flows_dir / "mouth_sores.yaml").write_text("""
id: mouth_sores
title: Mouth sores
menu_label: Mouth sores
triggers: [mouth sore*, ulcer*]
sources: [clinical-rules.md > Other symptoms that matter in ALL]
questions:
  - id: swallow
    type: yes_no
    red_flag: true
    worse: "yes"
    ask: Can you swallow your saliva? Reply YES or NO.
    example: YES or NO
    sets: [{fact: cannot_swallow, when: {is: "no"}}]
rules:
  - id: cannot_swallow
    tier: EMERGENCY
    when: {all: [cannot_swallow]}
    reason: cannot swallow saliva
    cites: clinical-rules.md > Other symptoms that matter in ALL > EMERGENCY
self_care_cites: clinical-rules.md > Other symptoms that matter in ALL > ROUTINE
self_care: Rinse your mouth gently after meals.
""")
    lib = load_library(flows_dir)
    assert "mouth_sores" in lib.flows and "mouth_sores" in lib.menu


def test_a_new_checklist_file_works_end_to_end(flows_dir, redis_url, tmp_path):
    """Number, choice and free-text answers, in a checklist the engine has never seen, through
    the signed webhook: the engine knows no symptom."""
    from bot import create_app
    from conftest import Phone, records, settings

    (flows_dir / "other.yaml").unlink()  # the shipped vomiting checklist would take the words
    messages = flows_dir / "messages.yaml"
    messages.write_text(messages.read_text().replace(", other]", "]"))
    (flows_dir / "vomiting.yaml").write_text("""
id: vomiting
title: Vomiting
menu_label: Vomiting or can't keep food down
triggers: [vomit*, throwing up, being sick]
sources: [clinical-rules.md > Other symptoms that matter in ALL]
questions:
  - id: vomits
    type: number
    min: 0
    max: 60
    red_flag: true
    worse: 6
    prefill: false
    ask: How many times have you vomited in the last 24 hours? Reply with a number.
    example: "4"
    sets:
      - {fact: vomits_6_plus, when: {at_least: 6}}
      - {fact: vomits_3_to_5, when: {at_least: 3, below: 6}}
  - id: tablets
    type: choice
    ask: Could you keep your leukemia tablets down? Reply 1 Yes, 2 No, 3 Not due yet.
    example: 1, 2 or 3
    options:
      - {id: kept, label: "Yes"}
      - {id: lost, label: "No"}
      - {id: not_due, label: Not due yet}
    sets: [{fact: tablets_lost, when: {any_of: [lost]}}]
  - id: notes
    type: text
    ask: Anything else you want the team to know? Reply in a few words.
    example: it started last night
rules:
  - id: six_or_more
    tier: URGENT
    when: {any: [vomits_6_plus, tablets_lost]}
    reason: "vomited {vomits} times; tablets: {tablets}"
    cites: clinical-rules.md > Other symptoms that matter in ALL > URGENT
  - id: three_to_five
    tier: SOON
    when: {all: [vomits_3_to_5]}
    reason: "vomited {vomits} times in 24 h"
    cites: clinical-rules.md > Other symptoms that matter in ALL > SOON
self_care_cites: clinical-rules.md > Other symptoms that matter in ALL > ROUTINE
self_care: Sip fluids often and eat small plain meals.
""")
    app = create_app(settings(redis_url, tmp_path, FLOWS_DIR=str(flows_dir)))
    phone = Phone(app.test_client())
    assert "How many times" in phone.send("I keep throwing up")
    assert "Sorry, we did not understand" in phone.send("lots")
    assert "keep your leukemia tablets down" in phone.send("four")
    assert "Anything else" in phone.send("3")
    final = phone.send("started after chemo <b>yesterday</b>")
    assert final.startswith("Call the care team today")
    rec = next(r for r in records(app) if r["phone"] == phone.number)
    assert rec["flow"] == "vomiting" and rec["tier"] == "SOON"
    assert rec["reasons"] == ["vomited 4 times in 24 h"]
    assert rec["answers"]["notes"] == "started after chemo <b>yesterday</b>"
