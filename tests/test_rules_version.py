"""Rules you can trace: flows/VERSION plus a hash of every flow file, computed at start-up;
and where the flows (and local state) are found when the settings do not say."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask import render_template_string

from bot import config, create_app
from bot.rules_version import RulesVersionError, content_hash, human_version, rules_version
from conftest import settings

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"


@pytest.fixture
def flows_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FLOWS, tmp_path / "flows"))


def test_version_is_the_human_line_plus_a_content_hash() -> None:
    human = (FLOWS / "VERSION").read_text().strip()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.\d+", human), "flows/VERSION: date.serial"
    version = rules_version(FLOWS)
    assert re.fullmatch(re.escape(human) + r"\+[0-9a-f]{8}", version), version


def test_app_computes_it_once_at_start_up(app: Any) -> None:
    assert app.extensions["rules_version"] == rules_version(app.config["FLOWS_DIR"])
    with app.app_context():  # templates can show the running version: {{ rules_version }}
        assert render_template_string("{{ rules_version }}") == app.extensions["rules_version"]


def test_any_edit_to_a_flow_file_changes_the_hash(flows_copy: Path) -> None:
    before = rules_version(flows_copy)
    assert before == rules_version(FLOWS)  # same bytes, same version, wherever they are
    fever = flows_copy / "fever.yaml"
    fever.write_bytes(fever.read_bytes().replace(b">= 38.0", b">= 38.5", 1))
    after = rules_version(flows_copy)
    assert after != before
    assert after.split("+")[0] == before.split("+")[0]  # nobody bumped VERSION: hash tells


def test_whitespace_and_renames_count_too(flows_copy: Path) -> None:
    base = content_hash(flows_copy)
    msgs = flows_copy / "messages.yaml"
    msgs.write_bytes(msgs.read_bytes() + b"\n")
    assert content_hash(flows_copy) != base
    msgs.write_bytes(msgs.read_bytes()[:-1])
    assert content_hash(flows_copy) == base
    (flows_copy / "svc.yaml").rename(flows_copy / "svc2.yaml")
    assert content_hash(flows_copy) != base


def test_files_the_loader_does_not_read_do_not_count(flows_copy: Path) -> None:
    base = rules_version(flows_copy)
    (flows_copy / "notes.txt").write_text("reviewer's scratch notes")
    assert rules_version(flows_copy) == base


def test_bumping_version_changes_only_the_human_part(flows_copy: Path) -> None:
    base = rules_version(flows_copy)
    (flows_copy / "VERSION").write_text("2030-01-01.7\n")
    assert rules_version(flows_copy) == "2030-01-01.7+" + base.split("+")[1]


def test_missing_version_file_says_unversioned(flows_copy: Path) -> None:
    (flows_copy / "VERSION").unlink()
    assert human_version(flows_copy) == "unversioned"
    assert rules_version(flows_copy).startswith("unversioned+")


@pytest.mark.parametrize("text", ["", "two\nlines\n", "has space", "x" * 41, "+plus"])
def test_malformed_version_stops_the_service(flows_copy: Path, text: str, redis_url: str,
                                             tmp_path: Path) -> None:
    (flows_copy / "VERSION").write_text(text)
    with pytest.raises(RulesVersionError, match="VERSION"):
        rules_version(flows_copy)
    with pytest.raises(RulesVersionError):
        create_app(settings(redis_url, tmp_path, FLOWS_DIR=str(flows_copy)))


def test_app_on_other_flows_reports_their_version(flows_copy: Path, redis_url: str,
                                                  tmp_path: Path) -> None:
    (flows_copy / "VERSION").write_text("2031-02-03.1\n")
    app = create_app(settings(redis_url, tmp_path, FLOWS_DIR=str(flows_copy)))
    assert app.extensions["rules_version"].startswith("2031-02-03.1+")


# ------------------------------------------------------------------ where flows are found

def test_source_checkout_uses_the_repository_flows() -> None:
    assert config.source_checkout()
    assert config.default_flows_dir() == FLOWS
    assert config.default_instance_path() == ROOT / "instance"


def test_installed_package_uses_its_packaged_flows(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"  # an installed bot/: no pyproject.toml beside it
    packaged = site / "bot" / "_flows"
    packaged.mkdir(parents=True)
    assert not config.source_checkout(site)
    assert config.default_flows_dir(site, packaged) == packaged
    assert config.default_instance_path(site, cwd=tmp_path) == tmp_path / "instance"


def test_a_stale_packaged_copy_never_shadows_the_edited_flows(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "flows").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    stale = repo / "bot" / "_flows"
    stale.mkdir(parents=True)
    assert config.default_flows_dir(repo, stale) == repo / "flows"


def test_empty_setting_means_its_default() -> None:
    got = config.from_environment({"FLOWS_DIR": "", "INSTANCE_PATH": "  ", "LOG_LEVEL": "",
                                   "SESSION_TTL_HOURS": ""})
    want = config.defaults()
    for key in ("FLOWS_DIR", "INSTANCE_PATH", "LOG_LEVEL", "SESSION_TTL_HOURS"):
        assert got[key] == want[key]
    assert config.from_environment({"FLOWS_DIR": "/srv/flows"})["FLOWS_DIR"] == "/srv/flows"
    with pytest.raises(RuntimeError, match="SESSION_TTL_HOURS"):
        config.from_environment({"SESSION_TTL_HOURS": "24h"})
