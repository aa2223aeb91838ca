"""Flow files are validated at load, with an error that names the file and the field."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from bot.config import ROOT
from bot.flows import FlowError, load_library


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
sources: [triage-rules.md > Other symptoms that matter in ALL]
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
    cites: triage-rules.md > Other symptoms that matter in ALL > EMERGENCY
self_care_cites: triage-rules.md > Other symptoms that matter in ALL > ROUTINE
self_care: Rinse your mouth gently after meals.
""")
    lib = load_library(flows_dir)
    assert "mouth_sores" in lib.flows and "mouth_sores" in lib.menu
