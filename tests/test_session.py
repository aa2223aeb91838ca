"""The typed, versioned session and the lifecycle machine (bot/conversation/session.py,
lifecycle.py): old saved sessions migrate, the saved form stays small, and the core imports
neither Flask nor Redis."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from bot.config import ROOT
from bot.conversation.engine import Engine
from bot.conversation.flows import FlowError, load_library
from bot.conversation.session import SCHEMA_VERSION, Answer, Fact, Session

ENGINE = Engine(load_library(ROOT / "flows"))
CORE = Path(ROOT / "bot" / "conversation")
# Modules outside the package the core may import: pure helpers, no I/O.
PURE = {"bot.sms", "bot.clock", "bot.profile_fields"}


def test_the_core_imports_no_flask_no_redis_and_nothing_of_the_adapters() -> None:
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    names = [node.module or ""]
                elif node.level == 1:
                    continue  # inside the package
                else:
                    names = [f"bot.{node.module}"]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in {"flask", "redis", "werkzeug", "twilio"}, (path.name, name)
                if top == "bot":
                    assert name in PURE, f"{path.name} imports {name}: not part of the core"


@pytest.mark.parametrize(("old", "state", "at"), [
    ({"state": "new"}, "new", ""),
    ({"state": "opted_out"}, "opted_out", ""),
    ({"state": "fever:temperature", "conv": {"id": "c1", "answers": {}}}, "asking",
     "fever:temperature"),
    ({"state": "idle", "conv": {"id": "c1", "done": True, "tier": "SOON"}}, "outcome", ""),
    ({"state": "idle", "conv": None}, "menu", ""),
    ({"state": "fever:temperature", "conv": {"id": "c2", "follow_up_of": "c1",
                                             "follow_up_text": "checking on you"}},
     "follow_up", "fever:temperature"),
])
def test_v0_sessions_migrate(old: dict, state: str, at: str) -> None:
    s = Session.from_dict(json.loads(json.dumps(old)))
    assert (s.state, s.at) == (state, at)
    assert s.to_dict()["v"] == SCHEMA_VERSION


def test_a_v0_patient_mid_checklist_goes_on_after_the_deploy() -> None:
    v0 = {"state": "fever:temperature", "prior": {}, "emergency_at": None,
          "conv": {"id": "c1", "episode_id": "c1", "started_at": time.time(), "flows": ["fever"],
                   "queue": [], "answers": {}, "facts": {"flow_fever": {"at": 1.0,
                                                                        "from": "flow"}},
                   "retries": {}, "red_flags": [], "recorded": False, "signs": [],
                   "values": {}, "quotes": {}, "text_ctx": []}}
    result = ENGINE.handle(v0, "38.9", phone="+15550000001")
    assert result.session["v"] == SCHEMA_VERSION
    assert result.session["conv"]["answers"]["temperature"]["value"] == 38.9
    assert ENGINE.pending(result.session) is not None or result.records


def test_round_trip_keeps_everything_and_leaves_defaults_out() -> None:
    s = ENGINE.handle(None, "my son has a temp of 38.6 and a cough", phone="+15550000002").session
    again = Session.from_dict(s).to_dict()
    assert again == s
    conv = s["conv"]
    assert "retries" not in conv and "red_flags" not in conv and "done" not in conv
    assert conv["facts"]["saw_cough"]["from"] == "patient_text"
    typed = Session.from_dict(s)
    assert isinstance(typed.conv.answers["temperature"], Answer)
    assert isinstance(typed.conv.facts["saw_cough"], Fact)
    assert typed.texter == "son"


def test_a_newer_schema_is_read_as_far_as_it_is_known(caplog) -> None:
    s = Session.from_dict({"v": SCHEMA_VERSION + 1, "state": "menu", "shiny": 1})
    assert s.state == "menu"
    assert "newer than this code" in caplog.text


def test_lifecycle_states_move_with_the_conversation() -> None:
    phone = "+15550000003"
    s = ENGINE.handle(None, "hello", phone=phone).session
    assert s["state"] == "menu"
    s = ENGINE.handle(s, "1", phone=phone).session
    assert s["state"] == "asking" and ENGINE.pending(s) == s["at"]
    s = ENGINE.handle(s, "menu", phone=phone).session
    assert s["state"] == "menu" and "at" not in s
    r = ENGINE.handle(s, "I can't breathe", phone=phone)
    assert r.session["state"] == "outcome" and r.reply.startswith("Call 911 now.")
    s = ENGINE.handle(r.session, "STOP", phone=phone).session
    assert s["state"] == "opted_out"
    s = ENGINE.handle(s, "START", phone=phone).session
    assert s["state"] == "menu"


def test_the_abandon_sweep_is_a_call_into_the_core() -> None:
    phone = "+15550000004"
    t0 = time.time()
    s = ENGINE.handle(None, "fever", phone=phone, now=t0).session
    s = ENGINE.handle(s, "no", phone=phone, now=t0 + 1).session  # a worrying-free answer
    assert ENGINE.abandon(s, phone=phone, now=t0 + 60, after_seconds=1800).records == []
    late = ENGINE.abandon(s, phone=phone, now=t0 + 3600, after_seconds=1800)
    assert [r["kind"] for r in late.records] == ["abandoned"]
    assert late.session["state"] == "asking"  # a late answer still goes on
    assert ENGINE.abandon(late.session, phone=phone, now=t0 + 7200,
                          after_seconds=1800).records == []  # once


def test_treatment_windows_are_flow_data(tmp_path: Path) -> None:
    import shutil

    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    text = (flows / "windows.yaml").read_text()
    (flows / "windows.yaml").write_text(text.replace("days: 30", "days: 10"))
    lib = load_library(flows)
    assert lib.windows.car_t_crs_days == 10
    engine = Engine(lib)
    ctx = engine.patient_context({"car_t_date": time.strftime(
        "%Y-%m-%d", time.gmtime(time.time() - 20 * 86400))}, time.time())
    assert "ctx_car_t_window" not in ctx["ctx"]["facts"]
    assert "ctx_car_t_neuro_window" in ctx["ctx"]["facts"]
    (flows / "windows.yaml").write_text(text.replace("days: 30", "days: -1"))
    with pytest.raises(FlowError, match=r"windows.yaml: car_t_crs.days"):
        load_library(flows)
