"""docs/flows/<id>.md is what `flask --app wsgi diagrams` renders from the engine's machine
for the flow files as they are now: a changed flow file with a stale diagram fails here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bot.conversation.engine import Engine
from bot.conversation.flows import load_library
from bot.diagrams import DOCS, diagrams_command, render, render_lifecycle, write_all

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Engine(load_library(ROOT / "flows"))


@pytest.mark.parametrize("fid", sorted(ENGINE.lib.flows))
def test_checked_in_diagram_matches_its_flow_file(fid: str) -> None:
    path = DOCS / f"{fid}.md"
    assert path.exists(), f"{path} missing: run flask --app wsgi diagrams"
    assert path.read_text(encoding="utf-8") == render(ENGINE, ENGINE.lib.flows[fid]), (
        f"{path} is stale: run flask --app wsgi diagrams and review the change")


def test_diagram_states_are_the_checklists_questions() -> None:
    for fid, flow in ENGINE.lib.flows.items():
        text = render(ENGINE, flow)
        named = set(re.findall(r'state "([a-z_]+:[a-z0-9_]+)" as', text))
        assert named == {f"{fid}:{q.id}" for q in flow.questions}
        assert f"[*] --> s_{fid}__{flow.questions[0].id}" in text


def test_lifecycle_diagram_is_the_machine() -> None:
    text = render_lifecycle(ENGINE)
    assert (DOCS / "lifecycle.md").read_text(encoding="utf-8") == text, (
        "docs/flows/lifecycle.md is stale: run flask --app wsgi diagrams")
    edges = set(re.findall(r"^    (\w+) --> (\w+) : (\w+)$", text, re.M))
    machine = {(src, t.dest, name) for name, ev in ENGINE.machine.events.items()
               for src, ts in ev.transitions.items() for t in ts}
    assert edges == machine
    assert ("asking", "outcome", "conclude") in edges and ("opted_out", "menu", "opt_in") in edges


def test_a_changed_flow_file_gives_a_different_diagram(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    data = yaml.safe_load((flows / "svc.yaml").read_text())
    data["questions"].insert(1, {"id": "svc_extra", "type": "yes_no", "ask": "Extra? YES or NO",
                                 "example": "YES or NO"})
    (flows / "svc.yaml").write_text(yaml.safe_dump(data))
    changed = Engine(load_library(flows))
    text = render(changed, changed.lib.flows["svc"])
    assert text != (DOCS / "svc.md").read_text(encoding="utf-8")
    assert "s_svc__svc_danger --> s_svc__svc_extra : next" in text


def test_write_all_check_reports_stale_files_without_writing(tmp_path: Path) -> None:
    assert len(write_all(ENGINE, tmp_path)) == len(ENGINE.lib.flows) + 1  # + lifecycle
    (tmp_path / "svc.md").write_text("old")
    assert write_all(ENGINE, tmp_path, check=True) == [tmp_path / "svc.md"]
    assert (tmp_path / "svc.md").read_text() == "old"


def test_the_command_writes_into_a_folder(app, tmp_path: Path) -> None:
    runner = CliRunner()
    with app.app_context():
        result = runner.invoke(diagrams_command, ["--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "crs.md").read_text().startswith("# CAR-T or blinatumomab")
        again = runner.invoke(diagrams_command, ["--out", str(tmp_path), "--check"])
        assert again.exit_code == 0 and "up to date" in again.output
