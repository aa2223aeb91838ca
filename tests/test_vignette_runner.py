"""``flask --app wsgi vignettes [FILE]``: the vignette suite, or a reviewer's own file, through
the real signed webhook against a throwaway real Redis; the table per checklist, every failure,
exit code 1 on under-triage. And the ``answers:`` / ``never_asked:`` vignette format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bot import vignettes
from bot.rules_version import rules_version

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, items: list[dict[str, Any]], name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(items, sort_keys=False))
    return path


def run_cli(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["vignettes", *args])


def table_row(output: str, name: str) -> list[int]:
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == name and len(parts) == 5 and parts[1].isdigit():
            return [int(p) for p in parts[1:]]
    raise AssertionError(f"no row {name!r} in:\n{output}")


FEVER_URGENT = {"id": "mine-fever", "checklist": "fever", "expect": "URGENT",
                "why": "Fever URGENT", "texts": ["fever", "no", "38.6"]}


def test_whole_suite_passes_and_never_touches_the_services_redis(app: Any,
                                                                 redis_url: str) -> None:
    service_redis = redis.Redis.from_url(redis_url)
    keys_before = service_redis.dbsize()
    result = run_cli(app)
    assert result.exit_code == 0, result.output
    n = len(vignettes.load(vignettes.default_files()))
    assert n >= 60
    total, exact, under, over = table_row(result.output, "all")
    assert (total, under) == (n, 0)
    assert exact + over == n
    for checklist in ("fever", "bleeding", "svc", "crs", "neurotoxicity"):
        assert table_row(result.output, checklist)[2] == 0  # under
    assert f"Rules {app.extensions['rules_version']}" in result.output
    assert "PASS" in result.output
    assert service_redis.dbsize() == keys_before  # throwaway Redis only


def test_reviewer_file_with_an_under_triage_fails_with_exit_1(app: Any, tmp_path: Path) -> None:
    wrong = {"id": "mine-too-low", "checklist": "fever", "expect": "EMERGENCY",
             "why": "a reviewer's own story", "texts": ["fever", "no", "38.6"]}
    result = run_cli(app, str(write(tmp_path, [FEVER_URGENT, wrong])))
    assert result.exit_code == 1, result.output
    assert table_row(result.output, "fever") == [2, 1, 1, 0]
    assert "FAIL mine-too-low (mine.yaml): UNDER-TRIAGED: answered URGENT, expected EMERGENCY" \
        in result.output
    assert "FAIL mine-fever" not in result.output


def test_over_triage_without_a_documented_reason_exits_2(app: Any, tmp_path: Path) -> None:
    over = {**FEVER_URGENT, "id": "mine-over", "expect": "SOON"}
    result = run_cli(app, str(write(tmp_path, [over])))
    assert result.exit_code == 2, result.output
    assert table_row(result.output, "fever") == [1, 0, 0, 1]
    assert "OVER-TRIAGED" in result.output
    documented = {**over, "over_triage_ok": "fever.yaml: safer tier chosen"}
    assert run_cli(app, str(write(tmp_path, [documented]))).exit_code == 0


def test_an_edited_flow_that_weakens_a_rule_is_caught(app: Any, tmp_path: Path) -> None:
    """The reviewer's workflow: edit a copy of the flows, run the vignettes on it."""
    flows = Path(shutil.copytree(ROOT / "flows", tmp_path / "flows"))
    fever = flows / "fever.yaml"
    text = fever.read_text()
    edit = "    tier: URGENT\n    when: {all: [fever]}"
    assert text.count(edit) == 1
    fever.write_text(text.replace(edit, edit.replace("URGENT", "SOON")))
    result = run_cli(app, "--flows", str(flows))
    assert result.exit_code == 1, result.output
    assert table_row(result.output, "fever")[2] > 0
    assert "UNDER-TRIAGED" in result.output
    assert f"Rules {rules_version(flows)} from {flows}" in result.output
    assert rules_version(flows) != app.extensions["rules_version"]


def test_answers_map_and_healthy_defaults(app: Any, client: Any) -> None:
    urgent = {**FEVER_URGENT, "texts": ["fever"], "answers": {"temperature": "38.6"},
              "never_asked": ["fever_medicine"], "file": "x"}
    out = vignettes.run_vignette(app, client, urgent)
    assert out.failures == [] and out.tier == "URGENT"
    assert out.asked == ["fever:danger_signs", "fever:temperature"]
    # Nothing named: every question gets a healthy answer for its type -> ROUTINE.
    routine = {**FEVER_URGENT, "expect": "ROUTINE", "texts": ["fever"], "answers": {},
               "file": "x"}
    out = vignettes.run_vignette(app, client, routine)
    assert out.failures == [] and out.tier == "ROUTINE", out.failures
    assert out.asked[:2] == ["fever:danger_signs", "fever:temperature"]
    assert len(out.asked) >= 4
    # The full "checklist:question" name works as a key too.
    full = {**urgent, "answers": {"fever:temperature": "39.1"}}
    assert vignettes.run_vignette(app, client, full).tier == "URGENT"


def test_never_asked_is_checked(app: Any, tmp_path: Path, client: Any) -> None:
    v = {**FEVER_URGENT, "id": "mine-asked", "expect": "ROUTINE", "texts": ["fever"],
         "answers": {}, "never_asked": ["rigors"]}
    out = vignettes.run_vignette(app, client, {**v, "file": "x"})
    assert any("asked fever:rigors (never_asked)" in f for f in out.failures), out.failures
    result = run_cli(app, str(write(tmp_path, [v])))
    assert result.exit_code == 2, result.output
    assert "FAIL mine-asked" in result.output


def test_pending_question_follows_the_conversation(app: Any, client: Any) -> None:
    phone = vignettes.WebhookPhone(app, client, "+15550123456")
    assert vignettes.pending_question(app, phone.number) is None
    phone.send("fever")
    assert vignettes.pending_question(app, phone.number) == "fever:danger_signs"
    phone.send("no")
    assert vignettes.pending_question(app, phone.number) == "fever:temperature"
    assert phone.send("38.6").startswith("Call the 24-hour oncology line now")
    assert vignettes.pending_question(app, phone.number) is None


@pytest.mark.parametrize(("item", "message"), [
    ({**FEVER_URGENT, "never_ask": ["rigors"]}, "unknown field(s) never_ask"),
    ({**FEVER_URGENT, "expect": "HIGH"}, "expect must be one of"),
    ({**FEVER_URGENT, "checklist": "rash"}, "checklist must be one of"),
    ({k: v for k, v in FEVER_URGENT.items() if k != "why"}, "missing why"),
    ({**FEVER_URGENT, "texts": "fever"}, "texts must be a list"),
])
def test_a_malformed_reviewer_file_is_refused_by_name(app: Any, tmp_path: Path,
                                                      item: dict[str, Any], message: str) -> None:
    result = run_cli(app, str(write(tmp_path, [item])))
    assert result.exit_code == 1
    assert "mine.yaml[0]" in result.output and message in result.output, result.output


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [FEVER_URGENT, FEVER_URGENT])
    with pytest.raises(vignettes.VignetteError, match="already used"):
        vignettes.load([path])


def test_flows_with_a_mistake_are_named_not_a_traceback(app: Any, tmp_path: Path) -> None:
    flows = Path(shutil.copytree(ROOT / "flows", tmp_path / "flows"))
    fever = flows / "fever.yaml"
    fever.write_text(fever.read_text().replace("    tier: URGENT\n", "    tier: URGNET\n", 1))
    result = run_cli(app, "--flows", str(flows))
    assert result.exit_code == 1
    assert "fever.yaml" in result.output and "tier" in result.output, result.output
    assert "Traceback" not in result.output


def test_unquoted_yes_and_no_mean_what_the_reviewer_typed(app: Any, tmp_path: Path) -> None:
    """YAML reads `yes`/`no` as booleans; the runner sends them as "yes"/"no"."""
    path = tmp_path / "mine.yaml"
    path.write_text("""
- id: mine-rigors-unquoted
  checklist: fever
  expect: URGENT
  why: "Fever URGENT (shaking chills)"
  reason: "shaking chills"
  texts: ["fever"]
  answers: {danger_signs: no, temperature: 37.2, fever_medicine: no, rigors: yes}
- id: mine-profile-unquoted
  checklist: fever
  expect: URGENT
  why: "Fever URGENT"
  profile: {low_platelets: no}
  texts: ["fever", "no", "38.6"]
""")
    result = run_cli(app, str(path))
    assert result.exit_code == 0, result.output
    assert [vignettes.as_text(v) for v in (True, False, 37.2, "38")] == ["yes", "no", "37.2", "38"]


def test_a_profile_the_registry_refuses_is_named(app: Any, tmp_path: Path) -> None:
    bad = {**FEVER_URGENT, "profile": {"car_t_date": "last tuesday"}}
    result = run_cli(app, str(write(tmp_path, [bad])))
    assert result.exit_code == 1
    assert "mine.yaml (mine-fever): profile: car_t_date" in result.output, result.output
